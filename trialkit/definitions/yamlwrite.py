"""Write instruments and studies as YAML files that read back to the very same model.

A small emitter of our own (not a YAML library's dumper) so the files look hand-written: plain scalars where
safe, literal blocks for multi-line logic, double quotes (JSON escapes, valid YAML) for anything else, plain
choice codes as keys. Every file written is read back and compared field by field; a field that would not
come back identical is written again with every string double-quoted, which always round-trips.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

from trialkit.definitions.model import Field, FieldType, Instrument, Study
from trialkit.definitions.schemas import schema_path
from trialkit.errors import DefinitionError

_PLAIN = re.compile(r"[A-Za-z0-9][^\n\r\t]*")
# Characters YAML does not allow raw (outside its printable set) or may read as line breaks: always escaped.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
_RESERVED = {"true", "false", "null", "~", ""}


def _plain_ok(s: str) -> bool:
    if not _PLAIN.fullmatch(s) or s != s.strip():
        return False
    if s.lower() in _RESERVED or ": " in s or " #" in s or s.endswith(":"):
        return False
    return not _UNSAFE.search(s)


def _quoted(s: str) -> str:
    """Double-quoted YAML: JSON's escapes (all valid YAML) plus escapes for what YAML cannot hold raw."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(s, ensure_ascii=False))


def scalar(s: str, indent: int, *, quote_all: bool = False) -> str:
    """`s` as a YAML scalar for a block mapping value at `indent` spaces (a multi-line result starts with '|')."""
    if quote_all:
        return _quoted(s)
    if _plain_ok(s):
        return s
    if "\n" in s and _literal_ok(s):
        body = s.rstrip("\n")
        trailing = len(s) - len(body)
        chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
        pad = " " * (indent + 2)
        lines = [(pad + line) if line else "" for line in body.split("\n")]
        lines += [""] * (trailing - 1 if trailing > 1 else 0)
        return f"|{chomp}\n" + "\n".join(lines)
    return _quoted(s)


def _literal_ok(s: str) -> bool:
    if "\r" in s or s[:1] in (" ", "\n") or "\t" in s:
        return False
    if any(line != line.rstrip(" ") and line.strip() == "" for line in s.split("\n")):
        return False  # whitespace-only lines are ambiguous in block scalars
    return not _UNSAFE.search(s)


def _key(s: str) -> str:
    return s if _plain_ok(s) and ":" not in s and "#" not in s else _quoted(s)


def schema_comment(target: Path, kind: str) -> str:
    schema = schema_path(kind)
    try:
        rel = os.path.relpath(schema, target.parent.resolve())
    except ValueError:
        rel = str(schema)
    return f"# yaml-language-server: $schema={Path(rel).as_posix()}"


def _field_lines(f: Field, *, quote_all: bool) -> list[str]:
    ind = 4

    def item(key: str, value: str) -> str:
        return f"{' ' * ind}{key}: {scalar(value, ind, quote_all=quote_all)}"

    out = [f"  - name: {f.name}", item("type", f.type.value)]
    for key, value in (
        ("label", f.label),
        ("section_header", f.section_header),
        ("note", f.note),
    ):
        if value or (key == "label"):
            out.append(item(key, value))
    if f.choices and f.type is not FieldType.CALC:
        out.append(f"{' ' * ind}choices:")
        for c in f.choices:
            out.append(f"{' ' * (ind + 2)}{_key(c.code) if not quote_all else _quoted(c.code)}: "
                       f"{scalar(c.label, ind + 2, quote_all=quote_all)}")
    if f.choices_text is not None:
        out.append(item("choices_text", f.choices_text))
    if f.calculation:
        out.append(item("calculation", f.calculation))
    if f.slider_labels:
        out.append(f"{' ' * ind}slider_labels: [{', '.join(_quoted(s) for s in f.slider_labels)}]")
    for key, value in (("validation", f.validation), ("min", f.min), ("max", f.max)):
        if value:
            out.append(item(key, value))
    if f.identifier:
        out.append(f"{' ' * ind}identifier: true")
    if f.required:
        out.append(f"{' ' * ind}required: true")
    if f.show_if:
        out.append(item("show_if", f.show_if))
    for key, value in (("alignment", f.alignment), ("question_number", f.question_number),
                       ("matrix_group", f.matrix_group)):
        if value:
            out.append(item(key, value))
    if f.matrix_ranking:
        out.append(f"{' ' * ind}matrix_ranking: true")
    if f.annotation:
        out.append(item("annotation", f.annotation))
    return out


def instrument_yaml(inst: Instrument, *, target: Path | None = None, quote_fields: frozenset[str] = frozenset()) -> str:
    lines = []
    if target is not None:
        lines.append(schema_comment(target, "instrument"))
    lines.append(f"instrument: {inst.name}")
    if inst.label:
        lines.append(f"label: {scalar(inst.label, 0)}")
    lines.append("fields:" if inst.fields else "fields: []")
    for f in inst.fields:
        lines += _field_lines(f, quote_all=f.name in quote_fields)
    return "\n".join(lines) + "\n"


def _same(a: Field, b: Field) -> bool:
    return replace(a, position=b.position) == b


def instrument_text(inst: Instrument, target: Path | None = None) -> str:
    """YAML text for `inst` that reads back to identical fields (checked here, not assumed)."""
    from trialkit.definitions.loader import build_instrument
    from trialkit.definitions.yamlio import parse_yaml

    quote: frozenset[str] = frozenset()
    for _ in range(2):
        text = instrument_yaml(inst, target=target, quote_fields=quote)
        back = build_instrument(parse_yaml(text, "<check>"), inst.name)
        got = {f.name: f for f in back.fields}
        bad = frozenset(f.name for f in inst.fields if f.name not in got or not _same(got[f.name], f))
        if not bad - quote:
            if bad:
                break
            return text
        quote = quote | bad
    raise DefinitionError(f"cannot write fields {sorted(bad)} of instrument {inst.name} as YAML without loss")


def study_yaml(study: Study, *, target: Path | None = None, instruments_dir: str = "instruments") -> str:
    lines = []
    if target is not None:
        lines.append(schema_comment(target, "study"))
    lines.append(f"study: {study.name}")
    if study.title:
        lines.append(f"title: {scalar(study.title, 0)}")
    if study.protocol_version:
        lines.append(f"protocol_version: {_quoted(study.protocol_version)}")
    lines.append(f"instruments_dir: {scalar(instruments_dir, 0)}")
    lines.append("instruments:")
    lines += [f"  - {i.name}" for i in study.instruments]
    if study.repeating_instruments:
        lines.append("repeating_instruments: [" + ", ".join(study.repeating_instruments) + "]")
    if study.missing_codes:
        lines.append("missing_codes:")
        lines += [f"  {_key(c.code)}: {scalar(c.label, 2)}" for c in study.missing_codes]
    if study.data_access_groups:
        lines.append("data_access_groups:")
        lines += [f"  - {scalar(g, 2)}" for g in study.data_access_groups]
    if study.arms:
        lines.append("arms:")
        for arm in study.arms:
            lines.append(f"  - number: {arm.number}")
            lines.append(f"    name: {scalar(arm.name, 4)}")
            lines.append("    events:")
            for e in arm.events:
                lines.append(f"      - label: {scalar(e.label, 8)}")
                lines.append(f"        name: {e.name}")
                for key in ("day_offset", "offset_min", "offset_max"):
                    value = getattr(e, key)
                    if value:
                        lines.append(f"        {key}: {value}")
                lines.append("        instruments: [" + ", ".join(e.instruments) + "]")
                if e.repeating:
                    lines.append("        repeating: [" + ", ".join(e.repeating) + "]")
    return "\n".join(lines) + "\n"


def write_study(study: Study, directory: Path, *, overwrite: bool = False) -> list[Path]:
    """Write study.yaml and instruments/<form>.yaml under `directory`. Refuses to replace existing files unless
    `overwrite` (never lose someone's definitions). Returns the paths written."""
    from trialkit.errors import UsageError

    directory = Path(directory)
    inst_dir = directory / "instruments"
    targets = [directory / "study.yaml"] + [inst_dir / f"{i.name}.yaml" for i in study.instruments]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise UsageError(f"{existing[0]} exists already (use --force to replace it)")
    texts = {targets[0]: study_yaml(study, target=targets[0])}
    for inst, path in zip(study.instruments, targets[1:], strict=True):
        texts[path] = instrument_text(inst, path)
    try:
        inst_dir.mkdir(parents=True, exist_ok=True)
        for path, text in texts.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or directory}: {exc.strerror or exc}") from None
    return targets
