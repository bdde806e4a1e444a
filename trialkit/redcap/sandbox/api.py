"""REDCap API request handling: from decoded POST parameters to a reply (status, content type, body).

Pure of HTTP: the server turns the wire request into `ApiRequest` and writes the `Reply` back, so everything
here can also be called directly. Token checks come first (403), then `content` dispatch.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

from trialkit.redcap.sandbox import formats, records
from trialkit.redcap.sandbox.errors import BAD_CONTENT, NO_API_RIGHTS, ApiError, invalid_values
from trialkit.redcap.sandbox.naming import unique_event_name
from trialkit.redcap.sandbox.project import (
    ProjectSpec,
    Schema,
    dag_rows,
    metadata_problems,
    normalise_metadata,
)
from trialkit.redcap.sandbox.storage import DESIGN_ACTION, Storage

REDCAP_VERSION = "14.5.8"
_LIST_KEY = re.compile(r"^(\w+)\[(\d*)\]$")


@dataclass
class ApiRequest:
    params: dict[str, str]
    lists: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # part name -> (filename, data, mime)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]], files: dict | None = None) -> ApiRequest:
        """`records[0]=a&records[1]=b` become lists["records"] (in index order); other keys stay single."""
        params: dict[str, str] = {}
        indexed: dict[str, list[tuple[int, str]]] = {}
        for key, value in pairs:
            m = _LIST_KEY.match(key)
            if m:
                slot = indexed.setdefault(m.group(1), [])
                slot.append((int(m.group(2)) if m.group(2) else len(slot), value))
            else:
                params[key] = value
        lists = {k: [v for _, v in sorted(items, key=lambda p: p[0])] for k, items in indexed.items()}
        return cls(params=params, lists=lists, files=files or {})


@dataclass
class Reply:
    status: int
    body: bytes | Iterator[bytes]
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    # what the request made and no longer needs, freed once the reply is sent: freeing a large import batch's
    # ~10^5 objects takes milliseconds the client need not wait for
    keep: list = field(default_factory=list, repr=False)

    @classmethod
    def text(cls, text: str, fmt: str = "json", status: int = 200) -> Reply:
        return cls(status, text.encode(), formats.CONTENT_TYPES.get(fmt, "text/plain; charset=utf-8"))

    @classmethod
    def error(cls, message: str, fmt: str, status: int = 400) -> Reply:
        body, ctype = formats.error_body(message, fmt)
        return cls(status, body, ctype)


@dataclass
class Context:
    storage: Storage
    con: sqlite3.Connection
    pid: int
    schema: Schema
    created: str
    token: str

    @property
    def spec(self) -> ProjectSpec:
        return self.schema.spec

    @property
    def username(self) -> str:
        return self.spec.username


def handle(storage: Storage, request: ApiRequest) -> Reply:
    """Answer one API request. Never raises for bad input: every refusal is a REDCap-shaped error reply."""
    params = request.params
    fmt = formats.reply_format(params)
    token = params.get("token", "")
    con = storage.connect()
    streaming = False
    try:
        found = storage.project_for_token(con, token) if token else None
        if found is None:
            return Reply.error(NO_API_RIGHTS, fmt, 403)
        pid, schema, created = found
        ctx = Context(storage, con, pid, schema, created, token)
        content = params.get("content", "")
        handler = _HANDLERS.get(content)
        if handler is None:
            return Reply.error(BAD_CONTENT, fmt, 400)
        reply = handler(ctx, request)
        streaming = not isinstance(reply.body, bytes)
        if streaming:
            reply.body = _closing(reply.body, con)
        return reply
    except ApiError as exc:
        return Reply.error(exc.message, fmt, exc.status)
    finally:
        if not streaming:
            con.close()


def _closing(pieces: Iterator[bytes], con: sqlite3.Connection) -> Iterator[bytes]:
    try:
        yield from pieces
    finally:
        con.close()


def _export_format(params: dict[str, str]) -> str:
    fmt = params.get("format", "xml").lower()
    if fmt not in formats.FORMATS:
        raise ApiError('The value of the parameter "format" is not valid')
    return fmt


def _list_reply(rows: list[dict], params: dict[str, str]) -> Reply:
    fmt = _export_format(params)
    return Reply.text(formats.render_rows(rows, fmt), fmt)


def _count_reply(n: int, params: dict[str, str]) -> Reply:
    fmt = formats.reply_format(params)
    return Reply.text(formats.render_count(n, fmt), fmt)


def _parse_data(params: dict[str, str]) -> list[dict]:
    fmt = params.get("format", "xml").lower()
    text = params.get("data", "")
    if fmt == "json":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ApiError("The data being imported is not formatted correctly (not valid JSON)") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ApiError("The data being imported is not formatted correctly. The JSON must be an array of objects.")
        return data
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    raise ApiError('The value of the parameter "format" is not valid for import (use json or csv)')


def _chunks(pieces: Iterator[str], size: int = 1 << 16) -> Iterator[bytes]:
    """Join small text pieces into ~64 KB byte chunks for the wire."""
    buf: list[str] = []
    n = 0
    for piece in pieces:
        buf.append(piece)
        n += len(piece)
        if n >= size:
            yield "".join(buf).encode()
            buf, n = [], 0
    if buf:
        yield "".join(buf).encode()


# ---- records ----------------------------------------------------------------------------------------------------

def _record(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    action = params.get("action", "").lower()
    if action == "delete":
        with ctx.storage.write() as con:
            n = records.delete_records(ctx.storage, con, ctx.pid, ctx.schema, params, request.lists, ctx.username)
        fmt = formats.reply_format(params)
        return Reply.text(str(n), fmt)  # the number as plain text in every format, also xml (redcap-api.md §1.3)
    if "data" in params or action == "import":
        return _import_records(ctx, request)
    plan = records.plan_export(ctx.schema, params, request.lists)
    matches = None
    if plan.filter_logic:
        from trialkit.redcap.sandbox.filtering import matching_rows

        matches = matching_rows(ctx.con, ctx.pid, ctx.schema, plan.filter_logic, now=ctx.storage.clock())
    # a read transaction: the export is one consistent snapshot even while imports run
    ctx.con.execute("BEGIN")
    pieces = records.export_records(ctx.con, ctx.pid, plan, matches)
    return Reply(200, _chunks(pieces), formats.CONTENT_TYPES[plan.fmt])


def _import_records(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    fmt = formats.reply_format(params)
    overwrite = params.get("overwriteBehavior", "normal").lower()
    if overwrite not in ("normal", "overwrite"):
        raise ApiError('The value of the parameter "overwriteBehavior" is not valid')
    return_content = params.get("returnContent", "count").lower()
    if return_content not in ("count", "ids", "auto_ids", "nothing"):
        raise ApiError('The value of the parameter "returnContent" is not valid')
    date_format = params.get("dateFormat", "YMD").upper()
    if date_format not in ("YMD", "MDY", "DMY"):
        raise ApiError('The value of the parameter "dateFormat" is not valid')
    if params.get("type", "flat").lower() != "flat":
        raise ApiError("The sandbox imports flat records only (type=flat)")
    rows = records.parse_import_data(params, keep_blank=overwrite == "overwrite")
    if rows is None:  # REDCap answers a JSON object or string with a count of 0 (PyCap#103)
        return Reply.text(records.import_reply([], return_content, fmt), fmt)
    _default_event(ctx.schema, rows.rows)
    valid, errors = records.validate_import(ctx.schema, rows, date_format, overwrite == "overwrite")
    if errors:
        raise ApiError("\n".join(errors))
    auto = records.flag(params, "forceAutoNumber") and ctx.spec.record_autonumbering
    keep: list = [rows, valid]
    with ctx.storage.write() as con:
        pairs = records.apply_import(ctx.storage, con, ctx.pid, ctx.schema, valid, overwrite=overwrite == "overwrite",
                                     auto_number=auto, username=ctx.username, keep=keep)
    reply = Reply.text(records.import_reply(pairs, return_content, fmt), fmt)
    reply.keep = keep
    return reply


def first_event_of_single_arm(schema: Schema) -> str:
    """The event REDCap files a row without `redcap_event_name` under in a longitudinal project with one arm:
    the arm's first event (docs/redcap-sandbox.md). "" when the project is classic or has several arms."""
    if not schema.is_longitudinal or not schema.events:
        return ""
    if len({int(a["arm_num"]) for a in schema.spec.arms} | set(schema.event_arm.values())) != 1:
        return ""
    return schema.events[0]


def _default_event(schema: Schema, rows: list[dict[str, str]]) -> None:
    first = first_event_of_single_arm(schema)
    if first:
        for row in rows:
            if not row.get(records.EVENT):
                row[records.EVENT] = first


# ---- metadata and project -----------------------------------------------------------------------------------------

# REDCap's own wording is not published; this says what REDCap's API documentation says of these methods
PRODUCTION_REFUSAL = ("This method is only available for projects in Development status: the project is in "
                      "Production, so {what} must be made in Draft Mode")


def _refuse_in_production(ctx: Context, what: str) -> None:
    if ctx.spec.in_production:
        raise ApiError(PRODUCTION_REFUSAL.format(what=what))


def _metadata(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    if "data" in params:
        _refuse_in_production(ctx, "changes to the data dictionary")
        rows = normalise_metadata(_parse_data(params))
        problems = metadata_problems(rows)
        if problems:
            raise ApiError("\n".join(problems))
        forms = {r["form_name"] for r in rows}
        spec = ctx.spec.with_(
            metadata=rows,
            mappings=tuple(m for m in ctx.spec.mappings if m["form"] in forms),
            repeating=tuple(r for r in ctx.spec.repeating if not r.get("form_name") or r["form_name"] in forms),
        )
        with ctx.storage.write() as con:
            ctx.storage.update_spec(con, ctx.pid, spec)
            ctx.storage.log_design(con, ctx.pid, ctx.username, f"Upload data dictionary ({len(rows)} fields)")
        return _count_reply(len(rows), params)
    fields = records.as_list(request.lists, params, "fields")
    forms = records.as_list(request.lists, params, "forms")
    bad = [f for f in fields if f not in ctx.schema.fields]
    if bad:
        raise invalid_values("fields", bad)
    bad = [f for f in forms if f not in ctx.schema.form_fields]
    if bad:
        raise invalid_values("forms", bad)
    rows = [dict(r) for r in ctx.spec.metadata
            if (not fields and not forms) or r["field_name"] in fields or r["form_name"] in forms]
    return _list_reply(rows, params)


def _project(ctx: Context, request: ApiRequest) -> Reply:
    if "data" in request.params:
        raise ApiError("The sandbox does not import project settings")
    spec, schema = ctx.spec, ctx.schema
    info = {
        "project_id": ctx.pid,
        "project_title": spec.title,
        "creation_time": ctx.created,
        "production_time": ctx.created if spec.in_production else "",
        "in_production": int(spec.in_production),
        "project_language": "English",
        "purpose": 0,
        "purpose_other": "",
        "project_notes": "trialkit sandbox",
        "custom_record_label": "",
        "secondary_unique_field": "",
        "is_longitudinal": int(schema.is_longitudinal),
        "has_repeating_instruments_or_events": int(schema.has_repeating),
        "surveys_enabled": 0,
        "scheduling_enabled": 0,
        "record_autonumbering_enabled": int(spec.record_autonumbering),
        "randomization_enabled": 0,
        "ddp_enabled": 0,
        "project_irb_number": "",
        "project_grant_number": "",
        "project_pi_firstname": "",
        "project_pi_lastname": "",
        "display_today_now_button": 1,
        "missing_data_codes": spec.missing_data_codes,
        "external_modules": "",
        "bypass_branching_erase_field_prompt": 0,
    }
    fmt = _export_format(request.params)
    return Reply.text(formats.render_object(info, fmt), fmt)


def _field_names(ctx: Context, request: ApiRequest) -> Reply:
    rows = ctx.schema.export_field_names()
    wanted = request.params.get("field", "")
    if wanted:
        if wanted not in ctx.schema.fields and wanted not in ctx.schema.complete_fields:
            raise invalid_values("field", [wanted])
        rows = [r for r in rows if r["original_field_name"] == wanted]
    return _list_reply(rows, request.params)


def _instrument(ctx: Context, request: ApiRequest) -> Reply:
    labels = ctx.schema.form_labels
    return _list_reply([{"instrument_name": f, "instrument_label": labels[f]} for f in ctx.schema.forms],
                       request.params)


# ---- arms, events, mappings, repeats ------------------------------------------------------------------------------

def _arms_filter(ctx: Context, request: ApiRequest) -> set[int] | None:
    arms = records.as_list(request.lists, request.params, "arms")
    if not arms:
        return None
    known = {int(a["arm_num"]) for a in ctx.spec.arms}
    bad = [a for a in arms if not records.whole_number(a) or int(a) not in known]
    if bad:
        raise invalid_values("arms", bad)
    return {int(a) for a in arms}


def _arm(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    action = params.get("action", "").lower()
    if not ctx.schema.is_longitudinal and not (action == "import" and ctx.spec.arms):
        if action in ("import", "delete"):
            raise ApiError(f"You cannot {action} arms for classic projects")
        raise ApiError("You cannot export arms for classic projects")
    if action in ("import", "delete"):
        _refuse_in_production(ctx, "changes to arms")
    if action == "import":
        rows = _parse_data(params)
        new = {}
        for r in rows:
            arm = _arm_number(r.get("arm_num"))
            new[arm] = {"arm_num": arm, "name": _required_text(r, "name")}
        if records.flag(params, "override"):  # every arm, event and mapping goes, then the import
            arms = dict(new)
            events: list[dict] = []
        else:
            arms = {int(a["arm_num"]): dict(a) for a in ctx.spec.arms} | new
            events = list(ctx.spec.events)
        _save_schedule(ctx, arms=tuple(arms[k] for k in sorted(arms)), events=tuple(events),
                       details=("Delete all arms and events, then create arm " if records.flag(params, "override")
                                else "Create/rename arm ") + ", ".join(str(k) for k in sorted(new)))
        return _count_reply(len(rows), params)
    if action == "delete":
        wanted = _arms_filter(ctx, request) or set()
        if not wanted:
            raise ApiError('The parameter "arms" is missing')
        _save_schedule(ctx, arms=tuple(a for a in ctx.spec.arms if int(a["arm_num"]) not in wanted),
                       events=tuple(e for e in ctx.spec.events if int(e["arm_num"]) not in wanted),
                       details="Delete arm " + ", ".join(str(a) for a in sorted(wanted)))
        return _count_reply(len(wanted), params)
    wanted = _arms_filter(ctx, request)
    rows = [{"arm_num": int(a["arm_num"]), "name": a["name"]} for a in ctx.spec.arms
            if wanted is None or int(a["arm_num"]) in wanted]
    return _list_reply(rows, params)


def _event(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    action = params.get("action", "").lower()
    if not ctx.schema.is_longitudinal and not ctx.spec.arms:
        if action in ("import", "delete"):
            raise ApiError(f"You cannot {action} events for classic projects")
        raise ApiError("You cannot export events for classic projects")
    if action in ("import", "delete"):
        _refuse_in_production(ctx, "changes to events")
    if action == "import":
        rows = _parse_data(params)
        events = [] if records.flag(params, "override") else [dict(e) for e in ctx.spec.events]
        arms = {int(a["arm_num"]) for a in ctx.spec.arms}
        touched: list[str] = []
        for r in rows:
            arm = _arm_number(r.get("arm_num") or 1)
            name = _required_text(r, "event_name")
            if arm not in arms:
                raise ApiError(f"The arm number {arm} does not exist in the project")
            unique = str(r.get("unique_event_name") or "")
            existing = next((e for e in events if e["unique_event_name"] == unique), None) if unique else None
            if existing is not None:
                existing["event_name"] = name
                existing["custom_event_label"] = str(r.get("custom_event_label") or "")
                touched.append(unique)
                continue
            taken = {e["unique_event_name"] for e in events}
            touched.append(unique_event_name(name, arm, taken))
            events.append({
                "event_name": name,
                "arm_num": arm,
                "unique_event_name": unique_event_name(name, arm, taken),
                "custom_event_label": str(r.get("custom_event_label") or ""),
                "event_id": max([int(e.get("event_id") or 0) for e in events] + [40000]) + 1,
            })
        _save_schedule(ctx, events=tuple(events), details=("Delete all events, then create event " if records.flag(
            params, "override") else "Create/rename event ") + ", ".join(touched))
        return _count_reply(len(rows), params)
    if action == "delete":
        wanted = records.as_list(request.lists, params, "events")
        bad = [e for e in wanted if e not in ctx.schema.event_order]
        if bad or not wanted:
            raise invalid_values("events", bad)
        _save_schedule(ctx, events=tuple(e for e in ctx.spec.events if e["unique_event_name"] not in wanted),
                       details="Delete event " + ", ".join(wanted))
        return _count_reply(len(wanted), params)
    arms = _arms_filter(ctx, request)
    rows = [
        {
            "event_name": e["event_name"],
            "arm_num": int(e["arm_num"]),
            "unique_event_name": e["unique_event_name"],
            "custom_event_label": e.get("custom_event_label", ""),
            "event_id": int(e.get("event_id") or 0),
        }
        for e in ctx.spec.events
        if arms is None or int(e["arm_num"]) in arms
    ]
    return _list_reply(rows, params)


def _form_event_mapping(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    action = params.get("action", "").lower()
    if not ctx.schema.is_longitudinal:
        if action == "import":
            raise ApiError("You cannot import form/event mappings for classic projects")
        raise ApiError("You cannot export form/event mappings for classic projects")
    if action == "import":
        rows = _parse_data(params)
        events = ctx.schema.event_order
        pairs = []
        for r in rows:
            event, form = str(r.get("unique_event_name", "")), str(r.get("form", ""))
            if event not in events or form not in ctx.schema.form_fields:
                raise ApiError(f"The form/event pair '{form}' / '{event}' is not valid")
            pairs.append({"arm_num": ctx.schema.event_arm[event], "unique_event_name": event, "form": form})
        # REDCap replaces the project's whole designation (every arm) with the import; data of a form no longer
        # designated for an event stays stored, as in REDCap, and shows again if the pair is designated again
        _save(ctx, mappings=tuple(pairs), details=f"Perform instrument-event mappings ({len(pairs)} pairs)")
        return _count_reply(len(pairs), params)
    arms = _arms_filter(ctx, request)
    rows = [{"arm_num": int(m["arm_num"]), "unique_event_name": m["unique_event_name"], "form": m["form"]}
            for m in ctx.spec.mappings if arms is None or int(m["arm_num"]) in arms]
    return _list_reply(rows, params)


def _repeating(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    longitudinal = ctx.schema.is_longitudinal
    if "data" in params:
        rows = _parse_data(params)
        out = []
        for r in rows:
            form = str(r.get("form_name") or "")
            event = str(r.get("event_name") or "") if longitudinal else ""
            if form and form not in ctx.schema.form_fields:
                raise ApiError(f"The instrument '{form}' does not exist in the project")
            if longitudinal and event not in ctx.schema.event_order:
                raise ApiError(f"The event '{event}' does not exist in the project")
            item = {"form_name": form, "custom_form_label": str(r.get("custom_form_label") or "")}
            out.append({"event_name": event, **item} if longitudinal else item)
        _save(ctx, repeating=tuple(out), details=f"Set up repeating instruments/events ({len(out)} rows)")
        return _count_reply(len(out), params)
    if not ctx.spec.repeating:
        raise ApiError("You cannot export repeating instruments and events because the project does not contain "
                       "any repeating instruments and events")
    rows = []
    for r in ctx.spec.repeating:
        item = {"form_name": r.get("form_name", ""), "custom_form_label": r.get("custom_form_label", "")}
        rows.append({"event_name": r.get("event_name", ""), **item} if longitudinal else item)
    return _list_reply(rows, params)


def _arm_number(value: object) -> int:
    # a malformed import row is a 400 like any other bad input, not a KeyError/ValueError turned into a 500
    text = str(value if value is not None else "").strip()
    if not records.whole_number(text):
        raise ApiError(f"The arm number '{text}' is not valid: it must be a whole number")
    return int(text)


def _required_text(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None or str(value).strip() == "":
        raise ApiError(f'The "{key}" of each row being imported must not be blank')
    return str(value)


def _save(ctx: Context, details: str = "", **changes: object) -> None:
    with ctx.storage.write() as con:
        ctx.storage.update_spec(con, ctx.pid, ctx.spec.with_(**changes))
        if details:
            ctx.storage.log_design(con, ctx.pid, ctx.username, details)


def _save_schedule(ctx: Context, *, events: tuple[dict, ...], arms: tuple[dict, ...] | None = None,
                   details: str = "") -> None:
    """New arms/events; an event that is gone takes its form mappings, repeat settings, data and files with it
    (as deleting an event does in REDCap), in one transaction. Records stay, even with no data left."""
    kept = {e["unique_event_name"] for e in events}
    gone = [e for e in ctx.schema.events if e not in kept]
    changes: dict[str, object] = {"events": events, "longitudinal": ctx.schema.is_longitudinal or None}
    if arms is not None:
        changes["arms"] = arms
    if gone:
        changes["mappings"] = tuple(m for m in ctx.spec.mappings if m["unique_event_name"] in kept)
        changes["repeating"] = tuple(r for r in ctx.spec.repeating if r.get("event_name", "") in kept)
    with ctx.storage.write() as con:
        ctx.storage.update_spec(con, ctx.pid, ctx.spec.with_(**changes))
        for table in ("rows", "files"):
            con.executemany(f"DELETE FROM {table} WHERE pid=? AND event=?", [(ctx.pid, e) for e in gone])
        if details:
            ctx.storage.log_design(con, ctx.pid, ctx.username, details)


def _dag(ctx: Context, request: ApiRequest) -> Reply:
    """Data Access Groups: export, import (new or renamed), delete, and `switch` of the token user's group."""
    params = request.params
    action = params.get("action", "export").lower()
    if action == "switch":
        wanted = params.get("dag", "")
        if wanted and wanted not in ctx.schema.dag_names:
            raise ApiError(f"The data access group '{wanted}' does not exist in the project")
        _save(ctx, user_dag=wanted, details=f"Switch data access group ({wanted or 'no group'})")
        return Reply.text("1", "csv")
    if action == "import":
        rows = _parse_data(params)
        dags = [dict(d) for d in ctx.spec.dags]
        by_unique = {d["unique_group_name"]: d for d in dags}
        new: list[str] = []
        for r in rows:
            label = _required_text(r, "data_access_group_name").strip()
            unique = str(r.get("unique_group_name") or "").strip()
            if unique:
                if unique not in by_unique:
                    raise ApiError(f"The unique group name '{unique}' is not valid: leave it blank to create a group")
                by_unique[unique]["data_access_group_name"] = label
            else:
                new.append(label)
        _save(ctx, dags=dag_rows(new, dags), details=f"Create/rename data access groups ({len(rows)})")
        return _count_reply(len(rows), params)
    if action == "delete":
        wanted = records.as_list(request.lists, params, "dags")
        bad = [d for d in wanted if d not in ctx.schema.dag_names]
        if bad or not wanted:
            raise invalid_values("dags", bad)
        with ctx.storage.write() as con:
            ctx.storage.update_spec(con, ctx.pid, ctx.spec.with_(
                dags=tuple(d for d in ctx.spec.dags if d["unique_group_name"] not in wanted),
                user_dag="" if ctx.spec.user_dag in wanted else ctx.spec.user_dag))
            # a deleted group's records stay, in no group (as in REDCap)
            con.executemany("UPDATE records SET dag='' WHERE pid=? AND dag=?", [(ctx.pid, d) for d in wanted])
            ctx.storage.log_design(con, ctx.pid, ctx.username, "Delete data access group " + ", ".join(wanted))
        return _count_reply(len(wanted), params)
    if action != "export":
        raise ApiError('The value of the parameter "action" is not valid')
    return _list_reply([dict(d) for d in ctx.spec.dags], params)


def _user_dag_mapping(ctx: Context, request: ApiRequest) -> Reply:
    """The sandbox has one user (the token's): its group, exported and imported as REDCap's rows."""
    params = request.params
    if params.get("action", "export").lower() == "import":
        rows = _parse_data(params)
        wanted = ctx.spec.user_dag
        for r in rows:
            user = str(r.get("username") or "")
            if user != ctx.username:
                raise ApiError(f"The user '{user}' is not a user of this project")
            wanted = str(r.get("redcap_data_access_group") or "")
            if wanted and wanted not in ctx.schema.dag_names:
                raise ApiError(f"The data access group '{wanted}' does not exist in the project")
        _save(ctx, user_dag=wanted, details=f"Assign user to data access group ({wanted or 'no group'})")
        return _count_reply(len(rows), params)
    return _list_reply([{"username": ctx.username, "redcap_data_access_group": ctx.spec.user_dag}], params)


# ---- small things ----------------------------------------------------------------------------------------------

def _next_record_name(ctx: Context, request: ApiRequest) -> Reply:
    return Reply.text(str(records.next_record_number(ctx.con, ctx.pid)), "csv")


def _version(ctx: Context, request: ApiRequest) -> Reply:
    return Reply(200, REDCAP_VERSION.encode(), "text/html; charset=utf-8")


_LOG_TYPES = {
    "manage": (DESIGN_ACTION,),
    "record": ("Create record", "Update record", "Delete record", "Delete record data"),
    "record_add": ("Create record",),
    "record_edit": ("Update record", "Delete record data"),
    "record_delete": ("Delete record",),
}


def _log(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    if not ctx.spec.user_logging:
        raise ApiError("You do not have Logging privileges in this project", 403)
    logtype = params.get("logtype", "")
    if logtype and logtype not in ("export", "manage", "user", "lock_record", "page_view", *_LOG_TYPES):
        raise ApiError('The value of the parameter "logtype" is not valid')
    sql = ["SELECT ts, username, action, details, record, event FROM log WHERE pid=?"]
    args: list = [ctx.pid]
    if logtype:
        actions = _LOG_TYPES.get(logtype, ())
        sql.append(f"AND action IN ({','.join('?' * len(actions)) or 'NULL'})")
        args.extend(actions)
    for key, column in (("user", "username"), ("record", "record")):
        if params.get(key):
            sql.append(f"AND {column} = ?")
            args.append(params[key])
    if params.get("beginTime"):
        sql.append("AND ts >= ?")
        args.append(records.parse_time(params["beginTime"], "beginTime"))
    if params.get("endTime"):
        sql.append("AND ts <= ?")
        args.append(records.parse_time(params["endTime"], "endTime"))
    sql.append("ORDER BY id DESC")
    rows = []
    for ts, username, action, details, record, event in ctx.con.execute(" ".join(sql), args):
        rows.append({
            "timestamp": ts[:16],
            "username": username,
            "action": f"{action} {record}" + (f" ({event})" if event else ""),
            "details": records.log_details(details),
            "record": record,  # REDCap 13.4.9 added this column
        })
    # REDCap logs each API export of the log itself as a Manage/Design event
    with ctx.storage.write() as con:
        ctx.storage.log_design(con, ctx.pid, ctx.username, "Export Logging (API)")
    return _list_reply(rows, params)


def _project_xml(ctx: Context, request: ApiRequest) -> Reply:
    """REDCap's "CDISC ODM (XML)" project export: the design and, unless returnMetadataOnly, the data (of the
    token user's group only, when the user is in one)."""
    from trialkit.redcap.sandbox import odm

    params = request.params
    with_data = not records.flag(params, "returnMetadataOnly")
    with_dags = records.flag(params, "exportDataAccessGroups") and not ctx.spec.user_dag
    text = odm.export_project(ctx.con, ctx.pid, ctx.schema, with_data=with_data, with_dags=with_dags,
                              now=ctx.storage.clock())
    return Reply(200, text.encode(), "text/xml; charset=utf-8")


def _user(ctx: Context, request: ApiRequest) -> Reply:
    if request.params.get("action", "export").lower() != "export" or "data" in request.params:
        raise ApiError("The sandbox has one user per project; users cannot be imported or deleted")
    forms = {f: 1 for f in ctx.schema.forms}
    group = next((d for d in ctx.spec.dags if d["unique_group_name"] == ctx.spec.user_dag), None)
    user = {
        "username": ctx.username, "email": f"{ctx.username}@localhost", "firstname": "Sandbox", "lastname": "User",
        "expiration": "", "data_access_group": group["unique_group_name"] if group else "",
        "data_access_group_id": group["data_access_group_id"] if group else "", "design": 1, "alerts": 1,
        "user_rights": 1, "data_access_groups": 1, "reports": 1, "stats_and_charts": 1,
        "manage_survey_participants": 1, "calendar": 1, "data_import_tool": 1, "data_comparison_tool": 1,
        "logging": int(ctx.spec.user_logging), "email_logging": 1, "file_repository": 1, "data_quality_create": 1,
        "data_quality_execute": 1,
        "api_export": 1, "api_import": 1, "api_modules": 0, "mobile_app": 0, "mobile_app_download_data": 0,
        "record_create": 1, "record_rename": 1, "record_delete": 1, "lock_records_all_forms": 0, "lock_records": 0,
        "lock_records_customization": 0, "forms": forms, "forms_export": forms,
    }
    return _list_reply([user], request.params)


# ---- files -----------------------------------------------------------------------------------------------------------

def _file(ctx: Context, request: ApiRequest) -> Reply:
    params = request.params
    action = params.get("action", "").lower()
    name = params.get("field", "")
    info = ctx.schema.fields.get(name)
    if info is None or info.type != "file":
        raise ApiError(f"The field '{name}' does not exist or is not a 'file' field")
    record = params.get("record", "")
    exists = ctx.con.execute("SELECT 1 FROM records WHERE pid=? AND record=?", (ctx.pid, record)).fetchone()
    event = params.get("event", "")
    if ctx.schema.is_longitudinal:
        if event not in ctx.schema.event_order:
            raise ApiError('The value of the parameter "event" is not valid' if event else
                           'The parameter "event" is required for a longitudinal project')
        if info.form not in ctx.schema.event_forms.get(event, ()):
            raise ApiError(f"The field '{name}' is not on a form designated for the event '{event}'")
    else:
        event = ""
    instance_text = params.get("repeat_instance", "")
    rform = info.form if info.form in ctx.schema.repeating_forms.get(event, set()) else ""
    if instance_text and not records.whole_number(instance_text):
        raise ApiError('The value of the parameter "repeat_instance" is not valid')
    inst = int(instance_text) if instance_text else (1 if rform or event in ctx.schema.repeating_events else 0)
    key = (ctx.pid, record, event, inst, name)
    if action == "export":
        row = ctx.con.execute("SELECT name, mime, content FROM files WHERE pid=? AND record=? AND event=? AND inst=? "
                              "AND field=?", key).fetchone()
        if row is None:
            raise ApiError("There is no file to download for this record")
        fname, mime, content = row
        return Reply(200, bytes(content), f'{_download_type(fname, mime)}; name="{fname}"')
    if action not in ("import", "delete"):
        raise ApiError('The value of the parameter "action" is not valid')
    if action == "import":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError("No valid file was uploaded")
        fname, data, mime = upload
        with ctx.storage.write() as con:
            if not exists:
                raise ApiError(f'The record "{record}" does not exist')
            con.execute("INSERT OR REPLACE INTO files(pid, record, event, inst, field, name, mime, content) "
                        "VALUES (?,?,?,?,?,?,?,?)", (*key, fname, mime or "application/octet-stream", data))
            _set_cell(ctx, con, record, event, rform, inst, name, fname)
        return Reply.text("", "json")
    with ctx.storage.write() as con:
        gone = con.execute("DELETE FROM files WHERE pid=? AND record=? AND event=? AND inst=? AND field=?", key)
        if gone.rowcount == 0:
            raise ApiError("There is no file to delete for this record")
        _set_cell(ctx, con, record, event, rform, inst, name, "")
    return Reply.text("", "json")


def _download_type(name: str, mime: str) -> str:
    """REDCap's Content-Type of a file download: the file's own type, with `charset=UTF-8` for text files.

    The type comes from the file name first: PyCap uploads send no part type, which a multipart parser reads as
    text/plain, so the upload's type is used only when it says more than that."""
    import mimetypes

    guessed = mimetypes.guess_type(name)[0]
    if guessed is None:
        guessed = mime if mime and mime not in ("text/plain", "application/octet-stream") else \
            "application/octet-stream"
    return f"{guessed}; charset=UTF-8" if guessed.startswith("text/") else guessed


def _set_cell(ctx: Context, con: sqlite3.Connection, record: str, event: str, rform: str, inst: int, column: str,
              value: str) -> None:
    from trialkit.redcap.sandbox.storage import record_key

    found = con.execute("SELECT data FROM rows WHERE pid=? AND rkey=? AND event=? AND rform=? AND inst=?",
                        (ctx.pid, record_key(record), event, rform, inst)).fetchone()
    data = json.loads(found[0]) if found else {}
    if value:
        data[column] = value
        data.setdefault(f"{ctx.schema.fields[column].form}_complete", "0")
    else:
        data.pop(column, None)
    con.execute("INSERT OR REPLACE INTO rows(pid, rkey, ev, rform, inst, record, event, data) VALUES (?,?,?,?,?,?,?,?)",
                (ctx.pid, record_key(record), ctx.schema.event_order.get(event, 0), rform, inst, record, event,
                 json.dumps(data, separators=(",", ":"))))
    now = ctx.storage.now()
    con.execute("UPDATE records SET changed=? WHERE pid=? AND record=?", (now, ctx.pid, record))
    ctx.storage.log(con, [(ctx.pid, now, ctx.username, "Update record",
                           f"{column} = '{value}'" if value else f"{column} = ''", record, event)])


def _unsupported(ctx: Context, request: ApiRequest) -> Reply:
    raise ApiError(f"The trialkit sandbox does not support content={request.params.get('content')}", 501)


_HANDLERS = {
    "record": _record,
    "metadata": _metadata,
    "project": _project,
    "exportFieldNames": _field_names,
    "instrument": _instrument,
    "arm": _arm,
    "event": _event,
    "formEventMapping": _form_event_mapping,
    "repeatingFormsEvents": _repeating,
    "dag": _dag,
    "userDagMapping": _user_dag_mapping,
    "project_xml": _project_xml,
    "generateNextRecordName": _next_record_name,
    "version": _version,
    "log": _log,
    "user": _user,
    "file": _file,
    **{c: _unsupported for c in ("pdf", "report", "userRole", "userRoleMapping", "surveyLink",
                                 "surveyQueueLink", "surveyAccessCode", "surveyReturnCode", "participantList",
                                 "fileRepository", "participantList", "randomize", "record_rename")},
}

__all__ = ["ApiRequest", "Reply", "handle"]
