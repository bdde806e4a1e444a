"""Messages never repeat a command-line value that may be a secret.

A REDCap token pasted in the wrong place (as DATA, after `--url`, as an option value) would otherwise come back
in click's usage errors ("Got unexpected extra argument (<token>)", "'<token>' is not a valid float") and land
in a terminal's scrollback or a cron job's log. Lowercase names (commands, options, choices) and file paths
stay: they are what the user needs to see to fix a typo, and a REDCap token (32 or 64 hex digits) is neither.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

HIDDEN = "(value not shown)"
_HEX = re.compile(r"[0-9A-Fa-f]{16,}")
_NAME = re.compile(r"-{0,2}[A-Za-z][A-Za-z0-9_-]{0,24}")  # a command, option, choice or variable name
_PATH = re.compile(r"[^\s:?=&]*[/.][^\s:?=&]*")
_EXTRA = re.compile(r"(unexpected extra arguments?) \((.*)\)", re.DOTALL)


def _shown(value: str) -> bool:
    if _HEX.fullmatch(value):
        return False
    return bool(_NAME.fullmatch(value)) or (len(value) <= 200 and bool(_PATH.fullmatch(value)))


def hidden_values(args: Sequence[str]) -> list[str]:
    """The argv values a message may not repeat, longest first (so a value inside another goes with it)."""
    values = set()
    for arg in args:
        if arg.startswith("-") and "=" in arg:
            arg = arg.split("=", 1)[1]
        if arg and not _shown(arg):
            values.add(arg)
    return sorted(values, key=len, reverse=True)


def scrub_argv(message: str, args: Sequence[str]) -> str:
    """`message` with every unsafe argv value replaced: anywhere when 8 characters or longer, else only where
    click quotes it ('x', (x)); short values such as `1` would otherwise eat letters of the message's words."""
    message = _EXTRA.sub(lambda m: f"{m.group(1)} ({len(m.group(2).split())} not shown)", message)
    for value in hidden_values(args):
        if len(value) >= 8:
            message = message.replace(value, HIDDEN)
        else:
            for quoted in (f"'{value}'", f'"{value}"', f"({value})"):
                message = message.replace(quoted, HIDDEN)
    return message
