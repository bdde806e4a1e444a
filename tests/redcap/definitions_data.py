"""Helpers shared by the definitions tests (diff, push, pull): the classic fixture project and a CLI runner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from trialkit.cli import main
from trialkit.definitions.dictionary import import_dictionary
from trialkit.definitions.model import Study
from trialkit.redcap.client import RedcapClient, RetryPolicy, Token
from trialkit.redcap.sandbox import ProjectSpec

ROOT = Path(__file__).resolve().parents[2]
CLASSIC_CSV = Path(__file__).parent / "fixtures" / "classic_dictionary.csv"


def classic_study() -> Study:
    """The small classic fixture project: three forms, adverse events repeating."""
    study = import_dictionary(CLASSIC_CSV.read_text(encoding="utf-8"), name="classic", path=str(CLASSIC_CSV))
    return replace(study, title="Classic fixture", repeating_instruments=("adverse_events",))


def client_for(sandbox, token: str) -> RedcapClient:
    return RedcapClient(sandbox.url, Token(token), retry=RetryPolicy(attempts=2, backoff=0.0))


def new_project(sandbox, study: Study, **spec_changes) -> tuple[str, RedcapClient]:
    token = sandbox.create_project(ProjectSpec.from_definition(study).with_(**spec_changes))
    return token, client_for(sandbox, token)


def edit_field(study: Study, name: str, **changes) -> Study:
    """The study with one field changed (or removed, with `remove=True`)."""
    remove = changes.pop("remove", False)
    instruments = []
    for inst in study.instruments:
        fields = tuple(f if f.name != name else replace(f, **changes) for f in inst.fields
                       if not (remove and f.name == name))
        instruments.append(replace(inst, fields=fields))
    return replace(study, instruments=tuple(instruments))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err
