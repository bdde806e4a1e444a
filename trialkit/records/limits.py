"""Checks made on an intake file before a parser sees it: shape (every row as wide as the header) and size.

The fast readers (polars' CSV reader, calamine for xlsx) are lenient where a clinical decision cannot be: a CSV
row cut off mid-value is padded with blanks, and a value such as `62` cut to `6` then screens a candidate in or
out. They also abort the whole process (a Rust panic or an allocation failure, not an exception) on some hostile
inputs. So a delimited file is first scanned here, cheaply and exactly, and an xlsx workbook's sheet size is read
from its XML before calamine loads it.

Limits (far above anything a study's intake holds; each error says which limit was hit):

- `MAX_LINE_BYTES` = 16 MiB for one CSV/TSV record (a line, or several when a quoted value holds line ends).
  REDCap keeps one value in at most 64 KiB (a notes field's database column), so even a row of two hundred
  full notes fields stays under it; a longer line is a damaged file (most often an unbalanced quote). Polars
  needs about ten times a cell's size in memory, and panics on a cell of a few hundred MB.
- `MAX_XLSX_ROWS` = 2,000,000 rows in a worksheet. Excel itself stops at 1,048,576.
- `MAX_XLSX_SHEET_BYTES` = 1 GiB of uncompressed XML in any part of the workbook (about 10 million ordinary
  cells): a 4.5 MB workbook can unpack to gigabytes, and calamine holds a whole sheet in memory.

The CSV scan runs over the raw bytes in 16 MiB chunks with numpy: it finds line ends and quotes, and counts
separators per chunk; only a chunk whose count is off (or that holds quotes) is counted record by record.
It follows RFC 4180 quoting: a `"` opens or closes a quoted field and `""` inside one stands for a quote;
separators and line ends inside quotes are content.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from trialkit.errors import DataError, Location

MAX_LINE_BYTES = 16 << 20
MAX_XLSX_ROWS = 2_000_000
MAX_XLSX_SHEET_BYTES = 1 << 30

_CHUNK = 1 << 24
_QUOTE = ord('"')
_NL = ord("\n")
_CR = ord("\r")


def _error(path: Path, message: str, line: int | None = None) -> DataError:
    return DataError(message, location=Location(file=str(path), line=line))


def _line_at(path: Path, offset: int) -> int:
    """1-based physical line holding byte `offset` (error path only)."""
    count = 0
    with path.open("rb") as handle:
        done = 0
        while done < offset:
            block = handle.read(min(_CHUNK, offset - done))
            if not block:
                break
            count += block.count(b"\n")
            done += len(block)
    return count + 1


class _Scan:
    """State carried from one chunk to the next."""

    def __init__(self, path: Path, separator: int, exact: bool) -> None:
        self.path = path
        self.sep = separator
        self.exact = exact  # count each record's fields even when the chunk's total is right
        self.inside = 0  # 1 while in a quoted field
        self.record_start = 0  # offset where the current (unfinished) record begins
        self.seps = 0  # separators (outside quotes) seen so far in the current record
        self.width: int | None = None  # fields in the header
        self.last_byte = -1  # the previous chunk's last byte (a blank CRLF line may straddle two chunks)

    def chunk(self, block: np.ndarray, base: int) -> None:
        quotes = np.flatnonzero(block == _QUOTE)
        lines = np.flatnonzero(block == _NL)
        if len(quotes):
            # a line end with an odd number of quotes before it (counting from the file start) is inside a field
            lines = lines[((np.searchsorted(quotes, lines) + self.inside) & 1) == 0]
        elif self.inside:
            lines = lines[:0]
        is_sep = block == self.sep
        starts = np.empty(len(lines), dtype=np.int64)
        if len(lines):
            starts[0] = self.record_start - base  # may be negative: the record began in an earlier chunk
            starts[1:] = lines[:-1] + 1
            longest = int((lines - starts).max())
            if longest > MAX_LINE_BYTES:
                self._too_long(int(starts[int((lines - starts).argmax())]) + base)
        tail_start = int(lines[-1]) + 1 if len(lines) else self.record_start - base
        if len(block) - tail_start > MAX_LINE_BYTES:
            self._too_long(tail_start + base, quoted=bool((len(quotes) + self.inside) & 1))
        if len(quotes) or self.inside or self.width is None or self.exact:
            seps = self._seps_per_record(block, is_sep, quotes, lines)
        else:
            # Fast path (no quotes): only the chunk's total is counted; records are counted one by one only if
            # it is off. A short row and a long row cancelling out is caught by the reader (it refuses long rows).
            end = tail_start
            blank = self._blank_mask(block, base, starts, lines)
            total = int(np.count_nonzero(is_sep[:end])) + self.seps
            if total == (self.width - 1) * (len(lines) - int(blank.sum())):
                seps = None
            else:
                seps = self._seps_per_record(block, is_sep, quotes, lines)
        if seps is not None:
            self._check(block, base, starts, lines, seps[:-1])
            self.seps = int(seps[-1])
        else:
            self.seps = int(np.count_nonzero(is_sep[tail_start:]))
        if len(quotes):
            self.inside = (len(quotes) + self.inside) & 1
        self.record_start = tail_start + base
        self.last_byte = int(block[-1])

    def _seps_per_record(self, block: np.ndarray, is_sep: np.ndarray, quotes: np.ndarray, lines: np.ndarray):
        """Separators outside quotes in each record ending in this chunk, and (last item) in the unfinished one."""
        bounds = np.unique(np.concatenate(([0], lines[lines + 1 < len(block)] + 1, quotes)))
        counts = np.add.reduceat(is_sep.view(np.uint8), bounds, dtype=np.int64)
        inside = (np.searchsorted(quotes, bounds, side="right") + self.inside) & 1
        record = np.searchsorted(lines, bounds)
        seps = np.bincount(record, weights=counts * (inside == 0), minlength=len(lines) + 1).astype(np.int64)
        seps[0] += self.seps
        return seps

    def _blank_mask(self, block: np.ndarray, base: int, starts: np.ndarray, lines: np.ndarray) -> np.ndarray:
        length = lines - starts
        blank = length == 0
        one = np.flatnonzero((length == 1) & (starts >= 0))
        if len(one):
            blank[one] = block[starts[one]] == _CR
        if len(starts) and starts[0] == -1 and length[0] == 1:
            blank[0] = self.last_byte == _CR
        return blank

    def _check(self, block: np.ndarray, base: int, starts: np.ndarray, lines: np.ndarray, seps: np.ndarray) -> None:
        if not len(lines):
            return
        if self.width is None:
            self.width = int(seps[0]) + 1
        bad = (seps != self.width - 1) & ~(self._blank_mask(block, base, starts, lines) & (seps == 0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            self._ragged(int(starts[first]) + base, int(seps[first]) + 1)

    def _too_long(self, start: int, *, quoted: bool = False) -> None:
        hint = " (an unbalanced quote?)" if quoted else ""
        raise _error(
            self.path,
            f"a line longer than {MAX_LINE_BYTES >> 20} MB, the most one line may hold{hint}",
            _line_at(self.path, start),
        )

    def _ragged(self, start: int, fields: int) -> None:
        kind = "more" if fields > (self.width or 0) else "fewer"
        raise _error(
            self.path,
            f"a line with {fields} field{'s' if fields != 1 else ''} where the header has {self.width} "
            f"({kind} fields than the header: cut off, or a separator inside an unquoted value?)",
            _line_at(self.path, start),
        )

    def finish(self, size: int, tail: int | None) -> None:
        if self.inside:
            raise _error(
                self.path,
                "unbalanced quote: a quoted field opened on this line is never closed",
                _line_at(self.path, self.record_start),
            )
        if size > self.record_start and self.width is not None:  # a last line without a line end
            fields = self.seps + 1
            blank = size - self.record_start == 1 and tail == _CR
            if fields != self.width and not (fields == 1 and blank):
                self._ragged(self.record_start, fields)


def check_delimited(path: Path, separator: str, *, exact: bool = False) -> None:
    """Raise DataError (file:line, no content) if a record's field count differs from the header's, a quote is
    never closed, or a line is longer than MAX_LINE_BYTES."""
    scan = _Scan(path, ord(separator), exact)
    buffer = bytearray(_CHUNK)
    base = 0
    tail: int | None = None
    try:
        with path.open("rb", buffering=0) as handle:
            while True:
                n = handle.readinto(buffer)
                if not n:
                    break
                block = np.frombuffer(buffer, dtype=np.uint8, count=n)
                if not base and 0 in buffer[: min(n, 4096)]:
                    raise _error(path, "file is not UTF-8 text: it seems to be in another encoding (UTF-16?)")
                scan.chunk(block, base)
                tail = int(block[-1])
                base += n
    except OSError:
        return  # the reader reports an unreadable file in its own words
    scan.finish(base, tail)


# --- JSON ------------------------------------------------------------------------------------------------

_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth_over(path: Path, limit: int) -> bool:
    """True if brackets in the file nest deeper than `limit`, counting brackets inside strings too (so True
    may be a false alarm, never a miss). Flat records nest 2 deep (JSON) or 1 (NDJSON); polars spends minutes
    on a few hundred levels and crashes the process (a stack overflow, not an exception) on a thousand."""
    depth = 0
    buffer = bytearray(_CHUNK)
    try:
        with path.open("rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                block = np.frombuffer(buffer, dtype=np.uint8, count=n)
                where = np.flatnonzero(_OPEN[block])
                if not len(where):
                    continue
                steps = np.cumsum(_OPEN[block[where]], dtype=np.int64) + depth
                if int(steps.max()) > limit:
                    return True
                depth = int(steps[-1])
    except OSError:
        return False  # the reader reports an unreadable file in its own words
    return False


# --- xlsx --------------------------------------------------------------------------------------------------

_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\s+ref=\"[A-Z]*\d*:?[A-Z]*(\d+)\"")
_LAST_REF = re.compile(rb"<(?:\w+:)?(?:row|c)\s[^>]*?\br=\"[A-Z]{0,3}(\d+)\"")
_SHEET = re.compile(r"^xl/worksheets/[^/]+\.xml$")


def check_xlsx(path: Path) -> None:
    """Refuse a workbook that unpacks past MAX_XLSX_SHEET_BYTES or whose sheets hold more than MAX_XLSX_ROWS rows.

    Rows are counted without parsing: the sheet XML is inflated as a stream (zlib, about 0.3 s per 100 MB) and
    its `<row` tags counted; the row numbers a writer may skip to (`r="20000000"`) are read from the
    `<dimension>` at the head and from the last row and cell at the tail (rows are stored in order).
    """
    try:
        with zipfile.ZipFile(path) as book:
            for info in book.infolist():
                if info.file_size > MAX_XLSX_SHEET_BYTES:
                    raise _error(
                        path,
                        f"part {info.filename} of the workbook unpacks to {info.file_size / (1 << 30):.1f} GB, "
                        f"more than the {MAX_XLSX_SHEET_BYTES >> 30} GB limit",
                    )
            for info in book.infolist():
                if _SHEET.match(info.filename):
                    rows = _sheet_rows(book, info)
                    if rows > MAX_XLSX_ROWS:
                        raise _error(
                            path,
                            f"worksheet {info.filename.rsplit('/', 1)[1]} holds {rows:,} rows, more than the limit "
                            f"of {MAX_XLSX_ROWS:,} (Excel itself stops at 1,048,576)",
                        )
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError, zlib.error):
        return  # not a readable zip: the xlsx reader says so in its own words


def _sheet_rows(book: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    count = 0
    head = b""
    tail = b""
    with book.open(info) as part:
        while True:
            block = part.read(_CHUNK)
            if not block:
                break
            if len(head) < 4096:
                head += block[: 4096 - len(head)]
            joined = tail[-8:] + block  # a tag split across two blocks is counted once
            count += joined.count(b"<row") - tail[-8:].count(b"<row")
            tail = (tail + block)[-65536:]
    refs = [int(m.group(1)) for m in _DIMENSION.finditer(head)]
    last = list(_LAST_REF.finditer(tail))
    if last:
        refs.append(int(last[-1].group(1)))
    return max([count, *refs])
