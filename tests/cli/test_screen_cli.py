"""`trialkit screen`: formats, --out/--log, the as-of line, exit codes 0/1/2, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from intake_data import first_candidates

from trialkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["screen", *args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """The first 40 candidates of the example data set (all their rows)."""
    return first_candidates(tmp_path_factory.mktemp("screen"), 40)


def test_table_output_shows_stamp_and_as_of(capsys, small_data):
    code, out, err = run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02")
    assert code == 0, err
    assert out.startswith("Screening against kap_trd ")
    assert "as of 2026-11-02" in out.splitlines()[0]
    assert "40 assessed" in out
    assert "Traceback" not in err


def test_json_output_to_stdout(capsys, small_data):
    code, out, err = run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["as_of"] == "2026-11-02" and doc["ruleset"]["id"] == "kap_trd"
    assert len(doc["candidates"]) == 40
    assert "as of 2026-11-02" in err  # the as-of date is always printed


def test_html_and_log_to_files(capsys, small_data, tmp_path):
    html, log = tmp_path / "r.html", tmp_path / "log.csv"
    code, out, err = run(
        capsys,
        str(small_data),
        "--rules",
        str(RULES),
        "--as-of",
        "2026-11-02",
        "--format",
        "html",
        "--out",
        str(html),
        "--log",
        str(log),
    )
    assert code == 0, err
    assert out == ""
    assert html.read_text().startswith("<!DOCTYPE html>")
    rows = list(csv.DictReader(io.StringIO(log.read_text())))
    assert len(rows) == 40 and "first_name" not in rows[0] and "dob" not in rows[0]
    assert "written to" in err and "as of 2026-11-02" in err


def test_csv_format(capsys, small_data):
    code, out, _ = run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 40 and {r["disposition"] for r in rows} <= {"eligible", "ineligible", "pending"}
    assert rows[0]["as_of"] == "2026-11-02" and len(rows[0]["ruleset_sha256"]) == 64


def test_default_as_of_is_today_and_printed(capsys, small_data):
    import datetime as dt

    code, out, _ = run(capsys, str(small_data), "--rules", str(RULES))
    assert code == 0
    assert f"as of {dt.date.today().isoformat()}" in out


def test_bad_rule_file_exits_2_with_location(capsys, small_data, tmp_path):
    bad = tmp_path / "rules.yaml"
    text = RULES.read_text().replace("[madrs_total] >= 20", "[madrs_totl] >= 20")
    bad.write_text(text.replace("study: ../study.yaml", f"study: {ROOT / 'study.yaml'}"))
    code, _, err = run(capsys, str(small_data), "--rules", str(bad), "--as-of", "2026-11-02")
    assert code == 2
    line = next(x for x in err.splitlines() if "madrs_totl" in x)
    assert line.startswith(f"{bad}:")
    assert "Traceback" not in err


def test_unusable_data_exits_1(capsys, tmp_path):
    junk = tmp_path / "junk.csv"
    junk.write_text("this,is,not\n1,2,3\n")
    code, _, err = run(capsys, str(junk), "--rules", str(RULES), "--as-of", "2026-11-02")
    assert code == 1, err
    assert "Traceback" not in err


def test_data_without_any_rule_field_exits_1(capsys, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("record_id,colour\n1,blue\n2,red\n")
    code, _, err = run(capsys, str(other), "--rules", str(RULES), "--as-of", "2026-11-02")
    assert code == 1
    assert "none of the" in err and "fields the rules read" in err


def test_usage_errors_exit_2(capsys, small_data, tmp_path):
    assert run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-02-30")[0] == 2
    assert run(capsys, str(small_data))[0] == 2  # --rules is required
    assert run(capsys, str(tmp_path / "none.csv"), "--rules", str(RULES))[0] == 2
    assert run(capsys, str(small_data), "--rules", str(tmp_path / "none.yaml"))[0] == 2


def test_rules_outside_the_project_find_their_study_via_option(capsys, small_data, tmp_path):
    copy = tmp_path / "kap.yaml"
    shutil.copy(RULES, copy)  # its `study: ../study.yaml` no longer resolves
    code, _, err = run(capsys, str(small_data), "--rules", str(copy), "--study", str(ROOT), "--as-of", "2026-11-02")
    assert code == 0, err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["screen", "--help"])
    out = capsys.readouterr().out
    assert "Examples:" in out and "--as-of" in out


def test_parquet_and_json_inputs_screen_like_csv(capsys, small_data, tmp_path):
    import polars as pl

    frame = pl.read_csv(small_data, infer_schema=False)
    frame.write_parquet(tmp_path / "small.parquet")
    frame.write_json(tmp_path / "small.json")
    results = []
    for path in (small_data, tmp_path / "small.parquet", tmp_path / "small.json"):
        code, out, err = run(capsys, str(path), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", "csv")
        assert code == 0, err
        results.append(out)
    assert results[0] == results[1] == results[2]


def test_typed_parquet_screens_like_csv_and_unread_columns_are_not_loaded(capsys, small_data, tmp_path):
    import polars as pl

    from trialkit.definitions.loader import load_study
    from trialkit.records.convert import study_columns

    frame = pl.read_csv(small_data, infer_schema=False)
    kinds = {c.name: c.kind for c in study_columns(load_study(ROOT))}
    typed = []
    for name in frame.columns:  # dates and numbers as Parquet types, where every value reads as one
        target = {"date": pl.Date, "integer": pl.Int64, "number": pl.Float64}.get(kinds.get(name, ""))
        try:
            typed.append(frame.get_column(name).cast(target) if target else frame.get_column(name))
        except pl.exceptions.InvalidOperationError:
            typed.append(frame.get_column(name))
    # a column screening never reads, which REDCap text could not hold: it must not even be loaded
    typed.append(pl.Series("scanner_blob", [[1, 2]] * frame.height))
    pl.DataFrame(typed).write_parquet(tmp_path / "typed.parquet")
    assert any(t == pl.Date for t in pl.read_parquet_schema(tmp_path / "typed.parquet").values())
    outs = []
    for path in (small_data, tmp_path / "typed.parquet"):
        code, out, err = run(capsys, str(path), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", "csv")
        assert code == 0, err
        outs.append(out)
    assert outs[0] == outs[1]


def test_one_record_shows_its_checklist(capsys, small_data):
    code, out, err = run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02", "--record", "0005")
    assert code == 0, err
    assert "1 assessed" in out
    assert "Record 0005: pending" in out
    assert "MISSING: vs_sbp_1" in out
    assert sum(line.startswith("  I") or line.startswith("  E") for line in out.splitlines()) == 21
    code, _, err = run(capsys, str(small_data), "--rules", str(RULES), "--record", "9999")
    assert code == 2 and "no candidate 9999" in err


def test_blank_calculated_fields_are_computed_before_screening(capsys, small_data, tmp_path):
    import polars as pl

    frame = pl.read_csv(small_data, infer_schema=False)
    calcs = ["madrs_total", "vs_bmi", "atrq_duration", "atrq_adequate", "atrq_failed", "age_screening"]
    stripped = tmp_path / "no_calcs.csv"
    frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in calcs).write_csv(stripped)
    outputs = []
    for path in (small_data, stripped):
        code, out, err = run(capsys, str(path), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", "json")
        assert code == 0, err
        doc = json.loads(out)
        outputs.append([(c["record_id"], c["disposition"], c["primary_reason"]) for c in doc["candidates"]])
    assert outputs[0] == outputs[1]
    assert any("calculated fields were computed" in n for n in doc["notes"])


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_standard_output_holds_what_the_file_holds(capsys, small_data, tmp_path, fmt):
    """CSV and JSON go to standard output through the same writer as to a file: the same text."""
    base = [str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", fmt]
    code, out, err = run(capsys, *base)
    assert code == 0, err
    code, _, err = run(capsys, *base, "--out", str(tmp_path / f"r.{fmt}"))
    assert code == 0, err
    assert out == (tmp_path / f"r.{fmt}").read_text(encoding="utf-8") and len(out) > 1000
    code, one, _ = run(capsys, *base, "--record", "0005")
    assert code == 0 and (json.loads(one)["command"] == "screen" if fmt == "json" else one.count("\n") == 2)


def test_a_log_that_cannot_be_written_leaves_one_json_object_on_stdout(capsys, small_data, tmp_path):
    """--format json with a --log path that cannot be written: exit 2, and stdout holds only the error envelope
    (the log is written before the report is printed)."""
    code, out, err = run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02", "--format", "json",
                         "--log", str(tmp_path / "no-such-folder" / "log.csv"))
    assert code == 2 and "cannot write" in err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["error"]["type"] == "UsageError"


@pytest.mark.parametrize(
    "broken",
    [("kind: inclusion", "kind: inclsion"), ("protocol:", "protocl:"), ("version: \"1.0.0\"", "version: [1]")],
    ids=["bad kind", "missing protocol", "wrong type"],
)
def test_a_rule_file_schema_error_is_reported_not_a_missing_study(capsys, small_data, tmp_path, monkeypatch, broken):
    # the rule file names its study; when the file fails its schema, screen fell back to ./study.yaml and said
    # "no study file here" instead of what is wrong in the rule file
    text = RULES.read_text(encoding="utf-8").replace(*broken, 1).replace("study: ../study.yaml",
                                                                          f"study: {ROOT / 'study.yaml'}")
    rules = tmp_path / "rules.yaml"
    rules.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, str(small_data), "--rules", str(rules), "--as-of", "2026-11-02")
    assert code == 2
    assert "rules.yaml:" in err and "SCH0" in err
    assert "no study file" not in err and "Traceback" not in err


def test_a_missing_rule_file_is_named_not_a_missing_study(capsys, small_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, str(small_data), "--rules", "nope.yaml", "--as-of", "2026-11-02")
    assert code == 2 and "nope.yaml" in err and "no study file" not in err


@pytest.mark.parametrize(("given", "hint"), [("40", "mean 0040?"), ("00040", "mean 0040?"), ("7", "mean 0007?")])
def test_a_record_id_without_its_zeros_names_the_one_in_the_data(capsys, small_data, given, hint):
    code, _, err = run(capsys, str(small_data), "--rules", str(RULES), "--record", given, "--as-of", "2026-11-02")
    assert code == 2 and f"no candidate {given}" in err and hint in err
    assert "0001" not in err  # only the near id, never a list of the data's ids


def test_a_record_id_with_spaces_is_read_as_the_data_ids_are(capsys, small_data):
    code, out, err = run(capsys, str(small_data), "--rules", str(RULES), "--record", " 0040 ", "--as-of", "2026-11-02",
                         "--format", "csv")
    assert code == 0, err
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["0040"]


@pytest.mark.parametrize("name", ["log.json", "log.html"])
def test_a_log_named_for_another_format_is_a_usage_error_and_nothing_is_written(capsys, small_data, tmp_path, name):
    # the screening log is CSV: it was written as CSV into log.json (--out refuses such a name; --log did not)
    log = tmp_path / name
    code, out, err = run(capsys, str(small_data), "--rules", str(RULES), "--as-of", "2026-11-02", "--log", str(log))
    assert code == 2 and "name it .csv" in err and out == ""
    assert not log.exists()
