"""`trialkit redcap pull`: a local typed copy of a REDCap project, one Parquet table per instrument.

The folder holds `manifest.json` (project, time of pull, ledger run, tables) and a `data-<run>/` folder of
Parquet files. A pull writes a new data folder and then replaces the manifest in one rename, so a pull that is
killed leaves the previous copy whole; the old data folder is removed last.

After the first pull, a pull is incremental: REDCap's `dateRangeBegin` gives the records changed since the last
pull (less an overlap of a few minutes for clock skew between this machine and the server: REDCap compares
against its own clock), and the full id list (one small call) tells which local records were deleted in REDCap.
Only changed records are exported, record-chunk by record-chunk, as CSV read straight into polars. The merged
copy has the same rows in the same order as a full pull would give. A change of the project's data dictionary
makes the next pull a full one.

Tables: every instrument is a table keyed by the record id and the REDCap key columns that the project has
(`redcap_event_name`, `redcap_repeat_instrument`, `redcap_repeat_instance`); a repeating instrument's table holds
its instances. Columns are typed from the data dictionary (integers, numbers, dates, date-times, form status)
wherever the typed value writes back to exactly the text REDCap holds; otherwise the column stays text, so a
pull never changes a value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.errors import DataError, Location, RedcapError, UsageError
from trialkit.records.readers import stringify
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.connections import Connection
from trialkit.redcap.data_ledger import DataLedger
from trialkit.redcap.progress import Progress

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "trialkit-redcap-pull/1"
KEY_COLUMNS = ("redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
DEFAULT_OVERLAP = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class PullResult:
    run_id: int
    out: Path
    full: bool
    records: int  # records in the local copy after the pull
    fetched: int  # records exported by this pull
    deleted: int  # local records no longer in REDCap, dropped
    tables: Mapping[str, int] = field(default_factory=dict)  # table -> rows
    stats: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "pull",
            "run_id": self.run_id,
            "out": str(self.out),
            "full": self.full,
            "records": self.records,
            "fetched": self.fetched,
            "deleted": self.deleted,
            "tables": dict(self.tables),
            **dict(self.stats),
            "bytes": self.stats.get("bytes_sent", 0) + self.stats.get("bytes_received", 0),
            "seconds": round(self.seconds, 3),
            "failures": 0,
        }


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError("not a readable pull manifest", location=Location(file=str(path))) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"not a {MANIFEST_FORMAT} manifest", location=Location(file=str(path)))
    return manifest


def pull(
    connection: RedcapClient | Connection,
    out: str | Path,
    *,
    ledger: DataLedger,
    now: dt.datetime,
    full: bool = False,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    progress: Progress | None = None,
    clock: Any = None,
) -> PullResult:
    """Pull the project into `out` (created if needed). `now` is the pull's watermark (this machine's clock,
    read once by the caller); `clock`, when given, stamps the end in the ledger."""
    client = connection.client() if isinstance(connection, Connection) else connection
    finished = clock or (lambda: now)
    started = time.monotonic()
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the pull folder {out}: {exc.strerror}") from None
    info = client.project_info()
    project_id = str(info.get("project_id", ""))
    ledger.bind(project_id, client.url)
    metadata = client.metadata()
    meta_sha = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()
    manifest = read_manifest(out)
    if manifest is not None and str(manifest["project"].get("id")) != project_id:
        raise UsageError(f"{out} holds a copy of REDCap project {manifest['project'].get('id')}, not {project_id}: "
                         "pull into another folder")
    full = full or manifest is None or manifest.get("metadata_sha256") != meta_sha
    run_id = ledger.begin("pull", now, full=full)
    try:
        def_field = client.def_field
        report = progress or Progress("pull", enabled=False)
        all_ids = client.record_id_frame()
        if full:
            wanted = all_ids
            deleted = 0
            old: dict[str, pl.DataFrame] = {}
        else:
            since = dt.datetime.fromisoformat(manifest["watermark"]) - overlap
            wanted = client.record_id_frame(changed_since=since)
            old = _read_tables_as_text(out, manifest)
            local_ids = _local_ids(old, def_field)
            deleted = local_ids.filter(~local_ids.is_in(all_ids.implode())).len()

        chunks = [0]

        def on_chunk(done: int, total: int) -> None:
            chunks[0] += 1
            report.update(f"chunk {chunks[0]}, {done}/{total} records, {client.stats.calls} calls, "
                          f"{client.stats.retries} retries")

        fresh = client.export_frame(wanted.to_list(), on_chunk=on_chunk) if wanted.len() else pl.DataFrame()
        report.done()
        tables = split_tables(fresh, metadata, def_field)
        if not full:
            tables = _merge(old, tables, all_ids, def_field)
        typed = {name: type_table(frame, metadata, def_field) for name, frame in tables.items()}
        records = all_ids.len()
        _write(out, run_id, typed, {
            "format": MANIFEST_FORMAT,
            "project": {"id": project_id, "title": info.get("project_title", ""), "url": client.url},
            "pulled_at": now.isoformat(timespec="seconds"),
            "watermark": now.isoformat(timespec="seconds"),
            "ledger": {"path": ledger.path, "run_id": run_id},
            "record_id": def_field,
            "metadata_sha256": meta_sha,
            "records": records,
        })
        result = PullResult(run_id, out, full, records, wanted.len(), deleted,
                            {n: f.height for n, f in typed.items()}, client.stats.to_dict(),
                            time.monotonic() - started)
        ledger.finish(run_id, "ok", at=finished(), watermark=now, summary=result.to_dict())
        return result
    except BaseException as exc:
        message = exc.message if isinstance(exc, RedcapError | UsageError | DataError) else type(exc).__name__
        ledger.finish(run_id, "failed", at=finished(), message=message)
        raise


# -- tables -----------------------------------------------------------------------------------------------------


def _form_columns(columns: Sequence[str], metadata: Sequence[Mapping[str, str]], def_field: str) -> dict[str, list]:
    """Each form's export columns (metadata order), from the columns the export holds."""
    form_of = {row["field_name"]: row["form_name"] for row in metadata}
    forms = list(dict.fromkeys(row["form_name"] for row in metadata))
    out: dict[str, list[str]] = {f: [] for f in forms}
    for column in columns:
        if column == def_field or column in KEY_COLUMNS:
            continue
        form = form_of.get(column.split("___")[0])
        if form is None and column.endswith("_complete"):
            form = column[: -len("_complete")]
        out.setdefault(form if form in out else forms[0], []).append(column)
    return out


def split_tables(flat: pl.DataFrame, metadata: Sequence[Mapping[str, str]], def_field: str) -> dict[str, pl.DataFrame]:
    """A flat export (text) as one frame per instrument; every row lands in at least one table."""
    forms = list(dict.fromkeys(row["form_name"] for row in metadata))
    if not flat.width:
        return {f: pl.DataFrame() for f in forms}
    keys = [def_field, *(k for k in KEY_COLUMNS if k in flat.columns)]
    by_form = _form_columns(flat.columns, metadata, def_field)
    instrument = pl.col("redcap_repeat_instrument") if "redcap_repeat_instrument" in flat.columns else pl.lit(None)
    claimed = pl.lit(False)
    masks = {}
    for form in forms:
        cells = by_form.get(form, [])
        has_data = pl.any_horizontal([pl.col(c).is_not_null() for c in cells]) if cells else pl.lit(False)
        masks[form] = (instrument == form).fill_null(False) | (instrument.is_null() & has_data)
        claimed = claimed | masks[form]
    masks[forms[0]] = masks[forms[0]] | ~claimed  # a row with no data at all still says the record exists
    return {form: flat.filter(masks[form]).select([*keys, *by_form.get(form, [])]) for form in forms}


def _merge(old: Mapping[str, pl.DataFrame], fresh: Mapping[str, pl.DataFrame], all_ids: pl.Series,
           def_field: str) -> dict[str, pl.DataFrame]:
    """The old tables without the fetched or deleted records, plus the fetched rows, in REDCap's record order."""
    order = pl.DataFrame({def_field: all_ids, "_pos": pl.int_range(all_ids.len(), eager=True)})
    touched = pl.concat([f[def_field] for f in fresh.values() if f.width] or [pl.Series(def_field, [], pl.String)])
    merged = {}
    for name in dict.fromkeys([*old, *fresh]):
        parts = []
        before = old.get(name)
        if before is not None and before.width:
            parts.append(before.filter(~pl.col(def_field).is_in(touched.implode())))
        if fresh.get(name) is not None and fresh[name].width:
            parts.append(fresh[name])
        if not parts:
            merged[name] = pl.DataFrame()
            continue
        frame = pl.concat(parts, how="diagonal_relaxed")
        # inner join: a record deleted in REDCap has no position and goes
        merged[name] = frame.join(order, on=def_field, how="inner", maintain_order="left").sort(
            "_pos", maintain_order=True).drop("_pos")
    return merged


def _local_ids(tables: Mapping[str, pl.DataFrame], def_field: str) -> pl.Series:
    cols = [t[def_field] for t in tables.values() if t.width]
    return pl.concat(cols).unique() if cols else pl.Series(def_field, [], pl.String)


# -- types ------------------------------------------------------------------------------------------------------


def _target(column: str, meta: Mapping[str, str] | None) -> tuple[pl.DataType, str | None] | None:
    if column == "redcap_repeat_instance" or (column.endswith("_complete") and meta is None):
        return pl.Int64(), None
    if meta is None:
        return None
    ftype = meta.get("field_type", "")
    validation = meta.get("text_validation_type_or_show_slider_number", "")
    if ftype in ("yesno", "truefalse"):
        return pl.Int64(), None
    if ftype == "calc":
        return pl.Float64(), None
    if ftype != "text":
        return None
    if validation == "integer":
        return pl.Int64(), None
    if validation == "number" or (validation.startswith("number_") and validation.endswith("dp")):
        return pl.Float64(), None
    if validation.startswith("date_"):
        return pl.Date(), "%Y-%m-%d"
    if validation.startswith("datetime_seconds_"):
        return pl.Datetime("us"), "%Y-%m-%d %H:%M:%S"
    if validation.startswith("datetime_"):
        return pl.Datetime("us"), "%Y-%m-%d %H:%M"
    return None


def type_table(frame: pl.DataFrame, metadata: Sequence[Mapping[str, str]], def_field: str) -> pl.DataFrame:
    """Type each column where the typed value turns back into exactly the same text; else keep it as text."""
    if not frame.width:
        return frame
    meta = {row["field_name"]: row for row in metadata}
    exprs = []
    for name in frame.columns:
        target = None if name == def_field else _target(name, meta.get(name))
        if target is None:
            continue
        dtype, fmt = target
        col = pl.col(name)
        if fmt is None:
            exprs.append(col.cast(dtype, strict=False).alias(name))
        elif dtype == pl.Date():
            exprs.append(col.str.to_date(fmt, strict=False).alias(name))
        else:
            exprs.append(col.str.to_datetime(fmt, strict=False, time_unit="us").alias(name))
    if not exprs:
        return frame
    candidate = frame.with_columns(exprs)
    typed_names = [e.meta.output_name() for e in exprs]
    back = stringify(candidate.select(typed_names))
    keep = [
        name for name in typed_names
        if frame.select((pl.col(name).is_null() == back[name].is_null()).all()
                        & (pl.col(name).eq_missing(back[name]) | pl.col(name).is_null()).all()).item()
    ]
    return frame.with_columns([candidate[name] for name in keep])


# -- files ------------------------------------------------------------------------------------------------------


def _read_tables_as_text(out: Path, manifest: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
    tables = {}
    for entry in manifest.get("tables", []):
        path = out / entry["file"]
        try:
            frame = pl.read_parquet(path)
        except Exception:
            raise DataError("cannot read this table of the pulled copy (pull again with --full)",
                            location=Location(file=str(path))) from None
        tables[entry["name"]] = stringify(frame) if frame.width else frame
    return tables


def _write(out: Path, run_id: int, tables: Mapping[str, pl.DataFrame], manifest: dict[str, Any]) -> None:
    folder = out / f"data-{run_id}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    entries = []
    for name, frame in tables.items():
        file = f"{folder.name}/{name}.parquet"
        frame.write_parquet(out / file)
        repeating = "redcap_repeat_instrument" in frame.columns and frame["redcap_repeat_instrument"].eq(name).any()
        entries.append({"name": name, "file": file, "rows": frame.height, "repeating": bool(repeating)})
    manifest["tables"] = entries
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out / MANIFEST)  # the switch: before it the old copy is whole, after it the new one
    # the previous copy, and any half-written one of a pull that was killed before its switch
    for stale in out.glob("data-*"):
        if stale.is_dir() and stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
