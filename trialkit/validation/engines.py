"""Two ways to run a validation plan over a frame, giving the same failure table (pandera's `failure_cases`).

`pandera_failures` builds the pandera schema the plan declares and runs it lazily: pandera's own executor, one
check after another (each a separate polars query, plus pandera's bookkeeping per check and per column).

`polars_failures` evaluates every check of the plan in one polars select (one pass over the frame, run in
parallel by polars) and builds the same table: rows in pandera's order (unknown columns first, then per schema
column and check in declaration order, the failing rows in frame order), with pandera's column names and
types. It keeps pandera's rules: a check passes where its expression is null (`ignore_na`), the failure case is
the checked column's value as text, `index` is the 0-based row of the frame, a strict schema reports each
column it does not declare as `column_in_schema`. tests/validation/test_engines.py holds them to identical
findings on mixed invalid data.

If the one-pass select cannot run (a check that fails to evaluate on this data), the plan goes to pandera,
which isolates the failing check and reports it as a check error, so the fast path never changes a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # pandera is imported only when a schema is built: it costs most of a second
    import pandera.polars as pa

#: pandera's failure_cases columns and types
FAILURE_COLUMNS: dict[str, pl.DataType] = {
    "failure_case": pl.String(),
    "schema_context": pl.String(),
    "column": pl.String(),
    "check": pl.String(),
    "check_number": pl.Int32(),
    "index": pl.Int32(),
}

#: (check name, expression true where the row passes) per schema column, in declaration order
Checks = Mapping[str, list[tuple[str, pl.Expr]]]


def pandera_schema(checks: Checks, columns: Iterable[str], name: str) -> pa.DataFrameSchema:
    """The pandera schema declaring `columns` (strict: any other column is a failure), each with its checks."""
    import pandera.polars as pa

    return pa.DataFrameSchema(
        {
            column: pa.Column(
                None,
                checks=[pa.Check(_selector(expr), name=check) for check, expr in checks.get(column, [])],
                nullable=True,
                required=False,
            )
            for column in columns
        },
        strict=True,
        name=name,
    )


def _selector(expr: pl.Expr) -> Callable:
    def check(data):  # type: ignore[no-untyped-def]
        return data.lazyframe.select(expr.alias("ok"))

    return check


def pandera_failures(checks: Checks, columns: list[str], name: str, frame: pl.DataFrame) -> pl.DataFrame | None:
    """pandera's failure table for `frame`, run by pandera (None when every check passes)."""
    from pandera.errors import SchemaErrors

    try:
        pandera_schema(checks, columns, name).validate(frame, lazy=True)
    except SchemaErrors as exc:
        return exc.failure_cases.select(list(FAILURE_COLUMNS))
    return None


def polars_failures(checks: Checks, columns: list[str], name: str, frame: pl.DataFrame) -> pl.DataFrame | None:
    """The table `pandera_failures` gives, from one polars select over `frame`."""
    declared = set(columns)
    unknown = [c for c in frame.columns if c not in declared]
    planned = [
        (column, number, check, expr)
        for column in columns
        if column in frame.columns  # required=False: an absent column is no failure
        for number, (check, expr) in enumerate(checks.get(column, []))
    ]
    try:
        # true where the row fails; a null result passes, as pandera's ignore_na
        masks = frame.select([(~expr).fill_null(False).alias(str(k)) for k, (*_, expr) in enumerate(planned)])
        counts = masks.select(pl.all().sum()).row(0) if planned else ()
    except pl.exceptions.PolarsError:
        return pandera_failures(checks, columns, name, frame)
    parts = []
    if unknown:
        parts.append(
            pl.DataFrame(
                {
                    "failure_case": unknown,
                    "schema_context": "DataFrameSchema",
                    "column": name,
                    "check": "column_in_schema",
                    "check_number": None,
                    "index": None,
                },
                schema=FAILURE_COLUMNS,
            )
        )
    for k, (column, number, check, _) in enumerate(planned):
        if not counts[k]:
            continue
        index = masks.get_column(str(k)).arg_true()
        parts.append(
            pl.DataFrame(
                {
                    "failure_case": frame.get_column(column).gather(index).cast(pl.String),
                    "schema_context": pl.repeat("Column", len(index), eager=True),
                    "column": pl.repeat(column, len(index), eager=True),
                    "check": pl.repeat(check, len(index), eager=True),
                    "check_number": pl.repeat(number, len(index), dtype=pl.Int32, eager=True),
                    "index": index.cast(pl.Int32),
                }
            )
        )
    return pl.concat(parts, how="vertical") if parts else None
