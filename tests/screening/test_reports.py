"""Reports: golden files for every format (volatile parts normalised), the JSON shape the issue fixes, a
self-contained HTML page, and a screening log that never carries identifier fields.

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 python -m pytest tests/screening`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from trialkit.errors import UsageError
from trialkit.screening.reports import (
    LOG_COLUMNS,
    build_report,
    render_csv,
    render_html,
    render_json,
    render_screening_log,
    render_table,
    to_document,
)
from trialkit.screening.reports import render as render_format
from trialkit.screening.run import identifier_fields

GOLDEN = Path(__file__).parent / "golden"

CANDIDATES = {
    "0001": ({}, None),  # eligible
    # ineligible: I5 (and E5); the total is computed from the items
    "0002": ({**{f"madrs_{i}": "2" if i <= 6 else "0" for i in range(1, 11)}, "madrs_total": "12", "vs_sbp_2": "175"},
             None),
    "0003": ({"madrs_total": None, "madrs_10": None, "inv_name": None, "inv_date": None}, None),  # pending
    "0004": (
        {
            "sex": "1",
            "childbearing_potential": "1",
            "pregnant": "0",
            "breastfeeding": "0",
            "preg_test_result": "1",
            "preg_test_date": "2026-10-26",
            "dob": "1995-03-02",
        },
        None,
    ),  # I7 + E6
    "0005": ({"current_ad": "1", "current_ad_stable_date": None}, []),  # pending: I6 date, no history
}


@pytest.fixture
def report(run, study):
    return build_report(run(CANDIDATES), study=study, source="intake.csv")


def _normalise(text: str, sha: str) -> str:
    from trialkit import __version__

    text = text.replace(f"trialkit {__version__}", "trialkit VERSION")
    text = text.replace(f'"trialkit_version": "{__version__}"', '"trialkit_version": "VERSION"')
    return text.replace(sha, "SHA256").replace(sha[:12], "SHA12")


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not os.environ.get("UPDATE_GOLDEN"):
            pytest.fail(f"golden file {name} was missing and has been written; check it in and re-run")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("screening.json", render_json),
        ("screening.csv", render_csv),
        ("table.txt", render_table),
        ("screening_log.csv", render_screening_log),
        ("report.html", render_html),
    ],
)
def test_golden(report, name, render):
    sha = report.screening.rules.stamp()["sha256"]
    _check_golden(name, _normalise(render(report), sha))


def test_files_written_directly_hold_the_rendered_text(report, run):
    """`screen --out x.csv` and `--log` write polars' bytes straight to the file: the same bytes as the text the
    golden files pin, defused formulas included."""
    from trialkit.screening.reports import write_csv, write_screening_log

    for make, write in ((render_csv, write_csv), (render_screening_log, write_screening_log)):
        out = io.BytesIO()
        write(report, out)
        assert out.getvalue().decode("utf-8") == make(report)
    risky = build_report(run({"=cmd|x": CANDIDATES[next(iter(CANDIDATES))]}))
    out = io.BytesIO()
    write_csv(risky, out)
    assert "\n'=cmd|x," in out.getvalue().decode("utf-8")


def test_json_in_pieces_is_the_same_document(run, monkeypatch):
    """`screen --format json --out` writes the report piece by piece: whatever the slice size and the number of
    checklists, the pieces make exactly render_json's text (the golden file pins it) and valid JSON."""
    from trialkit.cli.options import wrap_json_text
    from trialkit.cli.screen import _write_json
    from trialkit.screening import reports

    screening = run(CANDIDATES)
    for checklists in (0, 2, None):
        whole = render_json(build_report(screening, checklists=checklists))
        for size in (1, 3, 50_000):
            monkeypatch.setattr(reports, "_JSON_SLICE", size)
            report = build_report(screening, checklists=checklists)
            assert "".join(reports.json_pieces(report)) == whole
            out = io.BytesIO()
            _write_json(report, out)
            assert out.getvalue().decode("utf-8") == wrap_json_text(whole, "screen", True)
            assert len(json.loads(out.getvalue())["candidates"]) == len(CANDIDATES)


def test_json_keeps_a_value_with_a_unicode_line_separator(run):
    """JSON leaves U+2028 and U+0085 unescaped; the compact candidate lines must not be split there."""
    odd = "a\u2028b\u0085c"
    screening = run({odd: CANDIDATES[next(iter(CANDIDATES))], **CANDIDATES})
    for checklists in (0, None):  # a compact line, and a checklist
        doc = json.loads(render_json(build_report(screening, checklists=checklists)))
        assert odd in [c["record_id"] for c in doc["candidates"]]


def test_json_has_the_shape_the_issue_fixes(report):
    doc = json.loads(render_json(report))
    assert set(doc["ruleset"]) == {"id", "version", "sha256"}
    assert doc["ruleset"]["id"] == "kap_trd" and len(doc["ruleset"]["sha256"]) == 64
    assert doc["as_of"] == "2026-11-02"
    assert doc["summary"]["by_disposition"] == {"eligible": 1, "ineligible": 2, "pending": 2}
    assert doc["summary"]["by_reason"] == {"I5": 1, "I7": 1}
    assert doc["summary"]["by_any_reason"] == {"I5": 1, "I7": 1, "E5": 1, "E6": 1}
    by_id = {c["record_id"]: c for c in doc["candidates"]}
    assert list(by_id) == list(CANDIDATES)
    for c in doc["candidates"]:
        assert set(c) >= {"record_id", "disposition", "primary_reason", "criteria"}
        assert c["disposition"] in {"eligible", "ineligible", "pending"}
        assert [x["id"] for x in c["criteria"]] == [f"I{i}" for i in range(1, 9)] + [f"E{i}" for i in range(1, 14)]
        for crit in c["criteria"]:
            # the codes stay as they were; the words come beside them
            assert set(crit) == {"id", "kind", "result", "missing", "to_correct", "values", "text", "values_text"}
            assert crit["result"] in {"met", "not_met", "unknown", "not_applicable"}
    assert by_id["0002"]["primary_reason"] == "I5"
    i5 = next(x for x in by_id["0002"]["criteria"] if x["id"] == "I5")
    assert i5["values"]["madrs_total"] == 12 and i5["result"] == "not_met"
    pending = by_id["0005"]
    assert pending["primary_reason"] is None
    assert pending["still_needed"] == ["atrq", "current_ad_stable_date"]  # protocol order: I4 before I6
    assert pending["still_needed_text"] == [
        "Antidepressant treatment history: none recorded yet",
        "Concomitant medications: Date since which the current antidepressant dose has been unchanged",
    ]
    assert by_id["0002"]["primary_reason_text"].startswith("MADRS total >= 20")
    i2 = next(x for x in by_id["0001"]["criteria"] if x["id"] == "I2")
    assert i2["values"]["mini_mdd"] == "1" and i2["values_text"]["mini_mdd"] == "MINI: major depressive disorder: Yes"
    assert doc["source"] == "intake.csv" and doc["trialkit_version"]
    assert doc == to_document(report) | {}  # render_json is exactly the document


def test_html_is_self_contained_and_printable(report):
    html = render_html(report)
    assert html.startswith("<!DOCTYPE html>")
    # no network assets: one inline script (sorting, filtering), no external scripts, styles, images or fonts
    assert html.count("<script") == 1 and "<script src" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and not re.search(r"url\((?!#)", html)  # only in-page references
    assert "@media print" in html
    # the flow and the tables carry the counts, each criterion's text beside its id (printed, not a tooltip)
    assert "Assessed for eligibility" in html and "(n = 5)" in html
    assert "Excluded (n = 2)" in html and "Inclusion not met (n = 2)" in html
    i5 = r'<span class="cid">I5</span> MADRS total &gt;= 20 at screening[^<]*<span class="count">n = 1'
    assert re.search(i5, html)
    assert "<title>" not in html.split("<body>", 1)[1]  # no text that only a mouse can see
    for rid in CANDIDATES:
        assert f'id="c-{rid}"' in html
    assert "2026-11-02" in html
    # what it was made from, by which trialkit
    assert "Made from <strong>intake.csv</strong>" in html and "by trialkit " in html
    # words: a choice label beside the field's label and name; still needed grouped by form
    assert "MINI: major depressive disorder <code>mini_mdd</code>: <strong>Yes</strong>" in html
    assert "<li>Investigator safety review: Investigator name, Date of the review</li>" in html
    # with JavaScript off the filters stay hidden and every candidate is listed
    assert '<div class="controls" id="filters" hidden>' in html
    assert html.count("<tr data-disposition=") == len(CANDIDATES)


def test_html_escapes_data(run):
    rep = build_report(run({"<b>x</b>": ({}, None)}))
    html = render_html(rep)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_screening_log_has_no_identifiers(report, study):
    ids = identifier_fields(study)
    assert {"first_name", "last_name", "dob", "email"} <= set(ids)
    text = render_screening_log(report, identifiers=ids)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == LOG_COLUMNS
    for secret in ("Pat", "Example", "pat@example.org", "1980-05-17", "1995-03-02"):
        assert secret not in text
    by_id = {r["screen_id"]: r for r in rows}
    assert by_id["0002"]["disposition"] == "ineligible" and by_id["0002"]["all_reasons"] == "I5;E5"
    assert by_id["0003"]["disposition"] == "pending_data"
    assert by_id["0001"]["consent_date"] == "2026-10-24" and by_id["0001"]["screened_on"] == "2026-10-26"
    assert all(r["ruleset"] == "kap_trd@" + report.screening.rules.stamp()["version"] for r in rows)


def test_screening_log_drops_a_column_that_is_an_identifier(report):
    rows = render_screening_log(report, identifiers=("consent_date",))
    assert "2026-10-24" not in rows


def test_html_caps_the_checklists_but_lists_every_candidate(report):
    html = render_html(report, max_checklists=2)
    assert html.count('class="candidate"') == 2
    assert "Checklists of the first 2 of 5 candidates" in html
    assert all(f">{rid}<" in html for rid in CANDIDATES)


def test_render_refuses_an_unknown_format(report):
    with pytest.raises(UsageError, match="unknown format 'pdf'"):
        render_format(report, "pdf")


def test_identifier_values_never_reach_a_report(repo_root):
    """A report may be printed or mailed: identifier (PHI) fields show as *** (blank stays blank)."""
    import polars as pl

    from trialkit.definitions import load_study
    from trialkit.screening import build_report, load_rules, render_html, render_json, screen_file
    from trialkit.screening.run import DEMO_AS_OF

    study = load_study(repo_root)
    data = repo_root / "examples" / "kap_trd_intake.csv"
    rules = load_rules(repo_root / "eligibility_rules" / "kap_trd.yaml", study)
    report = build_report(screen_file(data, rules, study, as_of=DEMO_AS_OF), study=study)
    text = render_json(report) + render_html(report) + render_table(report, details=True)
    identifiers = [f.name for f in study.iter_fields() if f.identifier]
    assert "dob" in identifiers and "dob" in rules.identifiers
    raw = pl.read_csv(data, infer_schema=False)
    leaked = {
        (name, value)
        for name in identifiers if name in raw.columns
        for value in raw[name].drop_nulls().unique().to_list()
        if len(value) >= 6 and value in text
    }
    assert not leaked, sorted(leaked)[:5]


def test_the_result_table_says_what_each_checklist_says(run):
    from trialkit.screening.explain import candidates
    from trialkit.screening.table import result_table

    s = run({**CANDIDATES, "0006": ({"vs_sbp_1": "16", "mini_mdd": "Yes"}, None)})
    table = {row["record_id"]: row for row in result_table(s).iter_rows(named=True)}
    for c in candidates(s):
        row = table[c.record_id]
        assert (row["disposition"], row["primary_reason"] or None) == (c.disposition, c.primary_reason)
        assert (row["reasons"].split(";") if row["reasons"] else []) == list(c.reasons)
        assert (row["still_needed"].split(";") if row["still_needed"] else []) == list(c.still_needed)
        assert (row["to_correct"].split(";") if row["to_correct"] else []) == list(c.to_correct)
        assert [row[o.id] for o in c.criteria] == [o.result for o in c.criteria]


def test_checklists_are_built_for_a_bounded_number_of_candidates(run):
    report = build_report(run(CANDIDATES), checklists=2)
    assert len(report.candidates) == 2 and report.total == 5
    doc = json.loads(render_json(report))
    assert doc["checklists"] == 2 and len(doc["candidates"]) == 5
    assert [("criteria" in c) for c in doc["candidates"]] == [True, True, False, False, False]
    full = json.loads(render_json(build_report(run(CANDIDATES))))
    for slim, whole in zip(doc["candidates"], full["candidates"], strict=True):
        assert slim == {k: v for k, v in whole.items() if k != "criteria" or "criteria" in slim}
    assert render_csv(report) == render_csv(build_report(run(CANDIDATES)))
    html = render_html(report)
    assert "Checklists of the first 2 of 5 candidates" in html


def test_the_terminal_table_shows_control_characters_of_the_data_as_text(run, study):
    # a drug name typed with a line break (or pasted with a terminal escape) broke the checklist's lines, and an
    # escape sequence in the data reached the coordinator's terminal as a command
    from trialkit.screening.reports import render_table

    odd = {"atrq_drug": "other", "atrq_drug_other": "zuranolone\nnew line \x1b[2J\r\x07"}
    from .conftest import TRIALS

    report = build_report(run({"0001": ({}, [odd, *TRIALS])}), study=study)
    text = render_table(report, details=True)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert not any(line.startswith("new line") for line in text.splitlines())
    assert "zuranolone\\nnew line \\x1b[2j\\r\\x07" in text  # the name as I4 compares it (lower case)
