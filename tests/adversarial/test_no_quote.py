"""No message quotes a secret: a token planted in a file given by mistake, in argv, or in an identifier cell
never comes back in stdout or stderr, whatever the command, the exit code or the kind of error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trialkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"
EXAMPLE = ROOT / "examples" / "kap_trd_intake.csv"
TOKEN = "9F3C2B7A41D05E6C8B2A7F1E3D9C4B06"  # REDCap's shape: 32 hex digits
SECRET = "Zebulon-Quist-PLANTED"  # a name in an identifier cell, a line of a file


def _run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out + out.err


def _assert_silent(code: int, output: str, *secrets: str) -> None:
    assert code in (1, 2), output
    for secret in secrets or (TOKEN, SECRET):
        assert secret not in output, output
    assert "internal error" not in output and "Traceback" not in output


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "token.txt"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def passwd_like(tmp_path) -> Path:
    path = tmp_path / "passwd"
    path.write_text(f"root:x:0:0:root:/root:/bin/bash\n{SECRET}:x:1000:1000::/home/z:/bin/sh\n")
    return path


def test_a_rule_file_whose_study_is_a_token_file(capsys, tmp_path, token_file):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.read_text().replace("study: ../study.yaml", f"study: {token_file}"))
    _assert_silent(*_run(capsys, "screen", str(EXAMPLE), "--rules", str(rules), "--as-of", "2026-11-02"))
    _assert_silent(*_run(capsys, "check", str(token_file)))


@pytest.mark.parametrize("which", ["token", "passwd"])
def test_definition_paths_pointing_at_other_files(capsys, token_file, passwd_like, which):
    path = str(token_file if which == "token" else passwd_like)
    _assert_silent(*_run(capsys, "screen", str(EXAMPLE), "--rules", path, "--as-of", "2026-11-02"))
    _assert_silent(*_run(capsys, "check", path))
    _assert_silent(*_run(capsys, "validate", str(EXAMPLE), "--study", path))
    _assert_silent(*_run(capsys, "dictionary", "import", path, "--out", str(token_file.parent / "out")))


@pytest.mark.parametrize(
    "content",
    [
        f"{TOKEN}: 1\n{TOKEN}: 2\n",  # duplicate key
        f"id: x\nversion: 1\n{TOKEN}: 1\n",  # unknown key
        f"a: *{TOKEN}\n",  # undefined alias
        f'a: "{TOKEN}\n',  # unterminated quote
        f"instrument: {TOKEN}\nfields: []\n",  # pattern
        f"instrument: demo\nfields:\n  - name: x\n    type: {TOKEN}\n",  # enum
        f"instrument: demo\nfields:\n  - name: x\n    type: '{SECRET}, born 1980-01-02'\n",
        f"instrument: {SECRET}:x:1000:1000::/home/z:/bin/sh\nfields: []\n",
        f"instrument: demo\nlabel: [{TOKEN}]\nfields: []\n",  # type
        f"- {TOKEN}\n- {SECRET}\n",
    ],
)
def test_yaml_and_schema_messages_describe_values_without_quoting_them(capsys, tmp_path, content):
    # Short name-like words of a definition file ('integr', 'Bad') are quoted on purpose, so an author finds the
    # typo; the planted values here are what a file given by mistake holds: a token, a line of another file.
    path = tmp_path / "demo.yaml"
    path.write_text(content)
    _assert_silent(*_run(capsys, "check", str(path)))
    _assert_silent(*_run(capsys, "screen", str(EXAMPLE), "--rules", str(path)))


@pytest.mark.parametrize(
    "args",
    [
        ["redcap", "nightly", "--url", "https://redcap.example.org/api/", TOKEN, "--rules", str(RULES)],
        ["redcap", "nightly", "--url", "https://redcap.example.org/api/", "--rules", str(RULES), "--timeout", TOKEN],
        ["redcap", "nightly", f"--url=https://redcap.example.org/api/?token={TOKEN}", "--rules", str(RULES), "x"],
        ["screen", str(EXAMPLE), "--rules", str(RULES), "--format", TOKEN],
        ["screen", str(EXAMPLE), "--rules", str(RULES), "--as-of", TOKEN],
        ["screen", TOKEN, "--rules", str(RULES)],
        ["validate", TOKEN],
        ["validate", f"--{TOKEN}", str(EXAMPLE)],
        [TOKEN],
        ["logic", "eval", "[age] > 1", "--data", str(EXAMPLE), "--as-of", TOKEN],
    ],
)
def test_argv_values_are_not_echoed(capsys, args):
    code, output = _run(capsys, *args)
    _assert_silent(code, output, TOKEN)


def _intake(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


HEADER = "record_id,redcap_event_name,first_name,last_name,dob\n"
DATA_CASES = {
    "unbalanced.csv": HEADER + f'0001,screening_arm_1,"{SECRET},Quist,1980-01-02\n0002,screening_arm_1,a,b,c\n',
    "short.csv": HEADER + f"0001,screening_arm_1,{SECRET},Quist\n",
    "long.csv": HEADER + f"0001,screening_arm_1,{SECRET},Quist,1980-01-02,{TOKEN}\n",
    "after.csv": HEADER + f'0001,screening_arm_1,"{SECRET}"x,Quist,1980-01-02\n',
    "nested.json": f'[{{"record_id": "0001", "first_name": {{"{SECRET}": "{TOKEN}"}}}}]',
    "bad.json": f'[{{"record_id": "0001", "first_name": {SECRET}}}]',
    "deep.ndjson": f'{{"first_name": "{SECRET}", "x": ' + "[" * 5000 + "]" * 5000 + "}\n",
    "bad.ndjson": f'{{"first_name": "{SECRET}" "{TOKEN}"}}\n',
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_damaged_intake_is_explained_without_its_cells(capsys, tmp_path, name):
    path = _intake(tmp_path, name, DATA_CASES[name])
    _assert_silent(*_run(capsys, "validate", str(path), "--study", str(ROOT)))
    _assert_silent(*_run(capsys, "screen", str(path), "--rules", str(RULES), "--as-of", "2026-11-02"))
    if name.endswith(".csv"):
        _assert_silent(*_run(capsys, "logic", "eval", "[dob] <> ''", "--data", str(path)))


def test_identifier_cells_are_masked_in_findings(capsys, tmp_path):
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    row = lines[1].rstrip("\n").split(",")
    for field in ("first_name", "last_name", "email", "phone", "dob"):
        row[header.index(field)] = SECRET  # wrong for every type: each is a finding
    path = tmp_path / "intake.csv"
    path.write_text(lines[0] + ",".join(row) + "\n")
    code, output = _run(capsys, "validate", str(path), "--study", str(ROOT), "--format", "csv")
    assert code == 1 and "dob" in output
    assert SECRET not in output


def test_a_copied_study_with_a_token_in_an_instrument_file(capsys, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(ROOT / "instruments", study / "instruments")
    shutil.copy(ROOT / "study.yaml", study / "study.yaml")
    (study / "instruments" / "demographics.yaml").write_text(TOKEN + "\n")
    _assert_silent(*_run(capsys, "check", str(study)))
    _assert_silent(*_run(capsys, "validate", str(EXAMPLE), "--study", str(study)))


@pytest.mark.parametrize(
    "name, content",
    [
        ("dup.csv", f"{TOKEN},{TOKEN}\n1,2\n"),
        ("nested.json", f'[{{"{TOKEN}": {{"a": 1}}}}]'),
        ("nested.ndjson", f'{{"{TOKEN}": [1]}}\n'),
        ("ragged.csv", f"record_id,{TOKEN}\n1,2,3\n"),
    ],
)
def test_reader_errors_name_columns_only_when_they_read_as_names(tmp_path, name, content):
    from trialkit.errors import DataError
    from trialkit.records.readers import read_text_frame

    path = _intake(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        read_text_frame(path)
    assert TOKEN not in str(err.value)
