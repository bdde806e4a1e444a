"""Option parsing shared by several commands."""

from __future__ import annotations

import datetime as _dt

import click


def parse_date(ctx: click.Context, param: click.Parameter, value: str | None) -> _dt.date | None:
    """click callback: `YYYY-MM-DD` to a date (None stays None), a usage error otherwise."""
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        # the value is not repeated: argv may hold a secret pasted in the wrong place
        raise click.BadParameter("not a date (YYYY-MM-DD)") from None
