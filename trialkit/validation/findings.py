"""The findings table: one row per problem in the data, and its renderings (table, CSV, JSON).

Values of identifier (PHI) fields never reach this table: validation masks them before a finding is made, so
nothing downstream (logs, reports, CI output) can print them by accident.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from trialkit.errors import Finding, Severity, UsageError

MASK = "***"  # shown instead of an identifier field's value

COLUMNS: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "record": pl.String(),
    "event": pl.String(),
    "instance": pl.Int64(),
    "field": pl.String(),
    "value": pl.String(),
    "check": pl.String(),
    "severity": pl.String(),
    "message": pl.String(),
}

OUTPUT_FORMATS = ("table", "csv", "json")


def file_finding(check: str, message: str, field: str | None = None, severity: str = "warning") -> dict[str, object]:
    """A finding about the file as a whole (no row): how it was read, a branching logic that cannot run."""
    return {
        "row": None,
        "record": None,
        "event": None,
        "instance": None,
        "field": field,
        "value": None,
        "check": check,
        "severity": severity,
        "message": message,
    }


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


@dataclass(frozen=True, eq=False)
class Findings:
    """Every problem found in one validation run. `frame` has the columns of COLUMNS, in data row order.

    `row` is the 1-based data row of the input (CSV line = row + 1), null for problems of the whole file.
    """

    frame: pl.DataFrame
    source: str | None = None
    rows_checked: int = 0
    as_of: _dt.date | None = None  # the date used as "today" (ranges such as max: today, date logic)

    def __len__(self) -> int:
        return self.frame.height

    def __iter__(self) -> Iterator[Finding]:
        for r in self.frame.iter_rows(named=True):
            yield Finding(
                record=r["record"],
                field=r["field"],
                check=r["check"],
                message=r["message"],
                value=r["value"],
                event=r["event"],
                instance=r["instance"],
                severity=Severity(r["severity"]),
            )

    @property
    def errors(self) -> int:
        return self.frame.filter(pl.col("severity") == Severity.ERROR.value).height

    @property
    def warnings(self) -> int:
        return self.frame.filter(pl.col("severity") == Severity.WARNING.value).height

    @property
    def clean(self) -> bool:
        return self.frame.height == 0

    def records_with_errors(self) -> pl.Series:
        """Record ids having at least one error (for a caller that wants to set such records aside)."""
        return (
            self.frame.filter((pl.col("severity") == Severity.ERROR.value) & pl.col("record").is_not_null())
            .get_column("record")
            .unique(maintain_order=True)
        )

    def summary(self) -> pl.DataFrame:
        """Counts by check, field and severity, most frequent first."""
        return (
            self.frame.group_by(["check", "field", "severity"], maintain_order=True)
            .len("count")
            .sort("count", descending=True, maintain_order=True)
        )

    # ---- renderings -----------------------------------------------------------------------------------
    def to_csv(self, path: str | Path | None = None) -> str | None:
        """CSV for a spreadsheet: a cell a spreadsheet would run as a formula (`=...`) gets a leading apostrophe."""
        from trialkit.spreadsheet import safe_frame

        frame = safe_frame(self.frame)
        if path is not None:
            frame.write_csv(path)
            return None
        return frame.write_csv()

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "rows_checked": self.rows_checked,
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": self.frame.to_dicts(),
        }

    def to_json(self, path: str | Path | None = None) -> str | None:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
            return None
        return text

    def to_table(self, *, limit: int | None = 200) -> str:
        """A plain-text table for a terminal, with a summary line; at most `limit` rows (None: all)."""
        out = io.StringIO()
        where = f" in {self.source}" if self.source else ""
        when = f", as of {self.as_of.isoformat()}" if self.as_of else ""
        out.write(
            f"{self.errors} error(s), {self.warnings} warning(s){where} ({self.rows_checked} data rows checked{when})\n"
        )
        if self.frame.height == 0:
            return out.getvalue()
        shown = self.frame if limit is None else self.frame.head(limit)
        cols = ["row", "record", "event", "instance", "field", "value", "check", "severity", "message"]
        if shown.get_column("event").null_count() == shown.height:
            cols.remove("event")
        if shown.get_column("instance").null_count() == shown.height:
            cols.remove("instance")
        cells = [[_cell(v) for v in row] for row in shown.select(cols).iter_rows()]
        widths = [min(max([len(c)] + [len(r[i]) for r in cells]), 60) for i, c in enumerate(cols)]
        widths[-1] = max(len(cols[-1]), max((len(r[-1]) for r in cells), default=0))
        out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
        for r in cells:
            out.write("  ".join(_fit(v, w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if limit is not None and self.frame.height > limit:
            out.write(f"... {self.frame.height - limit} more (use --format csv or json for all)\n")
        # the row a coordinator looks up is the spreadsheet's, one more than the data row (the header is row 1)
        out.write("row: the data row, 1 = the first row under the header (spreadsheet row = row + 1)\n")
        return out.getvalue()

    def render(self, fmt: str) -> str:
        if fmt == "csv":
            return self.to_csv() or ""
        if fmt == "json":
            return self.to_json() or ""
        if fmt == "table":
            return self.to_table()
        raise UsageError(f"unknown format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("\n", " ")


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"
