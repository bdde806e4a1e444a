"""Record export, import and delete, with REDCap's row shapes and rules (redcap-api.md §2).

Export streams: rows come from one ordered SQLite cursor and leave as text pieces, so memory does not grow with
the number of records beyond the reply itself. Import validates every cell first and writes nothing unless all
are valid, in one transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import operator
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

import orjson

from trialkit.redcap.sandbox import formats
from trialkit.redcap.sandbox.cells import IGNORED, CellCheck
from trialkit.redcap.sandbox.errors import ApiError, invalid_values
from trialkit.redcap.sandbox.project import COMPLETE_LABELS, Column, Schema
from trialkit.redcap.sandbox.storage import TIME_FORMAT, Storage, insert_many, record_key

EVENT = "redcap_event_name"
RFORM = "redcap_repeat_instrument"
RINST = "redcap_repeat_instance"
DAG = "redcap_data_access_group"
PSEUDO = (EVENT, RFORM, RINST, DAG)
SURVEY_PSEUDO = "redcap_survey_identifier"
FAST_FLAT = True  # raw flat exports through _fast_flat; the general row renderer is its reference (tests)


def flag(params: dict[str, str], name: str) -> bool:
    """REDCap booleans: true/false, True/False (what PyCap sends) and 1/0."""
    return params.get(name, "").strip().lower() in ("true", "1")


def parse_time(text: str, parameter: str) -> str:
    for fmt in (TIME_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text.strip(), fmt).strftime(TIME_FORMAT)
        except ValueError:
            continue
    raise ApiError(f'The value of the parameter "{parameter}" is not a valid date/time (YYYY-MM-DD HH:MM:SS)')


# ---- export ---------------------------------------------------------------------------------------------------

@dataclass
class ExportPlan:
    schema: Schema
    columns: list[Column]
    include_id: bool
    fmt: str
    eav: bool
    labels: bool
    label_headers: bool
    checkbox_labels: bool
    blank_gray: bool
    with_dag: bool
    records: list[str] | None
    events: list[str] | None
    begin: str | None
    end: str | None
    filter_logic: str | None
    dag: str = ""  # the token user's Data Access Group: only its records are exported


def plan_export(schema: Schema, params: dict[str, str], lists: dict[str, list[str]]) -> ExportPlan:
    fmt = params.get("format", "xml").lower()
    if fmt not in formats.FORMATS:
        raise ApiError('The value of the parameter "format" is not valid')
    rtype = params.get("type", "flat").lower()
    if rtype not in ("flat", "eav"):
        raise ApiError('The value of the parameter "type" is not valid')
    raw_or_label = params.get("rawOrLabel", "raw").lower()
    if raw_or_label not in ("raw", "label", "both"):
        raise ApiError('The value of the parameter "rawOrLabel" is not valid')
    fields = as_list(lists, params, "fields")
    forms = as_list(lists, params, "forms")
    known = set(schema.fields) | set(schema.complete_fields)
    bad = [f for f in fields if f not in known]
    if bad:
        raise invalid_values("fields", bad)
    bad = [f for f in forms if f not in schema.form_fields]
    if bad:
        raise invalid_values("forms", bad)
    events = as_list(lists, params, "events") or None
    if events and schema.is_longitudinal:
        bad = [e for e in events if e not in schema.event_order]
        if bad:
            raise invalid_values("events", bad)
    elif not schema.is_longitudinal:
        events = None
    if fields or forms:
        wanted = set(fields)
        for form in forms:
            wanted.update(schema.form_fields[form])
            wanted.add(f"{form}_complete")
        columns = [c for c in schema.columns if c.field in wanted]
        include_id = schema.def_field in wanted
    else:
        columns = list(schema.columns)
        include_id = True
    records = as_list(lists, params, "records") or None
    begin = parse_time(params["dateRangeBegin"], "dateRangeBegin") if params.get("dateRangeBegin") else None
    end = parse_time(params["dateRangeEnd"], "dateRangeEnd") if params.get("dateRangeEnd") else None
    return ExportPlan(
        schema=schema,
        columns=columns,
        include_id=include_id,
        fmt=fmt,
        eav=rtype == "eav",
        labels=raw_or_label != "raw",
        label_headers=params.get("rawOrLabelHeaders", "raw").lower() == "label",
        checkbox_labels=flag(params, "exportCheckboxLabel"),
        blank_gray=flag(params, "exportBlankForGrayFormStatus"),
        # a user in a group gets no group column (REDCap: only users in no group can export it)
        with_dag=flag(params, "exportDataAccessGroups") and bool(schema.spec.dags) and not schema.spec.user_dag,
        records=records,
        events=events,
        begin=begin,
        end=end,
        filter_logic=params.get("filterLogic") or None,
        dag=schema.spec.user_dag,
    )


def as_list(lists: dict[str, list[str]], params: dict[str, str], key: str) -> list[str]:
    """`key[0]=a&key[1]=b` or REDCap's older `key=a,b`."""
    if key in lists:
        return [v for v in lists[key] if v != ""]
    text = params.get(key, "")
    return [v.strip() for v in text.split(",") if v.strip()] if text else []


def _row_cursor(con: sqlite3.Connection, pid: int, plan: ExportPlan) -> Iterator[tuple]:
    """The rows to export in REDCap order. A long `records` list is read in key-ordered slices of 500 ids, each
    an index lookup, instead of one scan of the whole project."""
    if plan.records is None or len(plan.records) <= 500:
        yield from con.execute(*_row_query(pid, plan, plan.records))
        return
    wanted = sorted(set(plan.records), key=record_key)
    for i in range(0, len(wanted), 500):
        yield from con.execute(*_row_query(pid, plan, wanted[i:i + 500]))


def _row_query(pid: int, plan: ExportPlan, records: list[str] | None) -> tuple[str, list]:
    """One ordered scan of the rows primary key; the records table is consulted only for a date range."""
    dag = "(SELECT dag FROM records WHERE records.pid = rows.pid AND records.record = rows.record)" if \
        plan.with_dag else "''"
    sql = [f"SELECT rows.record, rows.event, rows.rform, rows.inst, rows.data, {dag} FROM rows WHERE rows.pid = ?"]
    args: list = [pid]
    if plan.events:
        sql.append(f"AND rows.event IN ({','.join('?' * len(plan.events))})")
        args.extend(plan.events)
    if records is not None:
        sql.append(f"AND rows.rkey IN ({','.join('?' * len(records))})")
        args.extend(record_key(r) for r in records)
    if plan.dag:
        sql.append("AND rows.record IN (SELECT record FROM records WHERE pid = ? AND dag = ?)")
        args.extend((pid, plan.dag))
    if plan.begin or plan.end:
        sql.append("AND rows.record IN (SELECT record FROM records WHERE pid = ?")
        args.append(pid)
        if plan.begin:
            sql.append("AND changed >= ?")
            args.append(plan.begin)
        if plan.end:
            sql.append("AND changed <= ?")
            args.append(plan.end)
        sql.append(")")
    sql.append("ORDER BY rows.rkey, rows.ev, rows.rform, rows.inst")
    return " ".join(sql), args


class _Context:
    """How one kind of row (event x repeat instrument) renders: per column, the default for a missing value."""

    def __init__(self, plan: ExportPlan, event: str, rform: str) -> None:
        schema = plan.schema
        if rform:
            forms = {rform}
        else:
            repeating = schema.repeating_forms.get(event, set())
            forms = {f for f in schema.event_forms.get(event, schema.forms) if f not in repeating}
        self.defaults: list[tuple[str, str]] = []
        for col in plan.columns:
            if col.field == schema.def_field:
                continue
            default = ""
            if col.form in forms and (col.kind == "checkbox" or (col.kind == "complete" and not plan.blank_gray)):
                default = "0"
            self.defaults.append((col.name, default))


def _label_maps(plan: ExportPlan) -> list[dict[str, str] | None]:
    """Per exported data column, a raw -> label map (None: the value is shown as is)."""
    schema = plan.schema
    maps: list[dict[str, str] | None] = []
    for col in plan.columns:
        if col.field == schema.def_field:
            continue
        if col.kind == "complete":
            maps.append(COMPLETE_LABELS)
        elif col.kind == "checkbox":
            info = schema.fields[col.field]
            if plan.checkbox_labels:
                maps.append({"1": info.choice_label(col.code), "0": ""})
            else:
                maps.append({"1": "Checked", "0": "Unchecked"})
        else:
            info = schema.fields[col.field]
            maps.append(dict(info.choices) if info.choices else None)
    return maps


def _headers(plan: ExportPlan, keys: list[str]) -> list[str]:
    if not plan.label_headers:
        return keys
    schema = plan.schema
    by_name = {c.name: c for c in plan.columns}
    out = []
    fixed = {EVENT: "Event Name", RFORM: "Repeat Instrument", RINST: "Repeat Instance", DAG: "Data Access Group"}
    for key in keys:
        if key in fixed:
            out.append(fixed[key])
            continue
        col = by_name[key]
        if col.kind == "complete":
            out.append("Complete?")
        elif col.kind == "checkbox":
            info = schema.fields[col.field]
            out.append(f"{info.label} (choice={info.choice_label(col.code)})")
        else:
            out.append(schema.fields[col.field].label)
    return out


def export_records(con: sqlite3.Connection, pid: int, plan: ExportPlan,
                   matches: set | None = None) -> Iterator[str]:
    """The export as text pieces. `matches`: filterLogic result (record ids for classic, row keys otherwise)."""
    schema = plan.schema
    longitudinal = schema.is_longitudinal
    lead: list[str] = []
    if plan.include_id:
        lead.append(schema.def_field)
        if longitudinal:
            lead.append(EVENT)
        if schema.has_repeating:
            lead.extend((RFORM, RINST))
        if plan.with_dag:
            lead.append(DAG)
    data_cols = [c for c in plan.columns if c.field != schema.def_field]
    data_names = {c.name for c in data_cols}
    wanted_forms = {c.form for c in data_cols}
    contexts: dict[tuple[str, str], _Context] = {}
    label_maps = _label_maps(plan) if plan.labels else None
    json_out = plan.fmt == "json"
    cursor = _row_cursor(con, pid, plan)

    def rows() -> Iterator[tuple[list, str, str, str, int, dict]]:
        for record, event, rform, inst, data_text, dag in cursor:
            if matches is not None:
                key = record if not longitudinal else (record, event, rform, inst)
                if key not in matches:
                    continue
            data = json.loads(data_text)
            if plan.include_id:
                # REDCap stores the record id in every row, so asking for it returns every row of the record,
                # except instances of repeating instruments none of whose fields were asked for
                if rform and rform not in wanted_forms:
                    continue
            elif not data_names.intersection(data):
                continue
            ctx = contexts.get((event, rform))
            if ctx is None:
                ctx = contexts[(event, rform)] = _Context(plan, event, rform)
            values = [data.get(name, default) for name, default in ctx.defaults]
            if label_maps is not None:
                values = [m.get(v, v) if m is not None and v != "" else v
                          for m, v in zip(label_maps, values, strict=True)]
            yield values, record, event, rform, inst, dag, data

    if plan.eav:
        yield from _eav(plan, rows(), lead, data_cols)
        return

    keys = lead + [c.name for c in data_cols]
    if FAST_FLAT and not plan.labels and plan.include_id and plan.fmt in ("json", "csv"):
        yield from _fast_flat(plan, cursor, keys, lead, data_cols, matches)
        return

    def flat() -> Iterator[list]:
        for values, record, event, rform, inst, dag, _data in rows():
            if not plan.include_id:
                yield values
                continue
            head: list = [record]
            if longitudinal:
                head.append(schema.event_labels.get(event, event) if plan.labels else event)
            if schema.has_repeating:
                head.append(schema.repeat_form_label(rform) if (plan.labels and rform) else rform)
                head.append((inst if json_out else str(inst)) if inst else "")
            if plan.with_dag:
                head.append(schema.dag_names.get(dag, dag) if plan.labels else dag)
            yield head + values

    yield from formats.table_chunks(keys, flat(), plan.fmt, header=_headers(plan, keys) if plan.fmt == "csv"
                                    else None)


# encoded cells remembered: codes, dates and numbers repeat, free text rarely does. Bounded (~10 MB at most), so
# the server's memory stays flat whatever the export's size
_MEMO_LIMIT = 50_000
_MEMO_LENGTH = 40
_TEMPLATE_LIMIT = 2048  # row shapes whose line template is kept (a JSON template is ~4 KB)


class _Encoded(dict):
    """cell text -> its encoded form (CSV quoting, or a JSON string), filled on first use for short cells."""

    def __init__(self, encode: Callable[[str], str]) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, value: str) -> str:
        text = self.encode(value)
        if len(value) <= _MEMO_LENGTH and len(self) < _MEMO_LIMIT:
            self[value] = text
        return text


def _fast_flat(plan: ExportPlan, cursor: Iterator[tuple], keys: list[str], lead: list[str], data_cols: list[Column],
               matches: set | None) -> Iterator[str]:
    """Raw flat export with the record id, the hot path of a large export.

    A row's line is mostly its kind's defaults (blank, unchecked "0", grey "0"): a row holds a handful of its
    ~200 cells. So each shape of row (event x repeat instrument x the columns it stores, in stored order) gets a
    template: the fixed text between its variable cells, joined once (JSON keys included). A row then fills its
    variable cells (record, event, repeat, instance, group, stored values) into the template's slots and joins
    some 40 pieces instead of 200 cells. JSON escapes non-ASCII (\\u00e9), as PHP's json_encode does by default.
    """
    schema = plan.schema
    longitudinal = schema.is_longitudinal
    repeating = schema.has_repeating
    json_out = plan.fmt == "json"
    wanted_forms = {c.form for c in data_cols}
    position = {k: i for i, k in enumerate(keys)}
    n_lead = len(lead)
    with_dag = DAG in position
    if json_out:
        prefixes = [json.dumps(k) + ":" for k in keys]
        encoded = _Encoded(encode_basestring_ascii)
        no_instance = '""'
    else:
        prefixes = [""] * len(keys)
        needs = formats.needs_quotes
        encoded = _Encoded(lambda value: ('"' + value.replace('"', '""') + '"') if needs(value) else value)
        no_instance = ""
    cell = encoded.__getitem__
    bases: dict[tuple[str, str], list[str]] = {}
    templates: dict[tuple, tuple[list[str], Callable[[list], tuple] | None, int]] = {}

    def template(event: str, rform: str, names: tuple[str, ...],
                 raw: bool) -> tuple[list[str], Callable[[list], tuple] | None, int]:
        """`raw`: the stored values go in as they are stored, between quotes the template holds (see below).
        Returns the pieces (None at each slot), how to pick the exported stored values in export order (None: all
        of them, in stored order) and the length of the fixed text."""
        base = bases.get((event, rform))
        if base is None:
            defaults = dict(_Context(plan, event, rform).defaults)
            base = bases[(event, rform)] = [prefixes[i] + cell(defaults.get(k, "")) for i, k in enumerate(keys)]
        # stored columns that are exported (not asked-for or removed fields are skipped), in export order
        stored = sorted((position[name], j) for j, name in enumerate(names) if position.get(name, -1) >= n_lead)
        slots = [*range(n_lead), *(p for p, _ in stored)]
        pieces = [",{" if json_out else ""]  # JSON: every row but the first follows a comma
        previous = -1
        for p in slots:
            between = "".join(base[q] + "," for q in range(previous + 1, p))
            quote = '"' if raw and p >= n_lead else ""
            pieces[-1] += ("," if previous >= 0 else "") + between + prefixes[p] + quote
            pieces.extend((None, quote))  # the slot, then the fixed text after it
            previous = p
        pieces[-1] += "".join("," + base[q] for q in range(previous + 1, len(keys))) + ("}" if json_out else "\n")
        take = [j for _, j in stored]
        fixed = sum(len(p) for p in pieces if p is not None)
        if take == list(range(len(names))):  # every stored column is exported, in stored order
            return pieces, None, fixed
        if len(take) > 1:
            pick = operator.itemgetter(*take)
        elif take:
            only = take[0]

            def pick(values: list) -> tuple:
                return (values[only],)
        else:
            def pick(values: list) -> tuple:
                return ()
        return pieces, pick, fixed

    # The rows' pieces go straight into one buffer, joined every ~64 KB (api._chunks passes such pieces on as
    # they are): no string per row (~4 KB of JSON each, copied again into the chunk) and one yield per chunk.
    buf: list[str | None] = ["[" if json_out else formats.csv_line(_headers(plan, keys))]
    size = 0
    first = json_out  # the first JSON row follows no comma
    loads = orjson.loads  # stored rows: each row's one decode is a large share of an export's time with json
    for record, event, rform, inst, data_text, dag in cursor:
        if matches is not None and (record if not longitudinal else (record, event, rform, inst)) not in matches:
            continue
        if rform and rform not in wanted_forms:  # see export_records: the record id is in every other row
            continue
        data = loads(data_text)
        names = tuple(data)
        # Stored rows are orjson's JSON of text values. When that text is ASCII without a backslash (no value held
        # a quote, backslash, control or non-ASCII character: orjson would have escaped it) nor DEL (which
        # encode_basestring_ascii escapes and orjson does not), every value's JSON is itself between quotes:
        # the values go into the line as they are, no encoding or look-up per cell.
        raw = json_out and data_text.isascii() and "\\" not in data_text and "\x7f" not in data_text
        shape = (event, rform, names, raw)
        found = templates.get(shape)
        if found is None:
            found = template(event, rform, names, raw)
            if len(templates) < _TEMPLATE_LIMIT:  # sparse data may have a shape per row: memory stays bounded
                templates[shape] = found
        pieces, pick, fixed = found
        values = [cell(record)]
        if longitudinal:
            values.append(cell(event))
        if repeating:
            values.append(cell(rform))
            values.append(str(inst) if inst else no_instance)  # a JSON number, as REDCap sends it
        if with_dag:
            values.append(cell(dag))
        stored = data.values() if pick is None else pick(list(data.values()))
        values.extend(stored if raw else map(cell, stored))
        start = len(buf)
        buf += pieces
        buf[start + 1::2] = values  # the template's slots, each followed by its fixed text
        if first:
            buf[start] = buf[start][1:]
            first = False
        size += fixed + len(data_text)  # the stored text's length bounds its values' (a few cells, long or not)
        if size >= _CHUNK:
            yield "".join(buf)
            buf = []
            size = 0
    if json_out:
        buf.append("]")
    if buf:
        yield "".join(buf)


_CHUNK = 1 << 16  # characters of export text joined at a time (about: a row counts its fixed text and stored JSON)


def _eav(plan: ExportPlan, rows: Iterator, lead: list[str], data_cols: list[Column]) -> Iterator[str]:
    schema = plan.schema
    longitudinal = schema.is_longitudinal
    keys = ["record"]
    if longitudinal:
        keys.append(EVENT)
    if schema.has_repeating:
        keys.extend((RFORM, RINST))
    keys.extend(("field_name", "value"))
    json_out = plan.fmt == "json"

    def eav_rows() -> Iterator[list]:
        for values, record, event, rform, inst, _dag, data in rows:
            head: list = [record]
            if longitudinal:
                head.append(event)
            if schema.has_repeating:
                head.extend((rform, (inst if json_out else str(inst)) if inst else ""))
            if plan.include_id:
                yield [*head, schema.def_field, record]
            for col, value in zip(data_cols, values, strict=True):
                if col.name not in data:  # only stored values: no export defaults (unchecked "0", grey "0")
                    continue
                if col.kind == "checkbox":
                    yield [*head, col.field, col.code]
                else:
                    yield [*head, col.name, value]

    yield from formats.table_chunks(keys, eav_rows(), plan.fmt)


# ---- import ---------------------------------------------------------------------------------------------------

class _Row(NamedTuple):
    """One imported row, checked. apply_import only unpacks it: the column-wise check gives plain tuples of these
    fields, in this order, as zip makes them."""

    record: str
    event: str
    rform: str
    inst: int | str  # int, or "new"
    values: dict[str, str]  # export column -> value ("" = blank)
    dag: str | None
    # set by the column-wise check for a row with no blank and no unchecked box: the `<form>_complete` columns a
    # new row of this shape gets, each "0" (one dict shared by the shape's rows: read, never changed), so that
    # writing it needs no look at its cells
    fill: dict[str, str] | None = None




def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value).strip()


def _int_text(text: str) -> str:
    return str(int(text))  # what _cell_text makes of the int json would give


def _float_text(text: str) -> str:
    return repr(float(text))  # what _cell_text makes of the float json would give (also NaN, Infinity)


# numbers are decoded straight to the text a cell holds, so a row of them needs no second pass
_JSON_CELLS = json.JSONDecoder(parse_int=_int_text, parse_float=_float_text, parse_constant=_float_text)
# a value that is true, false, null, a list or an object; also a string holding ':t' and the like, which only sends
# it through the cell-by-cell pass. Searching from the ':' is several times faster than from every '"'.
_NOT_TEXT = re.compile(r':\s*[tfn\[{]')


def _plain_cells(text: str) -> bool:
    """Whether every value in this JSON text is a non-blank string with nothing for str.strip() to remove, or a
    number (decoded as text), found on the text instead of cell by cell: no empty string (`""`), no space beside
    a quote, no escape (which could be whitespace, \\n or \\u00a0), nothing but ASCII (raw whitespace beyond ASCII,
    also; json.dumps escapes non-ASCII by default), no true/false/null/list/object value. Any of these, even
    inside a string, only sends the import through the cell-by-cell pass."""
    return (text.isascii() and "\\" not in text and not _space_beside_quote(text) and _EMPTY_STRING.search(text)
            is None and _NOT_TEXT.search(text) is None)


# Both searched with re, not str's `in`: a substring search for '" ' or ' "' (or '""') stops at every '"'
# (~630,000 in a 500-record batch: ~3.3 ms each), where re's search for a pattern that starts with a space stops at
# spaces only (~6,000: ~1.1 ms for both) and its search for '""' takes ~2 ms.
_SPACE_BESIDE_QUOTE = re.compile(r' (?:(?<=" )|(?="))')
_EMPTY_STRING = re.compile('""')


def _space_beside_quote(text: str) -> bool:
    """Whether the text holds '" ' or ' "'."""
    return _SPACE_BESIDE_QUOTE.search(text) is not None


@dataclass
class ImportData:
    rows: list[dict[str, str]]  # cells as text, stripped
    columns: list[str]  # every column the data names, also those left blank in every row


def parse_import_data(params: dict[str, str], *, keep_blank: bool) -> ImportData | None:
    """The `data` parameter as rows of text; None when REDCap would silently import nothing (not a list).

    Without `keep_blank` (overwriteBehavior=normal, where a blank cell changes nothing) blank cells are left out
    of the rows: an export-shaped CSV is mostly blanks, and every later step would step over them one by one.
    """
    fmt = params.get("format", "xml").lower()
    text = params.get("data", "")
    if fmt == "json":
        try:
            data = _JSON_CELLS.decode(text)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested deeper than Python's stack
            raise ApiError("The data being imported is not formatted correctly. The JSON must be an array, "
                           "as in [{ ... }].") from None
        if not isinstance(data, list):
            return None
        if not all(type(item) is dict for item in data):  # the decoder makes dicts, never a subclass
            raise ApiError("The data being imported is not formatted correctly. The JSON must be an array "
                           "of objects.")
        # every column named, in order of appearance: from each distinct set of columns, not from each row
        columns = dict.fromkeys(itertools.chain.from_iterable(dict.fromkeys(map(tuple, data))))
        if _plain_cells(text):  # what PyCap sends for clean data: the decoded rows are the rows
            return ImportData(data, list(columns))
        rows = [{k: c for k, v in item.items() if (c := v.strip() if type(v) is str else _cell_text(v)) or keep_blank}
                for item in data]
        return ImportData(rows, list(columns))
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
        header = next(reader, None)
        if header is None:
            return ImportData([], [])
        header = [h.strip() for h in header]
        return ImportData([{k: c for k, v in zip(header, row, strict=False) if (c := v.strip()) or keep_blank}
                           for row in reader if any(row)], list(dict.fromkeys(header)))
    raise ApiError('The value of the parameter "format" is not valid for import (use json or csv)')


def _error_line(record: str, field: str, value: str, message: str) -> str:
    return ",".join('"' + str(x).replace('"', '""') + '"' for x in (record, field, value, message))


_CHECK_MEMO_LIMIT = 100_000  # remembered cell checks per design and dateFormat (~20 MB at most), then forgotten


def _import_memo(schema: Schema, date_format: str) -> tuple[dict[str, Column], dict, dict, _CheckMemo]:
    """What checking an import's cells needs, kept on the Schema, so across import batches of one design: the
    columns, their checks, per (event, repeat instrument) the cell plan (column -> (kind, None) where it may be
    set, (None, message) where not) and per dateFormat each checked (column, cell) -> (stored value, message).

    A check depends on its field's dictionary row, the missing-data codes and the cell alone, all part of the
    design; a design change (metadata, events, repeats...) makes a new Schema (storage keys Schemas by project
    version), so nothing remembered here outlives the design it was computed for."""
    cache = schema.import_memo
    columns = cache.get("columns")
    if columns is None:
        by_name = {k: c for k, c in schema.column_by_name.items() if k != schema.def_field}
        checks = {c.name: schema.fields[c.name].check for c in by_name.values() if c.kind == "value"}
        columns = cache["columns"] = (by_name, checks)
    plans = cache.setdefault("plans", {})
    memo = cache.get(("checks", date_format))
    if memo is None or len(memo) > _CHECK_MEMO_LIMIT:  # free text never repeats: the memory stays bounded
        memo = cache[("checks", date_format)] = _CheckMemo()
    return columns[0], columns[1], plans, memo


class _CheckMemo(dict):
    """Checked cells per column: column -> (the cells stored as given, {other cell: (stored value or IGNORED,
    message or None)}). Most cells of an import are valid and stored as given, so a shape's distinct cells are
    taken apart from the known ones with one set difference (in C) and only the rest is looked at in Python."""

    def __missing__(self, name: str) -> tuple[set[str], dict[str, tuple[object, str | None]]]:
        entry = self[name] = (set(), {})
        return entry

    def __len__(self) -> int:
        """The cells remembered, over all columns (what _CHECK_MEMO_LIMIT bounds)."""
        return sum(len(same) + len(other) for same, other in self.values())

    def check(self, name: str, value: str, check: CellCheck, date_format: str) -> tuple[object, str | None]:
        """`check(value)`, remembered. `value` is not among the column's cells stored as given."""
        same, other = self[name]
        checked = other.get(value)
        if checked is None:
            checked = check(value, date_format)
            if checked[1] is None and checked[0] == value:
                same.add(value)
            else:
                other[value] = checked
        return checked


def validate_import(schema: Schema, data: ImportData, date_format: str,
                    overwrite: bool) -> tuple[list[tuple], list[str]]:
    """Check every cell; returns the rows to apply (values normalised) and REDCap's error lines."""
    errors: list[str] = []
    raw_rows = data.rows
    keys = data.columns
    allowed = set(schema.column_by_name) | {schema.def_field, *PSEUDO}
    unknown = [k for k in keys if k not in allowed and k != SURVEY_PSEUDO and not
               (k.endswith("_timestamp") and k[:-10] in schema.form_fields)]
    descriptive = [k for k in keys if k in schema.fields and schema.fields[k].type in ("descriptive", "checkbox")]
    if unknown or descriptive:
        raise ApiError("The following fields were not found in the project as real data fields: "
                       + ", ".join(unknown + descriptive))
    if raw_rows and schema.def_field not in keys:
        raise ApiError(f"The record ID field ('{schema.def_field}') is missing from the data being imported")
    if not schema.is_longitudinal and EVENT in keys:
        raise ApiError("The following fields were not found in the project as real data fields: " + EVENT)
    by_name, checks, plans, memo = _import_memo(schema, date_format)
    fast = _validate_columns(schema, raw_rows, by_name, checks, plans, memo, date_format, overwrite)
    if fast is not None:
        return fast, []
    # something is refused: row by row, cell by cell, for REDCap's messages in REDCap's order
    dags = set(schema.dag_names)
    out: list[_Row] = []
    longitudinal = schema.is_longitudinal
    def_field = schema.def_field
    for raw in raw_rows:
        record = raw.get(def_field, "")
        if record == "":
            errors.append(_error_line("", def_field, "", "The record ID is blank. Every row must have one."))
            continue
        event = ""
        if longitudinal:
            event = raw.get(EVENT, "")
            if event not in schema.event_order:
                errors.append(_error_line(record, EVENT, event, "The value is not a valid unique event name"
                                          if event else "The unique event name is missing"))
                continue
        rform = raw.get(RFORM, "")
        inst_text = raw.get(RINST, "")
        inst: int | str = 0
        if rform:
            if rform not in schema.repeating_forms.get(event, set()):
                errors.append(_error_line(record, RFORM, rform, "This instrument is not a repeating instrument"
                                          + (f" in the event '{event}'" if event else "")))
                continue
            if inst_text.lower() == "new":
                inst = "new"
            elif whole_number(inst_text) and int(inst_text) >= 1:
                inst = int(inst_text)
            else:
                errors.append(_error_line(record, RINST, inst_text, "The repeat instance must be a whole number "
                                          "of 1 or more (or 'new')"))
                continue
        elif inst_text:
            if event in schema.repeating_events:
                if inst_text.lower() == "new":
                    inst = "new"
                elif whole_number(inst_text) and int(inst_text) >= 1:
                    inst = int(inst_text)
                else:
                    errors.append(_error_line(record, RINST, inst_text, "The repeat instance must be a whole "
                                              "number of 1 or more (or 'new')"))
                    continue
            elif inst_text != "1":
                # instance 1 on a non-repeating row is what PyCap's own examples send; anything else is wrong
                errors.append(_error_line(record, RINST, inst_text, "This row is not repeating data, so "
                                          "redcap_repeat_instance must be blank"))
                continue
        elif event in schema.repeating_events:
            errors.append(_error_line(record, RINST, "", f"The event '{event}' is a repeating event, so "
                                      "redcap_repeat_instance must be provided"))
            continue
        plan = plans.get((event, rform))
        if plan is None:
            plan = plans[(event, rform)] = _cell_plan(schema, by_name, event, rform)
        values: dict[str, str] = {}
        for name, value in raw.items():
            step = plan.get(name)
            if step is None:  # record id, pseudo and survey columns
                continue
            kind, message = step
            if value == "":
                if overwrite and kind is not None:
                    values[name] = ""
                continue
            if kind is None:
                errors.append(_error_line(record, name, value, message))
            elif kind == "value":
                # most cells repeat (choice codes, yes/no, common numbers): check each (field, value) once
                if value in memo[name][0]:
                    values[name] = value
                    continue
                result, message = memo.check(name, value, checks[name], date_format)
                if message is not None:
                    errors.append(_error_line(record, name, value, message))
                elif result is not IGNORED:
                    values[name] = result
            elif value == "0" or value == "1" or (kind == "complete" and value == "2"):
                values[name] = value
            else:
                errors.append(_error_line(record, name, value, "The value is not a valid category for "
                                          f"{by_name[name].field if kind == 'checkbox' else name}"))
        dag = None
        if DAG in raw and raw[DAG] != "":
            if raw[DAG] not in dags:
                errors.append(_error_line(record, DAG, raw[DAG], "The value is not a valid data access group"))
                continue
            dag = raw[DAG]
        out.append(_Row(record, event, rform, inst, values, dag))
    return out, errors


class CheckedRows(list):
    """The rows the column-wise check accepted (tuples of _Row's fields), with, per shape of row, its stored cells
    as columns: what `calcs.CalcPlan` builds its frame from when the import stores exactly these rows as they are
    (new records, every row of a clean shape: see apply_import), rather than from the ~9,000 row dicts."""

    shapes: list[Shape] | None = None


class Shape(NamedTuple):
    """One shape's rows as columns, in row order: their keys' parts and each stored column's cells (the
    `<form>_complete` columns a new row of the shape gets are `fill`)."""

    event: str
    rform: str
    records: tuple[str, ...]
    instances: list[int | str]
    columns: dict[str, tuple[str, ...]]
    fill: dict[str, str]


_DROP = object()  # a cell that is accepted but not stored (a blank without overwrite, a calc or file value)
_KEEP = object()  # a cell stored as it was given


def _validate_columns(schema: Schema, raw_rows: list[dict[str, str]], by_name: dict[str, Column],
                      checks: dict, plans: dict, memo: dict, date_format: str,
                      overwrite: bool) -> list[tuple] | None:
    """The rows to apply when every cell is valid, checked column by column (as tuples of _Row's fields, which
    apply_import unpacks: zip makes them); None as soon as anything would be refused (then the row-by-row check
    gives REDCap's messages, in REDCap's order).

    Rows are grouped by the columns they name, in order (an import is a few such groups repeated: a CSV export
    has one per event and repeating form, PyCap's JSON one per kind of row), and each group is transposed into
    columns in C. Its record ids, events, repeat instruments and instances are then checked per distinct value
    (and per distinct event x instrument x instance), and each shape (event, repeat instrument, columns)'s cells
    per distinct cell, so a column's checks and what is stored are decided once per distinct cell; a row is
    then the imported dict itself, minus the columns not stored. What is accepted and stored is exactly what the
    row-by-row check accepts and stores. `raw_rows` are changed in place (they are not read again).
    """
    def_field = schema.def_field
    longitudinal = schema.is_longitudinal
    event_order = schema.event_order
    repeating_forms = schema.repeating_forms
    repeating_events = schema.repeating_events
    dags = schema.dag_names
    # rows grouped by shape: event, repeat instrument and the columns named, in order
    groups: dict[tuple, list[dict[str, str]]] = {}
    order: list[list[dict[str, str]]] = []  # per row, its group
    for raw in raw_rows:
        key = (raw.get(EVENT), raw.get(RFORM), tuple(raw))
        group = groups.get(key)
        if group is None:
            group = groups[key] = []
        group.append(raw)
        order.append(group)
    made: dict[int, Iterator[tuple]] = {}  # id of a group -> its rows (_Row's fields, in order), in order
    heads: dict[tuple[str, str, str], int | str] = {}  # (event, repeat instrument, instance text) -> instance
    changes: list[tuple[list[dict[str, str]], list[str], list]] = []  # made once every cell is known valid
    shapes: list[Shape] | None = []  # each shape's stored cells as columns, while every shape is clean
    for (_, _, names), rows in groups.items():
        n = len(rows)
        cols = dict(zip(names, zip(*map(dict.values, rows), strict=True), strict=True))
        records = cols.get(def_field)
        if records is None or "" in set(records):
            return None
        blank = ("",) * n
        events = cols.get(EVENT, blank) if longitudinal else blank
        rforms = cols.get(RFORM, blank)
        triples = list(zip(events, rforms, cols.get(RINST, blank), strict=True))
        for head in set(triples).difference(heads):
            inst = _instance(head, longitudinal, event_order, repeating_forms, repeating_events)
            if inst is None:
                return None
            heads[head] = inst
        dag_col = cols.get(DAG)
        if dag_col is None:
            row_dags: list[str | None] = [None] * n
        else:
            if not set(dag_col).difference(("",)) <= dags.keys():
                return None
            row_dags = [d or None for d in dag_col]
        shape = _check_shape(schema, by_name, checks, plans, memo, date_format, overwrite, events[0], rforms[0],
                             names, cols)
        if shape is None:
            return None
        drop, convert, fill = shape
        changes.append((rows, drop, convert))
        instances = list(map(heads.__getitem__, triples))
        made[id(rows)] = zip(records, events, rforms, instances, rows, row_dags, [fill] * n, strict=True)
        if shapes is not None and fill is not None:
            stored = {name: cols[name] for name in names if name not in drop}
            for name, conv in convert:  # a clean shape converts (dates, numbers), it drops nothing
                stored[name] = tuple(map(conv.get, stored[name], stored[name]))
            shapes.append(Shape(events[0], rforms[0], records, instances, stored, fill))
        else:
            shapes = None
    for rows, drop, convert in changes:  # each imported dict becomes its row's values: nothing reads it again
        for raw in rows:
            for name in drop:
                del raw[name]
            for name, conv in convert:
                result = conv.get(raw[name], _KEEP)
                if result is _DROP:
                    del raw[name]
                elif result is not _KEEP:
                    raw[name] = result
    checked = CheckedRows(map(next, map(made.__getitem__, map(id, order))))
    checked.shapes = shapes
    return checked


def _instance(head: tuple[str, str, str], longitudinal: bool, event_order: dict, repeating_forms: dict,
              repeating_events: set) -> int | str | None:
    """A row's instance (0: not repeating; "new") from its event, repeat instrument and instance text; None when
    the row-by-row check would refuse them (an unknown event, a form that does not repeat there, a bad instance)."""
    event, rform, inst_text = head
    if longitudinal and event not in event_order:
        return None
    if rform or (inst_text and event in repeating_events):
        if rform and rform not in repeating_forms.get(event, ()):
            return None
        if whole_number(inst_text) and int(inst_text) >= 1:
            return int(inst_text)
        if inst_text.lower() == "new":
            return "new"
        return None
    if inst_text:
        return 0 if inst_text == "1" else None
    return None if event in repeating_events else 0


def _check_shape(schema: Schema, by_name: dict[str, Column], checks: dict, plans: dict, memo: dict, date_format: str,
                 overwrite: bool, event: str, rform: str, names: tuple,
                 cols: dict[str, tuple[str, ...]]) -> tuple[list[str], list, dict[str, str] | None] | None:
    """For the rows of one shape: the columns not stored, the cells stored otherwise than given, and the
    `<form>_complete` columns a new row gets (see _Row.fill; None when some rows hold blanks or unchecked
    boxes); None when a cell would be refused. `cols`: column -> its cells in these rows."""
    plan = plans.get((event, rform))
    if plan is None:
        plan = plans[(event, rform)] = _cell_plan(schema, by_name, event, rform)
    drop: list[str] = []
    convert: list[tuple[str, dict[str, object]]] = []
    clean = True
    for name in names:
        step = plan.get(name)
        if step is None:  # record id, pseudo and survey columns
            drop.append(name)
            continue
        kind = step[0]
        distinct = set(cols[name])
        conv: dict[str, object] = {}
        if "" in distinct:
            distinct.discard("")
            clean = False
            if not overwrite or kind is None:
                conv[""] = _DROP
        if kind is None:
            if distinct:
                return None
            drop.append(name)
            continue
        if kind == "value":
            check = checks[name]
            for value in distinct.difference(memo[name][0]):  # those not known to be stored as given
                result, message = memo.check(name, value, check, date_format)
                if message is not None:
                    return None
                if result is IGNORED:
                    conv[value] = _DROP
                    clean = False
                elif result != value:
                    conv[value] = result
        elif not distinct <= (_COMPLETE_CODES if kind == "complete" else _CHECKBOX_CODES):
            return None
        elif kind == "checkbox" and "0" in distinct:
            clean = False
        if len(conv) == 1 and "" in conv and conv[""] is _DROP and not distinct:
            drop.append(name)  # blank in every row
        elif conv:
            convert.append((name, conv))
    fill = None
    if clean:
        stored = [n for n in names if n not in drop]
        forms = dict.fromkeys(by_name[n].form for n in stored if by_name[n].kind != "complete")
        fill = {c: "0" for c in (f"{form}_complete" for form in forms) if c not in stored}
    return drop, convert, fill


_CHECKBOX_CODES = frozenset(("0", "1"))
_COMPLETE_CODES = frozenset(("0", "1", "2"))


def _cell_plan(schema: Schema, by_name: dict, event: str, rform: str) -> dict[str, tuple[str | None, str | None]]:
    """What a cell of each column means in a row of (event, repeat instrument): its kind, or why it is refused."""
    repeating = schema.repeating_forms.get(event, set())
    allowed_forms = {rform} if rform else {f for f in schema.event_forms.get(event, ()) if f not in repeating}
    plan: dict[str, tuple[str | None, str | None]] = {}
    for name, col in by_name.items():
        if col.form in allowed_forms:
            plan[name] = (col.kind, None)
        elif rform:
            plan[name] = (None, f"This field is not on the repeating instrument '{rform}'")
        elif col.form in repeating:
            plan[name] = (None, "This field is on a repeating instrument, so redcap_repeat_instrument and "
                                "redcap_repeat_instance must be provided")
        else:
            plan[name] = (None, f"This field's instrument ('{col.form}') is not designated for the event '{event}'")
    return plan


_KIND_CODES = {"value": 0, "checkbox": 1, "complete": 2}


def _encode(data: dict[str, str]) -> str:
    """A stored row (column -> text) as compact JSON. orjson: ~5x faster than the json module, the second
    biggest cost of writing a large import; every reader decodes it, so only the round trip matters."""
    return orjson.dumps(data).decode()


def log_details(stored: str) -> str:
    """REDCap's log text (`field = 'value', ...`) from the JSON the import stored; older plain text passes."""
    if not stored.startswith("{"):
        return stored
    return ", ".join(f"{k} = '{v}'" for k, v in json.loads(stored).items())


def next_record_number(con: sqlite3.Connection, pid: int) -> int:
    """The highest numeric record id + 1 (text ids ignored), as generateNextRecordName and forceAutoNumber give."""
    last = con.execute("SELECT record FROM records WHERE pid=? AND rkey < '1' ORDER BY rkey DESC LIMIT 1",
                       (pid,)).fetchone()
    return int(last[0]) + 1 if last else 1


def apply_import(storage: Storage, con: sqlite3.Connection, pid: int, schema: Schema, rows: list[tuple], *,
                 overwrite: bool, auto_number: bool, username: str,
                 keep: list | None = None) -> list[tuple[str, str]]:
    """Write validated rows inside the caller's transaction. Returns (new id, id in the data) per distinct record.

    `keep`, if given, receives the batch's working data (row dicts, their JSON, log entries), so that the caller
    can free it once its reply is sent rather than on return (see api.Reply.keep)."""
    order = {record: record for record in map(operator.itemgetter(0), rows)}  # each id, in order of appearance
    if auto_number:
        nxt = next_record_number(con, pid)
        for old in order:
            order[old] = str(nxt)
            nxt += 1
    ids = list(order.values())
    existing_records: set[str] = set()
    existing: dict[tuple[str, str, str, int], dict] = {}
    user_dag = schema.spec.user_dag
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for record, dag in con.execute(f"SELECT record, dag FROM records WHERE pid=? AND record IN ({marks})",
                                       (pid, *chunk)):
            if user_dag and dag != user_dag:
                # a user in a group neither sees nor changes another group's records (nor ones in no group)
                raise ApiError(f'The record "{record}" belongs to another data access group: you cannot change it')
            existing_records.add(record)
        for record, event, rform, inst, data in con.execute(
                f"SELECT record, event, rform, inst, data FROM rows WHERE pid=? AND rkey IN ({marks})",
                (pid, *map(record_key, chunk))):
            existing[(record, event, rform, inst)] = json.loads(data)
    now = storage.now()
    changed_rows: dict[tuple[str, str, str, int], dict] = {}
    next_inst: dict[tuple[str, str, str], int] = {}
    dags: dict[str, str] = {}
    log: list[tuple] = []
    logged: set[str] = set()
    kinds = {c.name: (_KIND_CODES[c.kind], c.form) for c in schema.columns}
    form_of = {c.name: c.form for c in schema.columns}
    checkbox_names = {c.name for c in schema.columns if c.kind == "checkbox"}
    complete_names = {c.name for c in schema.columns if c.kind == "complete"}
    encoded: dict[tuple[str, str, str, int], str] = {}
    encode = _encode
    # nothing stored for these records, ids as given, no group user: a row of a checked shape (see _Row.fill) that
    # the import has not named before is a new row, stored as imported plus its `<form>_complete` defaults, and
    # logged as created at the record's first row; the loop below does the same in general, with more steps
    all_new = not existing_records and not existing and not auto_number and not user_dag
    general = False  # whether any row took the general steps
    for record, event, rform, inst, values, dag, fill in rows:
        if all_new and fill is not None and inst != "new":
            key = (record, event, rform, inst)
            if key not in changed_rows:
                values.update(fill)
                changed_rows[key] = values
                text = encoded[key] = encode(values)
                log.append((pid, now, username, "Update record" if record in logged else "Create record", text,
                            record, event))
                logged.add(record)
                if dag is not None:
                    dags[record] = dag
                continue
        general = True
        record = order[record]
        if inst == "new":
            base = (record, event, rform)
            if base not in next_inst:
                have = [k[3] for k in (*existing, *changed_rows) if k[:3] == base]
                next_inst[base] = max(have, default=0) + 1
            inst = next_inst[base]
            next_inst[base] += 1
        key = (record, event, rform, int(inst))
        before = changed_rows.get(key)
        if before is None and existing:  # a new record's rows (the bulk of a large import) have nothing stored
            before = existing.get(key)
        if before is None and fill is not None:  # a new row of a checked shape: no blank, no unchecked box
            data = values
            data.update(fill)
            touched_forms = ()
        elif before is None:  # a new row, the bulk of a large import: blanks and unchecked boxes are not stored
            data = {k: v for k, v in values.items() if v != "" and (v != "0" or k not in checkbox_names)}
            touched_forms = {form_of[k] for k in data if k not in complete_names}
        else:
            data = dict(before)
            touched_forms = set()
            for name, value in values.items():
                kind, form = kinds[name]
                if value == "" or (kind == 1 and value == "0"):  # blank (overwrite) or unchecked: nothing stored
                    data.pop(name, None)
                    continue
                data[name] = value
                if kind != 2:
                    touched_forms.add(form)
        for form in touched_forms:
            complete = f"{form}_complete"
            if complete not in data:
                data[complete] = "0"
        if before is None or data != before:
            changed_rows[key] = data
            # log details as JSON of what changed ('' = cleared); rendered REDCap-style by the log export
            if before is None:
                text = encoded[key] = encode(data)  # a new row: its log details are its data, encoded once
            else:
                encoded.pop(key, None)
                changes = {k: v for k, v in data.items() if before.get(k) != v}
                changes.update((k, "") for k in before if k not in data)
                text = encode(changes)
            created = record not in existing_records and record not in logged
            logged.add(record)
            log.append((pid, now, username, "Create record" if created else "Update record", text, record, event))
        if user_dag:  # a group user's new records join the user's group; a group column is ignored
            if record not in existing_records:
                dags.setdefault(record, user_dag)
        elif dag is not None:
            dags[record] = dag
    if schema.spec.compute_calcs and changed_rows and schema.calc_plan.calcs:
        # every row new and stored as checked: the calcs' frame can come from the checked columns (CheckedRows)
        shapes = getattr(rows, "shapes", None) if all_new and not general else None
        recalculated = schema.calc_plan.apply({**existing, **changed_rows} if existing else changed_rows,
                                              storage.clock().date(), shapes=shapes)
        for key, data in recalculated.items():
            changed_rows[key] = data
            encoded.pop(key, None)
    changed_records = {k[0] for k in changed_rows} | set(dags)
    new_records = [r for r in ids if r not in existing_records]
    con.executemany(
        "INSERT INTO records(pid, record, rkey, dag, created, changed) VALUES (?,?,?,?,?,?)",
        [(pid, r, record_key(r), dags.get(r, ""), now, now) for r in new_records],
    )
    con.executemany(
        "UPDATE records SET changed=? WHERE pid=? AND record=?",
        [(now, pid, r) for r in changed_records if r in existing_records],
    )
    con.executemany(
        "UPDATE records SET dag=? WHERE pid=? AND record=?",
        [(d, pid, r) for r, d in dags.items() if r in existing_records],
    )
    ev_order = schema.event_order
    rkeys = {r: record_key(r) for r in changed_records}  # once per record, not per row
    stored = [
        (pid, rkeys[k[0]], ev_order.get(k[1], 0), k[2], k[3], k[0], k[1], encoded.get(k) or encode(v))
        for k, v in changed_rows.items()
    ]
    insert_many(con, "INSERT OR REPLACE INTO rows(pid, rkey, ev, rform, inst, record, event, data)", stored)
    storage.log(con, log)
    if keep is not None:
        keep.extend((changed_rows, encoded, log, stored, existing))
    return [(new, old) for old, new in order.items()]


def whole_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses, and REDCap (PHP) reads neither."""
    return text.isascii() and text.isdigit()


def import_reply(pairs: list[tuple[str, str]], return_content: str, fmt: str) -> str:
    if return_content == "nothing":
        return ""
    if return_content == "ids":
        ids = [new for new, _ in pairs]
        if fmt == "json":
            return json.dumps(ids)
        if fmt == "csv":
            return "id\n" + "".join(f"{i}\n" for i in ids)
        return formats.XML_HEAD + "<ids>" + "".join(f"<id>{formats.xml_text(i)}</id>" for i in ids) + "</ids>"
    if return_content == "auto_ids":
        items = [f"{new},{old}" for new, old in pairs]
        if fmt == "json":
            return json.dumps(items)
        if fmt == "csv":
            return "id,original_id\n" + "".join(f"{i}\n" for i in items)
        return formats.XML_HEAD + "<ids>" + "".join(f"<id>{formats.xml_text(i)}</id>" for i in items) + "</ids>"
    if fmt == "json":
        return json.dumps({"count": len(pairs)})
    return formats.render_count(len(pairs), fmt)


# ---- delete ---------------------------------------------------------------------------------------------------

def delete_records(storage: Storage, con: sqlite3.Connection, pid: int, schema: Schema, params: dict[str, str],
                   lists: dict[str, list[str]], username: str) -> int:
    records = as_list(lists, params, "records")
    if not records:
        raise ApiError('The parameter "records" is missing or empty')
    records = list(dict.fromkeys(records))
    present = set()
    for i in range(0, len(records), 500):
        chunk = records[i:i + 500]
        # a user in a group sees only its records: others "do not exist" for that user
        present.update(r[0] for r in con.execute(
            f"SELECT record FROM records WHERE pid=? AND record IN ({','.join('?' * len(chunk))}) "
            "AND (? = '' OR dag = ?)", (pid, *chunk, schema.spec.user_dag, schema.spec.user_dag)))
    missing = [r for r in records if r not in present]
    if missing:
        raise ApiError("One or more of the records provided cannot be deleted because they do not exist in the "
                       f"project. The following records do not exist: {', '.join(missing)}")
    arm = params.get("arm", "")
    instrument = params.get("instrument", "")
    event = params.get("event", "")
    instance = params.get("repeat_instance", "")
    if arm and (not schema.is_longitudinal or not whole_number(arm)
                or int(arm) not in {int(a["arm_num"]) for a in schema.spec.arms}):
        raise ApiError('The value of the parameter "arm" is not valid')
    if instrument and instrument not in schema.form_fields:
        raise ApiError('The value of the parameter "instrument" is not valid')
    if event and (not schema.is_longitudinal or event not in schema.event_order):
        raise ApiError('The value of the parameter "event" is not valid')
    if instrument and schema.is_longitudinal and not event:
        raise ApiError('The parameter "event" is required when "instrument" is given in a longitudinal project')
    if instance and not whole_number(instance):
        raise ApiError('The value of the parameter "repeat_instance" is not valid')
    now = storage.now()
    log = []
    if not (instrument or event or arm):
        for record in records:
            con.execute("DELETE FROM rows WHERE pid=? AND rkey=?", (pid, record_key(record)))
            for table in ("files", "records"):
                con.execute(f"DELETE FROM {table} WHERE pid=? AND record=?", (pid, record))
            log.append((pid, now, username, "Delete record", f"{schema.def_field} = '{record}'", record, ""))
        storage.log(con, log)
        return len(records)
    arm_events = {e for e, a in schema.event_arm.items() if str(a) == arm} if arm else None
    names = ({c.name for c in schema.columns if c.form == instrument} if instrument else None)
    for record in records:
        rkey = record_key(record)
        for ev, rform, inst, data_text in con.execute(
                "SELECT event, rform, inst, data FROM rows WHERE pid=? AND rkey=?", (pid, rkey)).fetchall():
            if arm_events is not None and ev not in arm_events:
                continue
            if event and ev != event:
                continue
            if instance and inst != int(instance):
                continue
            key = (pid, rkey, ev, rform, inst)
            if names is None:
                con.execute("DELETE FROM rows WHERE pid=? AND rkey=? AND event=? AND rform=? AND inst=?", key)
                con.execute("DELETE FROM files WHERE pid=? AND record=? AND event=? AND inst=?",
                            (pid, record, ev, inst))
                continue
            data = json.loads(data_text)
            kept = {k: v for k, v in data.items() if k not in names}
            if not kept and rform:
                con.execute("DELETE FROM rows WHERE pid=? AND rkey=? AND event=? AND rform=? AND inst=?", key)
            elif kept != data:
                con.execute("UPDATE rows SET data=? WHERE pid=? AND rkey=? AND event=? AND rform=? AND inst=?",
                            (json.dumps(kept, separators=(",", ":")), *key))
        # a partial delete removes data, never the record, even when no data is left (redcap-api.md §1.3)
        con.execute("UPDATE records SET changed=? WHERE pid=? AND record=?", (now, pid, record))
        what = ", ".join(p for p in (f"instrument = '{instrument}'" if instrument else "",
                                     f"event = '{event}'" if event else "", f"arm = '{arm}'" if arm else "",
                                     f"instance = '{instance}'" if instance else "") if p)
        log.append((pid, now, username, "Delete record data", what, record, event))
    storage.log(con, log)
    return len(records)
