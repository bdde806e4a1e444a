"""Reply bodies in REDCap's three formats: JSON (non-ASCII escaped, as PHP's json_encode does), CSV (PHP fputcsv
quoting) and XML; error bodies likewise."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from xml.sax.saxutils import escape

XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>'
# Characters XML 1.0 cannot hold at all, not even as a character reference (C0 controls but tab/LF/CR, lone
# surrogates, U+FFFE/U+FFFF): an XML export shows U+FFFD in their place (JSON and CSV keep them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NEEDS_QUOTES = re.compile(r'[ ,"\n\r\t\\]')
FORMATS = ("json", "csv", "xml")


def reply_format(params: dict[str, str]) -> str:
    """The format an error (or an import's answer) takes: returnFormat, else format, else XML."""
    for key in ("returnFormat", "format"):
        value = params.get(key, "").lower()
        if value in FORMATS:
            return value
    return "xml"


def error_body(message: str, fmt: str) -> tuple[bytes, str]:
    if fmt == "json":
        return json.dumps({"error": message}).encode(), "application/json; charset=utf-8"
    if fmt == "csv":
        return f"ERROR: {message}".encode(), "text/csv; charset=utf-8"
    return f"{XML_HEAD}<hash><error>{xml_text(message)}</error></hash>".encode(), "text/xml; charset=utf-8"


def xml_text(value: str) -> str:
    """Text content escaped for XML (&, <, >), characters XML cannot hold replaced."""
    return escape(_NOT_XML.sub("\ufffd", value))


def cdata(value: object) -> str:
    """A value as CDATA: `]]>` inside it is split across two sections (it would end the section early and let
    the rest be read as markup), characters XML cannot hold replaced."""
    text = _NOT_XML.sub("\ufffd", "" if value is None else str(value))
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values: Iterable[object]) -> str:
    return ",".join(csv_cell(v) for v in values) + "\n"


def needs_quotes(value: str) -> bool:
    """Whether PHP's fputcsv would quote this cell (space, comma, quote, CR/LF, tab or backslash)."""
    return _NEEDS_QUOTES.search(value) is not None


CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "xml": "text/xml; charset=utf-8",
}


def table_chunks(keys: Sequence[str], rows: Iterable[Sequence[object]], fmt: str, *,
                 header: Sequence[str] | None = None, int_keys: frozenset[str] = frozenset()) -> Iterator[str]:
    """Rows (value sequences in `keys` order) as JSON list of objects, CSV with a header, or XML <records>.

    Yields text pieces one row at a time, so the caller can stream without building the whole body.
    """
    if fmt == "json":
        first = True
        yield "["
        for row in rows:
            piece = json.dumps(dict(zip(keys, row, strict=True)), separators=(",", ":"))
            yield piece if first else "," + piece
            first = False
        yield "]"
    elif fmt == "csv":
        yield csv_line(header or keys)
        for row in rows:
            yield csv_line(row)
    else:
        yield f"{XML_HEAD}<records>"
        for row in rows:
            cells = "".join(
                f"<{k}>{v}</{k}>" if k in int_keys else f"<{k}>{cdata(v)}</{k}>"
                for k, v in zip(keys, row, strict=True)
            )
            yield f"<item>{cells}</item>"
        yield "</records>"


def render_rows(rows: list[dict], fmt: str) -> str:
    """A small list of dicts (metadata, events, ...) in the requested format."""
    if not rows:
        return "[]" if fmt == "json" else ("\n" if fmt == "csv" else f"{XML_HEAD}<records></records>")
    if fmt == "json":
        return json.dumps(rows, separators=(",", ":"))
    keys = list(rows[0])
    return "".join(table_chunks(keys, ([r.get(k, "") for k in keys] for r in rows), fmt))


def render_object(obj: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, separators=(",", ":"))
    if fmt == "csv":
        return csv_line(obj.keys()) + csv_line(obj.values())
    cells = "".join(f"<{k}>{cdata(v)}</{k}>" for k, v in obj.items())
    return f"{XML_HEAD}<item>{cells}</item>"


def render_count(n: int, fmt: str, *, tag: str = "count") -> str:
    if fmt == "json":
        return json.dumps(n)
    if fmt == "xml":
        return f"{XML_HEAD}<{tag}>{n}</{tag}>"
    return str(n)
