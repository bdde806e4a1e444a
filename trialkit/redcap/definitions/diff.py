"""Compare a local study's design with a REDCap project's, and classify each change as REDCap's production
review would: *safe* (nothing stored changes meaning), *needs care* (logic, calculations, a widened validation:
values are read differently from now on) or *critical* (stored data can be lost or change meaning).

The diff is pure: `diff_definitions(local, remote)` compares two `ProjectDefinition`s. How many records hold
data where a critical change lands is a separate step (`count_affected`), which asks REDCap for those fields only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from trialkit.definitions.dictionary import parse_choices
from trialkit.definitions.redcap_names import checkbox_column
from trialkit.definitions.validation_types import get as validation_type
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.definitions.project import ProjectDefinition


class Severity(StrEnum):
    SAFE = "safe"
    CARE = "needs care"
    CRITICAL = "critical"


_RANK = {Severity.SAFE: 0, Severity.CARE: 1, Severity.CRITICAL: 2}
_CHOICE_TYPES = {"dropdown", "radio", "checkbox"}


@dataclass(frozen=True)
class Probe:
    """Where a critical change lands: records holding a value in any of `fields` (in one of `events`, when
    given; only the values in `codes`, when given) are affected."""

    fields: tuple[str, ...]
    events: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    area: str  # project, arm, event, mapping, repeating, form, field
    target: str  # what changed: a field, form or event name, an arm number, "event / form"
    what: str  # added, removed, changed, moved, order
    severity: Severity
    detail: str  # one line for people
    attribute: str = ""  # the dictionary column (fields) or setting that changed
    old: str = ""
    new: str = ""
    screening: bool = False  # screening reads this: the nightly job must not run past it
    probe: Probe | None = None
    records: int | None = None  # records holding data where a critical change lands (None: not counted)
    record_ids: tuple[str, ...] = ()  # which ones; empty when the record id field is an identifier

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "area": self.area, "target": self.target, "change": self.what, "severity": str(self.severity),
            "detail": self.detail, "screening": self.screening,
        }
        if self.attribute:
            out.update(attribute=self.attribute, old=self.old, new=self.new)
        if self.severity is Severity.CRITICAL:
            out["data_affected"] = None if self.records is None else self.records > 0
            out["records"] = self.records
            out["record_ids"] = list(self.record_ids)
        return out


@dataclass(frozen=True)
class DefinitionsDiff:
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def of(self, severity: Severity) -> list[Change]:
        return [c for c in self.changes if c.severity is severity]

    @property
    def data_loss(self) -> list[Change]:
        """Critical changes that land on stored data (or whose data could not be counted)."""
        return [c for c in self.of(Severity.CRITICAL) if c.probe is not None and (c.records is None or c.records)]

    @property
    def screening(self) -> list[Change]:
        return [c for c in self.changes if c.screening]

    def counts(self) -> dict[str, int]:
        return {str(s): len(self.of(s)) for s in Severity}

    def to_dict(self) -> dict[str, Any]:
        return {"matches": self.empty, "counts": self.counts(), "changes": [c.to_dict() for c in self.changes]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def render(self, *, title: str = "") -> str:
        """A readable plan: one line per change, the most serious first, old and new values beneath."""
        lines = [title] if title else []
        if self.empty:
            lines.append("no differences: the project matches the study")
            return "\n".join(lines) + "\n"
        for c in sorted(self.changes, key=lambda c: -_RANK[c.severity]):
            line = f"{c.severity!s:<10}  {c.area:<9} {c.target}: {c.detail}"
            if c.severity is Severity.CRITICAL and c.probe is not None:
                if c.records is None:
                    line += " [data not counted]"
                elif c.records:
                    line += f" [existing data affected: {c.records} record(s) hold values]"
                else:
                    line += " [no existing data affected]"
            lines.append(line)
            if c.record_ids:
                shown = ", ".join(c.record_ids[:_IDS_SHOWN])
                more = len(c.record_ids) - _IDS_SHOWN
                lines.append(f"{'':12}records: {shown}" + (f" and {more} more" if more > 0 else ""))
            if c.attribute and (c.old or c.new) and c.attribute not in ("order",):
                lines.append(f"{'':12}- project: {_one_line(c.old)}")
                lines.append(f"{'':12}+ study:   {_one_line(c.new)}")
        n = self.counts()
        lines.append(f"{len(self.changes)} change(s): {n['critical']} critical, {n['needs care']} needs care, "
                     f"{n['safe']} safe")
        return "\n".join(lines) + "\n"


_IDS_SHOWN = 10  # record ids listed in the text plan (all of them in JSON)


def _one_line(text: str) -> str:
    text = text.replace("\r", "").replace("\n", "\\n")
    return text if text else "(blank)"


# ---- the comparison -----------------------------------------------------------------------------------------------

def diff_definitions(local: ProjectDefinition, remote: ProjectDefinition) -> DefinitionsDiff:
    """What must change in `remote` (the project) to match `local` (the study)."""
    changes: list[Change] = []
    changes += _settings(local, remote)
    changes += _schedule(local, remote)
    changes += _dictionary(local, remote)
    return DefinitionsDiff(tuple(changes))


def _settings(local: ProjectDefinition, remote: ProjectDefinition) -> list[Change]:
    out = []
    if local.longitudinal != remote.longitudinal:
        out.append(Change("project", "longitudinal", "changed", Severity.CRITICAL,
                          "longitudinal (events) " + ("on" if local.longitudinal else "off")
                          + ": set it in REDCap's Project Setup; the API cannot", "longitudinal",
                          str(remote.longitudinal).lower(), str(local.longitudinal).lower(), screening=True))
    if bool(local.repeating) != bool(remote.repeating):
        out.append(Change("project", "repeating", "changed", Severity.CARE,
                          "repeating instruments " + ("enabled" if local.repeating else "disabled"), "repeating",
                          str(bool(remote.repeating)).lower(), str(bool(local.repeating)).lower()))
    return out


def _schedule(local: ProjectDefinition, remote: ProjectDefinition) -> list[Change]:
    out: list[Change] = []
    if not (local.longitudinal and remote.longitudinal):
        return _repeats(local, remote) if local.longitudinal == remote.longitudinal else out
    l_arms, r_arms = dict(local.arms), dict(remote.arms)
    for num in sorted(set(l_arms) | set(r_arms)):
        if num not in r_arms:
            out.append(Change("arm", str(num), "added", Severity.SAFE, f"arm added ({l_arms[num]})"))
        elif num not in l_arms:
            events = remote.events_of_arm(num)
            out.append(Change("arm", str(num), "removed", Severity.CRITICAL,
                              f"arm removed with its {len(events)} event(s)", screening=True,
                              probe=_events_probe(remote, events)))
        elif l_arms[num] != r_arms[num]:
            out.append(Change("arm", str(num), "changed", Severity.SAFE, "arm renamed", "name", r_arms[num],
                              l_arms[num]))
    l_events = {e: (label, arm) for e, label, arm in local.events}
    r_events = {e: (label, arm) for e, label, arm in remote.events}
    gone_arms = set(r_arms) - set(l_arms)
    for name in [*l_events, *(e for e in r_events if e not in l_events)]:
        if name not in r_events:
            out.append(Change("event", name, "added", Severity.SAFE, f"event added ({l_events[name][0]})"))
        elif name not in l_events:
            if r_events[name][1] in gone_arms:
                continue  # said once, with its arm
            out.append(Change("event", name, "removed", Severity.CRITICAL, "event removed (its data is deleted)",
                              screening=True, probe=_events_probe(remote, [name])))
        elif l_events[name][0] != r_events[name][0]:
            out.append(Change("event", name, "changed", Severity.SAFE, "event label changed", "event_name",
                              r_events[name][0], l_events[name][0]))
    gone_events = {e for e in r_events if e not in l_events}
    for _arm, event, form in sorted(local.mappings - remote.mappings):
        out.append(Change("mapping", f"{event} / {form}", "added", Severity.SAFE, "form designated for the event",
                          screening=True))
    for _arm, event, form in sorted(remote.mappings - local.mappings):
        if event in gone_events:
            continue
        out.append(Change("mapping", f"{event} / {form}", "removed", Severity.CRITICAL,
                          "form no longer designated for the event (its data there is lost)", screening=True,
                          probe=Probe(_form_data(remote, form), (event,))))
    return out + _repeats(local, remote, gone_events)


def _repeats(local: ProjectDefinition, remote: ProjectDefinition, gone_events: set[str] = frozenset()) -> list[Change]:
    out = []
    for event, form in sorted(local.repeating - remote.repeating):
        out.append(Change("repeating", f"{event} / {form}" if event else form, "added", Severity.CARE,
                          "instrument made repeating", screening=True))
    for event, form in sorted(remote.repeating - local.repeating):
        if event in gone_events:
            continue
        out.append(Change("repeating", f"{event} / {form}" if event else form, "removed", Severity.CRITICAL,
                          "instrument no longer repeating (its instances are stranded)", screening=True,
                          probe=Probe(_form_data(remote, form), (event,) if event else ())))
    return out


def _events_probe(remote: ProjectDefinition, events: Iterable[str]) -> Probe | None:
    events = tuple(events)
    fields = [f for e in events for form in remote.event_forms(e) for f in _form_data(remote, form)]
    return Probe(tuple(dict.fromkeys(fields)), events) if fields else None


def _form_data(remote: ProjectDefinition, form: str) -> tuple[str, ...]:
    """What a form holds for a record: its fields' values and its status (Unverified/Complete)."""
    return (*remote.form_fields(form), status_field(form))


def _dictionary(local: ProjectDefinition, remote: ProjectDefinition) -> list[Change]:
    out: list[Change] = []
    lf, rf = local.fields, remote.fields
    l_forms, r_forms = local.forms, remote.forms
    if local.def_field != remote.def_field and lf and rf:
        out.append(Change("field", local.def_field, "changed", Severity.CRITICAL,
                          "the record id field changes (every record's identity)", "record id", remote.def_field,
                          local.def_field, screening=True, probe=Probe((remote.def_field,))))
    for form in r_forms:
        if form not in l_forms:
            # fields that move to another form keep their data; the form's status values go with the form
            gone = [f for f in remote.form_fields(form) if f not in lf]
            moved = len(remote.form_fields(form)) - len(gone)
            detail = (f"form deleted: {moved} field(s) move to other forms, {len(gone)} deleted with their data, "
                      "its form status values are lost" if moved else f"form deleted with its {len(gone)} field(s)")
            out.append(Change("form", form, "removed", Severity.CRITICAL, detail, screening=True,
                              probe=Probe((*gone, status_field(form)))))
    for form in l_forms:
        if form not in r_forms:
            n = sum(1 for r in local.metadata if r["form_name"] == form)
            out.append(Change("form", form, "added", Severity.SAFE, f"form added with {n} field(s)", screening=True))
    for name, row in lf.items():
        if name not in rf and row["form_name"] in r_forms:
            out.append(Change("field", name, "added", Severity.SAFE,
                              f"field added ({row['field_type']} on {row['form_name']})", screening=True))
    for name, row in rf.items():
        if name not in lf and row["form_name"] in l_forms:
            out.append(Change("field", name, "removed", Severity.CRITICAL, "field deleted (its data is deleted)",
                              screening=True, probe=None if row["field_type"] == "descriptive" else Probe((name,))))
    for name, row in lf.items():
        if name in rf:
            out += _field(name, rf[name], row)
    common_l = [n for n in lf if n in rf]
    common_r = [n for n in rf if n in lf]
    if common_l != common_r:
        moved = [n for n, m in zip(common_l, common_r, strict=True) if n != m]
        out.append(Change("field", moved[0], "order", Severity.SAFE,
                          f"field order changes ({len(moved)} field(s) take other places)", "order"))
    return out


_SAFE_TEXT = {
    "field_label": "label", "field_note": "note", "section_header": "section header",
    "custom_alignment": "alignment", "question_number": "question number", "matrix_group_name": "matrix group",
    "matrix_ranking": "matrix ranking",
}


def status_field(form: str) -> str:
    """REDCap's form status column of a form (not in the dictionary; exported with the records)."""
    return f"{form}_complete"


def _field(name: str, old: dict[str, str], new: dict[str, str]) -> list[Change]:
    out: list[Change] = []

    def change(attr: str, severity: Severity, detail: str, *, screening: bool = False,
               probe: Probe | None = None) -> None:
        out.append(Change("field", name, "changed", severity, detail, attr, old[attr], new[attr],
                          screening=screening, probe=probe))

    otype, ntype = old["field_type"], new["field_type"]
    if old["form_name"] != new["form_name"]:
        change("form_name", Severity.CARE, f"field moved to form {new['form_name']}", screening=True)
    if otype != ntype:
        if {otype, ntype} <= {"dropdown", "radio"}:
            change("field_type", Severity.CARE, f"type {otype} -> {ntype} (same codes)", screening=True)
        else:
            change("field_type", Severity.CRITICAL, f"type {otype} -> {ntype}", screening=True,
                   probe=None if otype == "descriptive" else Probe((name,)))
    out += _choices_cell(name, old, new, change)
    out += _validation(name, old, new, change)
    if _logic(old["branching_logic"]) != _logic(new["branching_logic"]):
        change("branching_logic", Severity.CARE, "branching logic changed", screening=True)
    for attr in ("required_field", "identifier"):
        if old[attr].strip() != new[attr].strip():
            change(attr, Severity.CARE, f"{attr.replace('_field', '')} {'set' if new[attr].strip() else 'cleared'}")
    if old["field_annotation"] != new["field_annotation"]:
        tags_differ = _tags(old["field_annotation"]) != _tags(new["field_annotation"])
        change("field_annotation", Severity.CARE if tags_differ else Severity.SAFE,
               "action tags changed" if tags_differ else "annotation changed", screening=tags_differ)
    for attr, what in _SAFE_TEXT.items():
        if old[attr] != new[attr]:
            change(attr, Severity.SAFE, f"{what} changed")
    return out


def _choices_cell(name: str, old: dict[str, str], new: dict[str, str], change: Any) -> list[Change]:
    attr = "select_choices_or_calculations"
    if old[attr] == new[attr]:
        return []
    otype, ntype = old["field_type"], new["field_type"]
    if ntype == "calc" and otype == "calc":
        if _logic(old[attr]) != _logic(new[attr]):
            change(attr, Severity.CARE, "calculation changed", screening=True)
        return []
    if otype in _CHOICE_TYPES and ntype in _CHOICE_TYPES:
        was = {c.code: c.label for c in parse_choices(old[attr])}
        now = {c.code: c.label for c in parse_choices(new[attr])}
        removed = [c for c in was if c not in now]
        added = [c for c in now if c not in was]
        codes_of: dict[str, set[str]] = {}
        for code, label in now.items():
            codes_of.setdefault(label, set()).add(code)
        # a label now under another code (3 -> 9, or 1 and 2 swapped): what is stored under it means something else
        recoded = [c for c in was if c not in codes_of.get(was[c], {c})]
        relabelled = [c for c in was if c in now and was[c] != now[c] and c not in recoded]
        if removed or recoded:
            gone = [c for c in removed if c not in recoded]
            parts = ([f"recoded: {', '.join(recoded)}"] if recoded else []) + (
                [f"removed: {', '.join(gone)}"] if gone else [])
            change(attr, Severity.CRITICAL, f"choice(s) {'; '.join(parts)}", screening=True,
                   probe=Probe((name,), codes=tuple(dict.fromkeys([*recoded, *removed]))))
        elif relabelled:
            change(attr, Severity.CARE, f"label of choice(s) {', '.join(relabelled)} changed (stored codes now mean "
                   "something else)", screening=False)
        elif added:
            change(attr, Severity.SAFE, f"choice(s) added: {', '.join(added)}", screening=True)
        elif list(was) != list(now):
            change(attr, Severity.SAFE, "choices reordered")
        else:
            change(attr, Severity.SAFE, "choice list spacing changed")
        return []
    if otype == ntype:
        change(attr, Severity.SAFE, "slider labels changed" if ntype == "slider" else "choices cell changed")
    return []


def _validation(name: str, old: dict[str, str], new: dict[str, str], change: Any) -> list[Change]:
    vkey = "text_validation_type_or_show_slider_number"
    if old["field_type"] != "text" or new["field_type"] != "text":
        if old[vkey] != new[vkey]:
            change(vkey, Severity.SAFE, "slider/file display option changed")
        for attr in ("text_validation_min", "text_validation_max"):
            if old[attr] != new[attr]:
                change(attr, Severity.CARE, f"{attr[16:]} changed", screening=True)
        return []
    if old[vkey] != new[vkey]:
        if _widens(old[vkey], new[vkey]):
            change(vkey, Severity.CARE, f"validation widened ({old[vkey] or 'none'} -> {new[vkey] or 'none'})",
                   screening=True)
        else:
            change(vkey, Severity.CRITICAL, f"validation tightened ({old[vkey] or 'none'} -> {new[vkey] or 'none'})",
                   screening=True, probe=Probe((name,)))
    for attr, lower_is_wider in (("text_validation_min", True), ("text_validation_max", False)):
        was, now = old[attr].strip(), new[attr].strip()
        if was == now:
            continue
        wider = now == "" or (was != "" and _order(now, was) is lower_is_wider)
        if wider:
            change(attr, Severity.CARE, f"{attr[16:]} widened", screening=True)
        else:
            change(attr, Severity.CRITICAL, f"{attr[16:]} tightened", screening=True, probe=Probe((name,)))
    return []


def _widens(old: str, new: str) -> bool:
    if new == "":
        return True
    if old == "":
        return False
    a, b = validation_type(old), validation_type(new)
    if a is None or b is None:
        return False
    if a.pattern == b.pattern:  # a display format only (date_dmy vs date_ymd): stored values are the same
        return True
    return b.name == "number" and a.kind in ("integer", "number") and not a.decimal_comma


def _order(a: str, b: str) -> bool | None:
    """True when a < b: numbers as numbers, ISO dates and times as text; None when they cannot be compared."""
    try:
        return float(a) < float(b)
    except ValueError:
        pass
    if a[:4].isdigit() and b[:4].isdigit():
        return a < b
    # times (HH:MM, HH:MM:SS, MM:SS) of one shape sort as text
    if _CLOCK.fullmatch(a) and _CLOCK.fullmatch(b) and len(a) == len(b):
        return a < b
    return None


_CLOCK = re.compile(r"\d\d:\d\d(:\d\d)?")


def _logic(text: str) -> str:
    return " ".join(text.split())


def _tags(annotation: str) -> list[str]:
    return re.findall(r"@[A-Z][A-Z0-9_-]*(?:=\S*|\([^)]*\))?", annotation)


# ---- counting data where critical changes land -------------------------------------------------------------------

def count_affected(client: RedcapClient, diff: DefinitionsDiff, remote: ProjectDefinition) -> DefinitionsDiff:
    """Fill in `records` for every critical change with a probe, asking REDCap for those fields only (one
    export of the probed fields and the record id)."""
    probes = [c.probe for c in diff.changes if c.probe is not None and c.severity is Severity.CRITICAL]
    statuses = {status_field(form) for form in remote.forms}
    fields = list(dict.fromkeys(f for p in probes for f in p.fields if f in remote.fields or f in statuses))
    if not fields:
        return DefinitionsDiff(tuple(replace(c, records=0) if c.probe is not None else c for c in diff.changes))
    def_field = remote.def_field
    # record ids that are identifiers (an MRN as record id) are counted, never shown
    hidden = remote.fields.get(def_field, {}).get("identifier", "").strip().lower() == "y"
    rows = client.export_records(fields=[def_field, *[f for f in fields if f != def_field]])
    counted = []
    for c in diff.changes:
        if c.probe is None or c.severity is not Severity.CRITICAL:
            counted.append(c)
            continue
        holders = {str(row[def_field]) for row in rows if _holds(row, c.probe, remote)}
        ids = () if hidden else tuple(sorted(holders, key=_id_order))
        counted.append(replace(c, records=len(holders), record_ids=ids))
    return DefinitionsDiff(tuple(counted))


def _id_order(record: str) -> tuple[int, int | str]:
    return (0, int(record)) if record.isdigit() else (1, record)


def _holds(row: dict[str, Any], probe: Probe, remote: ProjectDefinition) -> bool:
    if probe.events and str(row.get("redcap_event_name", "")) not in probe.events:
        return False
    meta = remote.fields
    for name in probe.fields:
        info = meta.get(name)
        if info is None:  # a form status column: exports say 0 for forms never entered, so only 1 and 2 count
            if str(row.get(name, "") or "").strip() in ("1", "2"):
                return True
            continue
        if info["field_type"] == "checkbox":
            codes: Sequence[str] = probe.codes or [
                c.code for c in parse_choices(info["select_choices_or_calculations"])]
            if any(str(row.get(checkbox_column(name, code), "")) == "1" for code in codes):
                return True
            continue
        value = str(row.get(name, "") or "").strip()
        if value and (not probe.codes or value in probe.codes):
            return True
    return False
