"""YAML reading for definition files: plain data plus the position of every node.

We compose (not construct) with ruamel.yaml and build plain Python values ourselves, which gives three things
the default loaders do not: every key and value keeps its line and column, duplicate keys become diagnostics
(not silent overwrites or exceptions), and timestamps stay the text the author wrote. Each scalar's source text
is kept too, so `min: 0.50` stays "0.50" and choice code `01` stays "01".

Limits, for every YAML file trialkit reads (study, instruments, rule sets): a file holds at most
`MAX_YAML_BYTES` (8 MiB; the largest real REDCap project's whole dictionary is well under 2 MB as YAML), and
aliases (`*name`, repeating the part of the file anchored `&name`) may add at most `MAX_ALIAS_NODES` (10,000)
values in all. Aliases nested in aliases multiply: twenty lines of them ("billion laughs") stand for billions
of values and ran the checker out of memory. Either limit is a YAML005 diagnostic that names it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trialkit.definitions.shown import scrub, shown_name
from trialkit.errors import Diagnostic

JsonPath = tuple[str | int, ...]

MAX_YAML_BYTES = 8 << 20
MAX_ALIAS_NODES = 10_000

_SCHEMA_COMMENT = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class ScalarInfo:
    """Where a value sits in its file: 1-based line/col of the node, plus the scalar's style and source text."""

    line: int
    col: int
    style: str | None = None  # None (plain), "'", '"', '|', '>'
    raw: str | None = None  # scalar value as text (None for mappings and sequences)


@dataclass
class YamlDoc:
    """A parsed YAML file: `data` (plain dict/list/str/int/float/bool/None) and positions by JSON path."""

    path: str
    text: str
    data: Any = None
    values: dict[JsonPath, ScalarInfo] = field(default_factory=dict)
    keys: dict[JsonPath, ScalarInfo] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    def where(self, path: JsonPath, *, key: bool = False) -> tuple[int | None, int | None]:
        """Line and column of the value (or key) at `path`, else of its nearest ancestor."""
        p = tuple(path)
        table = self.keys if key else self.values
        while True:
            info = table.get(p) or self.values.get(p)
            if info is not None:
                return info.line, info.col
            if not p:
                return 1, 1
            p = p[:-1]

    def raw(self, path: JsonPath) -> str | None:
        info = self.values.get(tuple(path))
        return info.raw if info else None

    def schema_hint(self) -> str | None:
        """The schema the file names, by `$schema` key or `# yaml-language-server: $schema=` comment."""
        if isinstance(self.data, dict) and isinstance(self.data.get("$schema"), str):
            return self.data["$schema"]
        m = _SCHEMA_COMMENT.search(self.text)
        return m.group(1) if m else None

    def diag(self, code: str, message: str, path: JsonPath = (), *, key: bool = False, warning: bool = False) -> None:
        from trialkit.errors import Severity

        line, col = self.where(path, key=key)
        self.diagnostics.append(
            Diagnostic(code, message, self.path, line, col, Severity.WARNING if warning else Severity.ERROR)
        )


def _text(node: ScalarNode) -> str:
    # ruamel's round-trip composer marks the fold points of folded scalars (`>`) with BEL; they are not content
    return node.value.replace("\a", "") if node.style == ">" else node.value


def _scalar(node: ScalarNode) -> Any:
    tag = str(node.tag)
    text = _text(node)
    if node.style is not None:  # quoted or block scalars are always strings
        return text
    if tag.endswith(":null"):
        return None
    if tag.endswith(":bool"):
        return text.lower() == "true"
    if tag.endswith(":int"):
        for base in (10, 0):
            try:
                return int(text.replace("_", ""), base)
            except ValueError:
                continue
        return text
    if tag.endswith(":float"):
        low = text.lower()
        if low in {".inf", "+.inf"}:
            return math.inf
        if low == "-.inf":
            return -math.inf
        if low == ".nan":
            return math.nan
        try:
            return float(text.replace("_", ""))
        except ValueError:
            return text
    return text  # str, timestamp (dates stay text), anything else


class _AliasLimit(Exception):
    def __init__(self, where: JsonPath) -> None:
        self.where = where  # the mapping or list that holds the alias being expanded


class _Builder:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.seen: set[int] = set()  # composed nodes already built once: meeting one again is an alias
        self.aliased = 0  # values built again through aliases
        self.in_alias = 0
        self.alias_at: JsonPath = ()

    def build(self, node: Node, path: JsonPath) -> Any:
        # The composer resolves `*name` to the very node anchored `&name`; building it again copies it.
        again = id(node) in self.seen
        self.seen.add(id(node))
        if again or self.in_alias:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_NODES:
                raise _AliasLimit(self.alias_at)
        if again:
            if not self.in_alias:
                self.alias_at = path[:-1]
            self.in_alias += 1
            try:
                return self._build(node, path)
            finally:
                self.in_alias -= 1
        return self._build(node, path)

    def _build(self, node: Node, path: JsonPath) -> Any:
        info = ScalarInfo(
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            getattr(node, "style", None),
            _text(node) if isinstance(node, ScalarNode) else None,
        )
        self.doc.values[path] = info
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    self.doc.diagnostics.append(
                        Diagnostic(
                            "YAML003",
                            "a mapping key must be a plain value",
                            self.doc.path,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                        )
                    )
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.doc.diagnostics.append(
                        Diagnostic(
                            "YAML003",
                            "merge keys (<<) are not supported in definition files",
                            self.doc.path,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                        )
                    )
                    continue
                key = key_node.value
                kpath = (*path, key)
                kinfo = ScalarInfo(key_node.start_mark.line + 1, key_node.start_mark.column + 1, key_node.style, key)
                if key in out:
                    first = self.doc.keys[kpath]
                    self.doc.diagnostics.append(
                        Diagnostic(
                            "YAML002",
                            f"duplicate key {shown_name(key)} (first at line {first.line})",
                            self.doc.path,
                            kinfo.line,
                            kinfo.col,
                        )
                    )
                    continue
                self.doc.keys[kpath] = kinfo
                out[key] = self.build(value_node, kpath)
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return _scalar(node)


def parse_yaml(text: str, path: str) -> YamlDoc:
    """Parse YAML text; problems become diagnostics on the returned document (never an exception)."""
    doc = YamlDoc(path=path, text=text)
    yaml = YAML(typ="safe", pure=True)  # composing only: the round-trip machinery (comments) costs 2x
    try:
        root = yaml.compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        message = scrub(f"not valid YAML: {problem}{context}")
        doc.diagnostics.append(Diagnostic("YAML001", message, path, line, col))
        return doc
    except (YAMLError, ValueError, TypeError) as exc:  # e.g. multiple documents, bad characters
        message = scrub(f"not valid YAML: {exc}".splitlines()[0])
        doc.diagnostics.append(Diagnostic("YAML001", message, path, 1, 1))
        return doc
    except RecursionError:  # ruamel composes recursively: a few hundred nested [ or { exhaust the stack
        doc.diagnostics.append(Diagnostic("YAML001", "not valid YAML: nested too deeply", path, 1, 1))
        return doc
    if root is None:
        doc.data = None
        return doc
    try:
        doc.data = _Builder(doc).build(root, ())
    except _AliasLimit as exc:
        line, col = doc.where(exc.where)
        message = f"aliases (*name) expand to more than {MAX_ALIAS_NODES:,} values, the limit for a definition file"
        doc.diagnostics.append(Diagnostic("YAML005", message, path, line, col))
        doc.data = None
    except RecursionError:
        doc.diagnostics.append(Diagnostic("YAML001", "not valid YAML: nested too deeply", path, 1, 1))
        doc.data = None
    return doc


def read_yaml(path: str | Path, display: str | None = None) -> YamlDoc:
    """Read and parse a file; an unreadable or non-UTF-8 file is a diagnostic too."""
    shown = display or str(path)
    try:
        raw = read_limited(path)
    except OSError as exc:
        doc = YamlDoc(path=shown, text="")
        doc.diagnostics.append(Diagnostic("IO001", f"cannot read file: {exc.strerror or exc}", shown, None, None))
        return doc
    return parse_yaml_bytes(raw, shown)


def read_limited(path: str | Path) -> bytes:
    """The file's bytes, but never more than MAX_YAML_BYTES + 1 (enough for parse_yaml_bytes to refuse it)."""
    with Path(path).open("rb") as handle:
        return handle.read(MAX_YAML_BYTES + 1)


def parse_yaml_bytes(raw: bytes, path: str) -> YamlDoc:
    """Decode (UTF-8, with or without BOM) and parse; text that is not UTF-8 is an IO002 diagnostic."""
    if len(raw) > MAX_YAML_BYTES:
        doc = YamlDoc(path=path, text="")
        message = f"file is larger than {MAX_YAML_BYTES >> 20} MB, the limit for a definition file"
        doc.diagnostics.append(Diagnostic("YAML005", message, path, None, None))
        return doc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        doc = YamlDoc(path=path, text="")
        doc.diagnostics.append(Diagnostic("IO002", f"not UTF-8 text (byte {exc.start})", path, 1, 1))
        return doc
    return parse_yaml(text, path)


def expression_position(doc: YamlDoc, path: JsonPath, line: int, col: int) -> tuple[int, int]:
    """Map a 1-based (line, col) inside the expression string at `path` to the file position.

    Exact for single-line plain/quoted scalars and for literal block scalars (`|`); for folded or multi-line
    flow scalars it falls back to the start of the value.
    """
    info = doc.values.get(tuple(path))
    if info is None:
        return doc.where(path)
    if info.style in (None, "'", '"'):
        if line == 1 and "\n" not in (info.raw or ""):
            offset = 1 if info.style in ("'", '"') else 0
            # quoted scalars may contain escapes, which shift columns; accept that small imprecision
            return info.line, info.col + offset + col - 1
        return info.line, info.col
    if info.style == "|":
        lines = doc.text.splitlines()
        first = info.line  # the indicator line; content starts on the next line
        target = first + line
        if target - 1 < len(lines):
            content = lines[target - 1]
            indent = len(content) - len(content.lstrip(" "))
            # find the block's indentation from its first non-empty line
            for j in range(first, min(len(lines), first + 50)):
                if lines[j].strip():
                    indent = len(lines[j]) - len(lines[j].lstrip(" "))
                    break
            return target, indent + col
        return info.line, info.col
    return info.line, info.col
