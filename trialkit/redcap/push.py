"""`trialkit redcap push`: send intake data to REDCap, cell by changed cell, exactly once.

1. The data is read (any format trialkit reads) and validated against the study; records with errors are not
   sent and come back as findings.
2. What REDCap holds for those records is exported (CSV into polars) and compared cell by cell: only cells whose
   value changes are sent. A blank leaves the stored value alone, unless `clear_blanks`: then the cleared cells go
   in a separate import with REDCap's `overwrite` behaviour that holds exactly those cells (record, key columns
   and the cleared fields), because `overwrite` writes every blank of a row and `normal` ignores them all.
3. New records take REDCap's next record numbers only when `auto_number` is asked; each source id's REDCap id is
   kept in the ledger, reserved and committed before the import that creates it (see data_ledger), so a rerun
   re-uses it instead of making a second record.
4. Imports go record-chunk by record-chunk. A chunk that REDCap rejects is split in halves until the rejected
   records are alone; they are reported with record and field, everything else goes through.
5. Everything written is read back and compared again; `dry_run` stops after step 2.

Why a kill or a lost reply at any point leaves REDCap right after a rerun: every import is a keyed upsert of
target values (record, event, repeat instance), so sending it again changes nothing, and a rerun sends only the
cells that still differ. The only write that is not idempotent, creating an auto-numbered record, is pinned to an
id committed in the ledger before it is sent.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.errors import DataError, Location, RedcapError, UsageError
from trialkit.records.convert import padded_decimals
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.connections import Connection
from trialkit.redcap.data_ledger import DataLedger
from trialkit.redcap.progress import Progress
from trialkit.redcap.pull import DEFAULT_OVERLAP, KEY_COLUMNS, log_start, logged_record
from trialkit.redcap.sync import failure_message

#: tests only: SIGKILL this process right after the Nth import call has returned (a kill at a seeded point)
KILL_HOOK_ENV = "TRIALKIT_TEST_KILL_AFTER_IMPORTS"
CHANGE_COLUMNS = ("record", "source_record", "event", "instrument", "instance", "field", "old", "new", "kind")
_NOT_SENT = ("calc", "descriptive", "file", "sql")


@dataclass(frozen=True)
class Rejection:
    record: str  # the source record id
    field: str
    message: str  # REDCap's reason, without the value


@dataclass(frozen=True)
class PushResult:
    run_id: int
    dry_run: bool
    records: int  # records in the data
    invalid: int  # records with validation errors: not sent
    changed_records: int
    cells_set: int
    cells_cleared: int
    created: int  # new REDCap records
    imports: int = 0  # import calls made
    compared: int = 0  # records compared with REDCap (the others are as REDCap was last seen to hold them)
    rejected: tuple[Rejection, ...] = ()
    unverified: tuple[str, ...] = ()  # "record field" of cells that did not read back as sent
    changes: pl.DataFrame = field(default_factory=pl.DataFrame, repr=False)  # the cells, for a dry run
    findings: Any = field(default=None, repr=False)
    stats: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    changed_ids: tuple[str, ...] = ()  # source ids of the records with cells to write
    deleted_in_redcap: int = 0  # records pushed before, unchanged in the data, that REDCap no longer held
    recreated: int = 0  # of those, records written again and read back

    @property
    def failures(self) -> int:
        return self.invalid + len({r.record for r in self.rejected}) + len(self.unverified)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "push",
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "records": self.records,
            "invalid_records": self.invalid,
            "changed_records": self.changed_records,
            "cells_set": self.cells_set,
            "cells_cleared": self.cells_cleared,
            "created": self.created,
            "import_calls": self.imports,
            "compared_records": self.compared,
            "deleted_in_redcap": self.deleted_in_redcap,
            "recreated": self.recreated,
            "rejected": [{"record": r.record, "field": r.field, "message": r.message} for r in self.rejected],
            "unverified": len(self.unverified),
            **dict(self.stats),
            "bytes": self.stats.get("bytes_sent", 0) + self.stats.get("bytes_received", 0),
            "seconds": round(self.seconds, 3),
            "failures": self.failures,
        }


def push(
    connection: RedcapClient | Connection,
    data: str | Path | Any,
    study: Any,
    *,
    ledger: DataLedger,
    now: dt.datetime,
    as_of: dt.date | None = None,
    clear_blanks: bool = False,
    auto_number: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    clock: Callable[[], dt.datetime] | None = None,
) -> PushResult:
    """Push `data` (a path trialkit reads, or IntakeData) into the project. See the module doc.

    `now` is the run's start on this machine's clock; `clock`, when given, tells the time the writes are read
    back, which the next push starts its comparison from (else the start: safe, but the next push then compares
    again the records this one wrote)."""
    from trialkit.records import IntakeData, read_intake
    from trialkit.validation import validate

    client = connection.client() if isinstance(connection, Connection) else connection
    started = time.monotonic()
    report = progress or Progress("push", enabled=False)
    intake = data if isinstance(data, IntakeData) else read_intake(data, study)
    if intake.raw.height == 0:
        # a file cut to its header holds no one: an unreadable-data outcome (docs/cli.md), not "0 records, ok"
        raise DataError("no data rows (a header only): nothing to push",
                        location=Location(file=str(intake.source or data)))
    findings = validate(intake, study, as_of=as_of or now.date())
    _refuse_file_errors(findings, intake.source or data)
    bad = set(findings.records_with_errors().to_list())
    info = client.project_info()
    ledger.bind(str(info.get("project_id", "")), client.url)
    # the dictionary first: PyCap's def_field then reads this copy instead of exporting the dictionary itself
    metadata = client.metadata()
    def_field = client.def_field
    desired, fields = _desired(intake.raw, def_field, metadata, bool(info.get("is_longitudinal")))
    records = desired[def_field].n_unique()
    desired = desired.filter(~pl.col(def_field).is_in(pl.Series(list(bad), dtype=pl.String).implode()))

    hashes = _record_hashes(desired, def_field, f"clear={clear_blanks},auto={auto_number}")
    last = ledger.last_push_watermark()
    run_id = ledger.begin("push", now)
    recreated: set[str] = set()
    try:
        if last is not None:
            # a record whose data is what REDCap was last seen to hold, and that nobody changed in REDCap since,
            # needs no comparison: the cost of a rerun follows the changes, not the size of the project
            seen = ledger.pushed()
            touched = set(client.record_id_frame(changed_since=last - overlap).to_list())
            mapped = {s: r for s, (r, st) in ledger.id_map().items()} if auto_number else {}
            same = {s for s, h in hashes.items() if seen.get(s) == h and mapped.get(s, s) not in touched}
            # a record deleted in REDCap since is not in the changed export either: it is compared, and created
            # again from the data (what the data holds, REDCap holds; the summary counts them)
            gone = _deleted(client, last - overlap, {mapped.get(s, s) for s in same})
            recreated = {s for s in same if mapped.get(s, s) in gone}
            same -= recreated
            desired = desired.filter(~pl.col(def_field).is_in(pl.Series(list(same), dtype=pl.String).implode()))
        id_of, new_ids, pending = _map_ids(client, ledger, desired[def_field].unique(maintain_order=True).to_list(),
                                           auto_number=auto_number, run_id=run_id, now=now, dry_run=dry_run)
        source_of = {v: k for k, v in id_of.items()}
        target = desired.with_columns(pl.col(def_field).replace_strict(id_of, return_dtype=pl.String))
        rejected: list[Rejection] = []
        unverified: list[str] = []
        imports = [0]
        checked_at = now
        ids_all = target[def_field].unique(maintain_order=True).to_list()
        block = client.chunk_size * 10  # records compared and sent at a time: memory stays bounded
        changed: set[str] = set()
        sent_ids: set[str] = set()
        counts: dict[str, dict[str, int]] = {"set": {}, "clear": {}}
        shown: list[pl.DataFrame] = []  # the cells, kept for a dry run's listing only
        absent: set[str] = set()  # records REDCap did not hold: this push creates them (counted as new)
        for part in _blocks(ids_all, block):
            part_target = _only(target, def_field, part)
            before = _stored(client, [r for r in part if r not in new_ids], fields, def_field)
            held = set(before[def_field].to_list()) if def_field in before.columns else set()
            absent.update(r for r in part if r not in new_ids and r not in held)
            changes = diff(part_target, before, def_field, fields, clear_blanks=clear_blanks)
            changed.update(changes["record"].to_list())
            for kind in ("set", "clear"):
                counts[kind].update(changes.filter(pl.col("kind") == kind).group_by("record").len().iter_rows())
            if dry_run:
                shown.append(changes.with_columns(
                    pl.col("record").replace_strict(source_of, default=pl.col("record")).alias("source_record")))
                continue
            for kind, overwrite in (("set", False), ("clear", True)):
                frame = changes.filter(pl.col("kind") == kind)
                if frame.height:
                    sent_ids |= _send(client, ledger, _payload(frame, def_field), def_field, overwrite,
                                      source_of, new_ids, now, rejected, report, imports)
        report.done()
        verified: set[str] = set()
        if sent_ids:
            # every write read back, once all are sent: what still differs from the intended value was not written
            checked_at = clock() if clock is not None else now
            written = [r for r in ids_all if r in sent_ids and r in changed]
            still: set[str] = set()
            for part in _blocks(written, block):
                after = diff(_only(target, def_field, part), _stored(client, part, fields, def_field), def_field,
                             fields, clear_blanks=clear_blanks)
                unverified += [f"{source_of.get(r, r)} {f}" for r, f in after.select("record", "field").iter_rows()]
                still.update(after["record"].to_list())
            verified = set(written) - still
            for kind in ("set", "clear"):
                ledger.record_writes(run_id, {r: n for r, n in counts[kind].items() if r in verified}, kind, now)
        if not dry_run:
            agreed = (set(ids_all) - changed) | verified
            if agreed - verified:
                # a record compared as equal, then changed in REDCap before the read-back time that the next run
                # starts from, would be skipped by it: such records are not marked as agreed
                moved = set(client.record_id_frame(changed_since=now - overlap).to_list()) - verified
                agreed -= moved
                ledger.forget_pushed([source_of.get(r, r) for r in moved])
            ledger.record_pushed({source_of.get(r, r): hashes[source_of.get(r, r)] for r in agreed
                                  if source_of.get(r, r) in hashes}, run_id, now)
            # ids pinned before a kill, a lost reply or this run's imports: created once REDCap holds them
            exist = set(_existing(client, list(pending.values()))) if pending else set()
            ledger.mark([s for s, r in pending.items() if r in exist], "created", now)
        rejected_records = {r.record for r in rejected}
        # new records: auto-numbered ones, and those under the data's own ids that REDCap did not hold (a record
        # written again after a deletion in REDCap is counted by `recreated` instead)
        made = absent & (changed if dry_run else verified)
        created = len({source_of.get(r, r) for r in made} - rejected_records - recreated)
        if not dry_run:
            created += len({source_of.get(r, r) for r in new_ids} - rejected_records)
        result = PushResult(
            run_id, dry_run, records, len(bad), len(changed), sum(counts["set"].values()),
            sum(counts["clear"].values()),
            created, imports[0],
            len(ids_all), tuple(rejected), tuple(unverified),
            pl.concat(shown) if shown else pl.DataFrame(schema={c: pl.String for c in CHANGE_COLUMNS}),
            findings, client.stats.to_dict(), time.monotonic() - started,
            changed_ids=tuple(source_of.get(r, r) for r in ids_all if r in changed),
            recreated=0 if dry_run else len({source_of.get(r, r) for r in verified} & recreated),
            deleted_in_redcap=len(recreated),
        )
        status = "ok" if not (rejected or unverified) else "partial"
        # the next push compares records changed in REDCap since this run's read-back (less the overlap)
        ledger.finish(run_id, status, at=clock() if clock is not None else now,
                      watermark=None if dry_run else checked_at, summary=result.to_dict())
        return result
    except BaseException as exc:
        message = failure_message(exc)
        # when it ended, as the ledger's runs show it (the start stands in if the clock itself failed)
        with contextlib.suppress(Exception):
            now = clock() if clock is not None else now
        ledger.finish(run_id, "failed", at=now, message=message)
        raise


def _refuse_file_errors(findings: Any, source: Any) -> None:
    """Errors of the file as a whole (a column that is no field of the study, mostly a misspelt one) belong to no
    record, so setting invalid records aside cannot cover them: the push would send the rest and drop that
    column's values while saying it did its job. Nothing is sent instead; the message names the columns (a
    header, never a cell value)."""
    whole = findings.frame.filter((pl.col("severity") == "error") & pl.col("record").is_null())
    if whole.is_empty():
        return
    named = [f"{row['field'] or '(no name)'}: {row['message']}" for row in whole.head(5).to_dicts()]
    more = f"; and {whole.height - 5} more" if whole.height > 5 else ""
    raise DataError(f"{whole.height} error(s) in the file's columns, nothing sent: {'; '.join(named)}{more}",
                    location=Location(file=str(source)))


# -- what to send -------------------------------------------------------------------------------------------------


def _desired(raw: pl.DataFrame, def_field: str, metadata: Sequence[Mapping[str, str]],
             longitudinal: bool) -> tuple[pl.DataFrame, list[str]]:
    """The data's rows as REDCap flat rows (text, null = blank) and the columns to compare and send."""
    if def_field not in raw.columns:
        raise UsageError(f"the data has no {def_field} column (the project's record id field)")
    if longitudinal and "redcap_event_name" not in raw.columns:
        raise UsageError("the project is longitudinal: the data needs a redcap_event_name column")
    writable = {row["field_name"]: row["field_type"] for row in metadata if row["field_type"] not in _NOT_SENT}
    forms = {row["form_name"] for row in metadata}
    fields = []
    for column in raw.columns:
        if column == def_field or column in KEY_COLUMNS or column.startswith("_"):
            continue
        base = column.split("___")[0]
        if (base in writable and (writable[base] == "checkbox") == ("___" in column)) or (
            column.endswith("_complete") and column[: -len("_complete")] in forms
        ):
            fields.append(column)
    keys = [k for k in KEY_COLUMNS if k in raw.columns]
    frame = raw.select([def_field, *keys, *fields]).with_columns(
        [pl.col(c).cast(pl.String) for c in [def_field, *keys]])
    # `175` in a number_1dp field passed validation (REDCap's data entry takes it); its API import wants `175.0`
    valid = {row["field_name"]: row.get("text_validation_type_or_show_slider_number") or "" for row in metadata}
    frame = frame.with_columns(padded_decimals(pl.col(c), valid[c]).alias(c) for c in fields
                               if valid.get(c, "").startswith("number_"))
    return frame, fields


def _record_hashes(desired: pl.DataFrame, def_field: str, mode: str) -> dict[str, str]:
    """A content hash of each record's rows (column names and cells), to know a record unchanged since a push."""
    if not desired.height:
        return {}
    line = pl.concat_str([pl.lit(f"{c}=") + pl.col(c).fill_null("").cast(pl.String) for c in desired.columns],
                         separator="\x1f")
    rows = desired.select(pl.col(def_field), line.alias("_line")).group_by(def_field, maintain_order=True).agg(
        pl.col("_line").str.join("\x1e"))
    # the mode is hashed too: the same data pushed with --clear-blanks (or --auto-number) may still have work to do
    return {rid: hashlib.sha256(f"{mode}\x1d{text}".encode()).hexdigest() for rid, text in rows.iter_rows()}


def _keys(frame: pl.DataFrame, def_field: str) -> pl.DataFrame:
    """The four REDCap key columns, blank as '' (so rows join whether or not a column was there)."""
    exprs = [pl.col(def_field).cast(pl.String).alias("record")]
    for name, alias in zip(KEY_COLUMNS, ("event", "instrument", "instance"), strict=True):
        exprs.append((pl.col(name).cast(pl.String).fill_null("") if name in frame.columns else pl.lit("")).alias(alias))
    return frame.with_columns(exprs)


def diff(desired: pl.DataFrame, stored: pl.DataFrame, def_field: str, fields: Sequence[str], *,
         clear_blanks: bool = False) -> pl.DataFrame:
    """Cells to write: one row per (record, event, instrument, instance, field) whose value changes.

    `kind` is 'set' (a value that REDCap does not hold) or 'clear' (a blank in the data where REDCap holds a
    value; only with clear_blanks)."""
    keys = ["record", "event", "instrument", "instance"]
    if not fields or not desired.height:
        return pl.DataFrame(schema={c: pl.String for c in CHANGE_COLUMNS if c != "source_record"})
    want = (_keys(desired, def_field).select([*keys, *fields])
            .unique(subset=keys, keep="last", maintain_order=True)
            .unpivot(index=keys, on=list(fields), variable_name="field", value_name="new"))
    have_fields = [f for f in fields if f in stored.columns]
    if stored.height and have_fields:
        have = (_keys(stored, def_field).select([*keys, *have_fields])
                .unpivot(index=keys, on=have_fields, variable_name="field", value_name="old"))
        want = want.join(have, on=[*keys, "field"], how="left", maintain_order="left")
    else:
        want = want.with_columns(pl.lit(None, dtype=pl.String).alias("old"))
    new, old = pl.col("new"), pl.col("old")
    # an unticked checkbox and a form never saved export as "0": that is already blank, nothing to clear
    zero_is_blank = pl.col("field").str.contains("___", literal=True) | pl.col("field").str.ends_with("_complete")
    held = old.is_not_null() & ~(zero_is_blank & (old == "0"))
    kind = (pl.when(new.is_not_null() & (old.is_null() | (new != old))).then(pl.lit("set"))
            .when(new.is_null() & held & pl.lit(clear_blanks)).then(pl.lit("clear")))
    return want.with_columns(kind.alias("kind")).filter(pl.col("kind").is_not_null()).select(
        [*keys, "field", "old", "new", "kind"])


def _payload(changes: pl.DataFrame, def_field: str) -> list[dict[str, str]]:
    """Import rows holding exactly the changed cells (cleared cells as '')."""
    rows: dict[tuple, dict[str, str]] = {}
    for record, event, instrument, instance, name, new in changes.select(
            "record", "event", "instrument", "instance", "field", "new").iter_rows():
        key = (record, event, instrument, instance)
        row = rows.get(key)
        if row is None:
            row = {def_field: record}
            if event:
                row["redcap_event_name"] = event
            if instrument or instance:
                row["redcap_repeat_instrument"] = instrument
                row["redcap_repeat_instance"] = instance
            rows[key] = row
        row[name] = new if new is not None else ""
    return list(rows.values())


def _stored(client: RedcapClient, records: Sequence[str], fields: Sequence[str], def_field: str) -> pl.DataFrame:
    if not records:
        return pl.DataFrame()
    bases = list(dict.fromkeys(f if f.endswith("_complete") else f.split("___")[0] for f in fields))
    return client.export_frame(list(records), fields=[def_field, *bases])


def _existing(client: RedcapClient, records: Sequence[str]) -> list[str]:
    if not records:
        return []
    frame = client.export_frame(list(records), fields=[client.def_field])
    return frame[client.def_field].unique().to_list() if frame.width else []


# -- ids ----------------------------------------------------------------------------------------------------------


def _deleted(client: RedcapClient, since: dt.datetime, ids: set[str]) -> set[str]:
    """Of `ids` (REDCap records the push would skip as unchanged since it last saw them), those REDCap no longer
    holds. REDCap's deletion log since `since` names them, and one export of those ids checks they are still gone
    (deleted and created again, a record stays). When the log cannot be read whole (no Logging right; a project
    with data access groups, where a group user's log holds only the group's events; an entry not tied to a
    record), the project's id list tells, in one call."""
    if not ids:
        return set()
    named: set[str] | None = set()
    try:
        if client.dags():
            named = None
        else:
            for entry in client.log_entries("record_delete", log_start(since)):
                record = logged_record(entry)
                if record is None:
                    named = None
                    break
                named.add(record)  # type: ignore[union-attr]
    except (RedcapError, UsageError):
        named = None
    if named is None:
        return ids - set(client.record_id_frame().to_list())
    candidates = sorted(named & ids)
    return set(candidates) - set(_existing(client, candidates)) if candidates else set()


def _map_ids(client: RedcapClient, ledger: DataLedger, sources: list[str], *, auto_number: bool, run_id: int,
             now: dt.datetime, dry_run: bool) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """source id -> REDCap id; the REDCap ids of records this push creates; source -> id of those not yet
    confirmed created."""
    if not auto_number:
        return {s: s for s in sources}, set(), {}
    known = ledger.id_map()
    mapped: dict[str, str] = {}
    pending: dict[str, str] = {}
    for s in sources:
        if s in known and known[s][1] != "created":
            pending[s] = known[s][0]
        elif s in known:
            mapped[s] = known[s][0]
    there = set(_existing(client, list(pending.values())))
    new_ids: set[str] = set()
    retake = []
    for s, rid in pending.items():
        if known[s][1] == "sending" or rid not in there:
            # sending: the import may have landed (then REDCap holds it and it is ours); reserved: never sent,
            # and nobody else has taken the number since
            mapped[s] = rid
            if rid not in there:
                new_ids.add(rid)
        else:
            retake.append(s)  # reserved, never sent, and someone else has created that record since
    fresh = [s for s in sources if s not in mapped]
    if fresh:
        if dry_run:
            for n, s in enumerate(fresh, 1):
                mapped[s] = f"(new {n})"
                new_ids.add(mapped[s])
        else:
            start = _next_number(client, ledger)
            pairs = [(s, str(start + i)) for i, s in enumerate(fresh)]
            ledger.reserve(pairs, run_id, now)  # committed before anything that would create them is sent
            mapped.update(pairs)
            new_ids.update(r for _, r in pairs)
            pending.update(pairs)
    return mapped, new_ids, pending


def _next_number(client: RedcapClient, ledger: DataLedger) -> int:
    text = client.next_record_name()
    if not text.isdigit():
        raise RedcapError("REDCap's next record name is not a number (data access group prefix?): "
                          "auto-numbering by the API is not possible for this user")
    held = [int(r) for r, state in ledger.id_map().values() if state != "created" and r.isdigit()]
    return max([int(text), *(h + 1 for h in held)])


# -- sending ------------------------------------------------------------------------------------------------------


_imports_done = 0


def _kill_hook() -> None:
    global _imports_done
    limit = os.environ.get(KILL_HOOK_ENV)
    if not limit:
        return
    _imports_done += 1
    if _imports_done >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def _by_record(rows: list[dict[str, str]], def_field: str) -> list[list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row[def_field], []).append(row)
    return list(groups.values())


def _send(client: RedcapClient, ledger: DataLedger, rows: list[dict[str, str]], def_field: str, overwrite: bool,
          source_of: Mapping[str, str], new_ids: set[str], now: dt.datetime, rejected: list[Rejection],
          report: Progress, imports: list[int]) -> set[str]:
    """Import `rows` record-chunk by record-chunk; a rejected chunk is split until its bad records are alone.
    Returns the ids of records REDCap accepted."""
    records = _by_record(rows, def_field)
    accepted: set[str] = set()
    done = 0

    def attempt(group: list[list[dict[str, str]]]) -> None:
        nonlocal done
        ids = [g[0][def_field] for g in group]
        creating = [source_of.get(r, r) for r in ids if r in new_ids]
        if creating:
            ledger.mark(creating, "sending", now)
        imports[0] += 1
        try:
            client.import_batch([row for g in group for row in g], overwrite=overwrite)
        except RedcapError as exc:
            problems = _rejections(exc.message)
            if not problems:
                raise
            if len(group) > 1:
                half = len(group) // 2
                attempt(group[:half])
                attempt(group[half:])
                return
            rid = ids[0]
            rejected.extend(Rejection(source_of.get(rid, rid), f, m) for f, m in problems)
            if creating:
                ledger.mark(creating, "reserved", now)  # REDCap refused it: nothing was created
            return
        _kill_hook()
        accepted.update(ids)
        done += len(ids)
        report.update(f"chunk {imports[0]}, {done}/{len(records)} records {'cleared' if overwrite else 'sent'}, "
                      f"{client.stats.calls} calls, {client.stats.retries} retries")

    size = client.chunk_size
    for start in range(0, len(records), size):
        attempt(records[start : start + size])
    return accepted


def _rejections(message: str) -> list[tuple[str, str]]:
    """REDCap's import errors, one `"record","field","value","message"` line each, as (field, message).

    The value is dropped: it may be an identifier. An error without such lines is not about the data."""
    text = message.split(": ", 1)[1] if message.startswith("REDCap record import failed: ") else message
    out = []
    for line in text.splitlines():
        try:
            cells = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            continue
        if len(cells) >= 4:
            out.append((cells[1], cells[3]))
    return out


def _blocks(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def _only(frame: pl.DataFrame, def_field: str, ids: Sequence[str]) -> pl.DataFrame:
    return frame.filter(pl.col(def_field).is_in(pl.Series(list(ids), dtype=pl.String).implode()))
