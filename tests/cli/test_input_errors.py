"""Damaged or foreign intake files through `trialkit validate` and `trialkit screen`: a located error and a
clean exit code (1 = the data could not be read, the same in both commands), never a padded row, never an
internal error, never a quoted cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from trialkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kap_trd_intake.csv"
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def _both(capsys, path: Path) -> list[tuple[int, str, str]]:
    return [
        _run(capsys, "validate", str(path), "--study", str(ROOT)),
        _run(capsys, "screen", str(path), "--rules", str(RULES), "--as-of", "2026-11-02"),
    ]


@pytest.fixture(scope="module")
def cut_export(tmp_path_factory) -> Path:
    """The example export with its last row cut inside a value: 68 of 199 fields, the last one shortened."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[-1].split(",")
    assert len(fields) == 199
    cut = ",".join(fields[:67]) + "," + fields[67][:1]
    path = tmp_path_factory.mktemp("cut") / "export.csv"
    path.write_text("".join(lines[:-1]) + cut, encoding="utf-8")
    return path


def test_a_row_cut_off_mid_value_is_an_error_naming_the_line(capsys, cut_export):
    line = len(EXAMPLE.read_text(encoding="utf-8").splitlines())
    for (code, out, err), expected in zip(_both(capsys, cut_export), (1, 1), strict=True):
        assert code == expected, err
        assert f"export.csv:{line}: a line with 68 fields where the header has 199" in err
        assert "internal error" not in err and "Traceback" not in err
        assert out == ""  # no findings table, no screening report from a damaged file


@pytest.mark.parametrize("separator, suffix", [(",", ".csv"), ("\t", ".tsv"), ("\t", ".txt")])
def test_a_short_or_long_row_in_any_delimited_file_is_an_error(capsys, tmp_path, separator, suffix):
    header = separator.join(["record_id", "redcap_event_name", "age_screening"])
    for row, fields in ((["0001", "screening_arm_1"], 2), (["0001", "screening_arm_1", "34", "x"], 4)):
        path = tmp_path / f"intake{suffix}"
        path.write_text(header + "\n" + separator.join(row) + "\n", encoding="utf-8")
        for code, _, err in _both(capsys, path):
            assert code == 1
            assert f"intake{suffix}:2: a line with {fields} fields where the header has 3" in err


def test_another_projects_export_is_findings_not_an_internal_error(capsys, tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("record_id,age,hamd_total\n1,30,20\n2,40,22\n3,50,18\n", encoding="utf-8")
    code, out, err = _run(capsys, "validate", str(path), "--study", str(ROOT))
    assert code == 1, err  # findings: its columns are not this study's fields
    assert "unknown_column" in out and "column is not a field of study" in out
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.parametrize("suffix", [".json", ".ndjson"])
@pytest.mark.parametrize("depth", [1000, 100_000])  # 1000 {: polars ran a minute, then crashed the process
def test_json_nested_past_any_stack_is_a_data_error(capsys, tmp_path, suffix, depth):
    deep = '{"a": ' * depth + "1" + "}" * depth if depth < 10_000 else "[" * depth + "]" * depth
    path = tmp_path / f"deep{suffix}"
    path.write_text(f'[{{"record_id": {deep}}}]' if suffix == ".json" else f'{{"record_id": {deep}}}\n')
    for (code, _, err), expected in zip(_both(capsys, path), (1, 1), strict=True):
        assert code == expected, err
        assert "internal error" not in err and "Recursion" not in err
        assert "nested" in err


# ---- no study where the command looks for one ---------------------------------------------------------------------
def test_outside_the_study_folder_says_how_to_point_at_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "validate", str(EXAMPLE))
    assert code == 2
    assert "study.yaml not found in the current folder" in out + err
    assert "point at it with --study DIR" in out + err


def test_a_study_path_from_a_rule_files_study_key_says_so(capsys, tmp_path, monkeypatch):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.read_text(encoding="utf-8").replace("study: ../study.yaml", "study: ../nowhere"),
                     encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "screen", str(EXAMPLE), "--rules", "rules.yaml", "--as-of", "2026-11-02")
    assert code == 2
    assert "this path comes from the 'study:' key of rules.yaml (line 15): correct it there" in out + err


# ---- `-` reads standard input --------------------------------------------------------------------------------------
def _pipe(monkeypatch, data: bytes) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def _head(rows: int) -> bytes:
    return b"".join(EXAMPLE.read_bytes().splitlines(keepends=True)[: rows + 1])


def test_validate_and_screen_read_standard_input(capsys, monkeypatch):
    _pipe(monkeypatch, _head(20))
    code, out, err = _run(capsys, "validate", "-", "--study", str(ROOT), "--as-of", "2026-11-02")
    assert code == 0 and "in - (20 data rows checked" in out + err
    _pipe(monkeypatch, _head(20))
    code, out, _ = _run(capsys, "screen", "-", "--rules", str(RULES), "--as-of", "2026-11-02")
    assert code == 0 and "Data: -" in out and "assessed" in out


def test_logic_eval_reads_its_data_from_standard_input(capsys, monkeypatch):
    _pipe(monkeypatch, b"record_id,age\n1,20\n2,10\n")
    code, out, _ = _run(capsys, "logic", "eval", "[age] >= 18", "--data", "-")
    assert (code, out.splitlines()) == (0, ["record_id,value", "1,true", "2,false"])
