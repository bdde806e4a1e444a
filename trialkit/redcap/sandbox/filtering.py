"""`filterLogic` for record export, evaluated by trialkit's own logic language in REDCap mode.

Only the columns the expression references are read (SQLite's json_extract, so no per-record Python dicts).
Classic projects: a record matches when any of its rows is true. Longitudinal projects filter record-events
(redcap-api.md §4.1): each row is tested on its own, `[field]` read from the row's own event and
`[event][field]` from the record's other events.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import polars as pl

from trialkit.errors import LogicError
from trialkit.redcap.sandbox.errors import ApiError
from trialkit.redcap.sandbox.project import Schema

_ROWKEYS = ("__rform", "__inst")


def field_specs(schema: Schema) -> dict:
    from trialkit.logic import FieldSpec

    events_of: dict[str, set[str]] = {}
    for event, forms in schema.event_forms.items():
        for form in forms:
            events_of.setdefault(form, set()).add(event)
    repeating = {f for forms in schema.repeating_forms.values() for f in forms}
    specs = {}
    for name, info in schema.fields.items():
        specs[name] = FieldSpec(
            name=name,
            field_type=info.type,
            validation=info.validation or None,
            choices=tuple(c for c, _ in info.choices),
            form=info.form,
            events=frozenset(events_of.get(info.form, ())) if schema.is_longitudinal else None,
            repeating=info.form in repeating,
        )
    for complete, form in schema.complete_fields.items():
        specs[complete] = FieldSpec(name=complete, field_type="radio", choices=("0", "1", "2"), form=form,
                                    events=frozenset(events_of.get(form, ())) if schema.is_longitudinal else None)
    return specs


def matching_rows(
    con: sqlite3.Connection, pid: int, schema: Schema, text: str, *, now: dt.datetime | None = None
) -> set:
    """Record ids (classic) or (record, event, repeat instrument, instance) keys (longitudinal) where `text` holds.

    `now` is the server clock's time: 'today' is its date and 'now' the datetime, as on a REDCap server.
    """
    from trialkit import logic

    try:
        node = logic.parse(text)
    except LogicError as exc:
        raise ApiError(f"The filter logic is not valid: {exc}") from None
    specs = field_specs(schema)
    diagnostics = [d for d in logic.check(node, specs, events=schema.events or None) if d.is_error]
    if diagnostics:
        raise ApiError("The filter logic is not valid: " + "; ".join(d.message for d in diagnostics))
    columns: list[str] = []
    for ref in logic.references(node):
        info = schema.fields.get(ref.name)
        if info is not None and info.type == "checkbox":
            names = [col for _, col in info.checkbox_columns]
        elif ref.name in schema.column_by_name:
            names = [ref.name]
        else:
            names = []
        columns.extend(n for n in names if n not in columns)
    def_field = schema.def_field
    # [record_id] is read from the record column itself: extracting it again would name two columns alike
    columns = [c for c in columns if c != def_field]
    checkbox_or_complete = [c for c in columns if schema.column_by_name[c].kind in ("checkbox", "complete")]
    extract = "".join(f", json_extract(data, '$.\"{c}\"')" for c in columns)
    rows = con.execute(
        f"SELECT record, event, rform, inst{extract} FROM rows WHERE pid=? ORDER BY rkey, ev, rform, inst", (pid,)
    ).fetchall()
    names = [def_field, "redcap_event_name", *_ROWKEYS, *columns]
    frame = pl.DataFrame(rows, schema={n: pl.String if n != "__inst" else pl.Int64 for n in names}, orient="row")
    frame = frame.with_columns(
        pl.when(pl.col("__inst") > 0).then(pl.col("__inst")).otherwise(None).alias("redcap_repeat_instance")
    )
    if columns:
        # a repeating-instrument row also sees the non-repeating values of its event
        main = frame.filter((pl.col("__rform") == "") & (pl.col("__inst") == 0)).select(
            [def_field, "redcap_event_name", *[pl.col(c).alias(f"__main_{c}") for c in columns]]
        )
        frame = frame.join(main, on=[def_field, "redcap_event_name"], how="left", maintain_order="left")
        frame = frame.with_columns(
            [pl.coalesce(pl.col(c), pl.col(f"__main_{c}")).alias(c) for c in columns]
        ).drop([f"__main_{c}" for c in columns])
        if checkbox_or_complete:
            frame = frame.with_columns([pl.col(c).fill_null("0") for c in checkbox_or_complete])
    if schema.is_longitudinal:
        frame = logic.widen_events(frame, record_id=def_field, columns=columns, keep_rows=True)
        # an event no record has data in yet still has its columns: [event][field] is then blank, not an error
        absent = [logic.event_column(e, c) for e in schema.events for c in columns
                  if logic.event_column(e, c) not in frame.columns]
        if absent:
            frame = frame.with_columns([pl.lit(None, dtype=pl.String).alias(name) for name in absent])
    try:
        result = logic.evaluate(node, frame, mode="redcap", fields=specs, record_id=def_field, as_of=now)
    except LogicError as exc:
        raise ApiError(f"The filter logic is not valid: {exc}") from None
    hits = frame.select([def_field, "redcap_event_name", *_ROWKEYS]).filter(result.values.fill_null(False))
    if not schema.is_longitudinal:
        return set(hits.get_column(def_field).to_list())
    return {tuple(r) for r in hits.iter_rows()}
