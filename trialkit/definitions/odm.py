"""A REDCap project XML (CDISC ODM, REDCap's "project XML" export) as a trialkit Study: instruments with their
labels, arms, events and their instruments, repeating instruments, missing-data codes and Data Access Groups.

The XML is read by the sandbox's reader (trialkit.redcap.sandbox.odm), which knows REDCap's `redcap:` extensions;
this module only turns that project into the definitions model, so `write_study` can write the YAML files.
"""

from __future__ import annotations

from dataclasses import replace

from trialkit.definitions.dictionary import DictionaryRow, parse_choices, study_from_rows
from trialkit.definitions.model import Arm, Event, Study

# What a study cannot hold yet, reported instead of silently dropped
REPEATING_EVENTS_NOTE = ("the project has repeating events ({events}); a trialkit study has no repeating events "
                         "yet, so they were left out")


def study_from_project_xml(text: str | bytes, *, name: str = "study", path: str = "<project xml>"
                           ) -> tuple[Study, list[str]]:
    """The study of a REDCap project XML, and notes on what it could not carry. Raises DefinitionError with the
    file's location when the XML is not a REDCap project or its fields are not valid."""
    from trialkit.redcap.sandbox.odm import parse_project

    project = parse_project(text, path=path)
    spec = project.spec
    rows = [DictionaryRow(dict(r), i) for i, r in enumerate(spec.metadata, start=1)]
    study = study_from_rows(rows, name=name, path=path)
    labels = dict(spec.form_labels)
    instruments = tuple(replace(i, label=labels.get(i.name, "") or i.label) for i in study.instruments)
    notes: list[str] = []
    arms: list[Arm] = []
    repeating_instruments: tuple[str, ...] = ()
    if spec.is_longitudinal:
        mapped: dict[str, list[str]] = {}
        for m in spec.mappings:
            mapped.setdefault(m["unique_event_name"], []).append(m["form"])
        repeats: dict[str, list[str]] = {}
        whole_events = []
        for r in spec.repeating:
            if r.get("form_name"):
                repeats.setdefault(r["event_name"], []).append(r["form_name"])
            else:
                whole_events.append(r["event_name"])
        if whole_events:
            notes.append(REPEATING_EVENTS_NOTE.format(events=", ".join(whole_events)))
        order = [i.name for i in instruments]
        for arm in spec.arms:
            number = int(arm["arm_num"])
            events = tuple(
                Event(
                    name=e["unique_event_name"],
                    label=e["event_name"],
                    arm=number,
                    day_offset=project.event_offsets.get(e["unique_event_name"], (0, 0, 0))[0],
                    offset_min=project.event_offsets.get(e["unique_event_name"], (0, 0, 0))[1],
                    offset_max=project.event_offsets.get(e["unique_event_name"], (0, 0, 0))[2],
                    instruments=tuple(f for f in order if f in mapped.get(e["unique_event_name"], ())),
                    repeating=tuple(f for f in order if f in repeats.get(e["unique_event_name"], ())),
                )
                for e in spec.events if int(e["arm_num"]) == number
            )
            arms.append(Arm(number=number, name=arm["name"], events=events))
    else:
        repeating_instruments = tuple(r["form_name"] for r in spec.repeating if r.get("form_name"))
    custom_events = [e["unique_event_name"] for e in spec.events if e.get("custom_event_label")]
    custom_repeats = list(dict.fromkeys(r["form_name"] for r in spec.repeating
                                        if r.get("form_name") and r.get("custom_form_label")))
    if custom_events or custom_repeats:
        parts = ([f"custom event labels ({', '.join(custom_events)})"] if custom_events else []) + (
            [f"custom repeating instrument labels ({', '.join(custom_repeats)})"] if custom_repeats else [])
        notes.append(f"{' and '.join(parts)} were left out: a trialkit study has no place for them")
    study = replace(
        study,
        instruments=instruments,
        title=spec.title,
        arms=tuple(arms),
        repeating_instruments=repeating_instruments,
        missing_codes=parse_choices(spec.missing_data_codes) if spec.missing_data_codes else (),
        data_access_groups=tuple(d["data_access_group_name"] for d in spec.dags),
    )
    return study, notes
