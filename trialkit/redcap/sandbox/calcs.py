"""Calculated fields, computed on import as REDCap's auto-calculation does, with trialkit's logic (REDCap mode).

Imported values for calc fields are ignored (redcap-api.md §2.1); after an import, every calc field on a form
of a touched row is recomputed from the record's data: unprefixed references read the row's own event (and, on a
repeating-instrument row, its event's non-repeating values), `[event][field]` the record's other events.
Calcs run in dictionary order, each seeing the ones before it. An expression trialkit cannot parse is skipped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

import polars as pl

from trialkit.errors import LogicError
from trialkit.redcap.sandbox.project import Schema

Key = tuple[str, str, str, int]  # record, event, repeat instrument, instance


class CalcPlan:
    def __init__(self, schema: Schema) -> None:
        from trialkit import logic
        from trialkit.redcap.sandbox.filtering import field_specs

        self.schema = schema
        self.calcs: list[tuple[str, str, object]] = []  # (field, form, parsed expression)
        columns: list[str] = []
        for row in schema.spec.metadata:
            if row["field_type"] != "calc":
                continue
            try:
                node = logic.parse(row["select_choices_or_calculations"])
            except LogicError:
                continue
            self.calcs.append((row["field_name"], row["form_name"], node))
            for ref in logic.references(node):
                info = schema.fields.get(ref.name)
                names = [c for _, c in info.checkbox_columns] if info is not None and info.checkbox_columns else (
                    [ref.name] if ref.name in schema.column_by_name else [])
                columns.extend(n for n in names if n not in columns)
        for name, _, _ in self.calcs:
            if name not in columns:
                columns.append(name)
        self.columns = columns
        self.specs = field_specs(schema) if self.calcs else {}
        self.filled = [c for c in columns if schema.column_by_name[c].kind in ("checkbox", "complete")]

    def apply(self, rows: Mapping[Key, dict[str, str]], today: dt.date) -> dict[Key, dict[str, str]]:
        """New data for the rows whose calc values change (`rows`: every row of the touched records)."""
        if not self.calcs or not rows:
            return {}
        from trialkit import logic

        schema = self.schema
        def_field = schema.def_field
        keys = list(rows)
        main = {(k[0], k[1]): rows[k] for k in keys if not k[2] and not k[3]}
        table: dict[str, list] = {def_field: [k[0] for k in keys], "redcap_event_name": [k[1] for k in keys],
                                  "redcap_repeat_instance": [k[3] or None for k in keys]}
        for col in self.columns:
            values = []
            for k in keys:
                value = rows[k].get(col)
                if value is None and k[2]:
                    value = main.get((k[0], k[1]), {}).get(col)
                values.append(value)
            table[col] = values
        frame = pl.DataFrame(table, schema={**{c: pl.String for c in table}, "redcap_repeat_instance": pl.Int64})
        if self.filled:
            frame = frame.with_columns([pl.col(c).fill_null("0") for c in self.filled])
        allowed = {}
        for k in keys:
            ctx = (k[1], k[2])
            if ctx not in allowed:
                if k[2]:
                    allowed[ctx] = {k[2]}
                else:
                    repeating = schema.repeating_forms.get(k[1], set())
                    allowed[ctx] = {f for f in schema.event_forms.get(k[1], ()) if f not in repeating}
        changed: dict[Key, dict[str, str]] = {}
        for name, form, node in self.calcs:
            data = logic.widen_events(frame, record_id=def_field, columns=self.columns, keep_rows=True) \
                if schema.is_longitudinal else frame
            try:
                result = logic.evaluate(node, data, mode="redcap", as_of=today, fields=self.specs, record_id=def_field)
            except LogicError:
                continue
            texts = [_text(v) for v in result.values.to_list()]
            frame = frame.with_columns(pl.Series(name, texts, dtype=pl.String))
            for k, text in zip(keys, texts, strict=True):
                if form not in allowed[(k[1], k[2])]:
                    continue
                current = changed.get(k, rows[k])
                if current.get(name) != (text or None):
                    new = dict(current)
                    if text:
                        new[name] = text
                    else:
                        new.pop(name, None)
                    changed[k] = new
        return changed


def _text(value: object) -> str:
    """A computed value as REDCap stores it: integers without '.0', other numbers in shortest form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        if value.is_integer():
            return str(int(value))
        return repr(round(value, 10))
    return str(value)
