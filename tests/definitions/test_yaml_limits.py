"""Limits on every YAML file trialkit reads: alias expansion ("billion laughs") and file size are located
YAML005 diagnostics, reached in well under a second, for study, instrument and rule files alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trialkit.definitions import check_study
from trialkit.definitions.loader import check_instrument_file
from trialkit.definitions.rules import read_ruleset
from trialkit.definitions.yamlio import MAX_ALIAS_NODES, MAX_YAML_BYTES, parse_yaml, read_yaml

ROOT = Path(__file__).resolve().parents[2]


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_past_the_limit_are_a_located_diagnostic():
    doc = parse_yaml(_laughs(6), "laughs.yaml")  # 9**6 = 531,441 values; 9**9 ran for minutes and gigabytes
    assert doc.data is None
    [diag] = doc.diagnostics
    assert diag.code == "YAML005" and f"more than {MAX_ALIAS_NODES:,} values" in diag.message
    assert (diag.file, diag.line) == ("laughs.yaml", 5)  # the list holding the alias that went past it


def test_a_few_aliases_are_still_fine():
    doc = parse_yaml("a: &x {k: 1}\nb: *x\nc: [*x, *x]\n", "x.yaml")
    assert doc.ok and doc.data == {"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": 1}, {"k": 1}]}


@pytest.mark.parametrize("kind", ["study", "instrument", "rules"])
def test_every_definition_file_has_the_limits(tmp_path, kind):
    study = tmp_path / "study"
    shutil.copytree(ROOT / "instruments", study / "instruments")
    shutil.copy(ROOT / "study.yaml", study / "study.yaml")
    for content, words in ((_laughs(9), "aliases (*name) expand"), ("# " + "x" * MAX_YAML_BYTES, "larger than 8 MB")):
        if kind == "study":
            (study / "study.yaml").write_text(content)
            diags = check_study(study).diagnostics
        elif kind == "instrument":
            target = study / "instruments" / "demographics.yaml"
            target.write_text(content)
            diags = check_instrument_file(target)[1]
        else:
            target = tmp_path / "rules.yaml"
            target.write_text(content)
            diags = read_ruleset(target)[1]
        assert any(d.code == "YAML005" and words in d.message for d in diags), diags


def test_a_huge_file_is_not_read_into_memory(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(4 * MAX_YAML_BYTES)  # sparse: costs no disk
    doc = read_yaml(path)
    assert [d.code for d in doc.diagnostics] == ["YAML005"] and doc.text == ""
