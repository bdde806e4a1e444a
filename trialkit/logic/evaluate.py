"""Columnar evaluation: a syntax tree becomes polars expressions over a frame with one row per record.

No Python code runs per record: every node compiles to a `pl.Expr`, and all rows are computed at once.
See the package docstring (trialkit/logic/__init__.py) for the blank semantics of both modes.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import polars as pl

from trialkit.errors import DataError, Location, LogicError
from trialkit.logic.ast import (
    COMPARISONS,
    EVENT_SMART,
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
    walk,
)
from trialkit.logic.fields import FieldSpec, ref_column
from trialkit.logic.functions import INSTANCE_AGGREGATES
from trialkit.logic.rounding import php_round, round_value

MODES = ("redcap", "kleene")
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M")
_TIME_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
_LEGACY_FORMATS = {"mdy": ("%m-%d-%Y", "%m/%d/%Y"), "dmy": ("%d-%m-%Y", "%d/%m/%Y"), "ymd": ("%Y/%m/%d",)}
_UNIT_SECONDS = {"y": 365.2425 * 86400, "M": 30.44 * 86400, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_INTEGER_CODE = re.compile(r"^-?\d{1,15}$")
_NUMERIC_TEXT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_INTEGER_TEXT = r"^\s*[+-]?\d+\s*$"
_MAX_BITS = 64
INSTANCE_COLUMN = "redcap_repeat_instance"


def _err(message: str, node: Node | None = None) -> LogicError:
    return LogicError(message, location=Location(line=node.line, col=node.col) if node is not None else None)


@dataclass
class Col:
    """A compiled value: its expression, its kind, and (kleene + explain) the bits of missing fields."""

    expr: pl.Expr
    kind: str  # 'bool' | 'num' | 'str' | 'date' | 'null' (the blank literal)
    mask: pl.Expr | None = None  # UInt64: bit i set = referenced field i is missing and made this unknown
    bounds: tuple[pl.Expr, pl.Expr] | None = None  # kleene counts over instances: (definite, possible)
    const: object = None  # Python value of a literal
    is_const: bool = False
    has_time: bool = False
    stored: pl.Expr | None = None  # a text column's value as stored, before typing ('' -> null)


@dataclass
class _Aux:
    """Columns joined onto the frame before evaluation: instance aggregates and [field][n] references."""

    columns: dict[int, str] = field(default_factory=dict)  # id(node) -> column name (value)
    lo_hi: dict[int, tuple[str, str]] = field(default_factory=dict)  # id(node) -> (lo, hi) columns (kleene)
    masks: dict[int, str] = field(default_factory=dict)  # id(node) -> mask column


_LITERALS: dict[tuple, pl.Expr] = {}


def _lit(value, dtype) -> pl.Expr:
    """A typed literal. Expressions are immutable, so each (type, value, dtype) is built once: building them was a
    third of the time of compiling a rule set, which screening one candidate pays on every call."""
    key = (type(value), value, dtype)
    try:
        hit = _LITERALS.get(key)
    except TypeError:  # an unhashable value: built each time
        return pl.lit(value, dtype=dtype)
    if hit is None:
        hit = pl.lit(value, dtype=dtype)
        if len(_LITERALS) < 4096:  # literals come from rule texts: a bound keeps a generated flood from growing it
            _LITERALS[key] = hit
    return hit


_NULL_BOOL = _lit(None, pl.Boolean)
_ZERO_MASK = _lit(0, pl.UInt64)


class Compiler:
    """Compiles nodes to polars expressions for one frame shape (schema) and one mode."""

    def __init__(
        self,
        schema: Mapping[str, pl.DataType],
        *,
        mode: str = "redcap",
        as_of: date | datetime | None = None,
        fields: Mapping[str, FieldSpec] | None = None,
        record_id: str | None = None,
        missing_codes: Sequence[str] = (),
        explain: bool = False,
        kinds: Mapping[str, str] | None = None,
        bits: Mapping[str, int] | None = None,
        aux: _Aux | None = None,
        missing_columns: str = "error",
        in_instances: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise LogicError(f"unknown mode {mode!r}: use 'redcap' or 'kleene'")
        self.schema = dict(schema)
        self.mode = mode
        self.kleene = mode == "kleene"
        self.as_of = as_of
        self.fields = fields or {}
        self.record_id = record_id
        self.missing_codes = tuple(missing_codes)
        self.explain = explain and self.kleene
        self.kinds = dict(kinds or {})
        self.bits = dict(bits or {})
        self.aux = aux or _Aux()
        self.missing_columns = missing_columns
        self.in_instances = in_instances
        # Sub-expressions already computed into a column (evaluate_many's common-subexpression stage).
        self.shared: dict[Node, Col] = {}

    # ---- leaves ---------------------------------------------------------------------------------------
    def column_kind(self, column: str, spec: FieldSpec | None, is_option: bool) -> tuple[str, bool]:
        """(kind, flag) of a data column, from the FieldSpec, the dtype, or content inference. The flag is
        has_time for 'date'; for 'num' it marks text holding integer choice codes (read by the integer parser)."""
        dtype = self.schema.get(column)
        if dtype is not None and dtype != pl.String and dtype != pl.Null:
            if dtype == pl.Boolean:
                return "bool", False
            if dtype.is_numeric():
                return "num", False
            if dtype == pl.Date:
                return "date", False
            if isinstance(dtype, pl.Datetime):
                return "date", True
            return "str", False
        if is_option:
            # Checkbox options export '1'/'0': read them as numbers unless the content says otherwise.
            return ("str", False) if self.kinds.get(column) == "str" else ("num", False)
        if spec is not None:
            k = spec.kind
            if k == "code" and spec.codes and all(_INTEGER_CODE.match(c) for c in spec.codes):
                # Integer choice codes (yes/no, 0-3 item scores...) are typed once as numbers: every REDCap
                # comparison with them ('1', 1, 1.0) then runs as a cheap numeric comparison.
                return "num", dtype == pl.String
            if k == "num":
                return "num", False
            if k in ("date", "datetime"):
                return "date", k == "datetime"
            return "str", False
        # A column no study describes is text, whatever it holds: typing it by its content made a record's result
        # depend on the others read with it ('' = 10 was true beside a date in another row). Text is compared
        # and computed cell by cell as REDCap does (numbers as numbers, ISO dates in date functions).
        return "str", False

    def leaf(self, column: str, spec: FieldSpec | None, is_option: bool, node: Node, label: str) -> Col:
        if column not in self.schema:
            if self.missing_columns == "blank":
                base = _lit(None, pl.String)
                kind, has_time = "str", False
            else:
                raise DataError(f"the data has no column {column!r} (needed for [{label}])")
        else:
            kind, has_time = self.column_kind(column, spec, is_option)
            base = self._typed(pl.col(column), self.schema[column], kind, has_time)
        col = Col(base, kind, has_time=has_time and kind == "date")
        if self.schema.get(column) == pl.String:
            # Typing reads a missing-data code in a number or coded field ('UNK' in [weight]) as blank; the
            # missing-code tests look at the stored text instead. Lazy: computed only where those tests use it.
            col.stored = pl.when(pl.col(column) != "").then(pl.col(column))
        if self.explain:
            bit = self.bits.get(label)
            if bit is not None:
                col.mask = pl.when(base.is_null()).then(_lit(1 << bit, pl.UInt64)).otherwise(_ZERO_MASK)
        return col

    def _typed(self, e: pl.Expr, dtype: pl.DataType, kind: str, has_time: bool) -> pl.Expr:
        if dtype == pl.String or dtype == pl.Null:
            # Values are taken as stored (REDCap exports them trimmed): no per-row stripping on the hot path.
            e = e.cast(pl.String)
            if kind == "num" and has_time:  # integer choice codes: the fast integer parser
                return e.str.to_integer(strict=False).cast(pl.Float64)
            if kind == "num":
                x = e.cast(pl.Float64, strict=False)
                return pl.when(x.is_finite()).then(x)  # 'inf'/'nan' text is not a number
            if kind == "date" and not has_time:
                return e.str.strptime(pl.Date, "%Y-%m-%d", strict=False, exact=True)
            if kind == "date":
                return _parse_dates(e, formats=_TIME_FORMATS)
            return pl.when(e != "").then(e)
        if kind == "num":
            return e.cast(pl.Float64)
        if kind == "date":
            return e if dtype == pl.Date else e.cast(pl.Datetime("us"))
        if isinstance(dtype, pl.Time):
            return e.dt.strftime("%H:%M")
        if kind == "str":
            return e.cast(pl.String)
        return e

    def field_ref(self, node: FieldRef) -> Col:
        spec = self.fields.get(node.name)
        if node.instance is not None:
            key = id(node)
            if key in self.aux.columns:
                name = self.aux.columns[key]
                return self.leaf(name, spec, node.code is not None, node, _label(node))
            if node.instance == "current-instance":
                node = FieldRef(node.name, node.code, event=node.event, line=node.line, col=node.col)
            else:
                raise _err(f"{_label(node)}: instance references need `instances` data for the field's form", node)
        if node.event in EVENT_SMART and node.event != "event-name":
            raise _err(f"[{node.event}] is not supported by the evaluator (it needs the event schedule)", node)
        if spec is not None and spec.field_type == "checkbox" and node.code is None:
            raise _err(f"checkbox field [{node.name}] needs an option: [{node.name}(code)]", node)
        return self.leaf(ref_column(node), spec, node.code is not None, node, _label(node))

    def smart(self, node: SmartVar) -> Col:
        column = {
            "record-name": self.record_id,
            "event-name": "redcap_event_name",
            "record-dag-name": "redcap_data_access_group",
            "current-instance": INSTANCE_COLUMN,
        }.get(node.name)
        if column is None or column not in self.schema:
            raise _err(f"smart variable [{node.name}] is not available in this data", node)
        kind = "num" if node.name == "current-instance" else "str"
        return Col(self._typed(pl.col(column), self.schema[column], kind, False), kind)

    def div(self, x: pl.Expr, y: pl.Expr) -> pl.Expr:
        """x / y by IEEE division in every row, whatever the operands' lengths.

        polars divides a column by a constant by multiplying with its reciprocal (242 * 0.1 = 24.200000000000003,
        where 242 / 10 = 24.2) and picks that kernel when an operand has length 1, so a record's value depended on
        how many records were evaluated with it. Adding a column of zeros makes the divisor a full column: every row
        then takes the element-wise kernel, correctly rounded as REDCap's PHP and JavaScript divide. `x` is used
        once (nested divisions do not double the plan)."""
        zero = pl.col(ZERO_COLUMN) if ZERO_COLUMN in self.schema else _ROW_ZERO
        return x / (y + zero)

    def finite(self, e: pl.Expr) -> pl.Expr:
        """NaN and infinities blank (`_finite`), as long as the frame: numpy's pass over a constant operand (`abs(''
        < [a])`, which REDCap mode folds to false) gives one value, which polars does not broadcast beside the
        frame's columns. Paired with the zero column in a struct, the constant is spread to every row first;
        the value itself is untouched (-0.0 stays -0.0, which adding the zeros would not keep)."""
        zero = pl.col(ZERO_COLUMN) if ZERO_COLUMN in self.schema else _ROW_ZERO
        pair = pl.struct(e.cast(pl.Float64).alias("v"), zero.alias("z"))
        return _finite(pair.struct.field("v"))

    # ---- conversions ----------------------------------------------------------------------------------
    def num(self, c: Col) -> pl.Expr:
        if c.kind == "num":
            return c.expr
        if c.kind == "bool":
            return c.expr.cast(pl.Float64)
        if c.kind == "str":
            if c.is_const:
                v = _to_float(c.const)
                return _lit(v, pl.Float64)
            return c.expr.str.strip_chars().cast(pl.Float64, strict=False)
        return _lit(None, pl.Float64)

    def text(self, c: Col) -> pl.Expr:
        if c.kind == "str":
            return c.expr
        if c.kind == "num":
            if c.is_const:
                return _lit(_format_number(c.const), pl.String)
            x = c.expr
            return (
                pl.when(x.is_finite() & (x == x.round(0)) & (x.abs() < 1e15))
                .then(x.cast(pl.Int64, strict=False).cast(pl.String))
                .otherwise(x.cast(pl.String))
            )
        if c.kind == "bool":
            return pl.when(c.expr).then(pl.lit("1")).when(c.expr.not_()).then(pl.lit("0")).otherwise(None)
        if c.kind == "date":
            return c.expr.dt.strftime("%Y-%m-%d %H:%M" if c.has_time else "%Y-%m-%d")
        return _lit(None, pl.String)

    def subject(self, c: Col, call: Call, index: int) -> pl.Expr:
        """Text view of a string method's subject (argument `index`); a row-independent subject is spread over
        the rows when another argument varies by row (polars does not broadcast a scalar subject then)."""
        e = self.text(c)
        others = [a for i, a in enumerate(call.args) if i != index]
        if _scalar(call.args[index]) and not all(_scalar(a) for a in others):
            return spread(e)
        return e

    @staticmethod
    def text_const(c: Col) -> str:
        if c.kind == "bool":
            return "1" if c.const else "0"
        return _format_number(c.const) if c.kind == "num" else str(c.const)

    def date(self, c: Col, legacy: str | None = None) -> tuple[pl.Expr, bool]:
        """(expression, has_time): pl.Date for plain dates (cheaper calendar maths), pl.Datetime("us") otherwise."""
        if c.kind == "date":
            return c.expr, c.has_time
        if c.kind == "str":
            if c.is_const:
                value, has_time = _parse_date_const(str(c.const), legacy)
                if has_time:
                    return _lit(value, pl.Datetime("us")), True
                return _lit(value.date() if value else None, pl.Date), False
            return _parse_dates(c.expr.str.strip_chars(), legacy), True
        return _lit(None, pl.Date), False

    @staticmethod
    def align(x: tuple[pl.Expr, bool], y: tuple[pl.Expr, bool]) -> tuple[pl.Expr, pl.Expr, bool]:
        """Two date values on one footing: both pl.Date, or both pl.Datetime("us") when either has a time."""
        if x[1] or y[1]:
            return x[0].cast(pl.Datetime("us")), y[0].cast(pl.Datetime("us")), True
        return x[0], y[0], False

    def truth(self, c: Col) -> pl.Expr:
        """Boolean view (null = unknown). Numbers: non-zero; text: a number's truth, else non-blank."""
        if c.kind == "bool":
            return c.expr
        if c.kind == "num":
            return c.expr != 0
        if c.kind == "str":
            n = self.num(c)
            return pl.when(n.is_not_null()).then(n != 0).when(c.expr.is_not_null()).then(True).otherwise(None)
        if c.kind == "date":
            return pl.when(c.expr.is_not_null()).then(True).otherwise(None)
        return _NULL_BOOL

    def cond(self, c: Col) -> pl.Expr:
        """Truth as used by and/or/not/if: REDCap mode reads unknown as false."""
        t = self.truth(c)
        return t if self.kleene else t.fill_null(False)

    # ---- masks ----------------------------------------------------------------------------------------
    def _merge(self, result: pl.Expr, parts: Sequence[Col]) -> pl.Expr | None:
        if not self.explain:
            return None
        masks = [p.mask for p in parts if p.mask is not None]
        if not masks:
            return None
        return pl.when(result.is_null()).then(_or_all(masks)).otherwise(_ZERO_MASK)

    def _out(self, expr: pl.Expr, kind: str, parts: Sequence[Col], **kw) -> Col:
        return Col(expr, kind, mask=self._merge(expr, parts), **kw)

    # ---- nodes ----------------------------------------------------------------------------------------
    def compile(self, node: Node) -> Col:
        hit = self.shared.get(node) if self.shared else None
        if hit is not None:
            return hit
        method = getattr(self, f"_c_{type(node).__name__}", None)
        if method is None:
            raise _err(f"cannot evaluate {type(node).__name__}", node)
        return method(node)

    def _c_Number(self, node: Number) -> Col:
        v = float(node.text)
        return Col(_lit(v, pl.Float64), "num", const=v, is_const=True)

    def _c_String(self, node: String) -> Col:
        if node.value == "":
            return Col(_lit(None, pl.String), "null", const=None, is_const=True)
        return Col(_lit(node.value, pl.String), "str", const=node.value, is_const=True)

    def _c_Bool(self, node: Bool) -> Col:
        return Col(_lit(node.value, pl.Boolean), "bool", const=node.value, is_const=True)

    def _c_FieldRef(self, node: FieldRef) -> Col:
        return self.field_ref(node)

    def _c_SmartVar(self, node: SmartVar) -> Col:
        return self.smart(node)

    def _c_FormName(self, node: FormName) -> Col:
        raise _err(f"unexpected instrument name '{node.name}'", node)

    def _c_Unary(self, node: Unary) -> Col:
        c = self.compile(node.operand)
        if node.op == "not":
            return self._out(self.cond(c).not_(), "bool", [c])
        x = self.num(c)
        return self._out(-x if node.op == "-" else x, "num", [c])

    def _c_BoolOp(self, node: BoolOp) -> Col:
        parts = [self.compile(o) for o in node.operands]
        exprs = [self.cond(p) for p in parts]
        # One n-ary node, not a chain of n binary ones: polars' optimiser is quadratic in the depth of a chain
        # (a 2,000-term `or` took a minute). Both follow Kleene logic (null | true = true, null & false = false).
        out = pl.any_horizontal(exprs) if node.op == "or" else pl.all_horizontal(exprs)
        return self._out(out, "bool", parts)

    def _c_Binary(self, node: Binary) -> Col:
        a, b = self.compile(node.left), self.compile(node.right)
        if node.op in COMPARISONS:
            return self._out(self.compare(node.op, a, b), "bool", [a, b])
        x, y = self.num(a), self.num(b)
        if node.op == "+":
            e = x + y
        elif node.op == "-":
            e = x - y
        elif node.op == "*":
            e = x * y
        elif node.op == "/":
            e = self.div(x, y)  # x / 0 is infinite or NaN: blank, like every non-finite result below
        else:
            e = x.pow(y)
        e = self.finite(e)
        return self._out(e, "num", [a, b])

    # ---- comparison -----------------------------------------------------------------------------------
    def compare(self, op: str, a: Col, b: Col) -> pl.Expr:
        if a.kind == "null" or b.kind == "null":
            other = b if a.kind == "null" else a
            if op in ("=", "<>"):
                blank = self._is_blank(other)
                out = blank if op == "=" else blank.not_()
                if self.kleene and other.kind == "bool" and not other.is_const:
                    return pl.when(other.expr.is_null()).then(None).otherwise(out)  # an unknown truth is not blank
                return out
            # Ordering against the blank literal decides nothing.
            return _NULL_BOOL if self.kleene else _lit(False, pl.Boolean)
        if a.bounds is not None or b.bounds is not None:
            return self._compare_bounds(op, a, b)
        not_a_date = [
            c for c in (a, b) if c.is_const and c.kind == "str" and _parse_date_const(str(c.const), None)[0] is None
        ]
        if (a.kind == "date" or b.kind == "date") and not not_a_date:
            x, y, _ = self.align(self.date(a), self.date(b))
            return self._finish(op, x, y)
        if a.kind in ("num", "bool") and b.kind in ("num", "bool"):
            return self._finish(op, self.num(a), self.num(b))
        # A text literal decides statically which comparison applies: non-numeric text can only compare as text,
        # numeric text against a number compares as a number.
        for const, other in ((b, a), (a, b)):
            if const.is_const and const.kind == "str":
                if _to_float(const.const) is None:
                    return self._finish(op, self.text(a), self.text(b))
                if other.kind in ("num", "bool"):
                    return self._finish(op, self.num(a), self.num(b))
        # Text involved: numbers compare as numbers when both sides read as numbers, otherwise as text.
        xn, yn = self.num(a), self.num(b)
        xs, ys = self.text(a), self.text(b)
        numeric = self._cmp(op, xn, yn)
        textual = self._cmp(op, xs, ys)
        both = xn.is_not_null() & yn.is_not_null()
        out = pl.when(both).then(numeric).otherwise(textual)
        return self._finish_expr(op, out, xs, ys)

    def _is_blank(self, c: Col) -> pl.Expr:
        if c.kind == "num" and c.is_const:
            return _lit(False, pl.Boolean)
        return c.expr.is_null()

    @staticmethod
    def _cmp(op: str, x: pl.Expr, y: pl.Expr) -> pl.Expr:
        if op == "=":
            return x == y
        if op == "<>":
            return x != y
        if op == "<":
            return x < y
        if op == "<=":
            return x <= y
        if op == ">":
            return x > y
        return x >= y

    def _finish(self, op: str, x: pl.Expr, y: pl.Expr) -> pl.Expr:
        if not self.kleene and op == "=":
            return x.eq_missing(y)  # blank = blank is true, blank = value false
        if not self.kleene and op == "<>":
            return x.ne_missing(y)
        return self._finish_expr(op, self._cmp(op, x, y), x, y)

    def _finish_expr(self, op: str, out: pl.Expr, x: pl.Expr, y: pl.Expr) -> pl.Expr:
        """Apply the mode's blank rule to a comparison whose operands may be null."""
        if self.kleene:
            return out  # null operand -> null (unknown)
        if op == "=":
            return pl.when(x.is_null() | y.is_null()).then(x.is_null() & y.is_null()).otherwise(out)
        if op == "<>":
            return pl.when(x.is_null() | y.is_null()).then(x.is_null() != y.is_null()).otherwise(out)
        return out.fill_null(False)  # documented choice: blank under < <= > >= is false

    def _compare_bounds(self, op: str, a: Col, b: Col) -> pl.Expr:
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "<>": "<>"}
        if a.bounds is None:
            a, b, op = b, a, flip[op]
        lo, hi = a.bounds
        k = self.num(b)
        if op == ">=":
            yes, no = lo >= k, hi < k
        elif op == ">":
            yes, no = lo > k, hi <= k
        elif op == "<=":
            yes, no = hi <= k, lo > k
        elif op == "<":
            yes, no = hi < k, lo >= k
        else:
            yes, no = (lo == k) & (hi == k), (k < lo) | (k > hi)
            if op == "<>":
                yes, no = no, yes
        return pl.when(k.is_null()).then(None).when(yes).then(True).when(no).then(False).otherwise(None)

    # ---- functions ------------------------------------------------------------------------------------
    def _c_Call(self, node: Call) -> Col:
        if node.name in INSTANCE_AGGREGATES:
            return self._aggregate(node)
        handler = getattr(self, f"_f_{node.name}")
        return handler(node)

    def _args(self, node: Call) -> list[Col]:
        return [self.compile(a) for a in node.args]

    def _f_if(self, node: Call) -> Col:
        c, a, b = self._args(node)
        t = self.truth(c)
        kind, x, y, has_time = self._unify(a, b)
        if self.kleene:
            e = pl.when(t.is_null()).then(None).when(t).then(x).otherwise(y)
        else:
            e = pl.when(t.fill_null(False)).then(x).otherwise(y)
        mask = None
        if self.explain:
            z = _ZERO_MASK
            cm, am, bm = (p.mask if p.mask is not None else z for p in (c, a, b))
            mask = pl.when(t.is_null()).then(cm).when(t).then(am).otherwise(bm)
            mask = pl.when(e.is_null()).then(mask).otherwise(z)
        return Col(e, kind, mask=mask, has_time=has_time)

    def _unify(self, a: Col, b: Col) -> tuple[str, pl.Expr, pl.Expr, bool]:
        kinds = {a.kind, b.kind} - {"null"}
        if not kinds:
            return "null", _lit(None, pl.String), _lit(None, pl.String), False
        if kinds == {"date"}:
            da = self.date(a) if a.kind != "null" else None
            db = self.date(b) if b.kind != "null" else None
            has_time = any(d is not None and d[1] for d in (da, db))
            dtype = pl.Datetime("us") if has_time else pl.Date
            x = da[0].cast(dtype) if da is not None else _lit(None, dtype)
            y = db[0].cast(dtype) if db is not None else _lit(None, dtype)
            return "date", x, y, has_time
        if len(kinds) == 1:
            kind = kinds.pop()
        elif kinds <= {"num", "bool"}:
            kind = "num"
        else:
            kind = "str"
        conv = {"num": self.num, "str": self.text, "bool": self.truth}[kind]
        x = conv(a) if a.kind != "null" else _null_of(kind)
        y = conv(b) if b.kind != "null" else _null_of(kind)
        return kind, x, y, False

    def _today(self, node: Node, which: str) -> datetime:
        if self.as_of is None:
            raise _err(f"'{which}' needs an as_of date (the evaluator never reads the clock)", node)
        if which == "today" or not isinstance(self.as_of, datetime):
            return datetime(self.as_of.year, self.as_of.month, self.as_of.day)
        return self.as_of.replace(tzinfo=None)

    def _date_arg(self, node: Call, c: Col, arg: Node, legacy: str | None = None) -> tuple[pl.Expr, bool]:
        if c.is_const and isinstance(c.const, str) and c.const.lower() in ("today", "now"):
            which = c.const.lower()
            when = self._today(node, which)
            if which == "today":
                return _lit(when.date(), pl.Date), False
            return _lit(when, pl.Datetime("us")), True
        return self.date(c, legacy)

    def _f_datediff(self, node: Call) -> Col:
        args = self._args(node)
        d1, d2, unit = args[0], args[1], args[2]
        if not (unit.is_const and unit.const in _UNIT_SECONDS):
            raise _err("datediff() unit must be one of 'y', 'M', 'd', 'h', 'm', 's'", node.args[2])
        legacy, signed = None, False
        for extra, arg in zip(args[3:], node.args[3:], strict=True):
            if extra.kind == "bool" and extra.is_const:
                signed = bool(extra.const)
            elif extra.is_const and str(extra.const).lower() in ("ymd", "mdy", "dmy"):
                legacy = str(extra.const).lower()
            elif extra.is_const and extra.kind == "num":
                signed = bool(extra.const)
            else:
                raise _err("datediff() takes a date format ('ymd', 'mdy', 'dmy') and/or true/false for signed", arg)
        x, y, _ = self.align(
            self._date_arg(node, d1, node.args[0], legacy), self._date_arg(node, d2, node.args[1], legacy)
        )
        milliseconds = (y - x).dt.total_milliseconds().cast(pl.Float64)
        e = self.div(milliseconds, _lit(_UNIT_SECONDS[unit.const] * 1000.0, pl.Float64))
        if not signed:
            e = e.abs()
        return self._out(e, "num", [d1, d2])

    def _f_age_at_date(self, node: Call) -> Col:
        args = self._args(node)
        dob, at, _ = self.align(
            self._date_arg(node, args[0], node.args[0]), self._date_arg(node, args[1], node.args[1])
        )
        decimal = len(args) > 2 and bool(args[2].const)
        if decimal:
            milliseconds = (at - dob).dt.total_milliseconds().cast(pl.Float64)
            e = self.div(milliseconds, _lit(_UNIT_SECONDS["y"] * 1000.0, pl.Float64))
        else:
            years = at.dt.year() - dob.dt.year()
            before = _day_key(at) < _day_key(dob)
            e = (years - before.cast(pl.Int32)).cast(pl.Float64)
        return self._out(e, "num", args[:2])

    def _part(self, node: Call, part: str) -> Col:
        (c,) = self._args(node)
        d, _ = self._date_arg(node, c, node.args[0])
        e = getattr(d.dt, part)().cast(pl.Float64)
        return self._out(e, "num", [c])

    def _f_year(self, node: Call) -> Col:
        return self._part(node, "year")

    def _f_month(self, node: Call) -> Col:
        return self._part(node, "month")

    def _f_day(self, node: Call) -> Col:
        return self._part(node, "day")

    def _rounding(self, node: Call, how: str) -> Col:
        """REDCap's decimal rounding (trialkit/logic/rounding.py), one whole column at a time."""
        args = self._args(node)
        x = self.num(args[0])
        if len(args) == 1 or args[1].is_const:
            places = _to_float(args[1].const) if len(args) > 1 else 0.0
            if args[0].is_const:
                value = round_value(_to_float(args[0].const), places, how)
                if value is None:  # blank: a null number, not a constant (constants are never blank numbers)
                    return Col(_lit(None, pl.Float64), "num")
                return Col(_lit(value, pl.Float64), "num", const=value, is_const=True)
            if places is None:
                return Col(_lit(None, pl.Float64), "num")
            e = x.map_batches(
                lambda s: _from_numpy(php_round(s.to_numpy(), places, how)), pl.Float64, is_elementwise=True
            )
        else:
            pair = pl.struct(x.alias("x"), self.num(args[1]).alias("n"))
            e = pair.map_batches(
                lambda s: _from_numpy(
                    php_round(s.struct.field("x").to_numpy(), s.struct.field("n").to_numpy(), how)
                ),
                pl.Float64,
                is_elementwise=True,
            )
        return self._out(e, "num", args)

    def _f_round(self, node: Call) -> Col:
        return self._rounding(node, "round")

    def _f_roundup(self, node: Call) -> Col:
        return self._rounding(node, "up")

    def _f_rounddown(self, node: Call) -> Col:
        return self._rounding(node, "down")

    def _math(self, node: Call, fn) -> Col:
        args = self._args(node)
        return self._out(self.finite(fn(*[self.num(a) for a in args])), "num", args)

    def _f_abs(self, node: Call) -> Col:
        return self._math(node, lambda x: x.abs())

    def _f_sqrt(self, node: Call) -> Col:
        return self._math(node, lambda x: x.sqrt())  # NaN below 0: blank

    def _f_exponential(self, node: Call) -> Col:
        return self._math(node, lambda x: x.exp())

    def _f_log(self, node: Call) -> Col:
        def fn(x, base=None):
            # log of 0 or less is -inf or NaN, and a base of 1 divides by 0: all blank through _finite.
            ln = x.log()
            return ln if base is None else self.div(ln, base.log())

        return self._math(node, fn)

    def _f_mod(self, node: Call) -> Col:
        # C's fmod, exact like JavaScript's % (the sign of a; blank for b = 0), one numpy call per column.
        a, b = self._args(node)
        pair = pl.struct(self.num(a).alias("a"), self.num(b).alias("b"))
        e = pair.map_batches(_fmod, pl.Float64, is_elementwise=True)
        return self._out(e, "num", [a, b])

    def _horizontal(self, node: Call, how: str) -> Col:
        args = self._args(node)
        xs = [self.num(a) for a in args]
        any_value = pl.any_horizontal([x.is_not_null() for x in xs])
        if how == "sum":
            e = pl.when(any_value).then(pl.sum_horizontal(xs)).otherwise(None)
        elif how == "min":
            e = pl.min_horizontal(xs)
        elif how == "max":
            e = pl.max_horizontal(xs)
        elif how == "mean":
            e = pl.mean_horizontal(xs)
        elif how == "median":
            e = pl.concat_list(xs).list.median()
        else:
            e = pl.concat_list(xs).list.std(ddof=1)
        return self._out(self.finite(e), "num", args)

    def _f_sum(self, node: Call) -> Col:
        return self._horizontal(node, "sum")

    def _f_min(self, node: Call) -> Col:
        return self._horizontal(node, "min")

    def _f_max(self, node: Call) -> Col:
        return self._horizontal(node, "max")

    def _f_mean(self, node: Call) -> Col:
        return self._horizontal(node, "mean")

    def _f_median(self, node: Call) -> Col:
        return self._horizontal(node, "median")

    def _f_stdev(self, node: Call) -> Col:
        return self._horizontal(node, "stdev")

    def _test(self, e: pl.Expr, of: Col) -> Col:
        """Tests of data (blank, number, missing code) are never unknown. A truth value is not data: in kleene
        mode an unknown condition under test stays unknown."""
        e = e.fill_null(False)
        if self.kleene and of.kind == "bool" and not of.is_const:
            e = pl.when(of.expr.is_null()).then(None).otherwise(e)
            return Col(e, "bool", mask=self._merge(e, [of]))
        return Col(e, "bool")

    def _f_isnumber(self, node: Call) -> Col:
        (c,) = self._args(node)
        if c.kind == "num":
            return self._test(c.expr.is_not_null() & c.expr.is_finite(), c)
        return self._test(self.text(c).str.contains(_NUMERIC_TEXT), c)

    def _f_isinteger(self, node: Call) -> Col:
        (c,) = self._args(node)
        if c.kind == "num":
            return self._test(c.expr.is_finite() & (c.expr == c.expr.round(0)), c)
        return self._test(self.text(c).str.contains(_INTEGER_TEXT), c)

    def _codes(self, c: Col, codes: Sequence[str] | None = None) -> pl.Expr:
        allowed = list(self.missing_codes if codes is None else [x for x in codes if x in self.missing_codes])
        if not allowed:
            return _lit(False, pl.Boolean)
        text = c.stored if c.stored is not None else self.text(c)
        return text.str.strip_chars().is_in(allowed)

    def _stored_blank(self, c: Col) -> pl.Expr:
        return c.stored.is_null() if c.stored is not None else self._is_blank(c)

    def _f_isblankormissingcode(self, node: Call) -> Col:
        (c,) = self._args(node)
        return self._test(self._stored_blank(c) | self._codes(c), c)

    def _f_isblanknotmissingcode(self, node: Call) -> Col:
        (c,) = self._args(node)
        return self._test(self._stored_blank(c), c)

    def _f_ismissingcode(self, node: Call) -> Col:
        (c,) = self._args(node)
        return self._test(self._codes(c), c)

    def _f_hasmissingcode(self, node: Call) -> Col:
        args = self._args(node)
        codes = None
        if len(args) > 1:
            if not args[1].is_const:
                raise _err("hasmissingcode() takes its code list as a quoted text, e.g. 'UNK,NA'", node.args[1])
            listed = "" if args[1].const is None else self.text_const(args[1])
            codes = [x.strip() for x in listed.split(",") if x.strip()]
        return self._test(self._codes(args[0], codes), args[0])

    def _textpred(self, node: Call, how: str) -> Col:
        hay, needle = self._args(node)
        if needle.is_const and needle.kind in ("str", "num") and not _scalar(node.args[0]):
            # A literal needle becomes a case-insensitive regex: no lower-cased copy of every row.
            lit = re.escape(self.text_const(needle))
            pattern = {"contains": lit, "not_contain": lit, "starts": f"^{lit}", "ends": f"{lit}$"}[how]
            e = self.text(hay).str.contains(f"(?i){pattern}")
        else:
            h, n = self.subject(hay, node, 0).str.to_lowercase(), self.text(needle).str.to_lowercase()
            if how == "starts":
                e = h.str.starts_with(n)
            elif how == "ends":
                e = h.str.ends_with(n)
            else:
                e = h.str.contains(n, literal=True)
        if how == "not_contain":
            e = e.not_()
        if not self.kleene:
            e = e.fill_null(False)
        return self._out(e, "bool", [hay, needle])

    def _f_contains(self, node: Call) -> Col:
        return self._textpred(node, "contains")

    def _f_not_contain(self, node: Call) -> Col:
        return self._textpred(node, "not_contain")

    def _f_starts_with(self, node: Call) -> Col:
        return self._textpred(node, "starts")

    def _f_ends_with(self, node: Call) -> Col:
        return self._textpred(node, "ends")

    def _count(self, c: Col) -> pl.Expr:
        return self.num(c).floor().clip(0.0, 1e9).cast(pl.Int64, strict=False)

    def _f_left(self, node: Call) -> Col:
        s, n = self._args(node)
        return self._out(self.subject(s, node, 0).str.slice(0, self._count(n)), "str", [s, n])

    def _f_right(self, node: Call) -> Col:
        s, n = self._args(node)
        return self._out(self.subject(s, node, 0).str.tail(self._count(n)), "str", [s, n])

    def _f_mid(self, node: Call) -> Col:
        s, start, n = self._args(node)
        offset = (self.num(start).floor() - 1).clip(0.0, 1e9).cast(pl.Int64, strict=False)
        return self._out(self.subject(s, node, 0).str.slice(offset, self._count(n)), "str", [s, start, n])

    def _f_length(self, node: Call) -> Col:
        (s,) = self._args(node)
        return Col(self.text(s).str.len_chars().cast(pl.Float64).fill_null(0.0), "num")

    def _f_trim(self, node: Call) -> Col:
        (s,) = self._args(node)
        return self._out(self.text(s).str.strip_chars(), "str", [s])

    def _f_upper(self, node: Call) -> Col:
        (s,) = self._args(node)
        return self._out(self.text(s).str.to_uppercase(), "str", [s])

    def _f_lower(self, node: Call) -> Col:
        (s,) = self._args(node)
        return self._out(self.text(s).str.to_lowercase(), "str", [s])

    def _f_find(self, node: Call) -> Col:
        needle, hay = self._args(node)
        pos = self.subject(hay, node, 1).str.to_lowercase().str.find(self.text(needle).str.to_lowercase(), literal=True)
        return Col((pos.cast(pl.Float64) + 1).fill_null(0.0), "num")

    def _f_replace_text(self, node: Call) -> Col:
        hay, search, repl = self._args(node)
        h, r = self.subject(hay, node, 0), self.text(repl).fill_null("")
        if search.is_const and search.const is None:
            e = h
        elif search.is_const and repl.is_const:
            e = h.str.replace_all(
                self.text_const(search), self.text_const(repl) if repl.const is not None else "", literal=True
            )
        else:
            # polars has no per-row literal pattern for replace; split on it and join with the replacement.
            s = self.text(search)
            e = pl.when(s.is_null()).then(h).otherwise(h.str.split(s).list.join(r))
        return self._out(e, "str", [hay])

    def _f_concat(self, node: Call) -> Col:
        args = self._args(node)
        return Col(pl.concat_str([self.text(a).fill_null("") for a in args]), "str")

    def _f_concat_ws(self, node: Call) -> Col:
        args = self._args(node)
        if not args[0].is_const:
            raise _err("concat_ws() takes its separator as a quoted text", node.args[0])
        sep = "" if args[0].const is None else self.text_const(args[0])
        parts = [self.text(a) for a in args[1:]]
        e = pl.concat_str(parts, separator=sep, ignore_nulls=True)
        return Col(pl.when(pl.any_horizontal([p.is_not_null() for p in parts])).then(e).otherwise(None), "str")

    # ---- instance aggregates (extension) --------------------------------------------------------------
    def _aggregate(self, node: Call) -> Col:
        key = id(node)
        if key not in self.aux.columns:
            raise _err(f"{node.name}() needs `instances` data for '{node.args[0].name}'", node)
        value = pl.col(self.aux.columns[key])
        kind = "bool" if node.name == "any_instance" else "num"
        col = Col(value, kind)
        if key in self.aux.lo_hi:
            lo, hi = (pl.col(n) for n in self.aux.lo_hi[key])
            col.bounds = (lo, hi)
        if self.explain and key in self.aux.masks:
            col.mask = pl.col(self.aux.masks[key])
        return col


# ---- helpers ---------------------------------------------------------------------------------------------
def spread(e: pl.Expr) -> pl.Expr:
    """A row-independent expression as a full column (one value per row of the frame or group)."""
    return pl.when(pl.int_range(0, pl.len()) >= 0).then(e)


def _scalar(node: Node) -> bool:
    """True when the value does not depend on the row (no field, smart variable or aggregate inside)."""
    return not any(isinstance(n, FieldRef | SmartVar | FormName) for n in walk(node))


def _label(node: FieldRef) -> str:
    """Name of a reference in `missing` reports and bit tables."""
    name = node.name
    if node.event is not None and node.event != "event-name":
        name = f"{node.event}:{name}"
    if node.instance is not None:
        name = f"{name}[{node.instance}]"
    return name


def _or_all(masks: Sequence[pl.Expr]) -> pl.Expr:
    """Bitwise OR of many masks as a balanced tree: depth log2(n), where a left-leaning chain would be n deep."""
    masks = list(masks)
    while len(masks) > 1:
        paired = [masks[i] | masks[i + 1] for i in range(0, len(masks) - 1, 2)]
        masks = paired + ([masks[-1]] if len(masks) % 2 else [])
    return masks[0]


def _null_of(kind: str) -> pl.Expr:
    return _lit(None, {"num": pl.Float64, "str": pl.String, "date": pl.Datetime("us"), "bool": pl.Boolean}[kind])


def _finite(e: pl.Expr) -> pl.Expr:
    """NaN and infinities become blank, in one numpy pass that uses `e` once. Not `pl.when(e.is_finite()).then(e)`:
    that repeats `e`, and a chain of 8 `+` became a plan of 2^8 copies (compile_expr has no staging); not
    `e.replace([inf, -inf, nan], None)`: polars' optimiser is quadratic in the number of replace() calls (a sum of
    400 divisions took 2.4 s)."""
    return e.map_batches(_finite_values, pl.Float64, is_elementwise=True)


def _finite_values(s: pl.Series) -> pl.Series:
    values = s.cast(pl.Float64).to_numpy()
    return _from_numpy(np.where(np.isfinite(values), values, np.nan))


ZERO_COLUMN = "__tk_zero"
# Zeros as long as the frame (or group), for compile_expr, whose caller's frame has no ZERO_COLUMN. polars' optimiser
# is quadratic in the number of copies of this expression, so evaluate_many adds ZERO_COLUMN instead.
_ROW_ZERO = pl.int_range(0, pl.len(), dtype=pl.Int32).cast(pl.Float64) * 0.0


def zero_column(height: int) -> pl.Series:
    """A real (materialised) column of zeros: polars treats a literal or repeat() as a constant."""
    return pl.Series(ZERO_COLUMN, np.zeros(height), dtype=pl.Float64)


def _fmod(pair: pl.Series) -> pl.Series:
    with np.errstate(all="ignore"):  # b = 0 gives NaN: blank
        return _from_numpy(np.fmod(pair.struct.field("a").to_numpy(), pair.struct.field("b").to_numpy()))


def _from_numpy(values) -> pl.Series:
    with np.errstate(all="ignore"):
        return pl.Series(values, dtype=pl.Float64, nan_to_null=True)


def _to_float(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _day_key(d: pl.Expr) -> pl.Expr:
    """Month and day as one comparable number: 29 February (93) sorts after 28 February (92) and before
    1 March (97), so that birthday is reached on 1 March in common years."""
    return d.dt.month().cast(pl.Int32) * 32 + d.dt.day().cast(pl.Int32)


def _format_number(value) -> str:
    f = float(value)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


def _parse_dates(e: pl.Expr, legacy: str | None = None, formats: Sequence[str] = _DATE_FORMATS) -> pl.Expr:
    formats = tuple(formats) + (_LEGACY_FORMATS.get(legacy, ()) if legacy else ())
    parsed = [e.str.strptime(pl.Datetime("us"), f, strict=False, exact=True) for f in formats]
    return parsed[0] if len(parsed) == 1 else pl.coalesce(parsed)


@functools.lru_cache(maxsize=1024)
def _parse_date_const(text: str, legacy: str | None) -> tuple[datetime | None, bool]:
    """(value, has_time) of a date literal; (None, False) when it is not a date."""
    text = text.strip()
    formats = _DATE_FORMATS + (_LEGACY_FORMATS.get(legacy, ()) if legacy else ())
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt), "%H" in fmt
        except ValueError:
            continue
    return None, False
