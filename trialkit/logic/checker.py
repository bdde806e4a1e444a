"""Static checks of a parsed expression against field definitions. Every problem is reported, not the first.

Codes (stable; tests and users grep for them):

| code     | severity | problem |
|----------|----------|---------|
| LOGIC001 | error    | unknown field (with "did you mean") |
| LOGIC002 | error    | checkbox option code is not a choice of the field |
| LOGIC003 | error    | option syntax `[field(code)]` on a field that is not a checkbox |
| LOGIC004 | error    | checkbox field used without an option (write `[field(code)]`) |
| LOGIC005 | error    | unknown event |
| LOGIC006 | error    | field is not collected on that event |
| LOGIC007 | error    | instance reference on a field of a non-repeating instrument |
| LOGIC008 | error    | a date compared with (or combined with) a number |
| LOGIC009 | error    | date function given something that is not a date |
| LOGIC010 | error    | bad `datediff` unit or option |
| LOGIC011 | error    | trialkit extension used where only REDCap logic is allowed |
| LOGIC012 | error    | instance aggregate over an instrument that is unknown or not repeating |
| LOGIC013 | error    | field inside an instance aggregate is not on that instrument |
| LOGIC014 | warning* | value compared with a choice field is not one of its codes |
| LOGIC015 | warning  | arithmetic on a text field |
| LOGIC016 | error    | descriptive field holds no value |
| LOGIC017 | warning  | text that is not a valid date compared with a date field |
| LOGIC018 | error    | a field of a repeating instrument read once per record without saying which instance |
| LOGIC019 | error    | a per-record expression names another event, a relative instance or a smart variable |

*LOGIC014 is an error where `strict_codes` is set (eligibility rules): `[mini_mdd] = 'yes'` on a field coded 1/0
is never true, so a criterion written so silently decides every candidate the same way. REDCap itself accepts
such logic in branching and calculations, and a study imported from REDCap must still load, so there it stays a
warning. Ordering a coded field against a number that is not a code (`[severity] > 0` with codes 1-5) is
meaningful and stays a warning everywhere; comparing it with text that is no code is not.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from trialkit.errors import Diagnostic, Severity
from trialkit.logic.ast import (
    COMPARISONS,
    EVENT_SMART,
    Binary,
    Bool,
    BoolOp,
    Call,
    FieldRef,
    Node,
    Number,
    SmartVar,
    String,
    walk,
)
from trialkit.logic.fields import FieldSpec
from trialkit.logic.functions import FUNCTIONS, INSTANCE_AGGREGATES

_DATE_FUNCS = {"datediff": (0, 1), "age_at_date": (0, 1), "year": (0,), "month": (0,), "day": (0,)}
_NUMERIC_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$")


def _is_date_text(text: str) -> bool:
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            datetime.strptime(text.strip(), fmt)
            return True
        except ValueError:
            continue
    return False


class _Checker:
    def __init__(self, fields, events, repeating_forms, allow_extensions, file, missing_codes=(), strict_codes=False,
                 per_record_forms=None):
        self.fields: Mapping[str, FieldSpec] = fields
        self.per_record = per_record_forms is not None
        self.per_record_forms = frozenset(per_record_forms or ())
        self.missing_codes = frozenset(missing_codes)
        self.strict_codes = strict_codes
        self.events = None if events is None else set(events)
        self.repeating = set(repeating_forms) | {s.form for s in fields.values() if s.repeating and s.form}
        self.forms = {s.form for s in fields.values() if s.form}
        self.allow_extensions = allow_extensions
        self.file = file
        self.out: list[Diagnostic] = []

    def add(self, code: str, message: str, node: Node, severity: Severity = Severity.ERROR) -> None:
        self.out.append(Diagnostic(code, message, self.file, node.line, node.col, severity))

    # Static kind of a node: 'num', 'date', 'str', 'code', 'bool', 'null' or 'any'.
    def kind(self, node: Node) -> str:
        if isinstance(node, Number):
            return "num"
        if isinstance(node, String):
            return "null" if node.value == "" else "str"
        if isinstance(node, Bool | BoolOp):
            return "bool"
        if isinstance(node, FieldRef):
            spec = self.fields.get(node.name)
            if spec is None:
                return "any"
            if node.code is not None:
                return "code"
            k = spec.kind
            return {"num": "num", "date": "date", "datetime": "date", "code": "code"}.get(k, "str")
        if isinstance(node, Binary):
            return "bool" if node.op in COMPARISONS else "num"
        if isinstance(node, Call):
            if node.name == "if":
                kinds = {self.kind(node.args[1]), self.kind(node.args[2])} - {"null"}
                return kinds.pop() if len(kinds) == 1 else "any"
            return FUNCTIONS[node.name].returns
        return "any"

    def run(self, root: Node) -> list[Diagnostic]:
        # Iterative walk carrying the instance-aggregate form (if any) we are inside.
        stack: list[tuple[Node, str | None]] = [(root, None)]
        while stack:
            node, form = stack.pop()
            if isinstance(node, FieldRef):
                self.field_ref(node, form)
                self.one_row(node, form)
            elif isinstance(node, SmartVar):
                self.one_row(node, form)
            elif isinstance(node, Binary):
                self.binary(node)
            elif isinstance(node, Call):
                form = self.call(node, form)
            for child in reversed(node.children()):
                stack.append((child, form))
        return self.out

    def one_row(self, node: FieldRef | SmartVar, form: str | None) -> None:
        """A per-record expression (an eligibility criterion) is evaluated on the record's one row of the event
        screened: what that row cannot hold would leave it unknown for everyone, or stop the run."""
        if not self.per_record:
            return
        if isinstance(node, SmartVar):
            if node.name != "record-name":
                self.add("LOGIC019", f"[{node.name}] has no value when a candidate is screened (one row per "
                         "candidate; only [record-name] is known)", node)
            return
        if node.event is not None and node.event != "event-name":
            self.add("LOGIC019", f"[{node.event}][{node.name}]: a criterion reads the candidate's row of the event "
                     f"screened (screen --event); write [{node.name}]", node)
        if form is None and node.instance in ("current-instance", "previous-instance", "next-instance"):
            self.add("LOGIC019", f"[{node.name}][{node.instance}]: a criterion is judged once per candidate, outside "
                     "any instance: name one ([1], [first-instance], [last-instance]) or use an aggregate", node)

    def field_ref(self, node: FieldRef, form: str | None) -> None:
        spec = self.fields.get(node.name)
        if spec is None:
            near = difflib.get_close_matches(node.name, list(self.fields), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(f'[{n}]' for n in near)}?" if near else ""
            self.add("LOGIC001", f"unknown field [{node.name}]{hint}", node)
            return
        if spec.field_type == "descriptive":
            self.add("LOGIC016", f"[{node.name}] is a descriptive field and holds no value", node)
        if node.code is not None:
            if spec.field_type != "checkbox":
                self.add(
                    "LOGIC003",
                    f"[{node.name}({node.code})]: option syntax is only for checkbox fields; "
                    f"[{node.name}] is {spec.field_type}",
                    node,
                )
            elif spec.choices and node.code not in spec.choices:
                near = difflib.get_close_matches(node.code, list(spec.choices), n=1, cutoff=0.5)
                hint = f"; did you mean ({near[0]})?" if near else ""
                codes = ", ".join(spec.choices)
                self.add("LOGIC002", f"[{node.name}({node.code})]: '{node.code}' is not a choice ({codes}){hint}", node)
        elif spec.field_type == "checkbox":
            self.add("LOGIC004", f"checkbox field [{node.name}] needs an option: [{node.name}(code)]", node)
        if node.event is not None and node.event not in EVENT_SMART and self.events is not None:
            if node.event not in self.events:
                near = difflib.get_close_matches(node.event, sorted(self.events), n=2, cutoff=0.6)
                hint = f"; did you mean {' or '.join(f'[{n}]' for n in near)}?" if near else ""
                self.add("LOGIC005", f"unknown event [{node.event}]{hint}", node)
            elif spec.events is not None and node.event not in spec.events:
                self.add("LOGIC006", f"[{node.name}] is not collected on event [{node.event}]", node)
        if node.instance is not None and not spec.repeating and spec.form not in self.repeating:
            self.add(
                "LOGIC007",
                f"[{node.name}][{node.instance}]: [{node.name}] is on instrument '{spec.form}', which does not repeat",
                node,
            )
        if form is None and node.instance is None and spec.form in self.per_record_forms:
            # the record's row holds none of the form's values: such a criterion would stay unknown for everyone
            # and ask for fields the instances hold
            self.add(
                "LOGIC018",
                f"[{node.name}] is on the repeating instrument '{spec.form}': say which instances, with an "
                f"aggregate (any_instance({spec.form}, ...), count_instances({spec.form}, ...), "
                f"max_instances({spec.form}, [{node.name}])) or an instance ([{node.name}][1], "
                f"[{node.name}][last-instance])",
                node,
            )
        if form is not None and spec.form is not None and spec.form != form:
            self.add(
                "LOGIC013",
                f"[{node.name}] is on instrument '{spec.form}', not on '{form}' whose instances are aggregated",
                node,
            )

    def binary(self, node: Binary) -> None:
        left, right = self.kind(node.left), self.kind(node.right)
        if node.op in COMPARISONS:
            if {left, right} == {"date", "num"}:
                self.add("LOGIC008", f"a date is compared with a number ('{node.op}')", node)
            for a, b in ((node.left, node.right), (node.right, node.left)):
                self.compare_literal(a, b, node.op)
        else:
            if "date" in (left, right):
                self.add("LOGIC008", f"arithmetic '{node.op}' on a date: use datediff()", node)
            for side, k in ((node.left, left), (node.right, right)):
                if k == "str" and isinstance(side, FieldRef):
                    self.add("LOGIC015", f"arithmetic '{node.op}' on text field [{side.name}]", side, Severity.WARNING)

    def compare_literal(self, ref: Node, lit: Node, op: str = "=") -> None:
        if not isinstance(ref, FieldRef) or not isinstance(lit, Number | String):
            return
        spec = self.fields.get(ref.name)
        if spec is None:
            return
        text = lit.text if isinstance(lit, Number) else lit.value
        if text == "":
            return
        if ref.code is not None:
            if spec.field_type == "checkbox" and not _is_code(text, ("0", "1")):
                self.add("LOGIC014", f"[{ref.name}({ref.code})] is '1' (checked) or '0', never '{text}'", lit,
                         self._code_severity(text, ("0", "1"), op))
            return
        kind = spec.kind
        if kind == "code" and spec.codes and not _is_code(text, spec.codes) and text not in self.missing_codes:
            self.add("LOGIC014", f"'{text}' is not a choice of [{ref.name}] ({', '.join(spec.codes)})", lit,
                     self._code_severity(text, spec.codes, op))
        if kind in ("date", "datetime") and isinstance(lit, String) and not _is_date_text(text):
            self.add(
                "LOGIC017", f"'{text}' is not a date (YYYY-MM-DD) but [{ref.name}] is a date", lit, Severity.WARNING
            )

    def _code_severity(self, text: str, codes: Iterable[str], op: str) -> Severity:
        """An error in strict mode, except a number ordered against numeric codes (a threshold, not a code)."""
        if not self.strict_codes:
            return Severity.WARNING
        ordering = op not in ("=", "<>")
        if ordering and _NUMERIC_TEXT.match(text) and all(_NUMERIC_TEXT.match(c) for c in codes):
            return Severity.WARNING
        return Severity.ERROR

    def call(self, node: Call, form: str | None) -> str | None:
        spec = FUNCTIONS[node.name]
        if spec.extension:
            if not self.allow_extensions:
                self.add("LOGIC011", f"{node.name}() is a trialkit extension, not REDCap logic", node)
            target = node.args[0].name  # type: ignore[attr-defined]
            if target not in self.forms and target not in self.repeating:
                near = difflib.get_close_matches(target, sorted(self.forms | self.repeating), n=1, cutoff=0.6)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                self.add("LOGIC012", f"{node.name}(): unknown instrument '{target}'{hint}", node.args[0])
            elif target not in self.repeating:
                self.add("LOGIC012", f"{node.name}(): instrument '{target}' does not repeat", node.args[0])
            return target
        if node.name in _DATE_FUNCS:
            for i in _DATE_FUNCS[node.name]:
                arg = node.args[i]
                k = self.kind(arg)
                if isinstance(arg, String):
                    if arg.value.lower() in ("today", "now") or _is_date_text(arg.value):
                        continue
                    self.add(
                        "LOGIC009", f"{node.name}(): '{arg.value}' is not a date (YYYY-MM-DD, 'today' or 'now')", arg
                    )
                elif k in ("num", "bool", "code") or (k == "str" and isinstance(arg, FieldRef)):
                    what = f"[{arg.name}]" if isinstance(arg, FieldRef) else "this argument"
                    self.add("LOGIC009", f"{node.name}(): {what} is not a date", arg)
        if node.name == "datediff":
            unit = node.args[2]
            if not (isinstance(unit, String) and unit.value in ("y", "M", "d", "h", "m", "s")):
                self.add("LOGIC010", "datediff(): the unit must be one of 'y', 'M', 'd', 'h', 'm', 's'", unit)
            for extra in node.args[3:]:
                ok = isinstance(extra, Bool | Number) or (
                    isinstance(extra, String) and extra.value.lower() in ("ymd", "mdy", "dmy")
                )
                if not ok:
                    self.add(
                        "LOGIC010", "datediff(): options are a date format ('ymd', 'mdy', 'dmy') and true/false", extra
                    )
        return form


def _is_code(text: str, codes: Iterable[str]) -> bool:
    """`text` is one of `codes`, or the same number as one ('1.0' reads as code '1', as REDCap compares)."""
    codes = tuple(codes)
    if text in codes:
        return True
    return bool(_NUMERIC_TEXT.match(text)) and any(
        _NUMERIC_TEXT.match(c) and float(c) == float(text) for c in codes
    )


def check(
    expr: Node,
    fields: Mapping[str, FieldSpec],
    *,
    events: Iterable[str] | None = None,
    repeating_forms: Iterable[str] = (),
    allow_extensions: bool = True,
    file: str | None = None,
    missing_codes: Iterable[str] = (),
    strict_codes: bool = False,
    per_record_forms: Iterable[str] | None = None,
) -> list[Diagnostic]:
    """Every problem of `expr` against `fields`, sorted by position. `events` None skips event checks.
    `missing_codes`: the study's missing-data codes, which any field may hold. `strict_codes`: a coded field
    compared with a value that is none of its codes is an error (LOGIC014), as in eligibility rules.
    `per_record_forms`: given (even empty), the expression is judged once per record on its row of one event (an
    eligibility criterion): these repeating instruments' fields may be read only through an instance aggregate or
    an instance reference (LOGIC018), and other events, relative instances and smart variables other than
    [record-name] have no value there (LOGIC019)."""
    found = _Checker(
        fields, events, repeating_forms, allow_extensions, file, missing_codes, strict_codes, per_record_forms
    ).run(expr)
    return sorted(found, key=Diagnostic.sort_key)


def extensions_used(expr: Node) -> list[Call]:
    """Calls of trialkit extensions in the expression (empty for pure REDCap logic)."""
    return [n for n in walk(expr) if isinstance(n, Call) and n.name in INSTANCE_AGGREGATES]
