"""What a sandbox project is: REDCap metadata rows plus the longitudinal design, and the shapes derived from them.

`ProjectSpec` is the stored definition (plain JSON-able data, exactly REDCap's export shapes). `Schema` is what
the request handlers need, computed once per definition: export columns in REDCap order, checkbox columns, which
forms each event holds, what repeats, and a cell validator per field.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from trialkit.errors import DefinitionError
from trialkit.redcap.sandbox import naming
from trialkit.redcap.sandbox.cells import CellCheck, checker_for

METADATA_KEYS = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)

@dataclass(frozen=True)
class ProjectSpec:
    """A project definition in REDCap's own export shapes (what `metadata`, `arm`, `event`, ... return)."""

    metadata: tuple[dict[str, str], ...]
    title: str = "trialkit sandbox"
    arms: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    mappings: tuple[dict[str, Any], ...] = ()
    repeating: tuple[dict[str, str], ...] = ()
    form_labels: tuple[tuple[str, str], ...] = ()
    dags: tuple[dict[str, Any], ...] = ()
    missing_data_codes: str = ""
    record_autonumbering: bool = True
    username: str = "sandbox_user"
    compute_calcs: bool = True  # REDCap's auto-calculation on import; False leaves calc fields blank
    # A project is longitudinal when it has events; it stays so while they are redefined (an override empties them)
    longitudinal: bool | None = None
    # REDCap's project status: in production, dictionary, arm and event imports are refused (design changes go
    # through draft mode in the web UI)
    in_production: bool = False
    # The token user's Data Access Group (unique group name; "" = in no group, sees every record)
    user_dag: str = ""
    # The token user's Logging right: without it REDCap refuses the log export (`content=log`)
    user_logging: bool = True

    @property
    def is_longitudinal(self) -> bool:
        return self.longitudinal if self.longitudinal is not None else bool(self.events)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def classic(cls, metadata: Iterable[Mapping[str, Any]], **kwargs: Any) -> ProjectSpec:
        rows = normalise_metadata(metadata)
        check_metadata(rows)
        return cls(metadata=rows, **kwargs)

    @classmethod
    def from_dictionary_csv(cls, path: str | Path, **kwargs: Any) -> ProjectSpec:
        """A classic project from a REDCap data dictionary CSV (UI headers or the API's snake_case keys).

        Raises DefinitionError with located diagnostics (file, line) when the dictionary is wrong."""
        from trialkit.definitions.dictionary import import_dictionary

        text = Path(path).read_text(encoding="utf-8")
        return cls.from_definition(import_dictionary(text, path=str(path)), **kwargs)

    @classmethod
    def from_study(cls, path: str | Path = ".", **kwargs: Any) -> ProjectSpec:
        """A project from a trialkit study (a directory holding study.yaml, or the file): metadata, arms, events,
        instrument-event mappings and repeating instruments. Raises DefinitionError on a bad study."""
        from trialkit.definitions import load_study

        return cls.from_definition(load_study(path), **kwargs)

    @classmethod
    def from_definition(cls, study: Any, **kwargs: Any) -> ProjectSpec:
        """From a loaded `trialkit.definitions.Study` (classic or longitudinal)."""
        from trialkit.definitions.dictionary import project_structure

        shape = project_structure(study)
        events = tuple(
            {
                "event_name": e["event_name"],
                "arm_num": int(e["arm_num"]),
                "unique_event_name": e["unique_event_name"],
                "custom_event_label": e.get("custom_event_label", ""),
                "event_id": 40001 + i,
            }
            for i, e in enumerate(shape.events)
        )
        kwargs.setdefault("title", getattr(study, "title", "") or getattr(study, "name", "") or "trialkit sandbox")
        if getattr(study, "data_access_groups", ()) and "dags" not in kwargs:
            kwargs["dags"] = dag_rows(study.data_access_groups)
        missing = getattr(study, "missing_codes", ())
        if missing and "missing_data_codes" not in kwargs:
            kwargs["missing_data_codes"] = " | ".join(
                f"{c.code}, {c.label}" if hasattr(c, "code") else str(c) for c in missing)
        return cls(
            metadata=normalise_metadata(shape.metadata),
            arms=tuple(dict(a) for a in shape.arms),
            events=events,
            mappings=tuple(dict(m) for m in shape.form_events),
            repeating=tuple(dict(r) for r in shape.repeating),
            form_labels=tuple((i["instrument_name"], i["instrument_label"]) for i in shape.instruments),
            **kwargs,
        )

    def to_json(self) -> str:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProjectSpec:
        data = json.loads(text)
        for key in ("arms", "events", "mappings", "repeating", "dags"):
            data[key] = tuple(data.get(key) or ())
        data["metadata"] = normalise_metadata(data.get("metadata") or ())
        data["form_labels"] = tuple(tuple(p) for p in data.get("form_labels") or ())
        return cls(**data)

    def with_(self, **changes: Any) -> ProjectSpec:
        return replace(self, **changes)


def unique_group_name(label: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """REDCap's unique name of a new Data Access Group: lowercase, characters other than letters, digits, spaces
    and '_' dropped, spaces turned into '_', cut to 18 characters ("New DAG" -> `new_dag`, "dag-a" -> `daga`, as
    REDCap's own exports show); a clash gets a letter (`new_dag_a`)."""
    base = re.sub(r"[^a-z0-9 _]", "", label.lower()).replace(" ", "_")[:18] or "dag"
    if base not in taken:
        return base
    for letter in string.ascii_lowercase:
        if f"{base[:16]}_{letter}" not in taken:
            return f"{base[:16]}_{letter}"
    return f"{base[:10]}_{len(taken)}"


def dag_rows(labels: Iterable[str], existing: Sequence[Mapping[str, Any]] = ()) -> tuple[dict[str, Any], ...]:
    """Data Access Groups as the API's `dag` export gives them, new ones numbered after `existing`."""
    rows = [dict(d) for d in existing]
    taken = {d["unique_group_name"] for d in rows}
    next_id = max([int(d["data_access_group_id"]) for d in rows] + [0]) + 1
    for label in labels:
        unique = unique_group_name(label, taken)
        taken.add(unique)
        rows.append({"data_access_group_name": label, "unique_group_name": unique, "data_access_group_id": next_id})
        next_id += 1
    return tuple(rows)


def normalise_metadata(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], ...]:
    """Rows with exactly the 18 keys, every value a string (missing keys become blank)."""
    out = []
    for row in rows:
        out.append({k: "" if row.get(k) is None else str(row.get(k)) for k in METADATA_KEYS})
    return tuple(out)


def metadata_problems(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """What is wrong with a dictionary, as messages (empty when fine): the definitions checks, then the record-id
    rule a REDCap project adds (the first field must be a text field)."""
    from trialkit.definitions.dictionary import DictionaryRow, study_from_rows

    try:
        study_from_rows([DictionaryRow(dict(r), i) for i, r in enumerate(rows, start=1)], path="metadata")
    except DefinitionError as exc:
        return [f"Row {d.line}: {d.message}" if d.line else d.message for d in exc.diagnostics] or [exc.message]
    problems = []
    if rows[0]["field_type"] != "text":
        problems.append("The first field (the record ID field) must be a text field")
    for i, row in enumerate(rows, start=1):
        validation = row["text_validation_type_or_show_slider_number"]
        if row["field_type"] == "text" and validation and not naming.is_validation_type(validation):
            problems.append(f"Row {i}: the validation type '{validation}' of '{row['field_name']}' is not valid")
    return problems


def check_metadata(rows: Sequence[Mapping[str, str]]) -> None:
    problems = metadata_problems(rows)
    if problems:
        raise DefinitionError("invalid data dictionary: " + "; ".join(problems))


@dataclass(frozen=True)
class FieldInfo:
    name: str
    form: str
    type: str
    label: str
    choices: tuple[tuple[str, str], ...] = ()
    validation: str = ""
    check: CellCheck | None = None
    checkbox_columns: tuple[tuple[str, str], ...] = ()  # (code, export column)

    def choice_label(self, code: str) -> str:
        for c, label in self.choices:
            if c == code:
                return label
        return code


@dataclass(frozen=True)
class Column:
    """One export column: a plain field value, one checkbox choice, or a form's completion status."""

    name: str
    field: str
    form: str
    kind: str  # "value" | "checkbox" | "complete"
    code: str = ""


COMPLETE_LABELS = {"0": "Incomplete", "1": "Unverified", "2": "Complete"}


@dataclass
class Schema:
    """Derived, read-only shapes of one project definition."""

    spec: ProjectSpec
    fields: dict[str, FieldInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = naming.parse_missing_codes(self.spec.missing_data_codes)
        for row in self.spec.metadata:
            ftype = row["field_type"]
            choices: tuple[tuple[str, str], ...] = ()
            if ftype in ("dropdown", "radio", "checkbox"):
                choices = naming.parse_choices(row["select_choices_or_calculations"])
            elif ftype == "yesno":
                choices = (("1", "Yes"), ("0", "No"))
            elif ftype == "truefalse":
                choices = (("1", "True"), ("0", "False"))
            cb_cols = tuple((c, naming.checkbox_column(row["field_name"], c)) for c, _ in choices) if (
                ftype == "checkbox") else ()
            self.fields[row["field_name"]] = FieldInfo(
                name=row["field_name"],
                form=row["form_name"],
                type=ftype,
                label=row["field_label"],
                choices=choices,
                validation=row["text_validation_type_or_show_slider_number"],
                check=checker_for(row, choices, frozenset(code for code, _ in missing)),
                checkbox_columns=cb_cols,
            )

    # ---- forms and fields ---------------------------------------------------------------------------------
    @cached_property
    def def_field(self) -> str:
        return self.spec.metadata[0]["field_name"]

    @cached_property
    def forms(self) -> list[str]:
        out: list[str] = []
        for row in self.spec.metadata:
            if row["form_name"] not in out:
                out.append(row["form_name"])
        return out

    @cached_property
    def form_labels(self) -> dict[str, str]:
        given = dict(self.spec.form_labels)
        return {f: given.get(f) or naming.default_form_label(f) for f in self.forms}

    @cached_property
    def form_fields(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {f: [] for f in self.forms}
        for row in self.spec.metadata:
            out[row["form_name"]].append(row["field_name"])
        return out

    @cached_property
    def columns(self) -> list[Column]:
        """Every data column in REDCap export order (record id first, `<form>_complete` after each form)."""
        cols: list[Column] = []
        for form in self.forms:
            for name in self.form_fields[form]:
                info = self.fields[name]
                if info.type == "descriptive":
                    continue
                if info.type == "checkbox":
                    cols.extend(Column(col, name, form, "checkbox", code) for code, col in info.checkbox_columns)
                else:
                    cols.append(Column(name, name, form, "value"))
            cols.append(Column(f"{form}_complete", f"{form}_complete", form, "complete"))
        return cols

    @cached_property
    def column_by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @cached_property
    def complete_fields(self) -> dict[str, str]:
        return {f"{f}_complete": f for f in self.forms}

    def export_field_names(self) -> list[dict[str, str]]:
        rows = []
        for col in self.columns:
            info = self.fields.get(col.field)
            if info is not None and info.type == "file":
                continue
            rows.append({
                "original_field_name": col.field,
                "choice_value": col.code,
                "export_field_name": col.name,
            })
        return rows

    # ---- events and repeats -------------------------------------------------------------------------------
    @property
    def is_longitudinal(self) -> bool:
        return self.spec.is_longitudinal

    @cached_property
    def events(self) -> list[str]:
        return [e["unique_event_name"] for e in self.spec.events]

    @cached_property
    def event_order(self) -> dict[str, int]:
        return {e: i for i, e in enumerate(self.events)}

    @cached_property
    def event_labels(self) -> dict[str, str]:
        return {e["unique_event_name"]: e["event_name"] for e in self.spec.events}

    @cached_property
    def event_arm(self) -> dict[str, int]:
        return {e["unique_event_name"]: int(e["arm_num"]) for e in self.spec.events}

    @cached_property
    def event_forms(self) -> dict[str, list[str]]:
        """Forms designated for each event, in form order. A classic project has one pseudo-event ''."""
        if not self.is_longitudinal:
            return {"": list(self.forms)}
        out: dict[str, set[str]] = {e: set() for e in self.events}
        for m in self.spec.mappings:
            out.setdefault(m["unique_event_name"], set()).add(m["form"])
        return {e: [f for f in self.forms if f in fs] for e, fs in out.items()}

    @cached_property
    def repeating_forms(self) -> dict[str, set[str]]:
        """event -> forms that repeat on their own in that event ('' for classic projects)."""
        out: dict[str, set[str]] = {}
        for r in self.spec.repeating:
            if r.get("form_name"):
                out.setdefault(r.get("event_name", "") if self.is_longitudinal else "", set()).add(r["form_name"])
        return out

    @cached_property
    def repeating_events(self) -> set[str]:
        if not self.is_longitudinal:
            return set()
        return {r["event_name"] for r in self.spec.repeating if not r.get("form_name")}

    @property
    def has_repeating(self) -> bool:
        return bool(self.spec.repeating)

    @cached_property
    def dag_names(self) -> dict[str, str]:
        return {d["unique_group_name"]: d["data_access_group_name"] for d in self.spec.dags}

    @cached_property
    def missing_codes(self) -> dict[str, str]:
        return dict(naming.parse_missing_codes(self.spec.missing_data_codes))

    @cached_property
    def import_memo(self) -> dict:
        """What imports of this design reuse from one batch to the next (filled by records._import_memo)."""
        return {}

    @cached_property
    def calc_plan(self) -> Any:
        from trialkit.redcap.sandbox.calcs import CalcPlan

        return CalcPlan(self)

    def repeat_form_label(self, form: str) -> str:
        """The instrument's label, as a label export names a repeating instrument; the repeat setting's custom
        label is a piping template for each instance's title in the data entry pages (`Session [ses_date]`)."""
        return self.form_labels.get(form, form)
