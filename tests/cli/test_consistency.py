"""One command line (issue 12): --out's extension picks the format, one --study, one format vocabulary, one JSON
envelope, one exit-code policy shown at the end of every --help, dates as YYYY-MM-DD, typos get a suggestion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import intake_data as shared
import pytest
from click.testing import CliRunner
from intake_data import first_candidates

from trialkit.cli import cli, main

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"
MINI = str(shared.MINI_DIR)
AS_OF = "2026-11-02"


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """The first 5 candidates of the example data set (all their rows)."""
    return first_candidates(tmp_path_factory.mktemp("consistency"), 5)


@pytest.fixture
def clean_csv(tmp_path) -> Path:
    return shared.write_csv(tmp_path / "intake.csv", [dict(r) for r in shared.CLEAN_ROWS])


def _screen(small_data: Path, *args: str) -> list[str]:
    return ["screen", str(small_data), "--rules", str(RULES), "--as-of", AS_OF, *args]


# ---- --out picks the format; a contradiction is a usage error --------------------------------------------------


def test_screen_out_html_writes_html_without_format(capsys, small_data, tmp_path):
    out = tmp_path / "report.html"
    code, stdout, err = run(capsys, *_screen(small_data, "--out", str(out)))
    assert code == 0, err
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "html written to" in err and stdout == ""


def test_validate_and_dictionary_out_json_write_json(capsys, clean_csv, tmp_path):
    out = tmp_path / "findings.json"
    code, _, err = run(capsys, "validate", str(clean_csv), "--study", MINI, "--as-of", "2026-01-01", "--out", str(out))
    assert code == 0, err
    assert json.loads(out.read_text(encoding="utf-8"))["findings"] == []
    dd = tmp_path / "dd.json"
    code, _, err = run(capsys, "dictionary", "export", "--study", MINI, "--out", str(dd))
    assert code == 0, err
    assert json.loads(dd.read_text(encoding="utf-8"))[0]["field_name"] == "record_id"


def test_out_csv_extension_and_an_agreeing_format(capsys, small_data, tmp_path):
    out = tmp_path / "s.csv"
    code, _, err = run(capsys, *_screen(small_data, "--out", str(out)))
    assert code == 0, err
    assert out.read_text(encoding="utf-8").startswith("record_id,")
    code, _, err = run(capsys, *_screen(small_data, "--format", "csv", "--out", str(out)))
    assert code == 0, err


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "json", "--out", "report.html"),
        ("--format", "text", "--out", "report.csv"),
        ("--format", "table", "--out", "report.json"),  # the old name contradicts just the same
    ],
)
def test_format_contradicting_the_extension_is_a_usage_error(capsys, small_data, tmp_path, args):
    args = tuple(str(tmp_path / a) if a.startswith("report") else a for a in args)
    code, stdout, err = run(capsys, *_screen(small_data, *args))
    assert code == 2 and stdout == ""
    assert "contradicts" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_extension_the_command_cannot_write_is_a_usage_error(capsys, clean_csv, tmp_path):
    out = tmp_path / "findings.html"
    code, _, err = run(capsys, "validate", str(clean_csv), "--study", MINI, "--out", str(out))
    assert code == 2 and "does not write html" in err
    assert not out.exists()


# ---- one format vocabulary --------------------------------------------------------------------------------------


def test_text_is_the_human_format_everywhere_and_table_still_works(capsys, small_data, clean_csv):
    for args in (_screen(small_data), ["validate", str(clean_csv), "--study", MINI, "--as-of", "2026-01-01"]):
        default = run(capsys, *args)
        assert default[0] == 0, default[2]
        assert run(capsys, *args, "--format", "text") == default
        assert run(capsys, *args, "--format", "table") == default  # scripts written before keep working
    runner = CliRunner()
    for command in (["screen"], ["validate"], ["check"], ["logic", "check"], ["redcap", "nightly"]):
        shown = runner.invoke(cli, [*command, "--help"], terminal_width=200).output
        assert "text" in shown.split("Options:", 1)[1].split("--format", 1)[1].splitlines()[0], command
        assert "table" not in shown.split("--format", 1)[1].splitlines()[0], command


# ---- --study everywhere; --instruments a deprecated alias ------------------------------------------------------


def test_logic_commands_take_study(capsys):
    code, _, err = run(capsys, "logic", "check", "[madrs_totl] >= 20", "--study", str(ROOT))
    assert code == 2 and "madrs_total" in err  # the study's fields were read


def test_instruments_still_works_but_says_to_use_study(capsys, tmp_path):
    code, _, err = run(capsys, "logic", "check", "[madrs_totl] >= 20", "--instruments", str(ROOT))
    assert code == 2 and "madrs_total" in err
    assert "--instruments is deprecated; use --study" in err
    path = tmp_path / "ids.csv"
    path.write_text("record_id,redcap_event_name,first_name\n1,screening_arm_1,Bob\n", encoding="utf-8")
    for option in ("--study", "--instruments"):
        code, out, err = run(capsys, "logic", "eval", "lower([first_name])", "--data", str(path), option, str(ROOT))
        assert code == 0, err
        assert out.splitlines()[1] == "1,screening_arm_1,***"  # the study was used: identifier masked
    for both in (["--study", str(ROOT), "--instruments", str(ROOT)], ["--instruments", str(ROOT), "--study", "."]):
        code, _, err = run(capsys, "logic", "check", "[a] = 1", *both)
        assert code == 2 and "give --study or --instruments, not both" in err


def test_help_shows_study_not_instruments():
    runner = CliRunner()
    for command in (["logic", "check"], ["logic", "eval"]):
        shown = runner.invoke(cli, [*command, "--help"]).output
        assert "--study" in shown and "--instruments" not in shown


# ---- one JSON envelope ------------------------------------------------------------------------------------------


def _doc(out: str, command: str, ok: bool) -> dict:
    doc = json.loads(out)
    assert isinstance(doc, dict), command
    assert list(doc)[:2] == ["command", "ok"] and doc["command"] == command and doc["ok"] is ok
    return doc


def test_check_json_is_the_envelope_with_diagnostics(capsys, tmp_path, monkeypatch):
    (tmp_path / "instruments").mkdir()
    (tmp_path / "instruments" / "base.yaml").write_text(
        "instrument: base\nfields:\n  - name: record_id\n    type: text\n  - name: sex\n    type: radio\n"
    )
    (tmp_path / "study.yaml").write_text("study: demo\ninstruments: [base]\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "check", "--format", "json")
    doc = _doc(out, "check", False)
    assert code == 2 and doc["errors"] == 1 and doc["warnings"] == 0
    assert [d["code"] for d in doc["diagnostics"]] == ["DEF005"]
    code, out, _ = run(capsys, "check", "--format", "json", str(ROOT))
    doc = _doc(out, "check", True)
    assert code == 0 and doc["diagnostics"] == [] and doc["errors"] == 0


def test_logic_check_json_envelope(capsys):
    code, out, _ = run(capsys, "logic", "check", "[a] = ", "--format", "json")
    doc = _doc(out, "logic check", False)
    assert code == 2 and doc["valid"] is False and doc["diagnostics"][0]["code"] == "LOG001"
    code, out, _ = run(capsys, "logic", "check", "[a] = 1", "--format", "json")
    doc = _doc(out, "logic check", True)
    assert code == 0 and doc["valid"] is True and doc["diagnostics"] == []


def test_logic_eval_json_has_real_booleans_and_numbers(capsys, tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("record_id,age,score\n10,30,2.5\n11,,\n12,17,4\n", encoding="utf-8")
    code, out, _ = run(capsys, "logic", "eval", "[age] >= 18", "--data", str(path), "--format", "json",
                       "--mode", "kleene")
    doc = _doc(out, "logic eval", True)
    assert code == 0 and doc["mode"] == "kleene"
    assert doc["results"] == [
        {"record_id": "10", "value": True},
        {"record_id": "11", "value": None},  # unknown
        {"record_id": "12", "value": False},
    ]
    code, out, _ = run(capsys, "logic", "eval", "[score] * 2", "--data", str(path), "--format", "json")
    assert [r["value"] for r in _doc(out, "logic eval", True)["results"]] == [5, None, 8]


def test_validate_and_screen_json_carry_the_envelope(capsys, clean_csv, small_data):
    code, out, _ = run(capsys, "validate", str(clean_csv), "--study", MINI, "--as-of", "2026-01-01",
                       "--format", "json")
    doc = _doc(out, "validate", True)
    assert code == 0 and doc["findings"] == []
    code, out, _ = run(capsys, *_screen(small_data, "--format", "json"))
    doc = _doc(out, "screen", True)
    assert code == 0 and doc["as_of"] == AS_OF and len(doc["candidates"]) == 5


# ---- one exit-code policy --------------------------------------------------------------------------------------


def test_an_unreadable_data_file_is_exit_1_in_validate_as_in_screen(capsys, tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not parquet")
    validate = run(capsys, "validate", str(path), "--study", str(ROOT))
    screen = run(capsys, "screen", str(path), "--rules", str(RULES), "--as-of", AS_OF)
    assert validate[0] == screen[0] == 1
    assert "cannot read as parquet" in validate[2] and "cannot read as parquet" in screen[2]


def test_a_missing_data_file_is_exit_2_in_validate_as_in_screen(capsys, tmp_path):
    missing = str(tmp_path / "missing.csv")
    assert run(capsys, "validate", missing, "--study", MINI)[0] == 2
    assert run(capsys, "screen", missing, "--rules", str(RULES))[0] == 2


def _commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, (*prefix, name))


ALL = [path for path, _ in _commands(cli, click.Context(cli))]


def test_every_command_is_covered():
    assert {p[0] for p in ALL} == {"check", "validate", "screen", "logic", "dictionary", "redcap", "sandbox", "demo"}
    assert len(ALL) >= 17


@pytest.mark.parametrize("path", [(), *ALL], ids=lambda p: " ".join(p) or "trialkit")
def test_every_help_ends_with_its_exit_codes_and_shows_dates_as_yyyy_mm_dd(path):
    shown = CliRunner().invoke(cli, [*path, "--help"], terminal_width=120)
    assert shown.exit_code == 0, shown.output
    tail = shown.output.rstrip().rsplit("Exit codes", 1)
    assert len(tail) == 2, shown.output
    codes = re.findall(r"^ +(\d+) {2}", tail[1], re.MULTILINE)
    assert codes[0] == "0" and "2" in codes and "3" in codes and "130" in codes
    assert codes == sorted(codes, key=int)
    options = shown.output.split("\nOptions:", 1)[-1]
    for line in options.splitlines():
        if line.strip().startswith("--as-of"):
            assert "YYYY-MM-DD" in line and "TEXT" not in line, line


def test_docs_cli_states_the_policy():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for needle in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |", '"command"', '"ok"', "--instruments", "table"):
        assert needle in text, needle


def test_a_bad_date_is_a_usage_error_naming_the_format(capsys, clean_csv):
    code, _, err = run(capsys, "validate", str(clean_csv), "--study", MINI, "--as-of", "02/11/2026")
    assert code == 2 and "YYYY-MM-DD" in err and "02/11/2026" not in err


# ---- an unknown command suggests the nearest one ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "typo", "suggestion"),
    [(["chek"], "chek", "check"), (["valdate", "x.csv"], "valdate", "validate"), (["logic", "evl"], "evl", "eval"),
     (["redcap", "nightley"], "nightley", "nightly"), (["dictionary", "exprt"], "exprt", "export"),
     (["sandbox", "serv"], "serv", "serve")],
)
def test_unknown_command_suggests_the_nearest(capsys, args, typo, suggestion):
    code, _, err = run(capsys, *args)
    assert code == 2
    assert f"No such command '{typo}'" in err
    assert f"Did you mean '{suggestion}'?" in err


def test_unknown_command_far_from_any_gives_no_suggestion(capsys):
    code, _, err = run(capsys, "zzzzzz")
    assert code == 2 and "No such command" in err and "Did you mean" not in err


def test_sandbox_serve_json_is_the_envelope_on_one_line(tmp_path):
    import os
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "trialkit", "sandbox", "serve", "--study", MINI, "--db", str(tmp_path / "s.db"),
         "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TRIALKIT_SANDBOX_TOKEN": "ABCDEF0123456789ABCDEF0123456789"},
    )
    try:
        doc = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert list(doc)[:2] == ["command", "ok"] and (doc["command"], doc["ok"]) == ("sandbox serve", True)
    assert doc["url"].startswith("http://127.0.0.1:") and doc["token"] is None
