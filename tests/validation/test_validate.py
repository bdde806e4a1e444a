"""Each check finds what it should (and only that), with record, event, instance and masked identifiers."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import intake_data as shared
import polars as pl
import pytest

from trialkit.errors import UsageError
from trialkit.records import IntakeData, read_intake
from trialkit.validation import COLUMNS, MASK, validate

AS_OF = dt.date(2026, 1, 1)


def run(tmp_path, study, rows):
    intake = read_intake(shared.write_csv(tmp_path / "intake.csv", rows), study)
    return validate(intake, as_of=AS_OF)


def found(findings) -> set[tuple]:
    """(row, field, check, severity) of every finding."""
    return set(findings.frame.select("row", "field", "check", "severity").iter_rows())


class TestCleanData:
    def test_clean_rows_have_no_findings(self, tmp_path, mini_study, clean_rows):
        findings = run(tmp_path, mini_study, clean_rows)
        assert findings.clean, findings.to_table()
        assert findings.rows_checked == 5
        assert list(findings.frame.schema) == list(COLUMNS)


class TestValueChecks:
    def test_type_format_range_choice(self, tmp_path, mini_study, clean_rows):
        clean_rows[0].update(age="34.5", weight="70.55", height="tall", sex="3", mood="101", visit_time="2025-01-10")
        clean_rows[3].update(email="bo at example", dob="2030-01-01", race___2="2")
        clean_rows[1].update(dose="5000", start="2024-02-30", drug="prozac")
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == {
            (1, "age", "type", "error"),
            (1, "weight", "format", "error"),
            (1, "height", "type", "error"),
            (1, "sex", "choice", "error"),
            (1, "mood", "range", "error"),
            (1, "visit_time", "type", "error"),
            # the calc uses height, which is now unreadable: REDCap would compute blank
            (1, "bmi", "calc_mismatch", "error"),
            # sex is no longer '1', so 'pregnant' is hidden but has a value
            (1, "pregnant", "hidden_value", "warning"),
            (4, "email", "format", "error"),
            (4, "dob", "range", "error"),
            (4, "race___2", "choice", "error"),
            (2, "dose", "range", "error"),
            (2, "start", "type", "error"),
            (2, "drug", "choice", "error"),
            # lactating is shown by the record's sex (read from its non-repeating row): now hidden
            (2, "lactating", "hidden_value", "warning"),
            (3, "lactating", "hidden_value", "warning"),
        }

    def test_findings_name_record_and_instance(self, tmp_path, mini_study, clean_rows):
        clean_rows[2]["dose"] = "-1"
        f = run(tmp_path, mini_study, clean_rows)
        row = f.frame.row(0, named=True)
        assert row | {"message": None} == {
            "row": 3,
            "record": "001",
            "event": None,
            "instance": 2,
            "field": "dose",
            "value": "-1",
            "check": "range",
            "severity": "error",
            "message": None,
        }
        assert "0 to 3000" in row["message"]

    def test_missing_data_codes_are_accepted_everywhere(self, tmp_path, mini_study, clean_rows):
        clean_rows[0].update(age="UNK", email="UNK", height="UNK", bmi="")
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == set()

    def test_min_max_today_follows_as_of(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["dob"] = "2025-06-01"
        intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), mini_study)
        assert validate(intake, as_of=dt.date(2026, 1, 1)).clean
        assert found(validate(intake, as_of=dt.date(2025, 1, 1))) == {(1, "dob", "range", "error")}


class TestBranchingAndRequired:
    def test_required_only_where_shown_and_form_started(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["pregnant"] = ""  # shown (sex = 1) and required -> error
        clean_rows[3]["screen_date"] = ""  # required, no branching -> error
        clean_rows[3]["symptoms___b"] = "0"  # required checkbox with nothing ticked -> error
        clean_rows[4]["drug"] = ""  # required in an instance row -> error, instance 1 of record 002
        clean_rows.append({"record_id": "003"})  # nothing entered: form not started, no required errors
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == {
            (1, "pregnant", "required", "error"),
            (4, "screen_date", "required", "error"),
            (4, "symptoms", "required", "error"),
            (5, "drug", "required", "error"),
        }
        assert f.frame.filter(pl.col("field") == "drug").row(0, named=True)["instance"] == 1

    def test_hidden_required_field_left_blank_is_fine(self, tmp_path, mini_study, clean_rows):
        clean_rows[3]["pregnant"] = ""  # male: pregnant is hidden, so required does not apply
        assert run(tmp_path, mini_study, clean_rows).clean

    def test_value_in_hidden_field_is_a_warning(self, tmp_path, mini_study, clean_rows):
        clean_rows[3]["pregnant"] = "0"
        clean_rows[1]["drug_other"] = "fluoxetine"  # drug is sertraline: drug_other hidden
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == {(4, "pregnant", "hidden_value", "warning"), (2, "drug_other", "hidden_value", "warning")}
        assert f.errors == 0 and f.warnings == 2


class TestCalculatedFields:
    def test_disagreeing_and_missing_calc(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["bmi"] = "26.0"
        clean_rows[3]["bmi"] = ""
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == {(1, "bmi", "calc_mismatch", "error"), (4, "bmi", "calc_missing", "warning")}
        message = f.frame.filter(pl.col("check") == "calc_mismatch").item(0, "message")
        assert "calculated: 24.4" in message

    def test_rounded_stored_value_agrees(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["bmi"] = "24"  # 24.4 stored with no decimals
        assert run(tmp_path, mini_study, clean_rows).clean


class TestShape:
    def test_unknown_column_and_misplaced_values(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["favourite_colour"] = "blue"
        clean_rows[1]["age"] = "40"  # an enrol field on a history instance row
        clean_rows[0]["dose"] = "10"  # a history field on the record's own row
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == {
            (None, "favourite_colour", "unknown_column", "error"),
            (2, "age", "misplaced", "error"),
            (1, "dose", "misplaced", "error"),
        }

    def test_a_column_with_no_name_says_so(self, tmp_path, mini_study, clean_rows):
        # a trailing comma on every line of a spreadsheet's CSV: "column is not a field of study" named nothing
        path = shared.write_csv(tmp_path / "intake.csv", clean_rows)
        path.write_text("\n".join(line + "," if line else line for line in path.read_text().split("\n")))
        f = validate(read_intake(path, mini_study), as_of=AS_OF)
        [row] = f.frame.filter(pl.col("check") == "unknown_column").to_dicts()
        assert row["field"] == "" and row["message"].startswith("a column with no name in the header")

    def test_keys_duplicates_and_repeat_columns(self, tmp_path, mini_study, clean_rows):
        clean_rows.append(dict(clean_rows[1]))  # instance 1 of record 001 again
        clean_rows.append({"record_id": "", "age": "40"})
        clean_rows[4].update(redcap_repeat_instrument="histroy")
        clean_rows[2].update(redcap_repeat_instance="0")
        f = run(tmp_path, mini_study, clean_rows)
        got = found(f)
        assert (2, "record_id", "duplicate_row", "error") in got
        assert (6, "record_id", "duplicate_row", "error") in got
        assert (7, "record_id", "record_id", "error") in got
        assert (5, "redcap_repeat_instrument", "repeat_instrument", "error") in got
        assert (3, "redcap_repeat_instance", "repeat_instance", "error") in got


class TestIdentifiers:
    def test_identifier_values_never_reach_any_output(self, tmp_path, mini_study, clean_rows):
        clean_rows[0].update(dob="1890-07-14", email="secret-person@@example.org")
        f = run(tmp_path, mini_study, clean_rows)
        assert found(f) == {(1, "dob", "range", "error"), (1, "email", "format", "error")}
        assert set(f.frame.get_column("value").to_list()) == {MASK}
        for text in (f.to_table(), f.to_csv(), f.to_json(), str(list(f))):
            assert "1890-07-14" not in text and "secret-person" not in text
        assert json.loads(f.to_json())["findings"][0]["value"] == MASK

    def test_a_calculated_identifier_keeps_its_recomputed_value_out_of_the_message(
        self, tmp_path, mini_study, clean_rows
    ):
        # A calc flagged as identifier: its stored value is masked, and so is the value the calculation gives.
        enrol = next(i for i in mini_study.instruments if i.name == "enrol")
        fields = tuple(replace(f, identifier=True) if f.name == "bmi" else f for f in enrol.fields)
        instruments = tuple(replace(i, fields=fields) if i.name == "enrol" else i for i in mini_study.instruments)
        study = replace(mini_study, instruments=instruments)
        clean_rows[0].update(bmi="31.9")
        f = run(tmp_path, study, clean_rows)
        (row,) = [r for r in f.frame.iter_rows(named=True) if r["check"] == "calc_mismatch"]
        assert (row["field"], row["value"]) == ("bmi", MASK)
        assert row["message"] == "stored value differs from the calculation"
        assert "31.9" not in f.to_json() and "24.4" not in f.to_json()


class TestLongitudinal:
    def test_events_and_cross_event_branching(self, tmp_path, kap_study):
        rows = [
            {
                "record_id": "1",
                "redcap_event_name": "screening_arm_1",
                "childbearing_potential": "0",
                "demographics_complete": "2",
            },
            # pregnancy test fields are shown only if [screening_arm_1][childbearing_potential] = '1'
            {
                "record_id": "1",
                "redcap_event_name": "baseline_arm_1",
                "preg_test_result": "0",
                "pregnancy_test_complete": "2",
            },
            {
                "record_id": "2",
                "redcap_event_name": "screening_arm_1",
                "childbearing_potential": "1",
                "demographics_complete": "2",
            },
            {
                "record_id": "2",
                "redcap_event_name": "baseline_arm_1",
                "preg_test_result": "0",
                "pregnancy_test_complete": "2",
            },
            {"record_id": "2", "redcap_event_name": "week_9", "childbearing_potential": "1"},
            # demographics is not designated for the baseline event
            {"record_id": "3", "redcap_event_name": "baseline_arm_1", "childbearing_potential": "1"},
        ]
        rows = [r | {"redcap_repeat_instrument": "", "redcap_repeat_instance": ""} for r in rows]
        f = run(tmp_path, kap_study, rows)
        got = set(f.frame.select("row", "event", "field", "check").iter_rows())
        assert got == {
            (2, "baseline_arm_1", "preg_test_result", "hidden_value"),
            (5, "week_9", "redcap_event_name", "event"),
            (5, "week_9", "childbearing_potential", "misplaced"),
            (6, "baseline_arm_1", "childbearing_potential", "misplaced"),
        }


class TestApi:
    def test_validate_against_another_study_rebuilds(self, tmp_path, mini_study, kap_study, clean_rows):
        intake = read_intake(shared.write_csv(tmp_path / "i.csv", clean_rows), mini_study)
        f = validate(intake, kap_study, as_of=AS_OF)
        assert "unknown_column" in f.frame.get_column("check").to_list()

    def test_findings_renderings(self, tmp_path, mini_study, clean_rows):
        clean_rows[0]["age"] = "200"
        f = run(tmp_path, mini_study, clean_rows)
        assert pl.read_csv(f.to_csv().encode()).height == 1
        data = json.loads(f.to_json())
        assert data["errors"] == 1 and data["findings"][0]["field"] == "age"
        assert "outside the range 18 to 75" in f.to_table()
        assert f.records_with_errors().to_list() == ["001"]
        assert [x.field for x in f] == ["age"]

    def test_logic_that_cannot_be_evaluated_is_reported_not_fatal(self, mini_study, clean_rows):
        enrol = mini_study.instrument("enrol")
        broken = replace(enrol.field("pregnant"), show_if="[sex] = = '1'")
        fields = tuple(broken if fl.name == "pregnant" else fl for fl in enrol.fields)
        study = replace(mini_study, instruments=(replace(enrol, fields=fields), *mini_study.instruments[1:]))
        intake = IntakeData.from_frame(shared.rows_frame(clean_rows), study)
        f = validate(intake, as_of=AS_OF)
        assert found(f) == {(None, "pregnant", "logic", "warning")}


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_render_empty(tmp_path, mini_study, clean_rows, fmt):
    text = run(tmp_path, mini_study, clean_rows).render(fmt)
    assert "Traceback" not in text and text


def test_render_refuses_an_unknown_format_as_a_usage_error(tmp_path, mini_study, clean_rows):
    with pytest.raises(UsageError, match="unknown format 'xml'"):
        run(tmp_path, mini_study, clean_rows).render("xml")


def test_a_typed_read_is_validated_as_its_text_with_the_files_row_numbers(tmp_path, kap_study, repo_root):
    """validate() given screening's read of a Parquet file (keep_types: typed columns, rows grouped by kind) finds
    what it finds in the plain read of the same file: same rows, fields and checks. Dates stored as date-times at
    midnight are dates (not 'invalid date'), and row numbers are the file's."""
    from trialkit.records.convert import study_columns

    text = pl.read_csv(repo_root / "examples" / "kap_trd_intake.csv", infer_schema=False)
    kinds = {c.name: c.kind for c in study_columns(kap_study)}
    casts = [pl.col(n).str.to_datetime("%Y-%m-%d", strict=False) for n in text.columns if kinds.get(n) == "date"]
    casts += [pl.col(n).cast(pl.Float64, strict=False) for n in text.columns if kinds.get(n) in ("integer", "number")]
    path = tmp_path / "typed.parquet"
    text.with_columns(casts).with_columns(pl.col("redcap_repeat_instance").cast(pl.Int64)).write_parquet(path)
    typed = read_intake(path, kap_study, keep_types=True, columns=set(text.columns))
    assert typed.raw.schema["dob"] == pl.Datetime("us") or typed.raw.schema["dob"] == pl.Date
    assert not typed.raw.get_column("_row").is_sorted()  # read by form: the candidates' rows first
    plain = read_intake(path, kap_study)
    a, b = validate(typed, as_of=AS_OF), validate(plain, as_of=AS_OF)
    assert found(a) == found(b) and a.frame.height == b.frame.height > 0
