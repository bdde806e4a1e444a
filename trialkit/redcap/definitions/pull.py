"""Write a REDCap project's design as trialkit files: study.yaml and one YAML file per instrument."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from trialkit.definitions.dictionary import DictionaryRow, parse_choices, study_from_rows
from trialkit.definitions.model import Arm, Event, Study
from trialkit.errors import DefinitionError, UsageError
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.definitions.project import ProjectDefinition, fetch


def study_from_project(project: ProjectDefinition, *, name: str | None = None) -> Study:
    """The study a project's design amounts to. Raises DefinitionError for what a study cannot hold (a whole
    event that repeats) or a dictionary trialkit cannot read."""
    if project.repeating_events:
        raise DefinitionError(f"events {', '.join(project.repeating_events)} repeat as a whole: trialkit studies "
                              "hold repeating instruments only")
    rows = [DictionaryRow(dict(r), i) for i, r in enumerate(project.metadata, start=1)]
    base = study_from_rows(rows, name=name or _slug(project.title), path="REDCap metadata export")
    labels = dict(project.instrument_labels)
    instruments = tuple(replace(i, label=labels.get(i.name, "")) for i in base.instruments)
    arms: tuple[Arm, ...] = ()
    classic_repeats: tuple[str, ...] = ()
    forms = project.forms
    if project.longitudinal:
        arms = tuple(
            Arm(number=num, name=arm_name, events=tuple(
                Event(name=event, label=label, arm=num,
                      instruments=tuple(project.event_forms(event)),
                      repeating=tuple(f for f in forms if (event, f) in project.repeating))
                for event, label, arm in project.events if arm == num))
            for num, arm_name in project.arms
        )
    else:
        classic_repeats = tuple(f for f in forms if ("", f) in project.repeating)
    return replace(base, instruments=instruments, title=project.title, arms=arms,
                   repeating_instruments=classic_repeats,
                   missing_codes=parse_choices(project.missing_data_codes),
                   data_access_groups=project.dags)


def pull_definitions(client: RedcapClient, out: Path, *, name: str | None = None,
                     overwrite: bool = False) -> list[Path]:
    """Export the project's design and write it under `out`; returns the files written."""
    from trialkit.definitions.redcap_names import FIELD_NAME
    from trialkit.definitions.yamlwrite import write_study

    if name is not None and not FIELD_NAME.fullmatch(name):
        # written into study.yaml as is, where `trialkit check` would refuse it
        raise UsageError("--name: a study id is lowercase letters, digits and _, starting with a letter")
    return write_study(study_from_project(fetch(client, dags=True), name=name), Path(out), overwrite=overwrite)


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    return slug if slug and slug[0].isalpha() else f"study_{slug}".rstrip("_")
