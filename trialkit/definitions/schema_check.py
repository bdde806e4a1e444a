"""JSON Schema validation of a parsed YAML document, with every error located in the file."""

from __future__ import annotations

import difflib

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from trialkit.definitions.schemas import load_schema
from trialkit.definitions.shown import kind_of as _describe
from trialkit.definitions.shown import shown_name
from trialkit.definitions.yamlio import JsonPath, YamlDoc
from trialkit.errors import Diagnostic

# Stable codes by JSON Schema keyword.
SCHEMA_CODES = {
    "type": "SCH001",
    "required": "SCH002",
    "additionalProperties": "SCH003",
    "unevaluatedProperties": "SCH003",
    "pattern": "SCH004",
    "enum": "SCH005",
    "const": "SCH005",
}
SCHEMA_OTHER = "SCH009"

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "text", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "empty"}


def _where(path: JsonPath) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "document"


_LIMIT_WORDS = {
    "minLength": "is shorter than {v} characters",
    "maxLength": "is longer than {v} characters",
    "minimum": "is less than {v}",
    "maximum": "is more than {v}",
    "exclusiveMinimum": "is not more than {v}",
    "exclusiveMaximum": "is not less than {v}",
    "minItems": "has fewer than {v} items",
    "maxItems": "has more than {v} items",
    "minProperties": "has fewer than {v} keys",
    "uniqueItems": "has repeated items",
    "format": "is not in the {v} format",
    "multipleOf": "is not a multiple of {v}",
}


def _messages(err: ValidationError) -> list[tuple[str, JsonPath, bool]]:
    """`_message`, once per unknown key: jsonschema raises one error for all the unknown keys of a mapping, and
    each is its own mistake, at its own line."""
    if err.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
        where = _where(tuple(err.absolute_path))
        out = []
        for key in [k for k in err.instance if k not in allowed] or ["?"]:
            near = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            guess = f"; did you mean '{near[0]}'?" if near else ""
            out.append((f"{where}: unknown key {shown_name(key)}{guess}{hint}", (*err.absolute_path, key), True))
        return out
    return [_message(err)]


def _message(err: ValidationError) -> tuple[str, JsonPath, bool]:
    """(message, path to locate, locate the key rather than the value). Only our words, the schema's names and
    the kind of the offending value: jsonschema's own messages repeat the value."""
    path: JsonPath = tuple(err.absolute_path)
    where = _where(path)
    kw = err.validator
    if kw == "required":
        # jsonschema raises one error per missing key, all alike: each names every missing key, so after
        # de-duplication one diagnostic names them all (not only the first)
        missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
        names = ", ".join(f"'{k}'" for k in missing or err.validator_value)
        plural = "s" if len(missing) > 1 else ""
        return f"{where}: missing required key{plural} {names}", path, False
    if kw in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        key = extra[0] if extra else "?"
        hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
        return f"{where}: unknown key {shown_name(key)}{hint}", (*path, key), True
    if kw == "type":
        expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        return f"{where}: expected {names}, got {_describe(err.instance)}", path, False
    if kw == "pattern":
        return f"{where}: {shown_name(err.instance)} is not a valid name (lowercase letters, digits and _, " \
               f"starting with a letter)", path, False
    if kw in ("enum", "const"):
        allowed = err.validator_value if kw == "enum" else [err.validator_value]
        options = ", ".join(str(v) for v in allowed if v != "")
        return f"{where}: {shown_name(err.instance)} is not one of: {options}", path, False
    if kw in _LIMIT_WORDS:
        return f"{where}: {_describe(err.instance)} {_LIMIT_WORDS[kw].format(v=err.validator_value)}", path, False
    return f"{where}: {_describe(err.instance)} does not fit the schema ({kw})", path, False


def validate(doc: YamlDoc, kind: str) -> list[tuple[Diagnostic, JsonPath]]:
    """Every schema violation in `doc` (which must have parsed), with the JSON path of the offending value."""
    validator = Draft202012Validator(load_schema(kind))
    out = []
    for err in validator.iter_errors(doc.data):
        # For oneOf/anyOf failures, the most specific sub-error says more.
        best = err
        if err.context:
            best = max(err.context, key=lambda e: len(e.absolute_path))
        for message, path, key in _messages(best):
            line, col = doc.where(path, key=key)
            diag = Diagnostic(SCHEMA_CODES.get(best.validator, SCHEMA_OTHER), message, doc.path, line, col)
            if any(diag == d for d, _ in out):
                continue  # the same problem reached again (each missing key of one mapping is its own error)
            out.append((diag, tuple(best.absolute_path)))
    return out
