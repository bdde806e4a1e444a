"""Eligibility rule sets: the frozen model, the loader and the checker for `eligibility_rules/*.yaml`.

A rule set is an ordered list of criteria; the order is the protocol's order and decides which criterion is the
primary reason when several exclude a candidate. Each criterion is a REDCap logic expression, evaluated later in
Kleene mode by `trialkit.screening`; here we only load it and check it against the study's fields, so a typo in
a field name is a located error before anyone is screened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from trialkit.definitions.model import FieldType, Position
from trialkit.errors import DefinitionError, Diagnostic, Severity, sorted_diagnostics

#: value of a yes/no field that means "yes" (REDCap's yesno and truefalse code).
YES = "1"


class CriterionKind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


@dataclass(frozen=True)
class Attestation:
    """An investigator's recorded decision: `field` is yes/no; it counts only once signed (signer and date)."""

    field: str
    signed_by: str | None = None
    signed_on: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for f in (self.field, self.signed_by, self.signed_on) if f)

    def expression(self) -> str:
        """The decision as REDCap logic: yes is met, no is not met, blank is unknown.

        The signature is not part of the expression: an unsigned entry must be *unknown* whatever it says, which
        the screening engine applies after evaluating (Kleene `and` with a blank signature would give false for
        an unsigned 'no', i.e. decide the criterion on an unsigned entry).
        """
        return f"[{self.field}] = '{YES}'"


@dataclass(frozen=True)
class ExprPos:
    """Where an expression sits in its file, and how to turn a position inside it into a file position."""

    file: str | None
    line: int | None
    col: int | None
    to_file: Callable[[int, int], tuple[int, int]] | None = field(default=None, compare=False, repr=False)

    def locate(self, line: int | None, col: int | None) -> tuple[int | None, int | None]:
        if line is None or col is None or self.to_file is None:
            return self.line, self.col
        return self.to_file(line, col)

    def place(self, line: int | None, col: int | None) -> tuple[str | None, int | None, int | None]:
        """`locate` with the file: (file, line, col)."""
        return (self.file, *self.locate(line, col))


@dataclass(frozen=True)
class Criterion:
    id: str
    kind: CriterionKind
    text: str
    logic: str | None = None
    applies_if: str | None = None
    attested: Attestation | None = None
    notes: str | None = None
    requires_instances: tuple[str, ...] = ()
    pos: Position = field(default=Position())  # where it sits in its file, so later stages can point at it
    logic_pos: ExprPos | None = field(default=None, compare=False, repr=False)
    applies_pos: ExprPos | None = field(default=None, compare=False, repr=False)

    @property
    def expression(self) -> str:
        """The logic that decides the criterion (derived from the attestation for attested criteria)."""
        if self.logic is not None:
            return self.logic
        if self.attested is not None:
            return self.attested.expression()
        raise DefinitionError(f"criterion {self.id} has neither logic nor attested")

    @property
    def is_attested(self) -> bool:
        return self.attested is not None


@dataclass(frozen=True)
class ProtocolRef:
    reference: str
    version: str
    section: str | None = None


@dataclass(frozen=True)
class RuleSet:
    id: str
    version: str
    title: str
    protocol: ProtocolRef
    criteria: tuple[Criterion, ...]
    sha256: str
    description: str | None = None
    study: str | None = None
    reference_date: str | None = None
    source: str | None = None
    reference_date_pos: Position = field(default=Position(), compare=False, repr=False)
    study_pos: Position = field(default=Position(), compare=False, repr=False)

    def criterion(self, cid: str) -> Criterion:
        for c in self.criteria:
            if c.id == cid:
                return c
        raise KeyError(cid)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.criteria)

    def stamp(self) -> dict[str, str]:
        """What every screening result carries to say which rules produced it."""
        return {"id": self.id, "version": self.version, "sha256": self.sha256}

    def study_path(self) -> Path | None:
        """The study file named by the rule set, resolved against the rule file's folder."""
        if self.study is None:
            return None
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / self.study).resolve()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_ruleset(path: str | Path, study: Any = None) -> RuleSet:
    """Load, schema-check and (when a study is given) logic-check a rule file.

    Raises `DefinitionError` carrying every diagnostic when anything is wrong; warnings alone do not raise.
    """
    ruleset, diags = read_ruleset(path)
    if ruleset is not None and study is not None:
        diags = diags + check_ruleset(ruleset, study)
    errors = [d for d in diags if d.is_error]
    if errors or ruleset is None:
        raise DefinitionError(f"{path}: {len(errors)} error(s) in the rule set", diagnostics=sorted_diagnostics(diags))
    return ruleset


def read_ruleset(path: str | Path) -> tuple[RuleSet | None, list[Diagnostic]]:
    """Read a rule file: YAML (with positions) then JSON Schema then structure. No study needed."""
    from trialkit.definitions.yamlio import read_limited

    path = Path(path)
    file = str(path)
    try:
        data = read_limited(path)
    except OSError as exc:
        return None, [Diagnostic("IO001", f"cannot read rule file: {exc.strerror or exc}", file=file)]
    return parse_ruleset(data, file=file)


def parse_ruleset(data: bytes | str, file: str | None = None) -> tuple[RuleSet | None, list[Diagnostic]]:
    """Parse rule-file content. The hash is over the bytes as given, so it identifies the file, not the model."""
    from trialkit.definitions.yamlio import parse_yaml_bytes

    raw = data.encode("utf-8") if isinstance(data, str) else data
    doc = parse_yaml_bytes(raw, file or "<rules>")
    # A file that parsed with a duplicate key (the first value kept) is still checked, as instrument files are:
    # a researcher sees every problem of the file at once, not one per run.
    if doc.data is None and not doc.ok:
        return None, list(doc.diagnostics)
    if not isinstance(doc.data, dict):
        doc.diag("RULE005", "a rule file must be a mapping with id, version, title, protocol, criteria")
        return None, list(doc.diagnostics)
    parsed = len(doc.diagnostics)
    _schema_check(doc)
    if any(d.is_error for d in doc.diagnostics[parsed:]):
        return None, list(doc.diagnostics)
    ruleset = _build(doc, sha256_bytes(raw))
    return ruleset, list(doc.diagnostics)


def _schema_check(doc: Any) -> None:
    from trialkit.definitions.schema_check import validate

    doc.diagnostics.extend(d for d, _ in validate(doc, "ruleset"))


def _build(doc: Any, digest: str) -> RuleSet:
    from trialkit.definitions.yamlio import expression_position

    file = doc.path
    data = doc.data
    criteria: list[Criterion] = []
    seen: dict[str, int | None] = {}
    for i, node in enumerate(data["criteria"]):
        here = ("criteria", i)
        cid = str(node["id"])
        line, col = doc.where(here)
        pos = Position(file, line, col)
        if cid in seen:
            doc.diag("RULE001", f"criterion id '{cid}' already used at line {seen[cid]}", (*here, "id"))
        seen.setdefault(cid, doc.where((*here, "id"))[0])
        logic = node.get("logic")
        attested_node = node.get("attested")
        if logic is None and attested_node is None:
            doc.diag("RULE002", f"criterion {cid} needs `logic` or `attested`", here)
        if logic is not None and attested_node is not None:
            doc.diag(
                "RULE003",
                f"criterion {cid} has both `logic` and `attested`: an attested criterion is decided by the "
                "investigator entry only",
                (*here, "attested"),
                key=True,
            )
        attested = None
        if attested_node is not None:
            attested = Attestation(
                field=str(attested_node["field"]),
                signed_by=attested_node.get("signed_by"),
                signed_on=attested_node.get("signed_on"),
            )

        def locate(key: str, *, _here: tuple = here) -> ExprPos:
            path = (*_here, key)
            line, col = doc.where(path)
            return ExprPos(file, line, col, lambda ln, cl, _p=path: expression_position(doc, _p, ln, cl))

        criteria.append(
            Criterion(
                id=cid,
                kind=CriterionKind(node["kind"]),
                text=" ".join(str(node["text"]).split()),
                logic=_expr(logic),
                applies_if=_expr(node.get("applies_if")),
                attested=attested,
                notes=node.get("notes"),
                requires_instances=tuple(node.get("requires_instances") or ()),
                pos=pos,
                logic_pos=locate("logic") if logic is not None else None,
                applies_pos=locate("applies_if") if node.get("applies_if") is not None else None,
            )
        )
    protocol = data["protocol"]
    return RuleSet(
        id=str(data["id"]),
        version=str(data["version"]),
        title=str(data["title"]),
        protocol=ProtocolRef(str(protocol["reference"]), str(protocol["version"]), protocol.get("section")),
        criteria=tuple(criteria),
        sha256=digest,
        description=data.get("description"),
        study=data.get("study"),
        reference_date=data.get("reference_date"),
        source=file,
        reference_date_pos=Position(file, *doc.where(("reference_date",))),
        study_pos=Position(file, *doc.where(("study",))),
    )


def _expr(value: Any) -> str | None:
    # Block scalars end with a newline; the expression itself must keep its inner line breaks (comments).
    return None if value is None else str(value).rstrip("\n")


# ---------------------------------------------------------------------------------------------------------------
# Checking against the study


def check_ruleset(ruleset: RuleSet, study: Any) -> list[Diagnostic]:
    """Every expression checked against the study's fields; every problem located in the rule file."""
    from trialkit.definitions.expressions import expression_checker

    # a value that is none of the field's codes is an error here: the criterion would silently decide everyone
    # and a criterion is judged once per candidate: a repeating form's field must say which instances
    check = expression_checker(study, allow_extensions=True, strict_codes=True, per_record=True)
    repeating = frozenset(form for _, form in study.repeating_pairs)
    diags: list[Diagnostic] = []
    for c in ruleset.criteria:
        if c.logic is not None and c.logic_pos is not None:
            diags += check(c.logic, f"criterion {c.id}", c.logic_pos.place)
        if c.applies_if is not None and c.applies_pos is not None:
            diags += check(c.applies_if, f"criterion {c.id} applies_if", c.applies_pos.place)
        if c.attested is not None:
            diags.extend(_check_attestation(c, study))
        for form in c.requires_instances:
            if form not in repeating:
                diags.append(
                    Diagnostic(
                        "RULE014",
                        f"criterion {c.id}: requires_instances names '{form}', which is not a repeating instrument",
                        c.pos.file,
                        c.pos.line,
                        c.pos.col,
                    )
                )
    if ruleset.reference_date is not None:
        ref = study.fields.get(ruleset.reference_date)
        repeats = ref is not None and _repeats_everywhere(study, ref.form)
        if ref is None or ref.value_kind not in ("date", "datetime") or repeats:
            if ref is None:
                what = "is not in the study"
            elif ref.value_kind not in ("date", "datetime"):
                what = f"is not a date field ({ref.value_kind})"
            else:  # 'today' would silently be the --as-of date for everyone
                what = f"is on the repeating instrument '{ref.form}': a candidate's own row holds none of its values"
            at = ruleset.reference_date_pos
            diags.append(Diagnostic("RULE013", f"reference_date '{ruleset.reference_date}' {what}", at.file, at.line,
                                    at.col))
    if CriterionKind.INCLUSION not in {c.kind for c in ruleset.criteria}:
        diags.append(
            Diagnostic(
                "RULE004",
                "rule set has no inclusion criterion: everyone not excluded is eligible",
                ruleset.source,
                1,
                1,
                severity=Severity.WARNING,
            )
        )
    return diags


def _repeats_everywhere(study: Any, form: str | None) -> bool:
    """Whether `form` repeats on every event it is on: a candidate's own row never holds its fields."""
    repeating = {r for _, r in study.repeating_pairs}
    return form in repeating and all(study.is_repeating(form, e) for e in study.events_of(form))


def _check_attestation(c: Criterion, study: Any) -> list[Diagnostic]:
    assert c.attested is not None
    fields = study.fields
    out = []
    pos = c.pos
    for role, name in (("", c.attested.field), (" signed_by", c.attested.signed_by),
                       (" signed_on", c.attested.signed_on)):
        spec = fields.get(name) if name is not None else None
        if spec is not None and _repeats_everywhere(study, spec.form):
            # as LOGIC018 for logic: the criterion would stay unknown for everyone, asking for a field of instances
            out.append(Diagnostic(
                "RULE016",
                f"criterion {c.id}: attested{role} field '{name}' is on the repeating instrument '{spec.form}': a "
                "candidate's own row holds none of its values (attest on a form that does not repeat)",
                pos.file, pos.line, pos.col,
            ))
    decision = fields.get(c.attested.field)
    if decision is None:
        out.append(
            Diagnostic(
                "RULE010",
                f"criterion {c.id}: attested field '{c.attested.field}' is not in the study",
                pos.file,
                pos.line,
                pos.col,
            )
        )
    elif YES not in decision.choice_codes or decision.type is FieldType.CHECKBOX:
        # yesno/truefalse, or a choice field with a '1' code: `[field] = '1'` decides it. A checkbox cannot be
        # compared so (REDCap reads [field(code)]), and screening would fail on it.
        out.append(
            Diagnostic(
                "RULE011",
                f"criterion {c.id}: attested field '{c.attested.field}' must be yes/no (it is {decision.type})",
                pos.file,
                pos.line,
                pos.col,
            )
        )
    for role, name in (("signed_by", c.attested.signed_by), ("signed_on", c.attested.signed_on)):
        if name is not None and name not in fields:
            out.append(
                Diagnostic(
                    "RULE010",
                    f"criterion {c.id}: attested {role} field '{name}' is not in the study",
                    pos.file,
                    pos.line,
                    pos.col,
                )
            )
    if c.attested.signed_by is None and c.attested.signed_on is None:
        out.append(
            Diagnostic(
                "RULE012",
                f"criterion {c.id}: an attestation without signed_by/signed_on counts unsigned entries",
                pos.file,
                pos.line,
                pos.col,
                Severity.WARNING,
            )
        )
    return out
