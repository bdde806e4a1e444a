"""REDCap's "CDISC ODM (XML)" project file: written from a sandbox project, and read back into one.

The shape follows REDCap's own project XML export (docs/redcap-sandbox.md, "Project XML"): ODM 1.3.1 elements
(StudyEventDef, FormDef, ItemGroupDef, ItemDef, CodeList, ClinicalData) with REDCap's `redcap:` vendor
extensions for what plain ODM lacks (field type, validation, section header, arms, unique event names, repeating
set-up, Data Access Groups). Reading accepts files from REDCap itself; the file is user-provided, so it is parsed
with defusedxml (no entity expansion, no external entities or DTDs).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from trialkit.errors import DataError, DefinitionError, Diagnostic
from trialkit.redcap.sandbox.project import METADATA_KEYS, ProjectSpec, Schema, dag_rows, normalise_metadata

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
REDCAP_NS = "https://projectredcap.org"
SOURCE_VERSION = "14.5.8"

# REDCap's ODM names for some field types and validations (legacy internal names)
_TYPE_TO_ODM = {"dropdown": "select", "notes": "textarea"}
_TYPE_FROM_ODM = {v: k for k, v in _TYPE_TO_ODM.items()}
_VALIDATION_TO_ODM = {"integer": "int", "number": "float"}
_VALIDATION_FROM_ODM = {"int": "integer", "float": "number", "date": "date_ymd"}
# metadata key -> REDCap's ItemDef attribute, for the plain text ones
_ATTRS = (
    ("field_note", "FieldNote"),
    ("section_header", "SectionHeader"),
    ("branching_logic", "BranchingLogic"),
    ("custom_alignment", "CustomAlignment"),
    ("question_number", "QuestionNumber"),
    ("matrix_group_name", "MatrixGroupName"),
    ("field_annotation", "FieldAnnotation"),
)
_FLAGS = (("identifier", "Identifier"), ("required_field", "RequiredField"), ("matrix_ranking", "MatrixRanking"))
_PSEUDO = {"redcap_data_access_group", "redcap_survey_identifier"}


# ---- writing --------------------------------------------------------------------------------------------------

# characters XML 1.0 cannot carry at all (not even escaped): left out rather than writing a file nothing can read
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _a(name: str, value: object) -> str:
    text = _NOT_XML.sub("", str(value))
    return f" {name}={quoteattr(text, {chr(10): '&#10;', chr(13): '&#13;', chr(9): '&#9;'})}"


def _t(value: str) -> str:
    return escape(_NOT_XML.sub("", value))


def _oid(title: str) -> str:
    return "Project." + (re.sub(r"[^A-Za-z0-9]", "", title)[:30] or "Sandbox")


def _data_type(row: dict[str, str]) -> str:
    ftype, validation = row["field_type"], row["text_validation_type_or_show_slider_number"]
    if ftype == "checkbox" or ftype in ("yesno", "truefalse"):
        return "boolean"
    if ftype == "calc" or validation == "number":
        return "float"
    if validation == "integer" or ftype == "slider":
        return "integer"
    if validation.startswith("datetime"):
        return "datetime"
    if validation.startswith("date"):
        return "date"
    return "text"


def render(spec: ProjectSpec, rows: Iterable[tuple[str, str, str, int, dict[str, str], str]] = (), *,
           with_data: bool = True, with_dags: bool = False, now: dt.datetime | None = None) -> str:
    """The project XML of `spec`; `rows` are (record, event, repeat instrument, instance, values, dag) in
    export order."""
    schema = Schema(spec)
    stamp = (now or dt.datetime.now()).strftime("%Y-%m-%dT%H:%M:%S")
    study_oid = _oid(spec.title)
    mdv_oid = f"Metadata.{study_oid[8:]}_{stamp[:10]}"
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8" ?>\n']
    out.append(f'<ODM xmlns="{ODM_NS}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
               f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:redcap="{REDCAP_NS}" '
               f'ODMVersion="1.3.1" FileOID="000-00-0000" FileType="Snapshot"{_a("Description", spec.title)} '
               f'AsOfDateTime="{stamp}" CreationDateTime="{stamp}" SourceSystem="REDCap" '
               f'SourceSystemVersion="{SOURCE_VERSION}">\n')
    out.append(f'<Study OID="{study_oid}">\n<GlobalVariables>\n')
    out.append(f"\t<StudyName>{_t(spec.title)}</StudyName>\n")
    out.append(f"\t<StudyDescription>This file contains the metadata, events, and data for REDCap project "
               f"{_t(json.dumps(spec.title, ensure_ascii=False))}.</StudyDescription>\n")
    out.append(f"\t<ProtocolName>{_t(spec.title)}</ProtocolName>\n")
    out.append(f"\t<redcap:RecordAutonumberingEnabled>{int(spec.record_autonumbering)}"
               "</redcap:RecordAutonumberingEnabled>\n")
    out.append(f"\t<redcap:MissingDataCodes>{_t(spec.missing_data_codes)}</redcap:MissingDataCodes>\n")
    if spec.repeating:
        out.append("\t<redcap:RepeatingInstrumentsAndEvents>\n")
        default_event = schema.events[0] if schema.is_longitudinal else "event_1_arm_1"
        by_event: dict[str, list[dict]] = {}
        for r in spec.repeating:
            by_event.setdefault(r.get("event_name") or default_event, []).append(r)
        for event, items in by_event.items():
            forms = [r for r in items if r.get("form_name")]
            if forms:
                out.append("\t\t<redcap:RepeatingInstruments>\n")
                for r in forms:
                    out.append(f"\t\t\t<redcap:RepeatingInstrument{_a('redcap:UniqueEventName', event)}"
                               f"{_a('redcap:RepeatInstrument', r['form_name'])}"
                               f"{_a('redcap:CustomLabel', r.get('custom_form_label', ''))}/>\n")
                out.append("\t\t</redcap:RepeatingInstruments>\n")
            if len(forms) < len(items):
                out.append(f"\t\t<redcap:RepeatingEvent{_a('redcap:UniqueEventName', event)}/>\n")
        out.append("\t</redcap:RepeatingInstrumentsAndEvents>\n")
    if spec.dags:
        out.append("\t<redcap:DataAccessGroupsGroup>\n")
        out += [f"\t\t<redcap:DataAccessGroups{_a('group_name', d['data_access_group_name'])}/>\n" for d in spec.dags]
        out.append("\t</redcap:DataAccessGroupsGroup>\n")
    out.append("</GlobalVariables>\n")
    out.append(f'<MetaDataVersion OID="{mdv_oid}"{_a("Name", spec.title)}'
               f'{_a("redcap:RecordIdField", schema.def_field)}>\n')
    out += _protocol(spec, schema)
    out += _forms(spec, schema, with_dags)
    out.append("</MetaDataVersion>\n</Study>\n")
    if with_data:
        out.append(f'<ClinicalData StudyOID="{study_oid}" MetaDataVersionOID="{mdv_oid}">\n')
        out += _clinical(schema, rows, with_dags)
        out.append("</ClinicalData>\n")
    out.append("</ODM>")
    return "".join(out)


def _protocol(spec: ProjectSpec, schema: Schema) -> list[str]:
    if not schema.is_longitudinal:
        return []
    arm_names = {int(a["arm_num"]): a["name"] for a in spec.arms}
    out = ["\t<Protocol>\n"]
    out += [f'\t\t<StudyEventRef StudyEventOID="Event.{e}" OrderNumber="{i}" Mandatory="No"/>\n'
            for i, e in enumerate(schema.events, start=1)]
    out.append("\t</Protocol>\n")
    for e in spec.events:
        unique, arm = e["unique_event_name"], int(e["arm_num"])
        repeating = "Yes" if unique in schema.repeating_events else "No"
        out.append(f'\t<StudyEventDef OID="Event.{unique}"{_a("Name", e["event_name"])} Type="Common" '
                   f'Repeating="{repeating}"{_a("redcap:EventName", e["event_name"])}'
                   f'{_a("redcap:CustomEventLabel", e.get("custom_event_label", ""))}'
                   f'{_a("redcap:UniqueEventName", unique)} redcap:ArmNum="{arm}"'
                   f'{_a("redcap:ArmName", arm_names.get(arm, f"Arm {arm}"))}>\n')
        for i, form in enumerate(schema.event_forms.get(unique, ()), start=1):
            out.append(f'\t\t<FormRef FormOID="Form.{form}" OrderNumber="{i}" Mandatory="No" '
                       f'redcap:FormName="{form}"/>\n')
        out.append("\t</StudyEventDef>\n")
    return out


def _forms(spec: ProjectSpec, schema: Schema, with_dags: bool) -> list[str]:
    out: list[str] = []
    groups: list[str] = []
    items: list[str] = []
    codes: list[str] = []
    rows = {r["field_name"]: r for r in spec.metadata}
    for form in schema.forms:
        label = schema.form_labels[form]
        names = schema.form_fields[form]
        out.append(f'\t<FormDef OID="Form.{form}"{_a("Name", label)} Repeating="No" redcap:FormName="{form}">\n')
        out.append(f'\t\t<ItemGroupRef ItemGroupOID="{form}.{names[0]}" Mandatory="No"/>\n')
        out.append(f'\t\t<ItemGroupRef ItemGroupOID="{form}.{form}_complete" Mandatory="No"/>\n\t</FormDef>\n')
        groups.append(f'\t<ItemGroupDef OID="{form}.{names[0]}"{_a("Name", label)} Repeating="No">\n')
        for name in names:
            row = rows[name]
            oids = [col for _, col in schema.fields[name].checkbox_columns] or [name]
            mandatory = "Yes" if row["required_field"] == "y" else "No"
            for oid in oids:
                groups.append(f'\t\t<ItemRef ItemOID="{oid}" Mandatory="{mandatory}" redcap:Variable="{name}"/>\n')
                items.append(_item_def(row, oid, codes))
            if name == schema.def_field and with_dags and spec.dags:
                groups.append('\t\t<ItemRef ItemOID="redcap_data_access_group" Mandatory="No" '
                              'redcap:Variable="redcap_data_access_group"/>\n')
                items.append('\t<ItemDef OID="redcap_data_access_group" Name="redcap_data_access_group" '
                             'DataType="text" Length="999" redcap:Variable="redcap_data_access_group">\n'
                             "\t\t<Question><TranslatedText>Data Access Group</TranslatedText></Question>\n"
                             "\t</ItemDef>\n")
        groups.append("\t</ItemGroupDef>\n")
        complete = f"{form}_complete"
        groups.append(f'\t<ItemGroupDef OID="{form}.{complete}" Name="Form Status" Repeating="No">\n'
                      f'\t\t<ItemRef ItemOID="{complete}" Mandatory="No" redcap:Variable="{complete}"/>\n'
                      "\t</ItemGroupDef>\n")
        items.append(f'\t<ItemDef OID="{complete}" Name="{complete}" DataType="text" Length="1" '
                     f'redcap:Variable="{complete}" redcap:FieldType="select" redcap:SectionHeader="Form Status">\n'
                     "\t\t<Question><TranslatedText>Complete?</TranslatedText></Question>\n"
                     f'\t\t<CodeListRef CodeListOID="{complete}.choices"/>\n\t</ItemDef>\n')
        codes.append(_code_list(complete, complete, "text", (("0", "Incomplete"), ("1", "Unverified"),
                                                              ("2", "Complete"))))
    return out + groups + items + codes


def _item_def(row: dict[str, str], oid: str, codes: list[str]) -> str:
    from trialkit.redcap.sandbox.naming import parse_choices

    ftype = row["field_type"]
    validation = row["text_validation_type_or_show_slider_number"]
    attrs = [_a("redcap:Variable", row["field_name"]), _a("redcap:FieldType", _TYPE_TO_ODM.get(ftype, ftype))]
    if validation:
        attrs.append(_a("redcap:TextValidationType", _VALIDATION_TO_ODM.get(validation, validation)))
    if ftype == "slider" and row["select_choices_or_calculations"]:
        attrs.append(_a("redcap:SliderLabels", row["select_choices_or_calculations"]))
    if ftype == "calc":
        attrs.append(_a("redcap:Calculation", row["select_choices_or_calculations"]))
    attrs += [_a(f"redcap:{attr}", row[key]) for key, attr in _ATTRS if row[key]]
    attrs += [_a(f"redcap:{attr}", "y") for key, attr in _FLAGS if row[key] == "y"]
    body = [f"\t\t<Question><TranslatedText>{_t(row['field_label'])}</TranslatedText></Question>\n"]
    choices: tuple[tuple[str, str], ...] = ()
    if ftype in ("dropdown", "radio", "checkbox"):
        choices = parse_choices(row["select_choices_or_calculations"])
    elif ftype == "yesno":
        choices = (("1", "Yes"), ("0", "No"))
    elif ftype == "truefalse":
        choices = (("1", "True"), ("0", "False"))
    if choices:
        body.append(f'\t\t<CodeListRef CodeListOID="{oid}.choices"/>\n')
        if ftype == "checkbox":
            codes.append(_code_list(oid, row["field_name"], "boolean", (("1", "Checked"), ("0", "Unchecked")),
                                    checkbox=row["select_choices_or_calculations"]))
        else:
            codes.append(_code_list(oid, row["field_name"], _data_type(row), choices))
    for comparator, key in (("GE", "text_validation_min"), ("LE", "text_validation_max")):
        if row[key]:
            body.append(f'\t\t<RangeCheck Comparator="{comparator}" SoftHard="Soft">\n'
                        f"\t\t\t<CheckValue>{_t(row[key])}</CheckValue>\n\t\t</RangeCheck>\n")
    return (f'\t<ItemDef OID="{oid}" Name="{oid}" DataType="{_data_type(row)}" Length="999"{"".join(attrs)}>\n'
            + "".join(body) + "\t</ItemDef>\n")


def _code_list(oid: str, variable: str, data_type: str, choices: Iterable[tuple[str, str]], *,
               checkbox: str = "") -> str:
    extra = _a("redcap:CheckboxChoices", checkbox) if checkbox else ""
    out = [f'\t<CodeList OID="{oid}.choices" Name="{oid}" DataType="{data_type}" redcap:Variable="{variable}"'
           f"{extra}>\n"]
    out += [f"\t\t<CodeListItem{_a('CodedValue', code)}><Decode><TranslatedText>{_t(label)}</TranslatedText>"
            "</Decode></CodeListItem>\n" for code, label in choices]
    out.append("\t</CodeList>\n")
    return "".join(out)


def _clinical(schema: Schema, rows: Iterable[tuple[str, str, str, int, dict[str, str], str]],
              with_dags: bool) -> Iterator[str]:
    longitudinal = schema.is_longitudinal
    form_of = {c.name: c.form for c in schema.columns}
    current = None
    for record, event, rform, inst, data, dag in rows:
        if record != current:
            if current is not None:
                yield "\t</SubjectData>\n"
            yield (f"\t<SubjectData{_a('SubjectKey', record)}{_a('redcap:RecordIdField', schema.def_field)}>\n")
            current = record
            dag_pending = with_dags and bool(dag)
        # as REDCap's export: only the forms this row can hold (stored values of a form no longer designated for
        # the event, or of a form that became repeating, stay in the database but are not written)
        if rform:
            allowed = {rform}
        else:
            repeating = schema.repeating_forms.get(event, set())
            allowed = {f for f in schema.event_forms.get(event, ()) if f not in repeating}
        by_form: dict[str, list[tuple[str, str]]] = {}
        for name, value in data.items():
            form = form_of.get(name)
            if form in allowed and name != schema.def_field:
                by_form.setdefault(form, []).append((name, value))
        if dag_pending:
            target = next((f for f in schema.forms if f in by_form), rform or schema.forms[0])
            by_form.setdefault(target, []).insert(0, ("redcap_data_access_group", dag))
            dag_pending = False
        if not by_form:
            continue
        repeating_event = longitudinal and not rform and event in schema.repeating_events
        indent = "\t\t"
        if longitudinal:
            yield (f'\t\t<StudyEventData StudyEventOID="Event.{event}" StudyEventRepeatKey='
                   f'"{inst if repeating_event else 1}" redcap:UniqueEventName="{event}">\n')
            indent = "\t\t\t"
        for form in schema.forms:
            values = by_form.get(form)
            if not values:
                continue
            yield f'{indent}<FormData FormOID="Form.{form}" FormRepeatKey="{inst if rform else 1}">\n'
            yield f'{indent}\t<ItemGroupData ItemGroupOID="{form}.{schema.form_fields[form][0]}" ' \
                  'ItemGroupRepeatKey="1">\n'
            for name, value in values:
                yield f'{indent}\t\t<ItemData ItemOID="{name}"{_a("Value", value)}/>\n'
            yield f"{indent}\t</ItemGroupData>\n{indent}</FormData>\n"
        if longitudinal:
            yield "\t\t</StudyEventData>\n"
    if current is not None:
        yield "\t</SubjectData>\n"


def export_project(con: sqlite3.Connection, pid: int, schema: Schema, *, with_data: bool, with_dags: bool,
                   now: dt.datetime | None = None) -> str:
    """The project XML of a stored project (records of the token user's group only, when in one)."""
    sql = ("SELECT rows.record, rows.event, rows.rform, rows.inst, rows.data, records.dag FROM rows "
           "JOIN records ON records.pid = rows.pid AND records.record = rows.record WHERE rows.pid = ?")
    args: list[Any] = [pid]
    if schema.spec.user_dag:
        sql += " AND records.dag = ?"
        args.append(schema.spec.user_dag)
    sql += " ORDER BY rows.rkey, rows.ev, rows.rform, rows.inst"
    rows = ((r, e, f, i, json.loads(d), g) for r, e, f, i, d, g in con.execute(sql, args)) if with_data else ()
    return render(schema.spec, rows, with_data=with_data, with_dags=with_dags, now=now)


# ---- reading --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OdmProject:
    """A project read from a project XML file: its definition and its data as flat import rows."""

    spec: ProjectSpec
    rows: list[dict[str, str]]
    form_labels: dict[str, str]
    # unique event name -> (day offset, offset min, offset max): REDCap's schedule, kept for the study YAML
    event_offsets: dict[str, tuple[int, int, int]]


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


class _El:
    """An element with namespaces dropped from tag and attribute names (REDCap has used http and https ODM
    namespace URIs; the `redcap:` attributes never clash with ODM's own)."""

    def __init__(self, element: Any) -> None:
        self.e = element
        self.tag = _local(element.tag) if isinstance(element.tag, str) else ""
        self.attrs = {_local(k): v for k, v in element.attrib.items()}

    def get(self, key: str, default: str = "") -> str:
        return self.attrs.get(key, default)

    def children(self, tag: str | None = None) -> list[_El]:
        out = [_El(c) for c in self.e]
        return [c for c in out if tag is None or c.tag == tag]

    def child(self, tag: str) -> _El | None:
        found = self.children(tag)
        return found[0] if found else None

    def text(self) -> str:
        return (self.e.text or "").strip()

    def find_all(self, tag: str) -> list[_El]:
        return [_El(x) for x in self.e.iter() if isinstance(x.tag, str) and _local(x.tag) == tag]


def _label(item: _El) -> str:
    question = item.child("Question")
    if question is None:
        return ""
    translated = question.child("TranslatedText")
    return translated.e.text or "" if translated is not None else ""


def parse_project(text: str | bytes, *, path: str = "<project xml>", **kwargs: Any) -> OdmProject:
    """Read a REDCap project XML. Raises DefinitionError (located at the file) when it is not one."""
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    def fail(message: str, line: int = 1) -> DefinitionError:
        return DefinitionError(f"{path}: {message}", diagnostics=[Diagnostic("ODM001", message, path, line, 1)])

    try:
        root = _El(SafeET.fromstring(text))
    except DefusedXmlException:
        raise fail("the file declares entities or a DTD, which a REDCap project XML never does") from None
    except SafeET.ParseError as exc:
        line = getattr(exc, "position", (1, 0))[0]
        raise fail(f"not well-formed XML ({str(exc).split(':')[0]})", line) from None
    if root.tag != "ODM":
        raise fail("not a CDISC ODM file (the root element is not <ODM>)")
    study = root.child("Study")
    mdv = study.child("MetaDataVersion") if study is not None else None
    if study is None or mdv is None:
        raise fail("no <Study> with a <MetaDataVersion>: not a REDCap project XML")
    glob = study.child("GlobalVariables") or _El(study.e)
    title = next((c.text() for c in glob.children("StudyName")), "") or mdv.get("Name") or "trialkit sandbox"

    item_defs = {i.get("OID"): i for i in mdv.children("ItemDef")}
    code_lists = {c.get("OID"): c for c in mdv.children("CodeList")}
    group_defs = {g.get("OID"): g for g in mdv.children("ItemGroupDef")}
    metadata: list[dict[str, str]] = []
    form_labels: dict[str, str] = {}
    seen: set[str] = set()
    for form in mdv.children("FormDef"):
        form_name = form.get("FormName") or form.get("OID").removeprefix("Form.")
        form_labels[form_name] = form.get("Name")
        for ref in form.children("ItemGroupRef"):
            group = group_defs.get(ref.get("ItemGroupOID"))
            if group is None:
                raise fail(f"form '{form_name}' refers to an item group that is not defined")
            for item_ref in group.children("ItemRef"):
                oid = item_ref.get("ItemOID")
                variable = item_ref.get("Variable") or oid
                if variable in seen or variable in _PSEUDO or variable == f"{form_name}_complete" or \
                        variable.endswith("_timestamp"):
                    continue
                item = item_defs.get(oid)
                if item is None:
                    raise fail(f"the item '{variable}' is used but not defined (no <ItemDef>)")
                seen.add(variable)
                metadata.append(_metadata_row(item, variable, form_name, code_lists))
    if not metadata:
        raise fail("the project defines no fields")
    if root.get("SourceSystem") != "REDCap" and not any(
            "projectredcap.org" in key for el in root.e.iter() for key in el.attrib):
        # another EDC's ODM: its OIDs and names are not REDCap's, and its forms carry none of REDCap's settings
        raise fail("a CDISC ODM file, but not a REDCap project XML (no SourceSystem=\"REDCap\" nor redcap: "
                   "attributes): export the project from REDCap (Project Setup, \"Copy or back up the project\")")

    arms: dict[int, str] = {}
    events: list[dict[str, Any]] = []
    offsets: dict[str, tuple[int, int, int]] = {}
    mappings: list[dict[str, Any]] = []
    order = [r.get("StudyEventOID") for p in mdv.children("Protocol") for r in p.children("StudyEventRef")]
    event_defs = {e.get("OID"): e for e in mdv.children("StudyEventDef")}
    for oid in order or list(event_defs):
        ev = event_defs.get(oid)
        if ev is None:
            raise fail(f"the protocol names an event that is not defined ({oid})")
        arm = _whole(ev.get("ArmNum") or "1") or 1
        arms.setdefault(arm, ev.get("ArmName") or f"Arm {arm}")
        unique = ev.get("UniqueEventName") or oid.removeprefix("Event.")
        offsets[unique] = (_whole(ev.get("DayOffset")), _whole(ev.get("OffsetMin")), _whole(ev.get("OffsetMax")))
        events.append({"event_name": ev.get("EventName") or ev.get("Name"), "arm_num": arm,
                       "unique_event_name": unique, "custom_event_label": ev.get("CustomEventLabel"),
                       "event_id": 40001 + len(events)})
        mappings += [{"arm_num": arm, "unique_event_name": unique,
                      "form": f.get("FormName") or f.get("FormOID").removeprefix("Form.")}
                     for f in ev.children("FormRef")]
    longitudinal = bool(events)
    repeating: list[dict[str, str]] = []
    for block in glob.children("RepeatingInstrumentsAndEvents"):
        for r in block.find_all("RepeatingInstrument"):
            item = {"form_name": r.get("RepeatInstrument"), "custom_form_label": r.get("CustomLabel")}
            repeating.append({"event_name": r.get("UniqueEventName"), **item} if longitudinal else item)
        for r in block.find_all("RepeatingEvent"):
            if longitudinal:
                repeating.append({"event_name": r.get("UniqueEventName"), "form_name": "", "custom_form_label": ""})
    dag_labels = [d.get("group_name") for g in glob.children("DataAccessGroupsGroup")
                  for d in g.children("DataAccessGroups")]
    autonumber = next((c.text() for c in glob.children("RecordAutonumberingEnabled")), "1")
    missing = next((c.text() for c in glob.children("MissingDataCodes")), "")
    kwargs.setdefault("title", title)
    spec = ProjectSpec(
        metadata=normalise_metadata(metadata),
        arms=tuple({"arm_num": n, "name": arms[n]} for n in sorted(arms)),
        events=tuple(events),
        mappings=tuple(mappings),
        repeating=tuple(repeating),
        form_labels=tuple(form_labels.items()),
        dags=dag_rows(dag_labels),
        missing_data_codes=missing,
        record_autonumbering=autonumber != "0",
        longitudinal=longitudinal or None,
        **kwargs,
    )
    from trialkit.redcap.sandbox.project import metadata_problems

    problems = metadata_problems(spec.metadata)
    if problems:
        raise DefinitionError(f"{path}: the project's fields are not a valid REDCap project",
                              diagnostics=[Diagnostic("ODM002", p, path, 1, 1) for p in problems])
    data_rows = _clinical_rows(root, Schema(spec))
    return OdmProject(spec=spec, rows=data_rows, form_labels=form_labels, event_offsets=offsets)


def _whole(text: str) -> int:
    try:
        return round(float(text or "0"))
    except ValueError:
        return 0


def _metadata_row(item: _El, variable: str, form: str, code_lists: dict[str, _El]) -> dict[str, str]:
    ftype = item.get("FieldType") or "text"
    ftype = _TYPE_FROM_ODM.get(ftype, ftype)
    validation = item.get("TextValidationType")
    row = {k: "" for k in METADATA_KEYS}
    row.update(field_name=variable, form_name=form, field_type=ftype, field_label=_label(item),
               text_validation_type_or_show_slider_number=_VALIDATION_FROM_ODM.get(validation, validation))
    for key, attr in _ATTRS:
        row[key] = item.get(attr)
    for key, attr in _FLAGS:
        row[key] = "y" if item.get(attr) == "y" else ""
    ref = item.child("CodeListRef")
    codes = code_lists.get(ref.get("CodeListOID")) if ref is not None else None
    if ftype == "calc":
        row["select_choices_or_calculations"] = item.get("Calculation")
    elif ftype == "slider":
        row["select_choices_or_calculations"] = item.get("SliderLabels")
    elif ftype == "checkbox" and codes is not None:
        row["select_choices_or_calculations"] = codes.get("CheckboxChoices")
    elif ftype in ("dropdown", "radio") and codes is not None:
        pairs = []
        for c in codes.children("CodeListItem"):
            decode = c.child("Decode")
            translated = decode.child("TranslatedText") if decode is not None else None
            pairs.append(f"{c.get('CodedValue')}, {translated.e.text or '' if translated is not None else ''}")
        row["select_choices_or_calculations"] = " | ".join(pairs)
    for check in item.children("RangeCheck"):
        value = check.child("CheckValue")
        key = {"GE": "text_validation_min", "LE": "text_validation_max"}.get(check.get("Comparator"))
        if key and value is not None:
            row[key] = value.text()
    return row


def _clinical_rows(root: _El, schema: Schema) -> list[dict[str, str]]:
    """ClinicalData as flat import rows, one per (record, event, repeat instrument, instance)."""
    longitudinal = schema.is_longitudinal
    out: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for clinical in root.children("ClinicalData"):
        for subject in clinical.children("SubjectData"):
            record = subject.get("SubjectKey")
            events = subject.children("StudyEventData") if longitudinal else [subject]
            for ev in events:
                event = (ev.get("UniqueEventName") or ev.get("StudyEventOID").removeprefix("Event.")) \
                    if longitudinal else ""
                event_key = ev.get("StudyEventRepeatKey") or "1"
                for form in ev.children("FormData"):
                    form_name = form.get("FormOID").removeprefix("Form.")
                    rform, inst = "", ""
                    if form_name in schema.repeating_forms.get(event, set()):
                        rform, inst = form_name, form.get("FormRepeatKey") or "1"
                    elif event in schema.repeating_events:
                        inst = event_key
                    row = out.get((record, event, rform, inst))
                    if row is None:
                        row = out[(record, event, rform, inst)] = {schema.def_field: record}
                        if longitudinal:
                            row["redcap_event_name"] = event
                        if schema.has_repeating:
                            row["redcap_repeat_instrument"] = rform
                            row["redcap_repeat_instance"] = inst
                    for item in form.find_all("ItemData"):
                        name = item.get("ItemOID")
                        if name == schema.def_field or name == "redcap_survey_identifier" or \
                                (name.endswith("_timestamp") and name not in schema.column_by_name):
                            continue
                        row[name] = item.get("Value")
    return list(out.values())


def import_rows(storage: Any, token: str, rows: list[dict[str, str]], *, path: str = "<project xml>") -> int:
    """Load a project XML's data into the token's project, with the same checks as an API import (all or
    nothing). Returns the number of records. Raises DataError naming the record and field of the first problems;
    values are not quoted (they may identify a participant)."""
    from trialkit.redcap.sandbox import records

    if not rows:
        return 0
    con = storage.connect()
    try:
        found = storage.project_for_token(con, token)
    finally:
        con.close()
    if found is None:
        raise DataError("no sandbox project has that token")
    pid, schema, _ = found
    valid = _validated(schema, rows, path)
    with storage.write() as con:
        pairs = records.apply_import(storage, con, pid, schema, valid, overwrite=False, auto_number=False,
                                     username=schema.spec.username)
    return len(pairs)


def check_rows(spec: ProjectSpec, rows: list[dict[str, str]], *, path: str = "<project xml>") -> None:
    """Raise DataError when the project would refuse the data: called before a project is created from the
    file, so a bad file leaves nothing behind."""
    _validated(Schema(spec), rows, path)


def _validated(schema: Schema, rows: list[dict[str, str]], path: str) -> list:
    from trialkit.redcap.sandbox import records
    from trialkit.redcap.sandbox.errors import ApiError

    columns = list(dict.fromkeys(k for r in rows for k in r))
    data = records.ImportData([{k: v for k, v in r.items() if v != ""} for r in rows], columns)
    try:
        valid, errors = records.validate_import(schema, data, "YMD", False)
    except ApiError as exc:
        raise DataError(f"{path}: the data does not fit the project: {exc.message}") from None
    if errors:
        where = "; ".join(_where(e) for e in errors[:5])
        raise DataError(f"{path}: {len(errors)} value(s) the project refuses ({where})")
    return valid


def _where(error_line: str) -> str:
    """`"record","field","value","message"` -> record, field and message, without the value."""
    import csv

    cells = next(csv.reader([error_line]), [])
    if len(cells) >= 4:
        return f"record {cells[0]}, field {cells[1]}: {cells[3]}"
    return "a row"
