"""The forms' and the protocol's words for what reports show: field labels, choice labels, instrument labels,
and still-needed items grouped by form and instance ("MADRS not done (11 fields)" instead of eleven names).

A `Vocabulary` is built once from the study (or, without one, from the compiled rules' field specs, when it
knows forms but no labels). Pure: no I/O, nothing here reads data values of identifier fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
#: an instance item's label as the missing masks name it: `form.field`
_BOOLEAN_CHOICES = {"yesno": {"1": "Yes", "0": "No"}, "truefalse": {"1": "True", "0": "False"}}
#: a form needs this many items missing, all of them, before the report says "not done" instead of listing them
NOT_DONE_MIN = 3


def plain(text: str) -> str:
    """A REDCap label as one line of plain text (labels may carry HTML and line breaks)."""
    return _SPACE.sub(" ", _TAG.sub(" ", text or "")).strip()


@dataclass(frozen=True)
class Vocabulary:
    fields: Mapping[str, str] = field(default_factory=dict)  # field name -> label
    choices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # field -> code -> label
    forms: Mapping[str, str] = field(default_factory=dict)  # instrument -> label
    form_of: Mapping[str, str] = field(default_factory=dict)  # field -> instrument
    #: per instrument, the choice field that names an instance ("Antidepressant" for a treatment trial)
    instance_name: Mapping[str, str] = field(default_factory=dict)

    def field(self, name: str) -> str:
        return self.fields.get(name) or name

    def form(self, name: str) -> str:
        return self.forms.get(name) or name

    def value(self, name: str, value: Any) -> str:
        """A value as the form shows it: the choice label for a code, else the value itself."""
        if value is None:
            return "blank"
        text = str(value)
        return self.choices.get(name, {}).get(text, text)


def vocabulary(study: Any = None, rules: Any = None) -> Vocabulary:
    """Labels from the study; without one, the forms the rules' field specs know (names stay names)."""
    if study is None:
        specs = getattr(rules, "specs", {}) or {}
        return Vocabulary(form_of={n: s.form for n, s in specs.items() if getattr(s, "form", None)})
    fields: dict[str, str] = {}
    choices: dict[str, dict[str, str]] = {}
    form_of: dict[str, str] = {}
    naming: dict[str, str] = {}
    for f in study.iter_fields():
        if f.name in fields:
            continue
        fields[f.name] = plain(f.label)
        form_of[f.name] = f.form
        kind = getattr(f.type, "value", str(f.type))
        if f.choices:
            choices[f.name] = {c.code: plain(c.label) for c in f.choices}
            if kind in ("dropdown", "radio") and not f.identifier:  # an instance is never named by PHI
                naming.setdefault(f.form, f.name)
        elif kind in _BOOLEAN_CHOICES:
            choices[f.name] = dict(_BOOLEAN_CHOICES[kind])
    forms = {i.name: plain(i.label) for i in study.instruments}
    return Vocabulary(fields, choices, forms, form_of, naming)


def criterion_words(rules: Any) -> dict[str, str]:
    """Criterion id -> its protocol text."""
    return {cc.id: cc.criterion.text for cc in rules.criteria}


def form_items(rules: Any, vocab: Vocabulary) -> dict[str, tuple[str, ...]]:
    """Per instrument, the record-field items the rules can ask for (what 'not done' means for that form)."""
    out: dict[str, dict[str, None]] = {}
    for cc in rules.criteria:
        for item in cc.missing_items:
            # a calculated field with inputs is asked for through them, never itself
            if item.form is None and item.column and not item.inputs:
                out.setdefault(vocab.form_of.get(item.label, "other"), {}).setdefault(item.label, None)
    return {k: tuple(v) for k, v in out.items()}


def describe_needed(
    labels: Iterable[str],
    vocab: Vocabulary,
    items: Mapping[str, tuple[str, ...]],
    instances: Mapping[str, list[str]] | None = None,
) -> list[str]:
    """Still-needed labels (`field`, `form` for 'no instance yet', `form.field`) as phrases, one per form or
    instance, in the order first needed. `instances` maps a `form.field` label to the instances lacking it
    ("#2 (Citalopram)"); without it the phrase names the form only."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        if "." in label:
            form, name = label.split(".", 1)
        elif label in vocab.forms and label not in vocab.form_of:
            form, name = label, ""
        else:
            form, name = vocab.form_of.get(label, "other"), label
        groups.setdefault(form, []).append(name)
    phrases: list[str] = []
    for form, names in groups.items():
        title = vocab.form(form) if form != "other" else "Other"
        record_fields = [n for n in names if n and "." not in n and n in set(items.get(form, ()))]
        wanted = items.get(form, ())
        if "" in names:
            phrases.append(f"{title}: none recorded yet")
        per_instance: dict[str, list[str]] = {}
        loose: list[str] = []
        for n in names:
            if not n:
                continue
            where = (instances or {}).get(f"{form}.{n}") if n not in record_fields else None
            if where:
                for inst in where:
                    per_instance.setdefault(inst, []).append(vocab.field(n))
            else:
                loose.append(n)
        if len(wanted) >= NOT_DONE_MIN and set(wanted) <= set(loose):
            phrases.append(f"{title} not done ({len(wanted)} fields)")
            loose = [n for n in loose if n not in set(wanted)]
        if loose:
            phrases.append(f"{title}: {', '.join(vocab.field(n) for n in loose)}")
        for inst, fields in per_instance.items():
            phrases.append(f"{title} {inst}: {', '.join(fields)}")
    return phrases
