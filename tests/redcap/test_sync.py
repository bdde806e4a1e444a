"""The nightly job end to end: the KAP-TRD study in the sandbox, driven through PyCap over HTTP."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from sandbox_data import Clock

from trialkit.definitions import load_study
from trialkit.errors import RedcapError, UsageError
from trialkit.redcap.client import RedcapClient, RetryPolicy, Token
from trialkit.redcap.definitions.project import from_study
from trialkit.redcap.definitions.push import push_definitions
from trialkit.redcap.sandbox import FaultPlan, ProjectSpec
from trialkit.redcap.sync import RESULT_FIELDS, Ledger, run_nightly
from trialkit.screening.engine import screen
from trialkit.screening.explain import candidates
from trialkit.screening.run import DEMO_AS_OF, load_rules

ROOT = Path(__file__).resolve().parents[2]
AS_OF = DEMO_AS_OF
NOW = dt.datetime(2026, 11, 2, 2, 0, 0)


@pytest.fixture(scope="module")
def study():
    return load_study(ROOT)


@pytest.fixture(scope="module")
def rules(study):
    return load_rules(ROOT / "eligibility_rules" / "kap_trd.yaml", study)


@pytest.fixture(scope="module")
def intake_rows() -> list[dict[str, str]]:
    """A slice of the example intake (every row of the first 60 candidates) as REDCap flat rows."""
    frame = pl.read_csv(ROOT / "examples" / "kap_trd_intake.csv", infer_schema=False)
    keep = frame["record_id"].unique(maintain_order=True).head(60)
    frame = frame.filter(pl.col("record_id").is_in(keep.implode()))
    result_cols = [c for c in frame.columns if c.startswith("elig_") or c == "eligibility_result_complete"]
    return [
        {k: v for k, v in row.items() if v is not None and k not in result_cols}
        for row in frame.drop(result_cols).to_dicts()
    ]


@pytest.fixture
def kap(sandbox, study, intake_rows):
    clock = Clock()
    clock.now = dt.datetime(2026, 11, 1, 12, 0, 0)
    sandbox.set_clock(clock)
    token = sandbox.create_project(ProjectSpec.from_definition(study))
    client = RedcapClient(sandbox.url, Token(token), chunk_size=25, retry=RetryPolicy(attempts=3, backoff=0.0))
    client.import_records(intake_rows)
    yield client, token, clock
    sandbox.set_faults(None)
    sandbox.set_clock(None)
    sandbox.drop_project(token)


def offline_results(study, rules, rows) -> dict[str, tuple[str, str | None]]:
    from trialkit.records import IntakeData

    frame = pl.DataFrame(rows, infer_schema_length=None)
    intake = IntakeData.from_frame(frame, study)
    return {c.record_id: (c.disposition, c.primary_reason) for c in candidates(screen(rules, intake, as_of=AS_OF))}


def stored_results(client: RedcapClient) -> dict[str, tuple[str, str | None]]:
    rows = client.export_records(fields=["record_id", *RESULT_FIELDS], events=["screening_arm_1"])
    return {
        r["record_id"]: (r["elig_disposition"], r["elig_primary_reason"] or None)
        for r in rows
        if not r.get("redcap_repeat_instrument")
    }


def test_first_run_writes_every_result_and_matches_offline_screening(kap, study, rules, intake_rows, tmp_path):
    client, _, _ = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    result = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    assert result.full and result.pulled == 60 and result.written == 60
    offline = offline_results(study, rules, intake_rows)
    assert stored_results(client) == offline
    assert set(result.dispositions) == {"eligible", "ineligible", "pending"}
    assert len(ledger.writes(result.run_id)) == 60


def test_rerun_writes_nothing_and_an_edit_is_picked_up(kap, study, rules, tmp_path):
    client, _, clock = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    again = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=1))
    assert not again.full and again.written == 0
    # only changed (within the overlap) or still-undecided records are pulled the second time
    assert again.pulled <= first.pulled

    # a coordinator records a positive pregnancy test for an eligible candidate with childbearing potential
    before = stored_results(client)
    rows = client.export_records(fields=["record_id", "childbearing_potential", "sex"], events=["screening_arm_1"])
    target = next(
        r["record_id"] for r in rows
        if before[r["record_id"]][0] == "eligible" and r.get("childbearing_potential") == "1"
    )
    clock.now = dt.datetime(2026, 11, 3, 9, 0, 0)
    client.import_records([{"record_id": target, "redcap_event_name": "screening_arm_1",
                            "preg_test_result": "1", "pregnant": "1"}])
    third = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=dt.datetime(2026, 11, 4, 2, 0))
    assert third.written == 1
    assert stored_results(client)[target][0] == "ineligible"
    assert [r["status"] for r in ledger.runs()] == ["ok", "ok", "ok"]


def test_a_run_that_fails_midway_loses_and_duplicates_nothing(kap, sandbox, study, rules, intake_rows, tmp_path):
    client, token, _ = kap
    fragile = RedcapClient(sandbox.url, Token(token), chunk_size=10, retry=RetryPolicy(attempts=1))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    # writes commit but their replies are lost, and nothing is retried: runs die part-way through
    sandbox.set_faults(FaultPlan(kind="drop_after", share=0.3, seed=5, contents=("record",)))
    failures = 0
    for _ in range(10):
        try:
            run_nightly(fragile, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
        except RedcapError:
            failures += 1
    sandbox.set_faults(None)
    assert failures and "failed" in [r["status"] for r in ledger.runs()]
    run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    assert ledger.runs()[-1]["status"] == "ok"
    assert stored_results(client) == offline_results(study, rules, intake_rows)
    # one result row per record, in the screening event, never a repeat instance
    rows = client.export_records(fields=["record_id", "elig_disposition"])
    with_result = [r for r in rows if r.get("elig_disposition")]
    assert len(with_result) == len({r["record_id"] for r in with_result}) == 60


def test_a_clear_is_written_when_a_candidate_becomes_eligible(kap, study, rules, tmp_path):
    client, _, clock = kap
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    stored = stored_results(client)
    # fake an old result on an eligible record: it must be cleared, not left behind
    rid = next(r for r, (d, _) in stored.items() if d == "eligible")
    clock.now = dt.datetime(2026, 11, 3, 9, 0, 0)
    client.import_records([{"record_id": rid, "redcap_event_name": "screening_arm_1",
                            "elig_disposition": "ineligible", "elig_primary_reason": "E5"}])
    run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=dt.datetime(2026, 11, 4, 2, 0))
    assert stored_results(client)[rid] == ("eligible", None)


class _DeletesBeforeWriting(RedcapClient):
    """A real client whose project loses a record between the pull and the write-back (a withdrawal)."""

    victim: str = ""

    def export_records(self, records=None, *, fields=None, forms=None, events=None):
        if fields == [self.def_field] and records and self.victim in records:
            self._project.delete_records([self.victim])
            self.victim = ""
        return super().export_records(records, fields=fields, forms=forms, events=events)


def test_a_record_deleted_since_the_pull_is_not_brought_back(kap, sandbox, study, rules, tmp_path):
    _, token, _ = kap
    client = _DeletesBeforeWriting(sandbox.url, Token(token), chunk_size=25, retry=RetryPolicy(attempts=1))
    client.victim = "0001"
    ledger = Ledger(tmp_path / "ledger.sqlite")
    result = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    assert result.deleted == 1 and result.written == 59
    assert "0001" not in client.record_ids()  # no shell record holding only a result
    assert "0001" not in {w["record_id"] for w in ledger.writes()}


class _WriteBackFails(RedcapClient):
    """A real client whose REDCap stops answering once the records are pulled and screened."""

    def import_records(self, rows, **kwargs):
        raise RedcapError("REDCap did not answer (connection reset)")


def test_a_run_that_fails_after_the_pull_says_in_the_ledger_what_it_pulled(kap, sandbox, study, rules, tmp_path):
    _, token, _ = kap
    client = _WriteBackFails(sandbox.url, Token(token), chunk_size=25, retry=RetryPolicy(attempts=1))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    with pytest.raises(RedcapError):
        run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    run = ledger.runs()[-1]
    assert run["status"] == "failed" and run["pulled"] == 60 and run["written"] == 0


def test_results_that_landed_before_a_failure_are_in_the_ledger_after_the_rerun(kap, sandbox, study, rules,
                                                                               tmp_path):
    client, token, _ = kap
    class LosesTheImportReply(RedcapClient):
        def import_records(self, rows, **kwargs):
            sandbox.set_faults(FaultPlan(kind="drop_after", next_n=1, contents=("record",)))
            return super().import_records(rows, **kwargs)

    fragile = LosesTheImportReply(sandbox.url, Token(token), chunk_size=100, retry=RetryPolicy(attempts=1))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    # the write-back is saved by REDCap but its reply is lost: the run fails with every result in REDCap
    with pytest.raises(RedcapError):
        run_nightly(fragile, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    sandbox.set_faults(None)
    assert ledger.writes() == []
    again = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(hours=1))
    assert again.written == 0
    notes = {w["record_id"]: w["note"] for w in ledger.writes(again.run_id)}
    assert len(notes) == 60 and set(notes.values()) == {"found"}
    # a third run finds nothing new to record
    third = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(hours=2))
    assert ledger.writes(third.run_id) == []


def test_a_run_that_never_finished_is_marked_interrupted_and_one_run_at_a_time(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    ledger.begin(NOW, AS_OF, "0" * 64, True)  # then the machine dies: no finish()
    with pytest.raises(UsageError, match="another nightly run is using the ledger"):
        Ledger(path)
    ledger.close()
    later = Ledger(path)
    assert [(r["status"], r["message"]) for r in later.runs()] == [
        ("interrupted", "did not finish (killed or stopped)")]
    later.close()


@pytest.mark.parametrize("where", ["missing/folder/ledger.sqlite", "not_a_database.sqlite"])
def test_an_unusable_ledger_is_a_usage_error(tmp_path, where):
    (tmp_path / "not_a_database.sqlite").write_text("plain text\n" * 100)
    with pytest.raises(UsageError, match="ledger"):
        Ledger(tmp_path / where)


# ---- a change to what screening reads rescreens every record ---------------------------------------------------

def copy_definitions(to: Path) -> Path:
    """The study, its instruments and its rule file, copied to edit."""
    import shutil

    for name in ("study.yaml", "instruments", "eligibility_rules"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, to / name)
    return to


def load_copy(root: Path):
    copy = load_study(root)
    return copy, load_rules(root / "eligibility_rules" / "kap_trd.yaml", copy)


def screened_offline(study, rules, rows, as_of: dt.date = AS_OF) -> dict[str, tuple[str, str | None]]:
    """What offline screening gives for these rows: calculated fields computed from their inputs, as `screen` and
    the nightly job do."""
    from trialkit.records import IntakeData

    frame = pl.DataFrame(rows, infer_schema_length=None)
    intake = IntakeData.from_frame(frame, study).with_calculations(as_of=as_of)
    return {c.record_id: (c.disposition, c.primary_reason) for c in candidates(screen(rules, intake, as_of=as_of))}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_changed_calculation_rescreens_every_record(kap, study, rules, intake_rows, tmp_path):
    client, _, _ = kap
    root = copy_definitions(tmp_path)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first_study, first_rules = load_copy(root)
    # the intake was entered the day before NOW: runs from NOW + 2 days on pull only what changed since
    first = run_nightly(client, first_study, first_rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=2))
    assert first.full and first.full_reason == "first run"
    before = stored_results(client)

    # the MADRS total becomes the mean item score times 5 (a protocol amendment): the rule file is untouched
    edit(root / "instruments" / "madrs.yaml", "[madrs_1] + [madrs_2]", "0.5 * ([madrs_1] + [madrs_2]")
    edit(root / "instruments" / "madrs.yaml", "+ [madrs_9] + [madrs_10]", "+ [madrs_9] + [madrs_10])")
    new_study, new_rules = load_copy(root)
    assert new_rules.stamp() == first_rules.stamp()  # same rule file bytes
    # the amendment reaches REDCap first (the nightly job refuses to screen against definitions REDCap lacks)
    assert push_definitions(client, from_study(new_study), apply=True).status == "applied"
    expected = screened_offline(new_study, new_rules, intake_rows)
    flipped = [r for r, (d, _) in expected.items() if before[r][0] == "eligible" and d == "ineligible"]
    assert flipped  # decided records whose result the change overturns

    # the next night: no record changed in REDCap since the first run
    second = run_nightly(client, new_study, new_rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=3))
    assert second.full and second.pulled == 60
    assert second.full_reason == "instruments changed: madrs.yaml"
    assert stored_results(client) == expected
    runs = ledger.runs()
    assert [r["full_reason"] for r in runs] == ["first run", "instruments changed: madrs.yaml"]
    assert runs[0]["fingerprint"] != runs[1]["fingerprint"] and len(runs[1]["fingerprint"]) == 64

    # a run with the same definitions is incremental again
    third = run_nightly(client, new_study, new_rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=4))
    assert not third.full and third.full_reason == "" and third.written == 0


def test_an_old_ledger_is_migrated_in_place_and_its_next_run_is_full(kap, study, rules, tmp_path):
    import sqlite3

    client, _, _ = kap
    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)  # the ledger as trialkit wrote it before fingerprints
    old.executescript(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
            as_of TEXT NOT NULL, ruleset_sha256 TEXT NOT NULL, full INTEGER NOT NULL,
            pulled INTEGER, written INTEGER, message TEXT);
        CREATE TABLE writes (
            run_id INTEGER NOT NULL REFERENCES runs(id), record_id TEXT NOT NULL,
            content_sha256 TEXT NOT NULL, written_at TEXT NOT NULL, PRIMARY KEY (run_id, record_id));
        """
    )
    old.execute("INSERT INTO runs VALUES (1, '2026-11-01T02:00:00', '2026-11-01T02:05:00', 'ok', '2026-11-01', ?, "
                "1, 60, 60, '')", (rules.stamp()["sha256"],))
    old.execute("INSERT INTO writes VALUES (1, '0001', ?, '2026-11-01T02:00:00')", ("a" * 64,))
    old.commit()
    old.close()

    ledger = Ledger(path)
    kept = ledger.runs()
    assert len(kept) == 1 and kept[0]["status"] == "ok" and kept[0]["fingerprint"] is None
    assert ledger.writes()[0]["note"] == "written"
    result = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW)
    assert result.full and "older trialkit" in result.full_reason
    assert ledger.runs()[-1]["fingerprint"] is not None
    assert not run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(hours=1)).full


LATER = AS_OF + dt.timedelta(days=20)


def test_a_new_run_date_rescreens_every_record_when_the_rules_measure_from_it(kap, intake_rows, tmp_path):
    client, _, _ = kap
    root = copy_definitions(tmp_path)
    # without a reference_date, 'today' in every criterion is the run's as-of date
    edit(root / "eligibility_rules" / "kap_trd.yaml", "reference_date: screening_date\n", "")
    study, rules = load_copy(root)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=2))
    same_day = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=3))
    assert not same_day.full

    later = run_nightly(client, study, rules, ledger=ledger, as_of=LATER, now=NOW + dt.timedelta(days=4))
    assert later.full and later.pulled == 60
    assert later.full_reason == f"the run date changed ({AS_OF} -> {LATER}) and the rules measure from it"
    expected = screened_offline(study, rules, intake_rows, LATER)
    assert expected != screened_offline(study, rules, intake_rows, AS_OF)
    assert stored_results(client) == expected


def test_candidates_without_a_reference_date_are_rescreened_on_a_new_run_date(kap, study, rules, intake_rows,
                                                                              tmp_path):
    client, _, _ = kap
    # three candidates whose screening date is not recorded: 'today' is the run date for them only
    undated = ["0002", "0003", "0004"]
    client.import_records([{"record_id": r, "redcap_event_name": "screening_arm_1", "screening_date": ""}
                           for r in undated], overwrite=True)
    rows = [{k: v for k, v in row.items() if not (k == "screening_date" and row["record_id"] in undated)}
            for row in intake_rows]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = run_nightly(client, study, rules, ledger=ledger, as_of=AS_OF, now=NOW + dt.timedelta(days=2))
    assert stored_results(client) == screened_offline(study, rules, rows, AS_OF)
    undecided = first.dispositions.get("pending", 0)

    later = run_nightly(client, study, rules, ledger=ledger, as_of=LATER, now=NOW + dt.timedelta(days=3))
    assert not later.full
    expected = screened_offline(study, rules, rows, LATER)
    moved = [r for r in undated if expected[r] != screened_offline(study, rules, rows, AS_OF)[r]]
    assert moved  # a decided result that the new run date overturns
    assert stored_results(client) == expected
    assert later.pulled <= undecided + len(undated)  # the undecided and the undated, not everyone


def test_result_fields_on_another_form_are_a_usage_error_before_any_call(tmp_path):
    # the write-back sets eligibility_result_complete: with the result fields on another form REDCap would refuse
    # every write-back import; the job says what to change instead, before it asks REDCap anything
    import shutil

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "instruments", tmp_path / "instruments")
    shutil.copy(root / "study.yaml", tmp_path / "study.yaml")
    form = tmp_path / "instruments" / "eligibility_result.yaml"
    form.write_text(form.read_text().replace("instrument: eligibility_result", "instrument: screening_outcome"))
    form.rename(tmp_path / "instruments" / "screening_outcome.yaml")
    study_file = tmp_path / "study.yaml"
    study_file.write_text(study_file.read_text().replace("eligibility_result", "screening_outcome"))
    other = load_study(tmp_path)
    rules = load_rules(root / "eligibility_rules" / "kap_trd.yaml", other)
    client = RedcapClient("http://127.0.0.1:9/api/", Token("0" * 32))  # nothing listens: no call may be made
    with pytest.raises(UsageError, match=r"'eligibility_result' instrument.*'screening_outcome'"):
        run_nightly(client, other, rules, ledger=Ledger(tmp_path / "l.sqlite"), as_of=DEMO_AS_OF,
                    now=dt.datetime(2026, 11, 2, 3, 0))
