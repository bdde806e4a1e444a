from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trialkit.cli import main

EXPORT = """record_id,redcap_event_name,age,dob,meds___1,meds___2,weight
1,screening_arm_1,20,2000-01-01,1,0,80
1,baseline_arm_1,,,0,0,78
2,screening_arm_1,,1990-05-05,0,1,
3,screening_arm_1,17,2007-01-01,0,0,90
"""

CLASSIC = """\ufeffrecord_id,age,score
10,30,2.5
11,,
12,x,4
"""


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture
def export(tmp_path: Path) -> str:
    path = tmp_path / "export.csv"
    path.write_text(EXPORT)
    return str(path)


def test_check_valid_expression_exits_zero(capsys):
    code, out, _ = run(["logic", "check", "[age] >= 18 and datediff([dob], 'today', 'y') < 75"], capsys)
    assert code == 0 and out.strip() == "ok"


def test_check_syntax_error_exits_two_with_position_and_caret(capsys):
    code, _, err = run(["logic", "check", "datediff([dob], 'today', 'y' >= 18"], capsys)
    assert code == 2
    lines = err.splitlines()
    assert lines[0] == "1:35: LOG001 expected ',' or ')' after arguments of datediff, found end of input"
    assert lines[2].index("^") - 2 == 34


def test_check_unknown_function_is_an_error_without_instruments(capsys):
    code, _, err = run(["logic", "check", "datedif([a], [b], 'd') > 1"], capsys)
    assert code == 2 and "did you mean datediff()" in err


def test_check_json_format(capsys):
    code, out, _ = run(["logic", "check", "[a] = ", "--format", "json"], capsys)
    assert code == 2
    report = json.loads(out)
    assert report["valid"] is False and report["diagnostics"][0]["col"] == 7


def test_check_against_the_kap_study_instruments(repo_root: Path, capsys):
    if not (repo_root / "study.yaml").exists():
        pytest.skip("the KAP study definitions are not present")
    code, out, _ = run(["logic", "check", "[madrs_total] >= 20", "--instruments", str(repo_root)], capsys)
    assert code == 0, out
    code, _, err = run(
        ["logic", "check", "[madrs_totl] >= 20 and [consent_date] > 5", "--instruments", str(repo_root)], capsys
    )
    assert code == 2
    assert "LOGIC001 unknown field [madrs_totl]; did you mean [madrs_total]" in err
    assert "LOGIC008" in err


def test_eval_prints_csv_per_record_event_in_kleene_mode(export, capsys):
    code, out, _ = run(
        ["logic", "eval", "[age] >= 18 or [meds(2)] = '1'", "--data", export, "--mode", "kleene", "--explain"], capsys
    )
    assert code == 0
    assert out.splitlines() == [
        "record_id,redcap_event_name,value,missing",
        "1,screening_arm_1,true,",
        "1,baseline_arm_1,unknown,age",
        "2,screening_arm_1,true,",
        "3,screening_arm_1,false,",
    ]


def test_eval_redcap_mode_numbers_blanks_and_other_events(export, capsys):
    code, out, _ = run(["logic", "eval", "[weight] - [screening_arm_1][weight]", "--data", export], capsys)
    assert code == 0
    assert out.splitlines()[1:] == [
        "1,screening_arm_1,0",
        "1,baseline_arm_1,-2",
        "2,screening_arm_1,",
        "3,screening_arm_1,0",
    ]
    code, out, _ = run(
        ["logic", "eval", "rounddown(datediff([dob], 'today', 'y'))", "--data", export, "--as-of", "2024-03-01"], capsys
    )
    assert out.splitlines()[1:] == [
        "1,screening_arm_1,24",
        "1,baseline_arm_1,",
        "2,screening_arm_1,33",
        "3,screening_arm_1,17",
    ]


def test_eval_classic_export_with_bom_text_and_json(tmp_path: Path, capsys):
    path = tmp_path / "classic.csv"
    path.write_text(CLASSIC, encoding="utf-8")
    code, out, _ = run(["logic", "eval", "if([age] > 18, [score] * 2, 'young')", "--data", str(path)], capsys)
    assert code == 0
    assert out.splitlines() == ["record_id,value", "10,5", "11,young", "12,8"]
    code, out, _ = run(["logic", "eval", "[age] = ''", "--data", str(path), "--format", "json"], capsys)
    doc = json.loads(out)
    assert (doc["command"], doc["ok"], doc["mode"]) == ("logic eval", True, "redcap")
    assert doc["results"] == [
        {"record_id": "10", "value": False},
        {"record_id": "11", "value": True},
        {"record_id": "12", "value": False},
    ]


def test_eval_errors_are_messages_not_tracebacks(export, tmp_path: Path, capsys):
    code, _, err = run(["logic", "eval", "[nope] = 1", "--data", export], capsys)
    assert code == 1 and "no column 'nope'" in err and "Traceback" not in err
    code, _, err = run(["logic", "eval", "[age] = 1", "--data", export, "--as-of", "2024-13-01"], capsys)
    assert code == 2 and "--as-of" in err
    code, _, err = run(["logic", "eval", "[age] = (", "--data", export], capsys)
    assert code == 2 and "LOG001" in err


def test_eval_says_a_relative_event_is_not_evaluated_rather_than_missing_from_the_data(export, capsys):
    # [previous-event-name] is REDCap's, not an event of the export: it was looked up as one ("no values on event
    # 'previous-event-name'", exit 1) as if the data lacked something
    code, _, err = run(["logic", "eval", "[previous-event-name][weight] > 5", "--data", export], capsys)
    assert code == 2 and "[previous-event-name] is not supported by the evaluator" in err
    assert "no values on event" not in err


def test_help_has_an_example():
    proc = subprocess.run(
        [sys.executable, "-m", "trialkit", "logic", "eval", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "Example" in proc.stdout and "--as-of" in proc.stdout


def test_eval_masks_values_computed_from_identifier_fields(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    path = tmp_path / "ids.csv"
    path.write_text("record_id,redcap_event_name,first_name,dob\n1,screening_arm_1,Bob Secretname,1984-01-01\n")
    for expression in ("year([dob])", "lower(concat([first_name], 'x'))", "left([first_name], 3)"):
        code, out, err = run(["logic", "eval", expression, "--data", str(path), "--instruments", str(root)], capsys)
        assert code == 0, err
        assert "1984" not in out and "bob" not in out.lower() and out.splitlines()[1].endswith(",***")
    code, out, _ = run(["logic", "eval", "[dob] <> ''", "--data", str(path), "--instruments", str(root)], capsys)
    assert out.splitlines()[1].endswith(",true")  # a truth value says nothing the flag protects


@pytest.mark.parametrize("kind", ["json", "ndjson", "parquet", "xlsx", "tsv"])
def test_eval_reads_every_intake_format(export, tmp_path: Path, capsys, kind):
    # docs/intake-messages.md: logic eval --data takes what validate and screen take; a JSON export was read as
    # a one-column CSV ("no column 'age'") and Parquet or Excel as "not UTF-8 text"
    import polars as pl

    frame = pl.read_csv(export, infer_schema_length=0)
    path = tmp_path / f"export.{kind}"
    if kind == "json":
        path.write_text(json.dumps([{k: v or "" for k, v in r.items()} for r in frame.to_dicts()]))
    elif kind == "ndjson":
        path.write_text("".join(json.dumps({k: v or "" for k, v in r.items()}) + "\n" for r in frame.to_dicts()))
    elif kind == "parquet":
        frame.write_parquet(path)
    elif kind == "tsv":
        frame.write_csv(path, separator="\t")
    else:
        import openpyxl

        book = openpyxl.Workbook()
        book.active.append(frame.columns)
        for row in frame.iter_rows():
            book.active.append(list(row))
        book.save(path)
    args = ["logic", "eval", "[age] >= 18", "--mode", "kleene", "--as-of", "2026-01-01"]
    code, expected, _ = run([*args, "--data", export], capsys)
    assert code == 0
    code, out, err = run([*args, "--data", str(path)], capsys)
    assert code == 0, err
    assert out == expected


def test_eval_of_a_header_only_file_exits_1(tmp_path: Path, capsys):
    path = tmp_path / "header.csv"
    path.write_text("record_id,age\n")
    code, out, err = run(["logic", "eval", "[age] >= 18", "--data", str(path)], capsys)
    assert code == 1 and "header.csv" in err and "no data rows" in err and out == ""
