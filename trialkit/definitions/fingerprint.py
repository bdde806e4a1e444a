"""A fingerprint of what screening reads: the study and the rule set *as loaded*, plus trialkit's version.

The nightly job keeps a candidate's result until something that decides it changes; the fingerprint is how it
knows. It is taken of the model, not of the file bytes, for two reasons:

- a file hash misses what screening reads from elsewhere: an instrument's calculated field or branching logic,
  the study's schedule and missing-data codes (the rule file alone is not the definition of a result);
- a file hash fires on edits that change nothing (a comment, re-indentation, a reflowed block scalar), and a
  full rescreen of a large project for a comment is wasted work.

So every dataclass of the model is serialised field by field, generically (a field added to the model later is
included without anyone remembering to add it here), leaving out only what says *where* a definition was read
from (positions, file names, the hash of the bytes). Expressions are serialised as their canonical rendering, so
a comment or line break inside a logic expression does not count either, while any change to what it computes
does. Labels and other texts are kept: they change no result, but telling them apart from what does would be a
second model of screening that could drift from the real one, and a needless full run only costs time (the
nightly job writes only results that differ).

Parts are hashed separately (the rule set, the study file, each instrument, the version, run options) so a run
can say *why* it rescreens everything: "instruments changed: madrs.yaml".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

#: Attributes that say where a definition came from, not what it is.
_WHERE = frozenset({"position", "pos", "logic_pos", "applies_pos", "reference_date_pos", "study_pos", "source",
                    "sha256"})
#: Attributes holding REDCap logic: compared by their canonical rendering.
_EXPRESSIONS = frozenset({"show_if", "calculation", "logic", "applies_if"})

RULES = "rules"
STUDY = "study"
VERSION = "trialkit"
OPTIONS = "options"
INSTRUMENT = "instrument:"


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The parts' hashes, and the hash of them all. `files` names the file each part was read from."""

    parts: Mapping[str, str]
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return _sha(dict(sorted(self.parts.items())))

    def to_json(self) -> str:
        return json.dumps({"parts": dict(sorted(self.parts.items())), "files": dict(sorted(self.files.items()))},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Fingerprint | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(dict(data["parts"]), dict(data.get("files") or {}))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as unknown, i.e. a full run

    def changes(self, before: Fingerprint | None) -> list[str]:
        """Why the definitions differ from `before`, in words ('first' when there is nothing to compare with)."""
        if before is None:
            return []
        out: list[str] = []
        old, new = before.parts, self.parts
        if old.get(RULES) != new.get(RULES):
            out.append("rules changed")
        if old.get(STUDY) != new.get(STUDY):
            out.append(f"study changed: {self.files.get(STUDY) or before.files.get(STUDY) or 'study.yaml'}")
        names = sorted({k for k in (*old, *new) if k.startswith(INSTRUMENT)})
        changed = [k for k in names if old.get(k) != new.get(k)]
        if changed:
            shown = [self.files.get(k) or before.files.get(k) or f"{k[len(INSTRUMENT):]}.yaml" for k in changed]
            out.append(f"instruments changed: {', '.join(shown)}")
        if old.get(VERSION) != new.get(VERSION):
            out.append(f"trialkit version changed ({before.files.get(VERSION, '?')} -> {self.files.get(VERSION)})")
        if old.get(OPTIONS) != new.get(OPTIONS):
            out.append("screening options changed")
        known = {RULES, STUDY, VERSION, OPTIONS}
        if not out and old != new:  # a part this version does not know about: still a change
            out.append(f"definitions changed: {', '.join(sorted(k for k in {*old, *new} - known))}")
        return out


def fingerprint(study: Any, ruleset: Any, *, options: Mapping[str, Any] | None = None) -> Fingerprint:
    """The fingerprint of `study` and `ruleset` (loaded models) for this trialkit. `options`: whatever else the
    caller's screening depends on (the event screened, a screening mode), as JSON-able values."""
    from trialkit import __version__

    parts: dict[str, str] = {}
    files: dict[str, str] = {}
    parts[RULES] = _sha(_canonical(ruleset, skip=frozenset({"study"})))  # the path; the study itself is below
    files[RULES] = Path(ruleset.source).name if getattr(ruleset, "source", None) else ""
    parts[STUDY] = _sha(_canonical(study, skip=frozenset({"instruments"}))
                        | {"instruments": [i.name for i in study.instruments]})
    files[STUDY] = Path(study.source).name if getattr(study, "source", None) else "study.yaml"
    for inst in study.instruments:
        key = INSTRUMENT + inst.name
        parts[key] = _sha(_canonical(inst))
        file = getattr(inst.position, "file", None)
        files[key] = Path(file).name if file else f"{inst.name}.yaml"
    parts[VERSION] = _sha(__version__)
    files[VERSION] = __version__
    parts[OPTIONS] = _sha(dict(sorted((options or {}).items())))
    return Fingerprint(parts, files)


def _sha(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any, skip: frozenset[str] = frozenset()) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"__type__": type(value).__name__}
        for f in dataclasses.fields(value):
            if f.name in _WHERE or f.name in skip:
                continue
            item = getattr(value, f.name)
            out[f.name] = _expression(item) if f.name in _EXPRESSIONS and isinstance(item, str) else _canonical(item)
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _expression(text: str) -> str:
    """REDCap logic in canonical form (comments, spacing and line breaks gone); the text itself when it does not
    parse (the checkers refuse it anyway, and any edit to it is then a change)."""
    if not text.strip():
        return ""
    from trialkit.logic import parse, render

    try:
        return "expr:" + render(parse(text), extensions=True)
    except Exception:  # any failure to canonicalise falls back to the exact text: never a missed change
        return "text:" + text
