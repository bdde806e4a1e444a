"""Text -> syntax tree, with positions and friendly syntax errors.

lark's LALR parser runs with the tree builder inlined (callbacks build our nodes while parsing), so no step
recurses over the input's nesting. Depth and length are bounded up front so the rest of trialkit (checker,
renderer, evaluator) can walk trees recursively without ever meeting RecursionError.
"""

from __future__ import annotations

import difflib
import re
import threading
from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from trialkit.errors import LogicSyntaxError
from trialkit.logic.ast import (
    EVENT_SMART,
    INSTANCE_SMART,
    SMART_VARIABLES,
    Binary,
    Bool,
    BoolOp,
    Call,
    FieldRef,
    FormName,
    Node,
    Number,
    SmartVar,
    String,
    Unary,
)
from trialkit.logic.functions import FUNCTIONS, INSTANCE_AGGREGATES

MAX_LENGTH = 100_000  # characters
MAX_DEPTH = 120  # nesting of parentheses / tree levels
# Terms (tree nodes: values, field references, operators, calls). Evaluation time grows linearly with them; the
# slowest shapes measured (text comparisons, sums of rounded divisions; kleene mode with explain) cost about 0.5-0.8 s
# of CPU per 1,000 terms on 1,000 records on a busy 2-core machine (load 6), or/and chains 0.15 s
# (benchmarks/bench_wide_logic.py). 2,000 bounds what one expression (one filterLogic request) can cost to about
# 1.5 s at worst, while a 500-condition `and` chain (1,501 terms) and sum() over 1,000 fields still fit.
MAX_NODES = 2_000

_FIELD_PART = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\(([^()]*)\))?(?::(value|raw))?$")
_EVENT_PART = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_OP_ALIASES = {"!=": "<>", "==": "="}


class _PositionedSyntaxError(LogicSyntaxError):
    """LogicSyntaxError whose line/col are absolute in the caller's file; the caret uses the expression's own."""

    def __init__(self, message: str, *, text: str, rel_line: int, rel_col: int, line: int, col: int, file):
        super().__init__(message, text=text, line=line, col=col, file=file)
        self.rel_line = rel_line
        self.rel_col = rel_col

    def caret(self) -> str:
        lines = self.text.splitlines() or [""]
        src = lines[self.rel_line - 1] if 0 < self.rel_line <= len(lines) else ""
        return f"{src}\n{' ' * max(self.rel_col - 1, 0)}^"


class _Ctx:
    def __init__(self, text: str, file: str | None, line: int, col: int) -> None:
        self.text = text
        self.file = file
        self.line = line
        self.col = col

    def pos(self, rel_line: int, rel_col: int) -> dict:
        return {"line": self.line + rel_line - 1, "col": rel_col + self.col - 1 if rel_line == 1 else rel_col}

    def error(self, message: str, rel_line: int, rel_col: int) -> LogicSyntaxError:
        p = self.pos(rel_line, rel_col)
        return _PositionedSyntaxError(
            message, text=self.text, rel_line=rel_line, rel_col=rel_col, line=p["line"], col=p["col"], file=self.file
        )


class _Build(Transformer):
    """Inline callbacks: lark calls these bottom-up while parsing."""

    def __init__(self, ctx: _Ctx) -> None:
        super().__init__(visit_tokens=False)
        self.ctx = ctx

    def _at(self, tok: Token) -> dict:
        return self.ctx.pos(tok.line, tok.column)

    def start(self, c):
        return c[0]

    def _chain(self, c, op):
        if len(c) == 1:
            return c[0]
        operands = tuple(c[0::2])
        return BoolOp(op, operands, **_pos_of(operands[0]))

    def or_chain(self, c):
        return self._chain(c, "or")

    def and_chain(self, c):
        return self._chain(c, "and")

    def not_op(self, c):
        return Unary("not", c[1], **self._at(c[0]))

    def compare(self, c):
        op = _OP_ALIASES.get(str(c[1]), str(c[1]))
        return Binary(op, c[0], c[2], **self._at(c[1]))

    def binop(self, c):
        return Binary(str(c[1]), c[0], c[2], **self._at(c[1]))

    def sign(self, c):
        return Unary(str(c[0]), c[1], **self._at(c[0]))

    def number(self, c):
        tok = c[0]
        text = str(tok)
        if text.startswith("."):
            text = "0" + text
        if text.endswith("."):
            text = text[:-1]
        return Number(text, **self._at(tok))

    def string(self, c):
        tok = c[0]
        return String(str(tok)[1:-1], **self._at(tok))

    def true(self, c):
        return Bool(True, **self._at(c[0]))

    def false(self, c):
        return Bool(False, **self._at(c[0]))

    def group(self, c):
        return c[1]

    def args(self, c):
        return tuple(c[0::2])

    def bare_name(self, c):
        tok = c[0]
        return FormName(str(tok), **self._at(tok))

    def ref(self, c):
        return _interpret_ref(c[0], self.ctx)

    def call(self, c):
        name_tok, args = c[0], c[2] or ()
        name = str(name_tok).lower()
        spec = FUNCTIONS.get(name)
        at = (name_tok.line, name_tok.column)
        if spec is None:
            near = difflib.get_close_matches(name, list(FUNCTIONS), n=1)
            hint = f"; did you mean {near[0]}()?" if near else ""
            raise self.ctx.error(f"unknown function '{name_tok}'{hint}", *at)
        n = len(args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            want = (
                f"{spec.min_args}"
                if spec.min_args == spec.max_args
                else f"at least {spec.min_args}"
                if spec.max_args is None
                else f"{spec.min_args} to {spec.max_args}"
            )
            raise self.ctx.error(f"{name}() takes {want} arguments, got {n}", *at)
        fixed = []
        for i, arg in enumerate(args):
            if isinstance(arg, FormName):
                low = arg.name.lower()
                if name in INSTANCE_AGGREGATES and i == 0:
                    fixed.append(arg)
                    continue
                if low in ("today", "now") and name in ("datediff", "age_at_date"):
                    fixed.append(String(low, line=arg.line, col=arg.col))
                    continue
                raise _error_at_node(self.ctx, f"unexpected name '{arg.name}': a field is written [{arg.name}]", arg)
            if name in INSTANCE_AGGREGATES and i == 0:
                raise _error_at_node(self.ctx, f"{name}() needs an instrument name as its first argument", arg)
            fixed.append(arg)
        return Call(name, tuple(fixed), **self._at(name_tok))


def _pos_of(node: Node) -> dict:
    return {"line": node.line, "col": node.col}


def _error_at_node(ctx: _Ctx, message: str, node: Node) -> LogicSyntaxError:
    # Nodes carry absolute positions; turn them back into expression-relative ones for the caret.
    rel_line = node.line - ctx.line + 1
    rel_col = node.col - ctx.col + 1 if rel_line == 1 else node.col
    return ctx.error(message, rel_line, rel_col)


def _interpret_ref(tok: Token, ctx: _Ctx) -> Node:
    parts = _BRACKET.findall(str(tok))
    at = (tok.line, tok.column)
    pos = ctx.pos(*at)

    def field_part(text: str) -> tuple[str, str | None]:
        m = _FIELD_PART.match(text)
        if not m:
            if text in SMART_VARIABLES:
                raise ctx.error(f"smart variable [{text}] cannot be used here", *at)
            raise ctx.error(
                f"'[{text}]' is not a field reference (expected [field], [field(code)] or [event][field])", *at
            )
        return m.group(1), (m.group(2).strip() if m.group(2) is not None else None)

    def instance_part(text: str) -> int | str | None:
        if text.isdigit():
            if int(text) < 1:
                raise ctx.error("instance numbers start at 1", *at)
            return int(text)
        if text in INSTANCE_SMART:
            return text
        return None

    if len(parts) == 1:
        if parts[0] in SMART_VARIABLES:
            return SmartVar(parts[0], **pos)
        name, code = field_part(parts[0])
        return FieldRef(name, code, **pos)
    if len(parts) == 2:
        inst = instance_part(parts[1])
        if inst is not None:
            name, code = field_part(parts[0])
            return FieldRef(name, code, instance=inst, **pos)
        if not (_EVENT_PART.match(parts[0]) or parts[0] in EVENT_SMART):
            raise ctx.error(f"'[{parts[0]}]' is not an event name", *at)
        name, code = field_part(parts[1])
        return FieldRef(name, code, event=parts[0], **pos)
    if len(parts) == 3:
        if not (_EVENT_PART.match(parts[0]) or parts[0] in EVENT_SMART):
            raise ctx.error(f"'[{parts[0]}]' is not an event name", *at)
        name, code = field_part(parts[1])
        inst = instance_part(parts[2])
        if inst is None:
            raise ctx.error(f"'[{parts[2]}]' is not an instance (a number or [last-instance] etc.)", *at)
        return FieldRef(name, code, event=parts[0], instance=inst, **pos)
    raise ctx.error("a reference has at most three brackets: [event][field][instance]", *at)


@cache
def _grammar() -> str:
    return resources.files("trialkit.logic").joinpath("grammar.lark").read_text(encoding="utf-8")


_local = threading.local()


def _parser() -> tuple[Lark, _Build]:
    """One LALR parser per thread (building it takes tens of milliseconds); its callbacks read `builder.ctx`."""
    if not hasattr(_local, "parser"):
        builder = _Build(_Ctx("", None, 1, 1))
        _local.parser = (Lark(_grammar(), parser="lalr", transformer=builder), builder)
    return _local.parser


def _lexer_only() -> Lark:
    """The parser's own Lark, for lexing only (its transformer runs on parsing, never on lexing): a second
    grammar analysis would cost every command start about 40 ms."""
    return _parser()[0]


_DESCRIBE = {
    "RPAR": "')'",
    "LPAR": "'('",
    "COMMA": "','",
    "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "POW": "'^'",
    "AND": "'and'",
    "OR": "'or'",
    "NOT": "'not'",
    "$END": "end of input",
}
_VALUE_START = {"NUMBER", "STRING", "REF", "NAME", "LPAR", "ADD_OP", "NOT", "TRUE", "FALSE"}


def _describe_token(tok: Token | None) -> str:
    if tok is None or tok.type == "$END":
        return "end of input"
    return f"'{tok}'"


def _open_parens(text: str, upto: int) -> list[str | None]:
    """Stack of the parentheses still open before `upto`: the function name for a call, None for a group."""
    stack: list[str | None] = []
    prev = None
    try:
        for tok in _lexer_only().lex(text[:upto]):
            if tok.type == "LPAR":
                stack.append(str(prev).lower() if prev is not None and prev.type == "NAME" else None)
            elif tok.type == "RPAR" and stack:
                stack.pop()
            prev = tok
    except UnexpectedInput:
        pass
    return stack


_OP_CHARS = "<>=!"
#: Operators as Excel, SQL, Python or JavaScript users write them, and REDCap's spelling.
_OP_TYPOS = {"=>": ">=", "=<": "<=", "===": "=", ">==": ">=", "<==": "<=", "=!": "<>", "!==": "<>", "<>=": "<>",
             "><": "<>"}
_CHAR_TYPOS = {
    "&&": "'&&' is not an operator: write 'and'",
    "&": "'&' is not an operator: write 'and'",
    "||": "'||' is not an operator: write 'or'",
    "|": "'|' is not an operator: write 'or'",
    "!": "'!' is not an operator: 'not equal' is written '<>'",
    "≥": "'≥' is not an operator: write '>='",
    "≤": "'≤' is not an operator: write '<='",
    "≠": "'≠' is not an operator: write '<>'",
    "%": "'%' is not an operator: the remainder is mod(a, b)",
}
_SMART_QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"


def _offset(text: str, line: int, col: int) -> int:
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


def _rel(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _typo(exc: UnexpectedInput, text: str) -> tuple[str, int, int] | None:
    """The fix for a mistake users coming from Excel, SQL or Python make, at the place it starts; None for others.
    Only operator characters are quoted: never the expression's values."""
    if isinstance(exc, UnexpectedEOF) or exc.line is None or exc.line < 1:
        return None
    at = _offset(text, exc.line, exc.column)
    if not 0 <= at < len(text):
        return None
    ch = text[at]
    if ch in _SMART_QUOTES:
        return ("curly quote (a word processor or spreadsheet put it there): text is written in straight quotes, "
                "'...' or \"...\"", *_rel(text, at))
    if ch in _OP_CHARS:
        start, end = at, at
        while start > 0 and text[start - 1] in _OP_CHARS:
            start -= 1
        while end < len(text) and text[end] in _OP_CHARS:
            end += 1
        op = text[start:end]
        if op in _OP_TYPOS:
            return f"'{op}' is not an operator: write '{_OP_TYPOS[op]}'", *_rel(text, start)
        if ch == "!":
            return _CHAR_TYPOS["!"], *_rel(text, at)
        if start == 0 and op == "=" and text[end:].strip():
            return "an expression does not start with '=' (it is not a spreadsheet formula): remove it", 1, 1
        return None
    for typo in ("&&", "||", "&", "|", "≥", "≤", "≠", "%"):
        if text.startswith(typo, at):
            return _CHAR_TYPOS[typo], *_rel(text, at)
    word = re.match(r"[A-Za-z_]+", text[at:])
    if word and word.group(0).lower() in ("null", "is"):
        return ("blank is written '' (no null or 'is' in REDCap logic): [field] = '' or [field] <> ''",
                *_rel(text, at))
    return None


def _syntax_message(exc: UnexpectedInput, text: str) -> str:
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if ch == "[":
            return "unclosed '[': a reference is written [field] on one line"
        if ch in "'\"":
            return f"unclosed string: missing closing {ch}"
        return f"unexpected character {ch!r}"
    expected = set(getattr(exc, "expected", None) or ())
    tok = exc.token if isinstance(exc, UnexpectedToken) else None
    found = _describe_token(tok)
    pos = exc.pos_in_stream if tok is not None and tok.type != "$END" else len(text)
    if pos is None:
        pos = len(text)
    stack = _open_parens(text, pos)
    inside = stack[-1] if stack else None
    if tok is not None and tok.type == "COMP_OP":
        return f"comparisons cannot be chained (found a second {found}); join them with 'and'"
    if expected == {"LPAR"}:
        return f"expected '(' after a function name, found {found}"
    if expected & _VALUE_START and not expected & {"RPAR", "COMMA", "$END"}:
        return f"expected a value (number, 'text', [field], function call or '('), found {found}"
    if stack and "RPAR" in expected:
        if inside is not None:
            sep = "',' or ')'" if "COMMA" in expected else "')'"
            return f"expected {sep} after arguments of {inside}, found {found}"
        return f"expected ')' to close '(', found {found}"
    if "$END" in expected:
        return f"expected an operator or end of expression, found {found}"
    names = sorted(_DESCRIBE.get(e, e) for e in expected)
    return f"expected {' or '.join(names)}, found {found}"


def _check_shape(text: str, ctx: _Ctx) -> None:
    if len(text) > MAX_LENGTH:
        raise ctx.error(f"expression is too long ({len(text)} characters; the limit is {MAX_LENGTH})", 1, 1)
    depth = 0
    quote = None
    comment = False
    line, col = 1, 0
    for i, ch in enumerate(text):
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            comment = False
        if comment:
            continue
        if quote:
            if ch == quote:
                quote = None
        elif ch == "#" or (ch == "/" and text.startswith("//", i)):
            # Quotes and parentheses in a comment (`# patient's age (years)`) are not code.
            comment = True
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise ctx.error(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", line, col)
        elif ch == ")":
            depth -= 1


def _check_depth(root: Node, ctx: _Ctx) -> None:
    stack = [(root, 1)]
    count = 0
    while stack:
        node, d = stack.pop()
        count += 1
        if d > MAX_DEPTH:
            raise _error_at_node(ctx, f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node)
        stack.extend((child, d + 1) for child in node.children())
    if count > MAX_NODES:
        raise ctx.error(
            f"expression is too large ({count:,} terms: values, fields, operators and calls; the limit is "
            f"{MAX_NODES:,}); split it, or compute part of it in a calculated field",
            1,
            1,
        )


def parse(text: str, *, file: str | None = None, line: int = 1, col: int = 1) -> Node:
    """Parse REDCap logic into a tree. Raise LogicSyntaxError (position, what was expected, caret()).

    `line`/`col` are where `text` starts in `file`, so positions in errors and nodes are the file's.
    """
    if not isinstance(text, str):
        raise TypeError("parse() needs a str")
    ctx = _Ctx(text, file, line, col)
    _check_shape(text, ctx)
    if not text.strip() or not _has_code(text):
        raise ctx.error("empty expression", 1, 1)
    parser, builder = _parser()
    builder.ctx = ctx
    try:
        tree = parser.parse(text)
    except LogicSyntaxError:
        raise
    except UnexpectedInput as exc:
        if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
            rel = _end_position(text)
        else:
            rel = (exc.line, exc.column)
        typo = _typo(exc, text)
        if typo is not None:
            raise ctx.error(typo[0], typo[1], typo[2]) from None
        raise ctx.error(_syntax_message(exc, text), *rel) from None
    _check_depth(tree, ctx)
    return tree


def _has_code(text: str) -> bool:
    try:
        return any(True for _ in _lexer_only().lex(text))
    except UnexpectedInput:
        return True


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1
