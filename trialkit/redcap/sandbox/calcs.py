"""Calculated fields, computed on import as REDCap's auto-calculation does, with trialkit's logic (REDCap mode).

Imported values for calc fields are ignored (redcap-api.md §2.1); after an import, every calc field on a form
of a touched row is recomputed from the record's data: unprefixed references read the row's own event (and, on a
repeating-instrument row, its event's non-repeating values), `[event][field]` the record's other events.
Calcs run in dictionary order, each seeing the ones before it. An expression trialkit cannot parse is skipped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import TYPE_CHECKING

import polars as pl

from trialkit.errors import LogicError
from trialkit.redcap.sandbox.project import Schema

if TYPE_CHECKING:
    from trialkit.redcap.sandbox.records import Shape

Key = tuple[str, str, str, int]  # record, event, repeat instrument, instance
# from this many rows on, the frame is built per kind of row (CalcPlan._frame); tests set it to pin both ways
FRAME_BY_KIND_ROWS = 200


class CalcPlan:
    def __init__(self, schema: Schema) -> None:
        from trialkit import logic
        from trialkit.redcap.sandbox.filtering import field_specs

        self.schema = schema
        self.calcs: list[tuple[str, str, object]] = []  # (field, form, parsed expression)
        columns: list[str] = []
        reads: dict[str, list[str]] = {}  # calc -> the columns it reads
        for row in schema.spec.metadata:
            if row["field_type"] != "calc":
                continue
            try:
                node = logic.parse(row["select_choices_or_calculations"])
            except LogicError:
                continue
            self.calcs.append((row["field_name"], row["form_name"], node))
            read = reads[row["field_name"]] = []
            for ref in logic.references(node):
                info = schema.fields.get(ref.name)
                names = [c for _, c in info.checkbox_columns] if info is not None and info.checkbox_columns else (
                    [ref.name] if ref.name in schema.column_by_name else [])
                columns.extend(n for n in names if n not in columns)
                read.extend(n for n in names if n not in read)
        for name, _, _ in self.calcs:
            if name not in columns:
                columns.append(name)
        self.columns = columns
        self.specs = field_specs(schema) if self.calcs else {}
        self.filled = [c for c in columns if schema.column_by_name[c].kind in ("checkbox", "complete")]
        # calcs that other calcs read: after computing one, the (widened) evaluation frame is rebuilt
        names = {n for n, _, _ in self.calcs}
        self.refs = {n: {r.name for r in logic.references(node)} & names for n, _, node in self.calcs}
        self.read_calcs = set().union(*self.refs.values()) if self.refs else set()
        # only [event][field] references need the widened frame, and only of the columns they name
        widened: list[str] = []
        for _, _, node in self.calcs:
            for ref in logic.references(node):
                if ref.event is None:
                    continue
                info = schema.fields.get(ref.name)
                cols = [c for _, c in info.checkbox_columns] if info is not None and info.checkbox_columns else (
                    [ref.name] if ref.name in schema.column_by_name else [])
                widened.extend(c for c in cols if c not in widened)
        self.widened = widened
        self._reads = reads
        self._context_columns: dict[tuple[str, str], list[str]] = {}

    def context_columns(self, event: str, rform: str) -> list[str]:
        """The columns that the calcs of a row of (event, repeat instrument) read or hold, in `self.columns` order:
        those of its forms' calcs and of every calc these read, as calcs are evaluated on every row of the frame
        and a calc read by another is read as computed on that row (see `apply`)."""
        found = self._context_columns.get((event, rform))
        if found is not None:
            return found
        schema = self.schema
        if rform:
            forms = {rform}
        else:
            repeating = schema.repeating_forms.get(event, set())
            forms = {f for f in schema.event_forms.get(event, ()) if f not in repeating}
        wanted = {name for name, form, _ in self.calcs if form in forms}
        todo = list(wanted)
        while todo:
            for read in self.refs[todo.pop()] - wanted:
                wanted.add(read)
                todo.append(read)
        names = set(wanted).union(*(self._reads[n] for n in wanted))
        found = self._context_columns[(event, rform)] = [c for c in self.columns if c in names]
        return found

    def apply(self, rows: Mapping[Key, dict[str, str]], today: dt.date,
              shapes: Sequence[Shape] | None = None) -> dict[Key, dict[str, str]]:
        """New data for the rows whose calc values change (`rows`: every row of the touched records). `shapes`:
        the same rows as columns, per shape of imported row (records.CheckedRows), when `rows` is exactly
        them."""
        if not self.calcs or not rows:
            return {}
        from trialkit import logic

        schema = self.schema
        def_field = schema.def_field
        keys, frame, by_context = self._frame(rows, shapes)
        # per calc, the rows that hold a value for it: elsewhere a calc that computes nothing changes nothing
        holding = {name: set(frame.get_column(name).is_not_null().arg_true().to_list()) for name, _, _ in self.calcs}
        records, events, rforms, instances = zip(*keys, strict=True)  # the keys' columns, in C
        frame = frame.with_columns(
            pl.Series(def_field, records, dtype=pl.String),
            pl.Series("redcap_event_name", events, dtype=pl.String),
            pl.Series("__rform", rforms, dtype=pl.String),
            pl.Series("redcap_repeat_instance", [i or None for i in instances], dtype=pl.Int64),
        )
        if any(rforms):  # a repeating-instrument row also sees its event's non-repeating values
            merged = self._merged(events, rforms, instances)
            if merged:
                main = frame.filter((pl.col("__rform") == "") & pl.col("redcap_repeat_instance").is_null()).select(
                    [def_field, "redcap_event_name", *[pl.col(c).alias(f"__main_{c}") for c in merged]])
                frame = frame.join(main, on=[def_field, "redcap_event_name"], how="left", maintain_order="left")
                frame = frame.with_columns(
                    [pl.coalesce(pl.col(c), pl.col(f"__main_{c}")).alias(c) for c in merged]
                ).drop([f"__main_{c}" for c in merged])
        if self.filled:
            frame = frame.with_columns([pl.col(c).fill_null("0") for c in self.filled])
        where: dict[str, list[int]] = {}  # form -> indexes of the rows where its calcs apply, ascending
        for (event, rform), indexes in by_context.items():
            if rform:
                forms = {rform}
            else:
                repeating = schema.repeating_forms.get(event, set())
                forms = {f for f in schema.event_forms.get(event, ()) if f not in repeating}
            for form in forms:
                where.setdefault(form, []).extend(indexes)
        for indexes in where.values():
            indexes.sort()
        # Calcs run in dictionary order, each seeing those before it: consecutive calcs that do not read one
        # another are evaluated together in one pass (a later calc read by an earlier one keeps its stored value).
        groups: list[list[tuple[str, str, object]]] = []
        current: set[str] = set()
        for calc in self.calcs:
            if calc[1] not in where:
                continue
            if not groups or self.refs[calc[0]] & current:
                groups.append([])
                current = set()
            groups[-1].append(calc)
            current.add(calc[0])
        changed: dict[Key, dict[str, str]] = {}
        data = None
        for group in groups:
            if data is None:
                data = logic.widen_events(frame, record_id=def_field, columns=self.widened, keep_rows=True) \
                    if schema.is_longitudinal and self.widened else frame
            results = self._evaluate(group, data, today, def_field)
            computed = []
            for name, form, _ in group:
                if name not in results:
                    continue
                values = results[name]
                held = holding[name]
                indexes = [i for i in where[form] if values[i] is not None or i in held]
                if name in self.read_calcs:  # later calcs read it as text, on every row
                    every = list(map(_text, values))
                    computed.append(pl.Series(name, every, dtype=pl.String))
                    texts = [every[i] for i in indexes]
                else:
                    texts = list(map(_text, map(values.__getitem__, indexes)))
                for i, text in zip(indexes, texts, strict=True):
                    text = text or None
                    k = keys[i]
                    row = changed.get(k)
                    if row is None:  # a row is copied once, at its first changed value
                        if rows[k].get(name) == text:
                            continue
                        row = changed[k] = dict(rows[k])
                    elif row.get(name) == text:
                        continue
                    if text:
                        row[name] = text
                    else:
                        row.pop(name, None)
            if computed:
                frame = frame.with_columns(computed)
                if data is not frame and any(s.name in self.widened for s in computed):
                    data = None  # an [event][calc] reference: widen again
                else:
                    data = data.with_columns(computed)  # widening keeps the rows, in order
        return changed

    def _merged(self, events: Sequence[str], rforms: Sequence[str], instances: Sequence[int]) -> list[str]:
        """The columns that rows other than an event's non-repeating row take from it when they hold no value: those
        the calcs of such rows read (`context_columns`); every column with an [event][field] reference, as the
        widened frame reads other rows."""
        if self.schema.is_longitudinal and self.widened:
            return self.columns
        # the rows' (event, repeat instrument, instance) made distinct in C, then only those looked at
        kinds = {(event, rform) for event, rform, inst in set(zip(events, rforms, instances, strict=True))
                 if rform or inst}
        needed = set().union(*(self.context_columns(*c) for c in kinds))
        return [c for c in self.columns if c in needed]

    def _frame(self, rows: Mapping[Key, dict[str, str]], shapes: Sequence[Shape] | None = None,
               ) -> tuple[list[Key], pl.DataFrame, dict[tuple[str, str], Sequence[int]]]:
        """The rows' keys and the frame of their referenced columns, in that order (polars takes them out of the
        row dicts, no Python loop per cell), and per (event, repeat instrument) the indexes of its rows.

        Built per kind of row (event x repeat instrument) from the columns its calcs read (`context_columns`), so
        a phq9 row is not asked for the 50 other calc inputs (polars looks up every column named in every dict:
        ~40 ns a cell, 500 KAP-TRD records 9,000 rows x 56 columns), and stacked; a row's other columns are null
        and no calc written on it, or read by one, reads them. An event's non-repeating row also takes the
        columns of the event's repeating rows, which read its values (the join in `apply`). With an
        [event][field] reference (the widened frame reads other rows), or few rows, one frame of every column."""
        if len(rows) < FRAME_BY_KIND_ROWS or (self.schema.is_longitudinal and self.widened):
            keys = list(rows)
            indexes: dict[tuple[str, str], list[int]] = {}
            for i, k in enumerate(keys):
                ctx = (k[1], k[2])
                found_at = indexes.get(ctx)
                if found_at is None:
                    found_at = indexes[ctx] = []
                found_at.append(i)
            return keys, pl.from_dicts([rows[k] for k in keys], schema=dict.fromkeys(self.columns, pl.String)), indexes
        if shapes is not None:
            return self._frame_of_shapes(shapes)
        by_context: dict[tuple[str, str], list[Key]] = {}
        for k in rows:
            ctx = (k[1], k[2])
            found = by_context.get(ctx)
            if found is None:
                found = by_context[ctx] = []
            found.append(k)
        wanted = {ctx: set(self.context_columns(*ctx)) for ctx in by_context}
        for event, rform in by_context:
            if rform and (event, "") in wanted:
                wanted[(event, "")].update(wanted[(event, rform)])
        keys = []
        frames = []
        ranges: dict[tuple[str, str], Sequence[int]] = {}  # the kinds are stacked: each one's rows in a run
        for ctx, ctx_keys in by_context.items():
            ranges[ctx] = range(len(keys), len(keys) + len(ctx_keys))
            keys.extend(ctx_keys)
            # at least one column, or polars makes a frame of no rows (any column: it holds the row's own value)
            names = [c for c in self.columns if c in wanted[ctx]] or self.columns[:1]
            frames.append(pl.from_dicts([rows[k] for k in ctx_keys], schema=dict.fromkeys(names, pl.String)))
        frame = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
        # every column, in order (also one that no kind of row reads: the frame's width is what `apply` expects)
        return keys, frame.select([pl.col(c) if c in frame.columns else pl.lit(None, pl.String).alias(c)
                                   for c in self.columns]), ranges

    def _frame_of_shapes(self, shapes: Sequence[Shape]) -> tuple[list[Key], pl.DataFrame,
                                                                dict[tuple[str, str], Sequence[int]]]:
        """`_frame` by kind of row, from the imported rows' columns (records.CheckedRows): a kind's frame is its
        shapes' columns stacked, each column a Series made from the checked cells (no look-up per row and column
        in ~9,000 row dicts); a column that a shape fills with its `<form>_complete` default is that default, one
        it does not hold is null, as `pl.from_dicts` makes them. The kinds' rows come shape after shape rather
        than in import order: every result is read back by its row's key."""
        by_context: dict[tuple[str, str], list[Shape]] = {}
        for shape in shapes:
            by_context.setdefault((shape.event, shape.rform), []).append(shape)
        wanted = {ctx: set(self.context_columns(*ctx)) for ctx in by_context}
        for event, rform in by_context:
            if rform and (event, "") in wanted:
                wanted[(event, "")].update(wanted[(event, rform)])
        keys: list[Key] = []
        frames = []
        ranges: dict[tuple[str, str], Sequence[int]] = {}
        for ctx, ctx_shapes in by_context.items():
            start = len(keys)
            names = [c for c in self.columns if c in wanted[ctx]] or self.columns[:1]
            for shape in ctx_shapes:
                n = len(shape.records)
                keys.extend(zip(shape.records, repeat(shape.event, n), repeat(shape.rform, n), shape.instances,
                                strict=True))
                series = []
                for name in names:
                    cells = shape.columns.get(name)
                    if cells is None:
                        default = shape.fill.get(name)
                        cells = repeat(default, n) if default is not None else repeat(None, n)
                    series.append(pl.Series(name, cells if type(cells) is tuple else list(cells), dtype=pl.String))
                frames.append(pl.DataFrame(series))
            ranges[ctx] = range(start, len(keys))
        frame = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
        return keys, frame.select([pl.col(c) if c in frame.columns else pl.lit(None, pl.String).alias(c)
                                   for c in self.columns]), ranges

    def _evaluate(self, group: list, data: pl.DataFrame, today: dt.date, def_field: str) -> dict[str, list]:
        """Values per calc of the group; a calc trialkit cannot evaluate is left out (its stored value stays)."""
        from trialkit import logic

        try:
            out = logic.evaluate_many({name: node for name, _, node in group}, data, mode="redcap", as_of=today,
                                      fields=self.specs, record_id=def_field)
            return {name: out.get_column(name).to_list() for name, _, _ in group}
        except LogicError:
            if len(group) == 1:
                return {}
        results: dict[str, list[str]] = {}
        for calc in group:
            results.update(self._evaluate([calc], data, today, def_field))
        return results


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
