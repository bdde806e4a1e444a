"""`trialkit dictionary export|import`."""

from __future__ import annotations

from pathlib import Path

import pytest

from trialkit.cli import main

GOLDEN = Path(__file__).parent.parent / "definitions" / "golden"


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_export_to_stdout_and_file(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    code, out, _ = run(["dictionary", "export"], capsys)
    assert code == 0
    assert out.startswith('"Variable / Field Name","Form Name",')
    assert "\nrecord_id,consent,,text,\"Record ID\",,,,,,,,,,,,,\n" in out
    target = tmp_path / "dd.csv"
    code, _, err = run(["dictionary", "export", "--out", str(target), "--bom"], capsys)
    assert code == 0 and "wrote" in err
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and data[3:].decode("utf-8") == out


def test_export_json_metadata(repo_root, capsys):
    import json

    code, out, _ = run(["dictionary", "export", "--study", str(repo_root), "--format", "json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["field_name"] == "record_id" and len(rows[0]) == 18


def test_import_then_export_gives_the_same_bytes(tmp_path, capsys):
    src = GOLDEN / "all_types_DataDictionary.csv"
    code, _, err = run(["dictionary", "import", str(src), "--out", str(tmp_path / "p")], capsys)
    assert code == 0 and "wrote 4 files" in err
    out_csv = tmp_path / "back.csv"
    code, _, _ = run(["dictionary", "export", "--study", str(tmp_path / "p"), "--out", str(out_csv)], capsys)
    assert code == 0
    assert out_csv.read_bytes() == src.read_bytes()


def test_import_refuses_to_overwrite_without_force(tmp_path, capsys):
    src = GOLDEN / "all_types_DataDictionary.csv"
    assert run(["dictionary", "import", str(src), "--out", str(tmp_path)], capsys)[0] == 0
    code, _, err = run(["dictionary", "import", str(src), "--out", str(tmp_path)], capsys)
    assert code == 2 and "exists already" in err
    assert run(["dictionary", "import", str(src), "--out", str(tmp_path), "--force"], capsys)[0] == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not,a,dictionary\n1,2,3\n", "bad.csv:1:1: DICT002"),
        (b"\xff\xfe garbage", "bad.csv:1:1: IO002"),
        # saved from Excel in Windows-1252: the line and column of the first byte that is not UTF-8
        (b"Variable / Field Name,Form Name\nrecord_id,f1\nq1,Caf\xe9\n", "bad.csv:3:7: IO002"),
        (b"", "bad.csv:1:1: DICT001"),
    ],
)
def test_import_bad_files_are_located_exit_2(tmp_path, capsys, monkeypatch, content, expected):
    monkeypatch.chdir(tmp_path)
    Path("bad.csv").write_bytes(content)
    code, _, err = run(["dictionary", "import", "bad.csv", "--out", "o"], capsys)
    assert code == 2
    assert err.startswith(expected) and "Traceback" not in err
    assert not Path("o").exists()


def test_import_missing_file(tmp_path, capsys):
    code, _, err = run(["dictionary", "import", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "does not exist" in err  # a file named on the command line: a usage error


def test_export_of_a_broken_study_is_refused(tmp_path, capsys):
    (tmp_path / "study.yaml").write_text("study: x\ninstruments: [a]\n")
    code, _, err = run(["dictionary", "export", "--study", str(tmp_path)], capsys)
    assert code == 2 and "DEF003" in err


def test_unwritable_outputs_are_errors_not_crashes(repo_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(["dictionary", "export", "--study", str(repo_root), "--out", str(blocker / "dd.csv")], capsys)
    assert code == 2 and err.startswith(f"error: cannot write {blocker / 'dd.csv'}")
    src = GOLDEN / "all_types_DataDictionary.csv"
    code, _, err = run(["dictionary", "import", str(src), "--out", str(blocker / "p")], capsys)
    assert code == 2 and err.startswith("error: cannot write") and "internal error" not in err


def test_import_refuses_a_study_name_that_is_not_an_id(tmp_path, capsys):
    src = GOLDEN / "all_types_DataDictionary.csv"
    code, _, err = run(["dictionary", "import", str(src), "--out", str(tmp_path / "p"), "--name", "My: study"], capsys)
    assert code == 2 and "--name: a study id is lowercase" in err
    assert "My: study" not in err  # argv values are not repeated (one pasted in the wrong place may be a token)
    assert not (tmp_path / "p").exists()
    assert run(["dictionary", "import", str(src), "--out", str(tmp_path / "p"), "--name", "my_study"], capsys)[0] == 0
    assert (tmp_path / "p" / "study.yaml").read_text().splitlines()[1] == "study: my_study"
