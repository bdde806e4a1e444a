"""Hostile bytes never crash trialkit: random and near-miss CSV, TSV, JSON, NDJSON and YAML (instrument,
study and rule files) through the library entry points and the CLI. Each call returns or raises a
TrialkitError; each command exits 0, 1 or 2 without an internal error or a traceback."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialkit.cli import main
from trialkit.definitions.loader import check_instrument_file, check_study
from trialkit.definitions.rules import parse_ruleset
from trialkit.definitions.yamlio import parse_yaml_bytes
from trialkit.errors import TrialkitError
from trialkit.records import read_intake
from trialkit.records.readers import read_text_frame

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "eligibility_rules" / "kap_trd.yaml"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))

HEADER = b"record_id,redcap_event_name,age_screening,dob\n"


def _texty(alphabet: str, max_size: int = 120) -> st.SearchStrategy[bytes]:
    return st.text(alphabet=alphabet, max_size=max_size).map(lambda s: s.encode("utf-8"))


# Near misses find more than uniform noise: the characters that matter to each format, plus raw bytes.
CSV_BYTES = st.one_of(
    st.binary(max_size=200),
    _texty('ab1,"\n\r\t\x00é '),
    _texty('ab1,"\n\r\t '.replace("\t", "")).map(lambda b: HEADER + b),
)
JSON_BYTES = st.one_of(
    st.binary(max_size=200),
    _texty('[]{}":,01aetrulnf.-eE\n \\'),
    st.integers(1, 3000).map(lambda n: b'[{"record_id": ' + b"[" * n + b"]" * n + b"}]"),
    st.integers(1, 3000).map(lambda n: b'{"record_id": "1", "a": ' + b"{\"b\": " * n + b"1" + b"}" * n + b"}\n"),
)
YAML_BYTES = st.one_of(
    st.binary(max_size=200),
    _texty(":-&*[]{}!|>'\"#%@`?,\n\t abc01~"),
    st.integers(1, 400).map(lambda n: b"a: " + b"[" * n + b"]" * n + b"\n"),
    st.integers(2, 9).map(
        lambda n: b"a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
        + b"".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n".encode() for i in range(1, n))
    ),
)


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@FAST
@given(content=CSV_BYTES, suffix=st.sampled_from([".csv", ".tsv", ".txt"]))
def test_reader_on_delimited_bytes(tmp_path, content, suffix):
    path = _write(tmp_path, f"f{suffix}", content)
    with contextlib.suppress(TrialkitError):
        read_text_frame(path)


@FAST
@given(content=JSON_BYTES, suffix=st.sampled_from([".json", ".ndjson"]))
def test_reader_on_json_bytes(tmp_path, content, suffix):
    path = _write(tmp_path, f"f{suffix}", content)
    with contextlib.suppress(TrialkitError):
        read_text_frame(path)


@FAST
@given(content=st.one_of(CSV_BYTES, JSON_BYTES), suffix=st.sampled_from([".csv", ".json", ".ndjson"]))
def test_intake_on_hostile_bytes(tmp_path, kap_study, content, suffix):
    path = _write(tmp_path, f"i{suffix}", content)
    with contextlib.suppress(TrialkitError):
        read_intake(path, kap_study)


@FAST
@given(content=YAML_BYTES)
def test_yaml_and_rule_parsing_never_raises(content):
    doc = parse_yaml_bytes(content, "x.yaml")
    assert doc.ok or doc.diagnostics
    parse_ruleset(content, "rules.yaml")  # returns diagnostics, never raises


@pytest.fixture(scope="module")
def study_copy(tmp_path_factory) -> Path:
    study = tmp_path_factory.mktemp("study")
    shutil.copytree(ROOT / "instruments", study / "instruments")
    shutil.copy(ROOT / "study.yaml", study / "study.yaml")
    return study


@SLOW
@given(content=YAML_BYTES, which=st.sampled_from(["study.yaml", "instruments/demographics.yaml"]))
def test_study_checking_on_hostile_yaml(study_copy, content, which):
    target = study_copy / which
    original = target.read_bytes()
    try:
        target.write_bytes(content)
        check_study(study_copy)  # never raises: every problem is a diagnostic
        if which.startswith("instruments"):
            check_instrument_file(target)
    finally:
        target.write_bytes(original)


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out + out.err


def _clean_exit(code: int, output: str) -> None:
    assert code in (0, 1, 2), output
    assert "internal error" not in output and "Traceback" not in output, output


@SLOW
@given(content=st.one_of(CSV_BYTES, JSON_BYTES), suffix=st.sampled_from([".csv", ".tsv", ".json", ".ndjson"]))
def test_validate_and_screen_exit_cleanly(tmp_path, capsys, content, suffix):
    path = _write(tmp_path, f"data{suffix}", content)
    _clean_exit(*_cli(capsys, "validate", str(path), "--study", str(ROOT)))
    _clean_exit(*_cli(capsys, "screen", str(path), "--rules", str(RULES), "--as-of", "2026-11-02"))


@SLOW
@given(content=YAML_BYTES)
def test_check_and_screen_rules_exit_cleanly(tmp_path, capsys, content):
    path = _write(tmp_path, "rules.yaml", content)
    _clean_exit(*_cli(capsys, "check", str(path)))
    _clean_exit(*_cli(capsys, "screen", str(ROOT / "examples" / "kap_trd_intake.csv"), "--rules", str(path)))
