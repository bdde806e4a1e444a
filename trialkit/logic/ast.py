"""The syntax tree of a REDCap logic expression.

Nodes are frozen dataclasses. Source positions (`line`, `col`, absolute in the caller's file when `parse` was
given offsets) take no part in equality, so `parse(render(tree)) == tree` compares structure only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

# Instance selectors accepted as the last bracket of a field reference, e.g. [visit_date][last-instance].
INSTANCE_SMART = frozenset(
    {"current-instance", "previous-instance", "next-instance", "first-instance", "last-instance"}
)
# Event selectors accepted in front of a field, e.g. [previous-event-name][weight].
EVENT_SMART = frozenset({"event-name", "previous-event-name", "next-event-name", "first-event-name", "last-event-name"})
# Smart variables that may stand alone as a value.
SMART_VARIABLES = (
    INSTANCE_SMART
    | EVENT_SMART
    | frozenset(
        {"record-name", "user-name", "user-dag-name", "record-dag-name", "arm-number", "arm-label", "project-id"}
    )
)


@dataclass(frozen=True)
class Node:
    line: int = field(default=1, compare=False, repr=False, kw_only=True)
    col: int = field(default=1, compare=False, repr=False, kw_only=True)

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True)
class Number(Node):
    """A numeric literal, kept as written (canonicalised: no leading '+', '.5' -> '0.5')."""

    text: str

    @property
    def value(self) -> float:
        return float(self.text)


@dataclass(frozen=True)
class String(Node):
    """A quoted literal. `''` (empty) is REDCap's blank."""

    value: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class FieldRef(Node):
    """`[name]`, `[name(code)]` (checkbox option), `[event][name]`, `[name][instance]`, `[event][name][instance]`.

    `instance` is an int or one of INSTANCE_SMART; `event` a unique event name or one of EVENT_SMART.
    """

    name: str
    code: str | None = None
    event: str | None = None
    instance: int | str | None = None


@dataclass(frozen=True)
class SmartVar(Node):
    """A smart variable used as a value, e.g. `[record-name]`."""

    name: str


@dataclass(frozen=True)
class FormName(Node):
    """A bare instrument name: only allowed as the first argument of the repeating-instance extensions."""

    name: str


@dataclass(frozen=True)
class Unary(Node):
    """`not x` (op 'not') or arithmetic sign (op '-' or '+')."""

    op: str
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Binary(Node):
    """Arithmetic (`+ - * / ^`) or comparison (`= <> < <= > >=`; `!=`/`==` are normalised)."""

    op: str
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class BoolOp(Node):
    """`a and b and c` / `a or b`: an unparenthesised chain of one operator, kept flat."""

    op: str  # 'and' | 'or'
    operands: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True)
class Call(Node):
    name: str  # lower case, always a known function (the parser refuses others)
    args: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args


COMPARISONS = frozenset({"=", "<>", "<", "<=", ">", ">="})
ARITHMETIC = frozenset({"+", "-", "*", "/", "^"})


def walk(node: Node) -> Iterator[Node]:
    """Every node, pre-order, without recursion (trees can be deep)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children()))
