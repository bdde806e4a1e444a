"""The one exception hierarchy of trialkit, and the located diagnostic every checker returns.

Every error knows where it happened (file, line, column, or record/field for data) so the CLI can print
one clear line and exit with the right code, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Location:
    """Where something is: a file position, optionally narrowed to a record and field of data."""

    file: str | None = None
    line: int | None = None
    col: int | None = None
    record: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.line, self.col) if p is not None]
        text = ":".join(str(p) for p in parts)
        extra = []
        if self.record is not None:
            extra.append(f"record {self.record}")
        if self.field is not None:
            extra.append(f"field {self.field}")
        if extra:
            text = f"{text} ({', '.join(extra)})" if text else ", ".join(extra)
        return text


@dataclass(frozen=True)
class Diagnostic:
    """One problem found by a checker. `code` is stable (tests and users grep for it)."""

    code: str
    message: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple:
        return (self.file or "", self.line or 0, self.col or 0, self.code, self.message)

    def format(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        prefix = f"{where}: " if where else ""
        tag = "" if self.is_error else "warning "
        return f"{prefix}{tag}{self.code} {self.message}"

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": str(self.severity),
        }


def sorted_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=Diagnostic.sort_key)


class TrialkitError(Exception):
    """Root of every error trialkit raises on purpose. `exit_code` is what the CLI returns for it."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        diagnostics: Sequence[Diagnostic] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.diagnostics = tuple(diagnostics)

    def __str__(self) -> str:
        where = str(self.location) if self.location else ""
        return f"{where}: {self.message}" if where else self.message


class UsageError(TrialkitError):
    """The command line or an API call asked for something impossible."""


class DefinitionError(TrialkitError):
    """Study, instrument or rule files are wrong. Carries every diagnostic found, not only the first."""


class LogicError(TrialkitError):
    """A REDCap logic expression is wrong (syntax or meaning)."""


class LogicSyntaxError(LogicError):
    """Syntax error at a position of an expression; `caret()` shows the line with a caret under it."""

    def __init__(self, message: str, *, text: str, line: int, col: int, file: str | None = None) -> None:
        super().__init__(message, location=Location(file=file, line=line, col=col))
        self.text = text
        self.line = line
        self.col = col

    def caret(self) -> str:
        lines = self.text.splitlines() or [""]
        src = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        return f"{src}\n{' ' * max(self.col - 1, 0)}^"

    def __str__(self) -> str:
        return f"{self.line}:{self.col}: {self.message}"


class DataError(TrialkitError):
    """Input data is unusable (unreadable file, wrong shape): nothing could be processed."""

    exit_code = 1


class RedcapError(TrialkitError):
    """REDCap (or the network to it) failed. Never carries the token."""

    exit_code = 1


@dataclass(frozen=True)
class Finding:
    """A problem in data (not in definitions): which record, event, instance and field."""

    record: str | None
    field: str | None
    check: str
    message: str
    value: str | None = None
    event: str | None = None
    instance: int | None = None
    severity: Severity = Severity.ERROR
