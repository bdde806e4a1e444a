"""The vocabulary of screening results: per-criterion results, dispositions, and the per-candidate view."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class Result(IntEnum):
    """A criterion's result for one candidate. Stored as small integers in the result frame (cheap at 1M rows)."""

    MET = 0
    NOT_MET = 1
    UNKNOWN = 2
    NOT_APPLICABLE = 3

    @property
    def label(self) -> str:
        """As reports write it: met, not_met, unknown, not_applicable."""
        return _LABELS[self]


_LABELS = {r: r.name.lower() for r in Result}  # a report of thousands of checklists asks tens of thousands of times


class Disposition(StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    PENDING = "pending"


DISPOSITIONS = tuple(d.value for d in Disposition)


def deciding_result(kind: str) -> Result:
    """The result of a criterion of this kind ('inclusion' or 'exclusion') that makes a candidate ineligible."""
    return Result.NOT_MET if kind == "inclusion" else Result.MET


_DECIDING_LABEL = {"inclusion": Result.NOT_MET.name.lower(), "exclusion": Result.MET.name.lower()}


@dataclass(frozen=True)
class CriterionOutcome:
    """One criterion for one candidate, as reports show it."""

    id: str
    kind: str
    result: str
    missing: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    #: fields that hold a value screening could not use, and why: "vs_sbp_1: outside 60-260: confirm the value"
    to_correct: tuple[str, ...] = ()

    @property
    def decides_ineligible(self) -> bool:
        label = _DECIDING_LABEL.get(self.kind)  # kind is 'inclusion'/'exclusion' text, or a str enum of them
        return self.result == (label if label is not None else deciding_result(self.kind).label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "result": self.result,
            "missing": list(self.missing),
            "to_correct": list(self.to_correct),
            "values": dict(self.values),
        }


@dataclass(frozen=True)
class CandidateResult:
    record_id: str
    disposition: str
    primary_reason: str | None
    reasons: tuple[str, ...]
    still_needed: tuple[str, ...]  # blank fields to collect
    criteria: tuple[CriterionOutcome, ...]
    to_correct: tuple[str, ...] = ()  # filled-in values that cannot be used, with why (never the value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "disposition": self.disposition,
            "primary_reason": self.primary_reason,
            "reasons": list(self.reasons),
            "still_needed": list(self.still_needed),
            "to_correct": list(self.to_correct),
            "criteria": [c.to_dict() for c in self.criteria],
        }
