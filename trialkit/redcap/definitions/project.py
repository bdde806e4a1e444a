"""A project's design in one comparable value, built either from a local study or from REDCap's exports.

Only what trialkit can both write and read back is compared: the data dictionary, arms, events (unique name,
label, arm), instrument-event mappings, repeating instruments and whether the project is longitudinal. Things a
study file cannot express (event day offsets, custom event and repeat labels, instrument labels, missing-data
codes) and the Data Access Groups (made on REDCap's DAG page, not through a design import) are carried for
`pull-definitions` but never compared, so a push can always reach an empty diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trialkit.definitions.dictionary import KEYS, form_event_rows, metadata_rows
from trialkit.definitions.model import Study
from trialkit.redcap.client import RedcapClient


@dataclass(frozen=True)
class ProjectDefinition:
    longitudinal: bool
    metadata: tuple[dict[str, str], ...]  # 18 API keys per field, every value a string
    arms: tuple[tuple[int, str], ...] = ()  # (arm_num, name)
    events: tuple[tuple[str, str, int], ...] = ()  # (unique_event_name, label, arm_num), REDCap's order
    mappings: frozenset[tuple[int, str, str]] = frozenset()  # (arm_num, unique_event_name, form)
    repeating: frozenset[tuple[str, str]] = frozenset()  # (unique_event_name or "" when classic, form)
    # carried, never compared
    in_production: bool = False
    title: str = ""
    missing_data_codes: str = ""
    instrument_labels: tuple[tuple[str, str], ...] = ()
    repeating_events: tuple[str, ...] = ()  # whole events that repeat: not expressible in a study file
    dags: tuple[str, ...] = ()  # Data Access Group names; pushing groups is not the API's dictionary business

    @property
    def forms(self) -> list[str]:
        return list(dict.fromkeys(r["form_name"] for r in self.metadata))

    @property
    def fields(self) -> dict[str, dict[str, str]]:
        return {r["field_name"]: r for r in self.metadata}

    def form_fields(self, form: str) -> list[str]:
        return [r["field_name"] for r in self.metadata if r["form_name"] == form and r["field_type"] != "descriptive"]

    @property
    def def_field(self) -> str:
        return self.metadata[0]["field_name"] if self.metadata else ""

    def events_of_arm(self, arm: int) -> list[str]:
        return [e for e, _, a in self.events if a == arm]

    def event_forms(self, event: str) -> list[str]:
        mapped = {f for _, e, f in self.mappings if e == event}
        return [f for f in self.forms if f in mapped]


def _metadata(rows: Any) -> tuple[dict[str, str], ...]:
    return tuple({k: "" if r.get(k) is None else str(r.get(k)) for k in KEYS} for r in rows)


def from_study(study: Study) -> ProjectDefinition:
    """The design a local study asks for."""
    if study.longitudinal:
        repeating = frozenset(study.repeating_pairs)
    else:
        repeating = frozenset(("", form) for form in study.repeating_instruments)
    return ProjectDefinition(
        longitudinal=study.longitudinal,
        metadata=_metadata(metadata_rows(study)),
        arms=tuple((a.number, a.name) for a in study.arms),
        events=tuple((e.name, e.label, e.arm) for e in study.events),
        mappings=frozenset((int(m["arm_num"]), str(m["unique_event_name"]), str(m["form"]))  # type: ignore[arg-type]
                           for m in form_event_rows(study)),
        repeating=repeating,
        title=study.title,
        missing_data_codes=" | ".join(f"{c.code}, {c.label}" for c in study.missing_codes),
        instrument_labels=tuple((i.name, i.label) for i in study.instruments if i.label),
        dags=tuple(study.data_access_groups),
    )


def fetch(client: RedcapClient, *, dags: bool = False) -> ProjectDefinition:
    """The design of the project behind `client` (project info, dictionary, instruments, schedule, repeats; with
    `dags`, its Data Access Groups: one request more, which only `pull-definitions` needs, as they are not
    compared)."""
    info = client.project_info()
    longitudinal = bool(int(info.get("is_longitudinal") or 0))
    metadata = _metadata(client.metadata())
    labels = tuple((str(i["instrument_name"]), str(i["instrument_label"])) for i in client.instruments())
    arms: tuple[tuple[int, str], ...] = ()
    events: tuple[tuple[str, str, int], ...] = ()
    mappings: frozenset[tuple[int, str, str]] = frozenset()
    if longitudinal:
        arms = tuple(sorted((int(a["arm_num"]), str(a["name"])) for a in client.arms()))
        events = tuple((str(e["unique_event_name"]), str(e["event_name"]), int(e["arm_num"])) for e in client.events())
        mappings = frozenset((int(m["arm_num"]), str(m["unique_event_name"]), str(m["form"]))
                             for m in client.form_event_mappings())
    repeating: set[tuple[str, str]] = set()
    whole_events: list[str] = []
    if int(info.get("has_repeating_instruments_or_events") or 0):
        for r in client.repeating():
            event = str(r.get("event_name") or "") if longitudinal else ""
            form = str(r.get("form_name") or "")
            if form:
                repeating.add((event, form))
            else:
                whole_events.append(event)
    return ProjectDefinition(
        longitudinal=longitudinal,
        metadata=metadata,
        arms=arms,
        events=events,
        mappings=mappings,
        repeating=frozenset(repeating),
        in_production=bool(int(info.get("in_production") or 0)),
        title=str(info.get("project_title") or ""),
        missing_data_codes=str(info.get("missing_data_codes") or ""),
        instrument_labels=labels,
        repeating_events=tuple(whole_events),
        dags=tuple(str(d["data_access_group_name"]) for d in client.dags()) if dags else (),
    )
