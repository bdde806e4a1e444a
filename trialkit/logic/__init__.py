"""REDCap logic: parse, check, render and evaluate (columnar, with polars) one expression language.

Public API (import from here):

- ``parse(text, *, file=None, line=1, col=1) -> Node``: syntax tree with positions. Raises
  ``trialkit.errors.LogicSyntaxError`` (position, what was expected, ``caret()``). Unknown function names and
  wrong argument counts are syntax errors. Input longer than 100,000 characters, nested deeper than 120 levels or
  holding more than 2,000 terms (``MAX_NODES``: evaluation time is linear in them, at most about 1 s per 1,000
  on 1,000 records for the slowest shape measured) is refused with a clean error (never RecursionError).
- ``render(node, *, extensions=False) -> str``: canonical REDCap text; ``parse(render(t)) == t``. Trialkit
  extensions raise ``LogicError`` unless ``extensions=True``.
- ``references(node)`` / ``reference_columns(node)``: field references used, and the data columns they read.
- ``FieldSpec``: what logic knows of a field (callers build it; logic never imports definitions).
- ``check(node, fields, *, events=None, repeating_forms=(), allow_extensions=True) -> list[Diagnostic]``.
- ``evaluate(node, data, *, mode, as_of, fields, instances, record_id, missing_codes, explain) -> LogicResult``;
  ``evaluate_many({name: node}, data, ...) -> DataFrame`` (one pass for many expressions);
  ``compile_expr(node, schema, ...) -> Compiled`` (polars expressions to embed in your own select).
- ``widen_events(long_df, *, record_id, ...)``, ``checkbox_column(field, code)``, ``event_column(event, col)``.

Data shape: one row per record; a column per field; checkbox options as ``field___code`` (REDCap's flat export:
code lower-cased, other characters turned into ``_``); ``[event][field]`` reads the column ``"event:field"``
(see ``widen_events``). Values may be REDCap's raw strings or typed columns; strings are typed by ``FieldSpec``
when given (number/calc/slider fields and choice fields whose codes are all integers -> numbers, date fields ->
dates), otherwise by content (all numbers -> number, all ISO dates -> date). ``''`` is blank. Values are taken
as stored (REDCap exports them trimmed): a padded ``' 5'`` makes its column text, though comparisons still read
it as 5. Plain dates stay ``pl.Date``; a value with a time makes the comparison use datetimes. Typing reads a
missing-data code in a number or coded field as blank; the missing-code tests (``ismissingcode`` & co.) read the
stored text, so they see it.

Performance: ``evaluate_many`` compiles each sub-expression once (sub-expressions repeated within or across the
expressions are computed into a column first), so 20 eligibility expressions over 1,000,000 records take about a
second on 2 cores (``benchmarks/bench_logic.py``). In kleene mode the per-row missing lists are built once per
distinct combination of missing fields, not per row.

Semantics, mode ``"redcap"`` (what REDCap computes; booleans are never unknown):

- ``[x] = ''`` is true for blank; ``[x] <> 0`` is true for blank; ``[x] = 0`` is false for blank;
  two blanks are equal.
- **Blank under ``<``, ``<=``, ``>``, ``>=`` is false** (REDCap leaves this undocumented; JavaScript would make
  ``'' < 18`` true, which would let a missing age pass an upper bound. trialkit chooses false, tested).
- Comparison of text: numbers compare as numbers when both sides read as numbers, otherwise text compares as
  text (case-sensitive). A date on either side compares as dates.
- ``+ - * /`` and ``^`` with a blank (or non-numeric) operand give blank; division by zero gives blank.
- ``sum``, ``mean``, ``min``, ``max``, ``median``, ``stdev`` skip blanks; every argument blank gives blank
  (``sum`` too: no data is not 0). ``stdev`` is the sample standard deviation.
- ``datediff(d1, d2, unit[, 'ymd'|'mdy'|'dmy'][, signed])`` is ``d2 - d1`` in ``y`` (365.2425 days), ``M``
  (30.44 days), ``d``, ``h``, ``m``, ``s``, not rounded, unsigned unless ``true`` is given. ``'today'``/``'now'``
  come from ``as_of``; the evaluator never reads the clock.
- ``age_at_date(dob, date[, decimal])``: completed years (calendar age; a 29 February birthday is reached on
  1 March in common years); with a true third argument, ``datediff`` years.
- ``round`` is PHP's (REDCap's) decimal rounding, half away from zero (2.5 -> 3, -2.5 -> -3, 1.005 -> 1.01),
  ``roundup`` rounds towards +infinity, ``rounddown`` towards -infinity, all after reading the value at 15
  significant digits (1.1 * 100 is 110); the result is the double nearest the decimal result (24.2, never
  24.200000000000003). See trialkit/logic/rounding.py.
- Division is IEEE division in every row (242 / 10 is 24.2), so a record's values never depend on how many records
  are evaluated with it (tests/adversarial/test_batch_independence.py).
- ``mod(a, b)`` has the sign of ``a``; ``log(x[, base])`` natural by default; invalid maths gives blank.
- Text tests ``contains``, ``not_contain``, ``starts_with``, ``ends_with`` and ``find`` are case-insensitive;
  blank text makes them false. ``concat`` reads blank as ''; ``concat_ws`` skips blanks.
- ``if(c, a, b)``: a blank/unknown condition takes the ``b`` branch. Conditions: numbers are true when non-zero;
  text is true when it is a non-zero number or non-numeric text.

Mode ``"kleene"`` (eligibility): same values, but a comparison with a blank operand is **unknown** (null) rather
than true/false (except the blank tests ``= ''`` / ``<> ''`` and the ``is*`` functions, which are never unknown);
``and``/``or``/``not`` follow Kleene logic (``false and unknown`` = false, ``true or unknown`` = true); an unknown
``if`` condition gives unknown. Text tests with a blank operand are unknown. Values keep REDCap's rules in
both modes: ``sum()`` & co. skip blanks and ``+`` propagates them, so a criterion that must not score a partial
form should test completeness explicitly. An unknown truth value used as a number or text is blank (the blank
tests ``= ''`` and ``is*`` of an unknown *condition* stay unknown). With ``explain`` (default in kleene)
each unknown row lists the referenced fields whose absence made it unknown (up to 64 distinct references).

Extensions (trialkit only; ``render`` refuses them, ``check(..., allow_extensions=False)`` reports them): aggregates
over the instances of a repeating instrument for the current record. ``instances`` maps the instrument name to a
frame with the record id column, ``redcap_repeat_instance`` and that instrument's fields.

- ``count_instances(form[, cond])``: instances where ``cond`` is true.
- ``count_distinct_instances(form, [field][, cond])``: distinct non-blank values of ``field`` among them
  (KAP-TRD I4: distinct drugs among failed adequate trials).
- ``sum_instances``/``min_instances``/``max_instances(form, [field][, cond])``: blank when nothing to aggregate.
- ``any_instance(form, cond)``.
In kleene mode counts are intervals (definite .. possible): ``count_instances(...) >= 2`` is true once two
instances are definitely true, false once fewer than two can be, unknown in between.
"""

from trialkit.logic.ast import (
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
from trialkit.logic.checker import check, extensions_used
from trialkit.logic.engine import (
    Compiled,
    LogicResult,
    compile_expr,
    evaluate,
    evaluate_many,
    infer_kinds,
    reference_columns,
    references,
)
from trialkit.logic.fields import FieldSpec, checkbox_column, event_column, widen_events
from trialkit.logic.functions import FUNCTIONS, INSTANCE_AGGREGATES, FunctionSpec
from trialkit.logic.parser import MAX_DEPTH, MAX_LENGTH, MAX_NODES, parse
from trialkit.logic.render import render

__all__ = [
    "FUNCTIONS",
    "INSTANCE_AGGREGATES",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "Binary",
    "Bool",
    "BoolOp",
    "Call",
    "Compiled",
    "FieldRef",
    "FieldSpec",
    "FormName",
    "FunctionSpec",
    "LogicResult",
    "Node",
    "Number",
    "SmartVar",
    "String",
    "Unary",
    "check",
    "checkbox_column",
    "compile_expr",
    "evaluate",
    "evaluate_many",
    "event_column",
    "extensions_used",
    "infer_kinds",
    "parse",
    "reference_columns",
    "references",
    "render",
    "walk",
    "widen_events",
]
