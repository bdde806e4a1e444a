"""What a message may show of a value read from a file: its kind, or a name when it reads as one.

A definition path given by mistake (a REDCap token file, /etc/passwd, a connection file) parses as YAML: one
long scalar, or a mapping of secrets. Messages about it reach terminals and the nightly job's log, so they say
what kind of value was found, never the value; only short name-like text (a field name, a key: what an author
typed and now has to find) is quoted.
"""

from __future__ import annotations

import re

_NAME_LIKE = re.compile(r"[A-Za-z0-9_.\- ]{1,30}")
_HEX = re.compile(r"[0-9A-Fa-f]{16,}")  # a REDCap token is 32 hex digits, an API key often 64
_QUOTED = re.compile(r"'[^'\n]{5,}'|\"[^\"\n]{5,}\"")
_SINGLE_QUOTED = re.compile(r"'([^'\n]*)'")


def kind_of(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "empty"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    text = str(value)
    return f"a text value ({len(text)} character{'s' if len(text) != 1 else ''})"


def shown_name(value: object) -> str:
    """`'name'` for short name-like text, else the kind of the value."""
    if isinstance(value, str) and _NAME_LIKE.fullmatch(value) and not _HEX.search(value):
        return f"'{value}'"
    return kind_of(value)


def mask_quoted(message: str) -> str:
    """A definition check's message with every quoted value that is not short and name-like (see shown_name)
    described instead: the checks run on files whose schema check failed too, so a quoted "name" may be
    anything the file held."""
    return _SINGLE_QUOTED.sub(lambda m: shown_name(m.group(1)), message)


def scrub(parser_text: str) -> str:
    """A parser's message without the file text it quotes: quoted runs of five or more characters become
    `(text not shown)`; single characters such as '\\t' stay (they say what is wrong)."""
    return _QUOTED.sub("(text not shown)", parser_text)
