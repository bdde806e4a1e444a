"""Tree -> canonical REDCap logic text. `parse(render(tree)) == tree` for every tree the parser can produce."""

from __future__ import annotations

from trialkit.errors import Location, LogicError
from trialkit.logic.ast import Binary, Bool, BoolOp, Call, FieldRef, FormName, Node, Number, SmartVar, String, Unary
from trialkit.logic.functions import FUNCTIONS

# Binding strength, higher binds tighter; decides where parentheses are needed.
_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_CMP, _PREC_ADD, _PREC_MUL, _PREC_SIGN, _PREC_ATOM = range(8)


def _prec(node: Node) -> int:
    if isinstance(node, BoolOp):
        return _PREC_OR if node.op == "or" else _PREC_AND
    if isinstance(node, Unary):
        return _PREC_NOT if node.op == "not" else _PREC_SIGN
    if isinstance(node, Binary):
        if node.op in ("+", "-"):
            return _PREC_ADD
        if node.op in ("*", "/"):
            return _PREC_MUL
        if node.op == "^":
            return _PREC_ATOM  # always written (x)^(y), so it is atomic from outside
        return _PREC_CMP
    return _PREC_ATOM


def render(expr: Node, *, extensions: bool = False) -> str:
    """Canonical REDCap text. Raises LogicError for trialkit extensions unless `extensions=True`."""
    return _render(expr, extensions)


def _paren(node: Node, ext: bool, wrap: bool) -> str:
    text = _render(node, ext)
    return f"({text})" if wrap else text


def _render(node: Node, ext: bool) -> str:
    if isinstance(node, Number):
        return node.text
    if isinstance(node, String):
        if "'" not in node.value:
            return f"'{node.value}'"
        if '"' not in node.value:
            return f'"{node.value}"'
        raise LogicError(
            "a text value cannot hold both kinds of quote", location=Location(line=node.line, col=node.col)
        )
    if isinstance(node, Bool):
        return "true" if node.value else "false"
    if isinstance(node, SmartVar):
        return f"[{node.name}]"
    if isinstance(node, FormName):
        return node.name
    if isinstance(node, FieldRef):
        inner = node.name if node.code is None else f"{node.name}({node.code})"
        text = f"[{inner}]"
        if node.event is not None:
            text = f"[{node.event}]{text}"
        if node.instance is not None:
            text = f"{text}[{node.instance}]"
        return text
    if isinstance(node, BoolOp):
        mine = _prec(node)
        joiner = f" {node.op} "
        return joiner.join(_paren(o, ext, _prec(o) <= mine) for o in node.operands)
    if isinstance(node, Unary):
        if node.op == "not":
            return f"not {_paren(node.operand, ext, _prec(node.operand) < _PREC_CMP)}"
        wrap = _prec(node.operand) < _PREC_SIGN or isinstance(node.operand, Unary)
        return f"{node.op}{_paren(node.operand, ext, wrap)}"
    if isinstance(node, Binary):
        if node.op == "^":
            return f"({_render(node.left, ext)})^({_render(node.right, ext)})"
        mine = _prec(node)
        if mine == _PREC_CMP:
            # Comparisons do not chain: any comparison (or looser) operand needs parentheses.
            left = _paren(node.left, ext, _prec(node.left) <= mine)
            right = _paren(node.right, ext, _prec(node.right) <= mine)
        else:
            left = _paren(node.left, ext, _prec(node.left) < mine)
            right = _paren(node.right, ext, _prec(node.right) <= mine)
        return f"{left} {node.op} {right}"
    if isinstance(node, Call):
        spec = FUNCTIONS[node.name]
        if spec.extension and not ext:
            raise LogicError(
                f"{node.name}() is a trialkit extension and has no REDCap equivalent",
                location=Location(line=node.line, col=node.col),
            )
        return f"{node.name}({', '.join(_render(a, ext) for a in node.args)})"
    raise LogicError(f"cannot render {type(node).__name__}")
