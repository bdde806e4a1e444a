"""The example data set: its generator is seeded, and the committed file is what the generator writes."""

from __future__ import annotations

import importlib.util

from trialkit.records import read_intake
from trialkit.screening.engine import screen
from trialkit.screening.explain import summarise

from .conftest import AS_OF, ROOT

_spec = importlib.util.spec_from_file_location("generate_intake", ROOT / "examples" / "generate_intake.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_generator_is_deterministic_and_seed_dependent():
    assert gen.generate(25, seed=1) == gen.generate(25, seed=1)
    assert gen.generate(25, seed=1) != gen.generate(25, seed=2)


def test_committed_data_matches_the_generator():
    """Same rows and values as the generator makes. Compared cell by cell on the non-blank cells, so a column the
    study gains later (blank in every row) does not make the committed file stale."""
    import csv

    with open(ROOT / "examples" / "kap_trd_intake.csv", encoding="utf-8", newline="") as fh:
        committed = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
    expected = [{k: v for k, v in row.items() if v != ""} for row in gen.generate()]
    assert committed == expected, "run `python examples/generate_intake.py` and commit the result"


def test_example_data_is_valid_redcap_shape_and_shows_every_disposition(study, rules):
    intake = read_intake(ROOT / "examples" / "kap_trd_intake.csv", study)
    assert intake.records.height == gen.DEFAULT_N
    assert intake.records["record_id"][0] == "0001"  # leading zeros kept
    assert intake.instances["atrq"].height > gen.DEFAULT_N  # 1 or more trials each
    sm = summarise(screen(rules, intake, as_of=AS_OF))
    assert all(n >= 20 for n in sm.by_disposition.values()), sm.by_disposition
    assert len(sm.by_primary_reason) >= 15  # most criteria show up as a reason
    assert len(sm.missing) >= 10


def test_example_data_is_valid_apart_from_its_deliberate_gaps(study):
    from trialkit.validation import validate

    findings = validate(read_intake(ROOT / "examples" / "kap_trd_intake.csv", study), as_of=AS_OF)
    # pending candidates have required fields still blank (that is the point); nothing else may be wrong
    checks = set(findings.frame["check"].to_list())
    assert checks <= {"required"}, findings.to_table(limit=20)
