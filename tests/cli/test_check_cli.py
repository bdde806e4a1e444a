"""`trialkit check`: exit codes, located messages, JSON output, no tracebacks on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trialkit.cli import main

BASE = "instrument: base\nfields:\n  - name: record_id\n    type: text\n    label: Record ID\n"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def make(root: Path, instruments: dict[str, str], study: str | None = None) -> Path:
    (root / "instruments").mkdir(parents=True, exist_ok=True)
    for name, text in instruments.items():
        (root / "instruments" / f"{name}.yaml").write_text(text)
    (root / "study.yaml").write_text(study or f"study: demo\ninstruments: [{', '.join(instruments)}]\n")
    return root


def test_repository_checks_clean(repo_root, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    code, out, err = run(["check"], capsys)
    assert code == 0, out + err
    assert out == ""


def test_errors_exit_2_with_located_sorted_lines(tmp_path, capsys, monkeypatch):
    make(tmp_path, {"base": BASE + "  - name: sex\n    type: radio\n  - name: Bad\n    type: text\n"})
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["check"], capsys)
    assert code == 2
    lines = out.splitlines()
    assert lines == [
        "instruments/base.yaml:6:11: DEF005 radio field 'sex' has no choices",
        "instruments/base.yaml:8:11: SCH004 fields[2].name: 'Bad' is not a valid name (lowercase letters, digits "
        "and _, starting with a letter)",
    ]
    assert "2 error(s), 0 warning(s)" in err


def test_warnings_are_printed_but_do_not_fail(tmp_path, capsys):
    make(tmp_path, {"base": BASE + "  - name: x\n    type: text\n    validation: integr\n"})
    code, out, _ = run(["check", str(tmp_path)], capsys)
    assert code == 0
    assert "warning DEF009 unknown validation type 'integr'" in out


def test_json_format(tmp_path, capsys, monkeypatch):
    make(tmp_path, {"base": BASE + "  - name: total\n    type: calc\n    calculation: '[total] + 1'\n"})
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["check", "--format", "json"], capsys)
    assert code == 2
    assert json.loads(out) == {
        "command": "check",
        "ok": False,
        "errors": 1,
        "warnings": 0,
        "diagnostics": [{
            "code": "DEF011",
            "message": "calc field 'total' refers to itself",
            "file": "instruments/base.yaml",
            "line": 8,
            "col": 18,
            "severity": "error",
        }],
    }


def test_single_instrument_file(tmp_path, capsys, monkeypatch):
    make(tmp_path, {"base": BASE, "other": "instrument: other\nfields:\n  - name: x\n    type: radio\n"})
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["check", "instruments/base.yaml"], capsys)
    assert code == 0 and out == ""
    code, out, _ = run(["check", "instruments/other.yaml"], capsys)
    assert code == 2 and out.startswith("instruments/other.yaml:3:11: DEF005")


def test_standalone_instrument_outside_a_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("form.yaml").write_text(BASE + "  - name: y\n    type: text\n    show_if: \"[elsewhere] = '1' and [y] >\"\n")
    code, out, _ = run(["check", "form.yaml"], capsys)
    assert code == 2
    assert out.splitlines() == ["form.yaml:8:42: LOG001 branching logic of 'y': expected a value (number, 'text', "
                                "[field], function call or '('), found end of input"]


@pytest.mark.parametrize(
    "content",
    [b"{{{ not yaml", b"\xff\xfe\x00", b"- just\n- a list\n", b"instrument: base\nfields: nope\n", b""],
)
def test_bad_files_never_traceback(tmp_path, capsys, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_bytes(content)
    code, out, err = run(["check", "bad.yaml"], capsys)
    assert code == 2
    assert out.startswith("bad.yaml:") and "Traceback" not in out + err


def test_missing_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["check", "nowhere"], capsys)
    assert code == 2 and out.startswith("nowhere: IO001")


def test_checks_eligibility_rules_beside_the_study(repo_root, tmp_path, capsys):
    if not (repo_root / "eligibility_rules").is_dir():
        pytest.skip("no eligibility_rules in this checkout")
    shutil.copytree(repo_root / "instruments", tmp_path / "instruments")
    shutil.copy(repo_root / "study.yaml", tmp_path / "study.yaml")
    (tmp_path / "eligibility_rules").mkdir()
    (tmp_path / "eligibility_rules" / "broken.yaml").write_text("id: x\ncriteria: [\n")
    code, out, _ = run(["check", str(tmp_path)], capsys)
    assert code == 2
    assert "broken.yaml:" in out and "YAML001" in out


def test_real_process_exit_code_and_no_traceback(tmp_path):
    make(tmp_path, {"base": BASE + "    label: twice\n"})
    proc = subprocess.run([sys.executable, "-m", "trialkit", "check", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "YAML002 duplicate key 'label'" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_rule_file_is_checked_as_rules_not_as_a_study(repo_root, tmp_path, capsys):
    rules = repo_root / "eligibility_rules" / "kap_trd.yaml"
    if not rules.is_file():
        pytest.skip("no KAP rule file in this checkout")
    shutil.copytree(repo_root / "instruments", tmp_path / "instruments")
    shutil.copy(repo_root / "study.yaml", tmp_path / "study.yaml")
    (tmp_path / "eligibility_rules").mkdir()
    target = tmp_path / "eligibility_rules" / "kap_trd.yaml"
    target.write_text(rules.read_text(encoding="utf-8").replace("[madrs_total]", "[madrs_totl]", 1), encoding="utf-8")
    code, out, _ = run(["check", str(target)], capsys)
    assert code == 2
    assert "madrs_totl" in out and "SCH00" not in out


def test_json_of_a_clean_study_has_no_diagnostics(repo_root, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    code, out, _ = run(["check", "--format", "json"], capsys)
    assert (code, json.loads(out)) == (0, {"command": "check", "ok": True, "errors": 0, "warnings": 0,
                                           "diagnostics": []})


def test_an_instrument_file_the_study_does_not_list_is_still_checked(tmp_path, capsys, monkeypatch):
    make(tmp_path, {"base": BASE}, "study: demo\ninstruments: [base]\n")
    stray = BASE.replace("base", "stray") + "  - name: x\n    type: radio\n"
    (tmp_path / "instruments" / "stray.yaml").write_text(stray)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["check", "instruments/stray.yaml"], capsys)
    assert code == 2
    assert out.splitlines() == [
        "instruments/stray.yaml:1:1: warning DEF003 instrument file is not listed in study.yaml 'instruments'",
        "instruments/stray.yaml:6:11: DEF005 radio field 'x' has no choices",
    ]


def test_a_standalone_instrument_need_not_start_with_a_record_id(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    form = "instrument: form\nfields:\n  - name: q1\n    type: yesno\n    show_if: \"[q0] = '1'\"\n"
    Path("form.yaml").write_text(form)
    code, out, _ = run(["check", "form.yaml"], capsys)
    assert (code, out) == (0, "")


def test_a_rule_file_is_checked_against_the_study_it_names(repo_root, tmp_path, capsys, monkeypatch):
    rules = repo_root / "eligibility_rules" / "kap_trd.yaml"
    if not rules.is_file():
        pytest.skip("no KAP rule file in this checkout")
    shutil.copytree(repo_root / "instruments", tmp_path / "proj" / "instruments")
    shutil.copy(repo_root / "study.yaml", tmp_path / "proj" / "study.yaml")
    (tmp_path / "elsewhere").mkdir()
    text = rules.read_text(encoding="utf-8").replace("study: ../study.yaml", "study: ../proj/study.yaml")
    (tmp_path / "elsewhere" / "kap.yaml").write_text(text.replace("[madrs_total]", "[madrs_totl]", 1))
    monkeypatch.chdir(tmp_path)  # no study here or beside the rule file: only `study:` leads to it
    code, out, _ = run(["check", "elsewhere/kap.yaml"], capsys)
    assert code == 2 and "elsewhere/kap.yaml:" in out and "madrs_totl" in out


# ---- `check` refuses every rule file that `screen` refuses --------------------------------------------------------

def _wide_criterion(repo_root: Path) -> str:
    """A criterion reading 65 fields: more than screening tracks per criterion (SCR001)."""
    from trialkit.definitions import load_study

    study = load_study(repo_root)
    repeating = {form for _, form in study.repeating_pairs}
    names = [f.name for f in study.iter_fields()
             if f.form not in repeating and f.type.value not in ("checkbox", "descriptive", "calc")][1:66]
    assert len(names) == 65
    logic = " or ".join(f"[{n}] <> ''" for n in names)
    return f"  - id: W1\n    kind: exclusion\n    text: wide\n    logic: \"{logic}\"\n"


RULES = "eligibility_rules/kap_trd.yaml"
#: (what is wrong, file to edit, text in it, replacement; None appends the text to the file)
BROKEN = [
    ("YAML001", RULES, "criteria:\n", "criteria: [\n"),
    ("SCH003", RULES, "title: KAP", "colour: blue\ntitle: KAP"),
    ("RULE001", RULES, "  - id: I2\n", "  - id: I1\n"),
    ("RULE010", RULES, "field: inv_unsafe", "field: inv_unsaf"),
    ("RULE013", RULES, "reference_date: screening_date", "reference_date: sex"),
    ("RULE014", RULES, "requires_instances: [atrq]", "requires_instances: [madrs]"),
    ("LOG001", RULES, "logic: \"[mini_mdd] = '1' and", "logic: \"[mini_mdd] = '1' and and"),
    ("LOGIC001", RULES, "[madrs_total] >= 20", "[madrs_totl] >= 20"),
    ("LOGIC007", RULES, "[mini_mdd] = '1' and", "[mini_mdd][2] = '1' and"),
    ("LOGIC014", RULES, "[mini_mdd] = '1' and", "[mini_mdd] = 'yes' and"),
    ("study not found", RULES, "study: ../study.yaml", "study: ../nowhere/study.yaml"),
    ("study: bad YAML", "study.yaml", "arms:\n", "arms: [\n"),
    ("study: calc reads an unknown field", "instruments/madrs.yaml", "[madrs_1] + [madrs_2]", "[madrs_01] + [madrs_2]"),
    ("study: duplicate field", "instruments/gad7.yaml", "  - name: gad7_1\n", "  - name: gad7_2\n"),
    ("SCR001", RULES, None, "wide"),
]


@pytest.mark.parametrize(("what", "file", "old", "new"), BROKEN, ids=[b[0] for b in BROKEN])
def test_check_reports_every_definition_error_screen_refuses_a_rule_file_for(
    repo_root, tmp_path, capsys, monkeypatch, what, file, old, new
):
    for name in ("study.yaml", "instruments", "eligibility_rules"):
        src = repo_root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    target = tmp_path / file
    text = target.read_text(encoding="utf-8")
    if old is None:
        text += _wide_criterion(repo_root)
    else:
        assert old in text, old
        text = text.replace(old, new, 1)
    target.write_text(text, encoding="utf-8")
    (tmp_path / "data.csv").write_text("record_id\n1\n")
    monkeypatch.chdir(tmp_path)

    code, out, err = run(["screen", "data.csv", "--rules", RULES], capsys)
    assert code == 2, out + err
    refused = err.splitlines()
    assert refused and not any(line.startswith("error:") for line in refused)  # every one located
    if not what.startswith(("study", "LOG001")):
        assert any(f" {what} " in line for line in refused), refused

    code, out, err = run(["check", RULES], capsys)
    assert code == 2
    reported = set(out.splitlines())
    assert [line for line in refused if line not in reported] == []
    assert "Traceback" not in out + err
    if what == "study not found":
        assert f"{RULES}:15:8: RULE015 study '../nowhere/study.yaml' not found (nowhere/study.yaml)" in reported


# ---- everything at once, and nothing twice ------------------------------------------------------------------------
SECOND = "instrument: second\nfields:\n  - name: score\n    type: text\n    validation: integer\n"
USES_SCORE = "  - name: high\n    type: yesno\n    show_if: \"[score] > 3\"\n"
DEMO_RULES = ("id: demo\nversion: '1'\ntitle: Demo\nprotocol: {reference: p, version: '1'}\ncriteria:\n"
         "  - id: I1\n    kind: inclusion\n    text: High score.\n    logic: \"[score] => 3\"\n")


def test_rule_files_are_checked_even_when_an_instrument_has_an_error(tmp_path, capsys):
    make(tmp_path, {"base": BASE + "  - name: sex\n    type: radio\n", "second": SECOND})
    (tmp_path / "eligibility_rules").mkdir()
    (tmp_path / "eligibility_rules" / "demo.yaml").write_text(DEMO_RULES)
    code, out, _ = run(["check", str(tmp_path)], capsys)
    assert code == 2
    assert "DEF005 radio field 'sex' has no choices" in out
    assert "demo.yaml:9:" in out and "LOG001 criterion I1" in out


def test_every_missing_required_key_is_named(tmp_path, capsys):
    make(tmp_path, {"base": BASE + "  - label: Nameless\n"})
    code, out, _ = run(["check", str(tmp_path)], capsys)
    assert code == 2
    assert out.splitlines() == ["instruments/base.yaml:6:5: SCH002 fields[1]: missing required keys 'name', 'type'"
                                .replace("instruments/", f"{tmp_path}/instruments/")]


def test_one_duplicate_key_is_one_error_not_a_cascade(tmp_path, capsys):
    # the repeated `validation:` used to drop the whole instrument: "unknown field [score]" in another
    # instrument's branching logic and "unknown instrument" in every event listing it followed
    dup = SECOND + "    validation: integer\n"
    study = ("study: demo\ninstruments: [base, second]\narms:\n  - number: 1\n    events:\n"
             "      - {label: Visit, instruments: [base, second]}\n")
    make(tmp_path, {"base": BASE + USES_SCORE, "second": dup}, study)
    code, out, _ = run(["check", str(tmp_path)], capsys)
    assert code == 2
    assert [line.split(": ", 1)[1] for line in out.splitlines()] == [
        "YAML002 duplicate key 'validation' (first at line 5)"]


def test_a_field_schema_error_does_not_cascade_into_unknown_fields(tmp_path, capsys):
    broken = SECOND.replace("type: text", "type: txet")
    make(tmp_path, {"base": BASE + USES_SCORE, "second": broken})
    code, out, _ = run(["check", str(tmp_path)], capsys)
    assert code == 2
    assert [line.split(": ", 1)[1].split()[0] for line in out.splitlines()] == ["SCH005"], out


def test_the_closing_line_says_what_was_checked(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    code, _, err = run(["check"], capsys)
    n = len(list((repo_root / "instruments").glob("*.yaml")))
    rules = len(list((repo_root / "eligibility_rules").glob("*.yaml")))
    assert code == 0
    assert err.strip() == f"checked study.yaml, {n} instruments, {rules} rule file{'s' * (rules != 1)}: no problems"
    make(tmp_path, {"base": BASE + "  - name: sex\n    type: radio\n"})
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["check", "instruments/base.yaml"], capsys)
    assert (code, err.strip()) == (2, "checked 1 instrument: 1 error(s), 0 warning(s)")


def test_check_outside_a_study_folder_says_how_to_name_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["check"], capsys)
    assert code == 2
    assert out.strip() == ("study.yaml: IO001 no study file here (study.yaml not found in the current folder): run "
                           "trialkit in the study's folder, or point at it with trialkit check DIR")


def test_study_option_points_at_the_study_as_every_command_does(repo_root, tmp_path, capsys, monkeypatch):
    # README: every command takes --study; docs/intake-messages.md tells a user without study.yaml here to use it
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["check", "--study", str(repo_root)], capsys)
    assert code == 0, err
    assert "study.yaml, 17 instruments, 1 rule file: no problems" in err
