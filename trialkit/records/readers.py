"""Intake files to a frame of text: every cell a string (or null for blank), never an inferred number.

REDCap's flat export is text, and identifiers such as `00123` only survive if nothing guesses a type. Typed
sources (Parquet, JSON numbers, pandas frames) are turned back into REDCap's raw text form (`stringify`), so
one typed conversion (trialkit.records.convert) serves every format.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.definitions.shown import shown_name
from trialkit.errors import DataError, Location
from trialkit.records.limits import check_delimited, check_xlsx, json_depth_over

ROW = "_row"  # 1-based data row number (the CSV line is ROW + 1 because of the header)
SOURCE_ROW = "__tk_source_row"  # a reader's own ROW, when it read only some of the file's rows

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "json",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}

DUPLICATED_NAME = re.compile(r"^(.*)_duplicated_\d+$")  # how polars names a repeated header
_SAFE_INT = 2**53  # floats above this are not exact integers any more
_DIAGNOSE_BYTES = 64 << 20  # a second, precise pass over a malformed delimited file only up to this size


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(
            f"unknown data file type {path.suffix or '(none)'!r}; expected one of {known}",
            location=Location(file=str(path)),
        )
    return fmt


def read_text_frame(
    path: str | Path,
    *,
    sheet: str | int | None = None,
    columns: Collection[str] | None = None,
    rows_of: tuple[str, Collection[str]] | None = None,
    keep: Collection[str] = (),
) -> tuple[pl.DataFrame, str]:
    """Read `path` as text cells. Returns the frame (with ROW) and the detected format name. `columns`: a Parquet
    file's columns to read (others are not even loaded; the header is still checked whole); other formats read all.
    `rows_of` = (record id column, ids): a Parquet file's rows of those records only, filtered inside the read
    (ROW keeps each row's number in the file); other formats read every row (the caller filters). `keep`: a
    Parquet file's typed columns left in their type (see `stringify`); other formats ignore it.

    Raises DataError for a missing, unreadable or non-tabular file. Messages never quote file content: a
    parser's own error text repeats the offending cells (names, dates of birth...), so a failed read is
    explained by a second, cheap pass over the file that finds the line and the kind of problem.
    """
    if str(path) == STDIN:
        with _stdin_file() as spooled:
            return read_text_frame(spooled, sheet=sheet, columns=columns, rows_of=rows_of, keep=keep)
    path = Path(path)
    if path.is_dir() and (path / PULL_MANIFEST).is_file():
        return normalise(read_pulled_folder(path)), "parquet"
    fmt = detect_format(path)
    if not path.is_file():
        raise DataError("file not found", location=Location(file=str(path)))
    try:
        if fmt in ("csv", "tsv"):
            frame = _read_csv(path, "\t" if fmt == "tsv" else ",")
        elif fmt == "xlsx":
            frame = _read_excel(path, sheet)
        elif fmt == "json":
            frame = _read_json(path)
        elif fmt == "ndjson":
            frame = _read_ndjson(path)
        else:
            frame = _read_parquet(path, columns, rows_of, keep)
        frame = normalise(frame, keep if fmt == "parquet" else ())
        refuse_labels_export(frame.columns)
    except DataError as exc:
        if exc.location is None:
            # Header problems (duplicate or reserved column) are on line 1 of a delimited file.
            line = 1 if fmt in ("csv", "tsv") and exc.message.startswith(("duplicate column", "column name")) else None
            raise DataError(exc.message, location=Location(file=str(path), line=line)) from exc
        raise
    return frame, fmt


# --- standard input ----------------------------------------------------------------------------------------

STDIN = "-"  # where a data file is expected, `-` reads standard input (`... | trialkit validate -`)


def _sniff(head: bytes) -> str:
    """The format of data piped in, from its first bytes (there is no file name to go by)."""
    if head.startswith(b"PAR1"):
        return ".parquet"
    if head.startswith(b"PK\x03\x04"):
        return ".xlsx"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return ".json"
    if text.startswith(b"{"):
        return ".ndjson"
    first = head.split(b"\n", 1)[0]
    return ".tsv" if b"\t" in first and b"," not in first else ".csv"


@contextmanager
def _stdin_file(suffix: str | None = None) -> Iterator[Path]:
    """Standard input spooled to a private temporary file (the readers check and re-read files by path), named
    by its sniffed format; removed afterwards. Errors name `-`, not the temporary file."""
    with tempfile.TemporaryDirectory(prefix="trialkit-") as folder:  # mkdtemp: readable by this user only
        spooled = Path(folder) / "stdin"
        with spooled.open("wb") as out:
            source = getattr(sys.stdin, "buffer", None)
            if source is not None:
                shutil.copyfileobj(source, out, 1 << 20)
            elif sys.stdin is not None:
                out.write(sys.stdin.read().encode("utf-8"))
        with spooled.open("rb") as handle:
            head = handle.read(1 << 16)
        named = spooled.rename(spooled.with_suffix(suffix or _sniff(head)))
        try:
            yield named
        except DataError as exc:
            where = replace(exc.location, file=STDIN) if exc.location else Location(file=STDIN)
            raise DataError(exc.message, location=where) from None


def _unreadable(path: Path, message: str, line: int | None = None, col: int | None = None) -> DataError:
    return DataError(message, location=Location(file=str(path), line=line, col=col))


def _os_error(path: Path, exc: OSError) -> DataError:
    return _unreadable(path, f"cannot open the file: {(exc.strerror or type(exc).__name__).lower()}")


# --- CSV / TSV -------------------------------------------------------------------------------------------


def read_delimited(path: Path, separator: str = ",") -> pl.DataFrame:
    """A CSV/TSV file as text cells (null for blank), held to the same shape checks as `read_text_frame`, with
    the same content-free errors; no ROW column and no header clean-up. `-` reads standard input."""
    if str(path) == STDIN:
        with _stdin_file(".csv" if separator == "," else ".tsv") as spooled:
            return _read_csv(spooled, separator)
    return _read_csv(path, separator)


def _read_csv(path: Path, separator: str) -> pl.DataFrame:
    _refuse_other_separator(path, separator)
    try:
        check_delimited(path, separator)  # polars pads a short row with blanks and aborts on huge cells
    except DataError as exc:
        # Python's strict csv reader names quoting problems more precisely; too slow for a large file
        precise = None
        if exc.message.startswith(("a line with", "unbalanced quote")) and path.stat().st_size <= _DIAGNOSE_BYTES:
            precise = _csv_problem(path, separator)
        raise (precise or exc) from None
    try:
        return pl.read_csv(
            path, separator=separator, infer_schema=False, encoding="utf8", raise_if_empty=True, null_values=[""]
        )
    except pl.exceptions.NoDataError:
        raise _unreadable(path, "file is empty (no header row)") from None
    except OSError as exc:
        raise _os_error(path, exc) from None
    except Exception as exc:
        # `from None`: the parser's message quotes the offending text; not even --debug tracebacks show it.
        text = str(exc).lower()
        if "utf-8" in text or "utf8" in text:
            raise _unreadable(path, "file is not UTF-8 text (save it as 'CSV UTF-8')", _bad_utf8_line(path)) from None
        kind = "CSV" if separator == "," else "TSV"
        raise (
            _located_problem(path, separator) or _unreadable(path, f"malformed {kind}: cannot be read as a table")
        ) from None


def header_line(path: Path) -> str:
    """A delimited file's first line as text (BOM and line break removed; '' when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            head = handle.readline(1 << 20)
    except OSError:
        return ""  # the read itself reports it
    return head.decode("utf-8-sig", errors="replace").rstrip("\r\n")


def _refuse_other_separator(path: Path, separator: str) -> None:
    """A header that holds no `separator` but another one: the file was saved with other settings than its name
    says. Read as is, it would be one column, and "no record id column" would not say why."""
    header = header_line(path)
    if not header or separator in header or "\ufffd" in header:
        return  # (a header that is not UTF-8 text: binary, or another encoding; the read says which line)
    if separator == "," and header.count(";") >= 1:
        raise _unreadable(
            path,
            "Excel saved it with semicolons (as it does where the comma is the decimal mark): save it as "
            "'Text (Tab delimited)' (.txt), or as CSV again with ',' as the list separator",
            1,
        )
    if separator == "\t" and header.count(",") >= 1:
        raise _unreadable(
            path,
            f"separated by commas, but named {path.suffix.lower()} (read as tab-separated): rename it to .csv",
            1,
        )


#: the columns REDCap names in a "CSV (labels)" export where the raw export has redcap_event_name...
_LABEL_HEADERS = frozenset({"Record ID", "Event Name", "Repeat Instrument", "Repeat Instance", "Survey Identifier",
                            "Data Access Group"})
_RAW_HEADER = re.compile(r"[a-z][a-z0-9_]*")


def refuse_labels_export(columns: list[str]) -> None:
    """REDCap's "CSV (labels)" export: field labels as headers, choice labels as values. No header is a field
    name, so nothing could be read; say which export to take instead."""
    names = [c for c in columns if c != ROW]
    labelled = any(c in _LABEL_HEADERS or c.endswith("Complete?") for c in names)
    if labelled and not any(_RAW_HEADER.fullmatch(c) for c in names):
        raise DataError(
            "a REDCap 'CSV (labels)' export (field labels as column headers): export raw data instead "
            "('CSV / Microsoft Excel (raw data)', or the API with rawOrLabel=raw)"
        )


def _located_problem(path: Path, separator: str) -> DataError | None:
    if path.stat().st_size <= _DIAGNOSE_BYTES:
        return _csv_problem(path, separator)
    try:  # too large for Python's csv reader: the scan again, counting every record's fields
        check_delimited(path, separator, exact=True)
    except DataError as exc:
        return exc
    return None


def _bad_utf8_line(path: Path) -> int | None:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _csv_problem(path: Path, separator: str) -> DataError | None:
    """Locate what made a read fail with Python's strict csv reader (error path only); None if it finds nothing."""
    width: int | None = None
    start = 1  # first physical line of the record being read (a quoted field may span lines)
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator, strict=True)
            try:
                for row in reader:
                    if width is None:
                        width = len(row)
                    elif row and len(row) != width:
                        fields = f"{len(row)} field{'s' if len(row) != 1 else ''}"
                        message = f"a line with {fields} where the header has {width}"
                        if reader.line_num > start:
                            message += f" (it runs on to line {reader.line_num}: unbalanced quote?)"
                        elif len(row) < width:
                            message += " (fewer fields than the header: cut off?)"
                        return _unreadable(path, message, start)
                    start = reader.line_num + 1
            except csv.Error as exc:
                return _quote_problem(path, str(exc), start, reader.line_num)
    except OSError as exc:
        return _os_error(path, exc)
    return None


def _quote_problem(path: Path, error: str, start: int, end: int) -> DataError:
    # Only our own wording: csv's messages are fixed strings today, but nothing of the file may leak.
    if "unexpected end of data" in error:
        return _unreadable(path, "unbalanced quote: a quoted field opened on this line is never closed", start)
    if "field larger than field limit" in error:
        return _unreadable(path, "unbalanced quote: a quoted field opened on this line runs on past 128 KB", start)
    if "expected after" in error:
        if end > start:
            return _unreadable(
                path, f"unbalanced quote: the quoted field opened on this line only closes on line {end}", start
            )
        return _unreadable(path, 'text after a closing quote (a quote inside a quoted field is written "")', end)
    return _unreadable(path, "malformed quoting", end)


# --- Excel / Parquet ---------------------------------------------------------------------------------------


def _read_excel(path: Path, sheet: str | int | None) -> pl.DataFrame:
    kwargs: dict[str, Any] = {"infer_schema_length": 0, "engine": "calamine"}
    if isinstance(sheet, int):
        kwargs["sheet_id"] = sheet
    elif sheet:
        kwargs["sheet_name"] = sheet
    check_xlsx(path)  # calamine holds a whole sheet in memory and aborts the process past what it can allocate
    try:
        frame = pl.read_excel(path, **kwargs)
    except pl.exceptions.NoDataError:  # a sound workbook whose sheet holds nothing: not "damaged"
        which = "the first sheet" if sheet is None else f"sheet {sheet!r}"
        raise _unreadable(path, f"{which} is empty (no header row){_sheet_list(path)} (choose one with --sheet)") \
            from None
    except Exception as exc:  # fastexcel raises its own classes; their text may quote cells
        if sheet is not None and "no matching sheet" in str(exc):
            raise _unreadable(path, f"no sheet {sheet!r} in this workbook{_sheet_list(path)}") from None
        raise _unreadable(path, "cannot read as xlsx: damaged, password-protected or not an Excel workbook") from None
    if not isinstance(frame, pl.DataFrame):  # several sheets requested
        raise DataError("choose one sheet")
    return frame


def _sheet_list(path: Path) -> str:
    try:
        import fastexcel

        names = fastexcel.read_excel(path).sheet_names
    except Exception:
        return ""
    return "; its sheets are: " + ", ".join(repr(n) for n in names)


def _read_parquet(
    path: Path,
    columns: Collection[str] | None = None,
    rows_of: tuple[str, Collection[str]] | None = None,
    keep: Collection[str] = (),
) -> pl.DataFrame:
    try:
        if columns is not None or rows_of is not None:
            schema = pl.read_parquet_schema(path)
            # the whole header is checked (a duplicate among the columns left out still refuses the file)
            names = normalise(pl.DataFrame(schema=dict.fromkeys(schema, pl.String))).drop(ROW).columns
            given_name = dict(zip(names, schema, strict=True))
            if columns is not None:
                wanted = set(columns)
                columns = [given for given, name in zip(schema, names, strict=True) if name in wanted]
        # only a text id column: the caller compares ids with stringify's text, which a cast may not equal
        if rows_of is not None and rows_of[0] in given_name and schema[given_name[rows_of[0]]] == pl.String:
            # one candidate out of a large file: only its rows are read, each with its number in the file
            rid = pl.col(given_name[rows_of[0]])
            ids = list(rows_of[1])
            scan = pl.scan_parquet(path).with_row_index(SOURCE_ROW, offset=1)
            if columns is not None:
                scan = scan.select(SOURCE_ROW, *columns)
            frame = scan.filter(rid.str.strip_chars().is_in(ids)).collect()
        else:
            frame = pl.read_parquet(path, columns=columns)
    except DataError:
        raise
    except OSError as exc:
        raise _os_error(path, exc) from None
    except Exception:  # polars/arrow classes for corrupt files vary; their text may quote values
        raise _unreadable(path, "cannot read as parquet: damaged, truncated or not a Parquet file") from None
    return stringify(frame, keep)


# --- JSON / NDJSON ------------------------------------------------------------------------------------------

_FLAT = "expected flat records (REDCap's flat export)"


def _read_json(path: Path) -> pl.DataFrame:
    if json_depth_over(path, 2):  # [ {flat record}, ... ]: anything deeper is refused; polars could crash on it
        problem = _json_problem(path)
        if problem is not None:
            raise problem
    try:
        return _file_order(stringify(pl.read_json(path, infer_schema_length=None)), path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    except Exception:
        raise _json_problem(path) or _unreadable(path, f"not a JSON list of flat records; {_FLAT}") from None


def _read_ndjson(path: Path) -> pl.DataFrame:
    if json_depth_over(path, 1):  # one flat object per line
        problem = _ndjson_problem(path)
        if problem is not None:
            raise problem
    try:
        return _file_order(stringify(pl.read_ndjson(path, infer_schema_length=None)), path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    except Exception:
        raise _ndjson_problem(path) or _unreadable(path, f"not NDJSON flat records; {_FLAT}") from None


def _file_order(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """`frame`'s columns in the order of the file's first record (then any others as read): polars' JSON readers
    order the columns of an inferred schema by hash, so findings and outputs changed order from run to run."""
    try:
        with path.open("rb") as handle:
            head = handle.read(1 << 20).decode("utf-8-sig", errors="ignore")
        start = head.find("{")
        first, _ = json.JSONDecoder().raw_decode(head, start) if start >= 0 else ({}, 0)
    except (OSError, ValueError):
        return frame  # a first record over 1 MB: the order as read
    keys = [k for k in first if k in frame.columns] if isinstance(first, dict) else []
    return frame.select(keys + [c for c in frame.columns if c not in set(keys)]) if keys else frame


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true / false / null: fixed words, never content
    return "a number"


def _nested_field(record: dict) -> str | None:
    for key, value in record.items():
        if isinstance(value, dict | list):
            return f"field {shown_name(str(key))} holds {_kind(value)}; {_FLAT}"
    return None


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


class _NotAList(Exception):
    pass


def _json_problem(path: Path) -> DataError | None:
    """Locate what made the fast JSON reader fail, one top-level item at a time (error path only); None if
    every item is a flat record."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _unreadable(path, "file is not UTF-8 text", raw.count(b"\n", 0, exc.start) + 1)
    if not text.strip():
        return _unreadable(path, "file is empty (no JSON)")
    pos = 0
    try:
        for pos, number, item in _json_items(text):
            if not isinstance(item, dict):
                return _unreadable(
                    path, f"record {number} is {_kind(item)}, not a JSON object; {_FLAT}", _line_of(text, pos)
                )
            nested = _nested_field(item)
            if nested:
                return _unreadable(path, f"record {number}: {nested}", _line_of(text, pos))
    except json.JSONDecodeError as exc:
        return _unreadable(path, _json_syntax(exc, text, "the file"), exc.lineno, exc.colno)
    except RecursionError:  # the decoder recurses per level: [[[[... thousands deep
        return _unreadable(path, f"a value nested too deeply to read; {_FLAT}", _line_of(text, pos))
    except _NotAList as exc:
        return _unreadable(path, f"the file holds {exc.args[0]}, not a list of records; {_FLAT}")
    return None


def _json_syntax(exc: json.JSONDecodeError, text: str, what: str = "the line") -> str:
    # exc.msg is the decoder's fixed wording ("Expecting value"); the position goes into the location.
    if exc.pos >= len(text.rstrip()):
        return f"invalid JSON: {what} ends too early (truncated?)"
    return f"invalid JSON: {exc.msg[:1].lower()}{exc.msg[1:]}"


def _json_items(text: str) -> Iterator[tuple[int, int, Any]]:
    """(offset, 1-based number, value) of each item of the top-level list, decoded one at a time so a
    large file is never held as Python objects. A single top-level object counts as a list of one."""
    decode = json.JSONDecoder().raw_decode
    end = len(text)
    pos = _skip_ws(text, 0)
    if text[pos] != "[":
        item, after = decode(text, pos)
        if not isinstance(item, dict):
            raise _NotAList(_kind(item))
        yield pos, 1, item
        pos = _skip_ws(text, after)
        if pos < end:
            raise json.JSONDecodeError("Extra data after the JSON value", text, pos)
        return
    pos = _skip_ws(text, pos + 1)
    number = 0
    if pos < end and text[pos] == "]":
        pos += 1
    else:
        while True:
            number += 1
            item, after = decode(text, pos)
            yield pos, number, item
            pos = _skip_ws(text, after)
            if pos >= end:
                raise json.JSONDecodeError("Expecting ',' or ']'", text, pos)
            if text[pos] == "]":
                pos += 1
                break
            if text[pos] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
            pos = _skip_ws(text, pos + 1)
    pos = _skip_ws(text, pos)
    if pos < end:
        raise json.JSONDecodeError("Extra data after the list", text, pos)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _ndjson_problem(path: Path) -> DataError | None:
    """Find the first NDJSON line that is not a flat JSON object (error path only); None if there is none."""
    seen = False
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                return _unreadable(path, "line is not UTF-8 text", number)
            if not line.strip():
                continue
            seen = True
            line = line.rstrip("\r\n")
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                return _unreadable(path, _json_syntax(exc, line), number, exc.colno)
            except RecursionError:  # the decoder recurses per level: [[[[... thousands deep
                return _unreadable(path, f"a value nested too deeply to read; {_FLAT}", number)
            if not isinstance(item, dict):
                return _unreadable(path, f"this line is {_kind(item)}, not a JSON object; {_FLAT}", number)
            nested = _nested_field(item)
            if nested:
                return _unreadable(path, nested, number)
    if not seen:
        return _unreadable(path, "file is empty (no JSON lines)")
    return None


def stringify(frame: pl.DataFrame, keep: Collection[str] = ()) -> pl.DataFrame:
    """Every column as REDCap raw text. Integral floats lose their `.0` (a pandas int column with gaps is
    float; `1.0` would not be a valid choice code), booleans become 1/0, dates ISO. `keep`: columns (by trimmed
    name) left in their type, which the caller types without a round trip through text (see read_intake)."""
    exprs = []
    rewritten = False  # nothing to write out (every column text or kept): the frame as it is, no select
    for name, dtype in frame.schema.items():
        if dtype == pl.String or (keep and _trimmed(name) in keep):
            exprs.append(pl.col(name))
        else:
            exprs.append(text_expr(pl.col(name), dtype).alias(name))
            rewritten = True
    return frame.select(exprs) if rewritten else frame


def _trimmed(name: str) -> str:
    return str(name).strip().lstrip("\ufeff")


def text_expr(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A typed column's cells as REDCap raw text (`stringify`, one column). Checks that read a cell's text call it
    on a column kept in its type, so they judge exactly the text `stringify` would have given."""
    if dtype == pl.String:
        return col
    if dtype.is_float():
        exact = col.is_finite() & (col == col.round(0)) & (col.abs() < _SAFE_INT)
        return pl.when(exact).then(col.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(col.cast(pl.String))
    if dtype.is_integer() or dtype.is_decimal() or dtype in (pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        return col.cast(pl.String)
    if dtype == pl.Boolean:
        return pl.when(col).then(pl.lit("1")).when(~col).then(pl.lit("0"))
    if dtype == pl.Date:
        return col.dt.strftime("%Y-%m-%d")
    if isinstance(dtype, pl.Datetime):
        with_seconds = (col.dt.second() != 0) | (col.dt.nanosecond() != 0)
        return pl.when(with_seconds).then(col.dt.strftime("%Y-%m-%d %H:%M:%S")).otherwise(
            col.dt.strftime("%Y-%m-%d %H:%M")
        )
    if dtype == pl.Time:
        return pl.when(col.dt.second() != 0).then(col.dt.strftime("%H:%M:%S")).otherwise(col.dt.strftime("%H:%M"))
    raise DataError(f"column {shown_name(str(col.meta.output_name()))} holds nested or binary values; expected flat "
                    "records")


def normalise(frame: pl.DataFrame, keep: Collection[str] = ()) -> pl.DataFrame:
    """Trim column names, blank cells -> null, refuse duplicate headers, add ROW (from SOURCE_ROW when the reader
    kept only some rows of the file). `keep`: typed columns left in their type (see `stringify`)."""
    source_rows = frame.get_column(SOURCE_ROW) if SOURCE_ROW in frame.columns else None
    if source_rows is not None:
        frame = frame.drop(SOURCE_ROW)
    names = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    blank = [i for i, name in enumerate(names, 1) if name == "" or re.fullmatch(r"_duplicated_\d+", name)]
    if len(blank) > 1:  # "duplicate column ''" said nothing: empty columns a spreadsheet left at the end, often
        raise DataError(f"column name missing in the header for {len(blank)} columns "
                        f"({', '.join(map(str, blank[:5]))}{', ...' if len(blank) > 5 else ''}): name them, or "
                        "delete them if they are empty (a spreadsheet may leave empty columns at the end)")
    seen: set[str] = set()
    for name in names:
        dup = DUPLICATED_NAME.match(name)
        if name in seen or (dup and dup.group(1) in names):
            raise DataError(f"duplicate column {shown_name(dup.group(1) if dup else name)}")
        seen.add(name)
    if ROW in seen:
        raise DataError(f"column name {ROW!r} is reserved")
    frame = frame.rename(dict(zip(frame.columns, names, strict=True)))
    if any(dtype != pl.String and name not in keep for name, dtype in frame.schema.items()):
        frame = stringify(frame, keep)
    # Cells are kept verbatim (a padded " 34" is reported by validation, never silently changed); only empty
    # strings become null. Columns are rewritten only when they hold one: a 1M-row file has ~150M cells and a
    # rewritten string column is a full copy (16 bytes per cell in polars' string views).
    if frame.width and frame.height:
        text = [c for c, dtype in frame.schema.items() if dtype == pl.String]
        flags = frame.select([(pl.col(c).str.len_bytes() == 0).any().alias(c) for c in text]).row(0) if text else ()
        fix = [c for c, flagged in zip(text, flags, strict=True) if flagged]
        if fix:
            frame = frame.with_columns(
                [pl.when(pl.col(c).str.len_bytes() == 0).then(None).otherwise(pl.col(c)).alias(c) for c in fix]
            )
    if source_rows is not None:
        frame = frame.with_columns(source_rows.cast(pl.Int64).alias(ROW))  # the reader may have made it text
    else:
        frame = frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    # A row with no cell at all (",,,,", trailing lines of a spreadsheet export) is no data: REDCap skips it too.
    full = any(s.null_count() == 0 for s in frame.iter_columns() if s.name != ROW)  # counted when read: no pass
    if frame.width > 1 and frame.height and not full:
        empty = pl.all_horizontal(pl.all().exclude(ROW).is_null())
        if frame.select(empty.any()).item():
            frame = frame.filter(~empty)
    return frame


# --- a folder written by `trialkit redcap pull` ----------------------------------------------------------------

PULL_MANIFEST = "manifest.json"


def read_pulled_folder(path: str | Path) -> pl.DataFrame:
    """The flat export frame of a pulled copy: its instrument tables joined back on the REDCap key columns."""
    path = Path(path)
    where = Location(file=str(path / PULL_MANIFEST))
    try:
        manifest = json.loads((path / PULL_MANIFEST).read_text(encoding="utf-8"))
        entries = manifest["tables"]
        rid = manifest["record_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError("not a readable manifest of a `trialkit redcap pull` folder", location=where) from None
    frames = []
    for entry in entries:
        try:
            frame = pl.read_parquet(path / entry["file"])
        except Exception:
            raise DataError("a table of the pulled copy cannot be read (pull again with --full)",
                            location=Location(file=str(path / str(entry.get("file"))))) from None
        if frame.width:  # an instrument with no data still has its columns
            frames.append(frame)
    if not frames:
        return pl.DataFrame({rid: []}, schema={rid: pl.String})
    flat = pl.concat(frames, how="diagonal_relaxed")
    keys = [k for k in (rid, "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance")
            if k in flat.columns]
    order = flat.select(pl.col(rid).unique(maintain_order=True)).with_row_index("_pos")
    rows = flat.group_by(keys, maintain_order=True).agg(pl.all().drop_nulls().first())
    return rows.join(order, on=rid, how="left").sort("_pos", maintain_order=True).drop("_pos")
