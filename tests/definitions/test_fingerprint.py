"""The definitions fingerprint: any change to what screening reads changes it; where a definition was written
(comments, layout, positions) does not; each change is named."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import trialkit
from trialkit.definitions import load_study
from trialkit.definitions.fingerprint import Fingerprint, fingerprint
from trialkit.definitions.model import Position
from trialkit.definitions.rules import load_ruleset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path) -> Path:
    for name in ("study.yaml", "instruments", "eligibility_rules"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def fp(root: Path, **options) -> Fingerprint:
    study = load_study(root)
    return fingerprint(study, load_ruleset(root / "eligibility_rules" / "kap_trd.yaml", study), options=options)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_same_definitions_elsewhere_have_the_same_fingerprint(copy):
    assert fp(copy).sha256 == fp(ROOT).sha256
    assert fp(copy).changes(fp(ROOT)) == []


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        # comments and layout, in YAML and inside expressions
        ("eligibility_rules/kap_trd.yaml", "  - id: I1\n", "  # first\n  - id: I1\n"),
        ("eligibility_rules/kap_trd.yaml", "[madrs_total] >= 20\n      and", "[madrs_total]>=20 and\n     "),
        ("instruments/madrs.yaml", "+ [madrs_5]\n      + [madrs_6]", "+ [madrs_5] +\n      [madrs_6]"),
        ("study.yaml", "instruments:\n  - consent", "instruments:   # dictionary order\n  - consent"),
    ],
)
def test_comment_and_layout_edits_do_not_change_it(copy, file, old, new):
    before = fp(copy)
    edit(copy / file, old, new)
    assert fp(copy).sha256 == before.sha256


@pytest.mark.parametrize(
    ("file", "old", "new", "reason"),
    [
        ("eligibility_rules/kap_trd.yaml", "[madrs_total] >= 20", "[madrs_total] >= 22", "rules changed"),
        ("eligibility_rules/kap_trd.yaml", "reference_date: screening_date\n", "", "rules changed"),
        ("instruments/madrs.yaml", "+ [madrs_9] + [madrs_10]", "+ [madrs_9]", "instruments changed: madrs.yaml"),
        ("instruments/cssrs.yaml", "show_if: \"[cssrs_q2] = '1'\"", "show_if: \"[cssrs_q2] = '0'\"",
         "instruments changed: cssrs.yaml"),
        ("study.yaml", "arms:\n", "missing_codes: {UNK: Unknown}\narms:\n", "study changed: study.yaml"),
        ("study.yaml", "protocol_version: \"1.0\"", "protocol_version: \"1.1\"", "study changed: study.yaml"),
    ],
)
def test_a_change_to_what_screening_reads_changes_it_and_is_named(copy, file, old, new, reason):
    before = fp(copy)
    edit(copy / file, old, new)
    after = fp(copy)
    assert after.sha256 != before.sha256
    assert after.changes(before) == [reason]


def test_version_and_options_are_part_of_it(copy, monkeypatch):
    before = fp(copy, event="screening_arm_1")
    assert fp(copy, event="baseline_arm_1").changes(before) == ["screening options changed"]
    monkeypatch.setattr(trialkit, "__version__", "99.0")
    assert fp(copy, event="screening_arm_1").changes(before) == [
        f"trialkit version changed ({before.files['trialkit']} -> 99.0)"]


def test_an_added_instrument_is_named_and_a_json_round_trip_keeps_it(copy):
    before = fp(copy)
    study = load_study(copy)
    rules = load_ruleset(copy / "eligibility_rules" / "kap_trd.yaml", study)
    extra = replace(study.instruments[-1], name="extra", position=Position())
    grown = fingerprint(replace(study, instruments=(*study.instruments, extra)), rules)
    assert "instruments changed: extra.yaml" in grown.changes(before)
    again = Fingerprint.from_json(grown.to_json())
    assert again is not None and again.sha256 == grown.sha256
    assert Fingerprint.from_json("not json") is None
