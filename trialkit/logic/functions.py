"""The functions the logic language knows: arity, result kind, and which are trialkit extensions.

The parser refuses any other name, so an unknown function is an error before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    min_args: int
    max_args: int | None  # None: any number
    returns: str  # 'num' | 'str' | 'bool' | 'date' | 'any'
    extension: bool = False  # not REDCap: refused by render() unless extensions are allowed
    doc: str = ""


def _f(name: str, lo: int, hi: int | None, returns: str, doc: str = "", extension: bool = False) -> FunctionSpec:
    return FunctionSpec(name, lo, hi, returns, extension, doc)


FUNCTIONS: dict[str, FunctionSpec] = {
    f.name: f
    for f in (
        _f("if", 3, 3, "any", "if(condition, value if true, value if false)"),
        _f("datediff", 3, 5, "num", "datediff(date1, date2, unit[, format][, signed]): date2 - date1 in y M d h m s"),
        _f("age_at_date", 2, 3, "num", "age_at_date(dob, date[, decimal]): completed years (calendar age)"),
        _f("year", 1, 1, "num"),
        _f("month", 1, 1, "num"),
        _f("day", 1, 1, "num"),
        _f("round", 1, 2, "num", "round(x[, decimals]): half away from zero"),
        _f("roundup", 1, 2, "num", "roundup(x[, decimals]): towards +infinity"),
        _f("rounddown", 1, 2, "num", "rounddown(x[, decimals]): towards -infinity"),
        _f("abs", 1, 1, "num"),
        _f("sqrt", 1, 1, "num"),
        _f("exponential", 1, 1, "num", "e to the power x"),
        _f("log", 1, 2, "num", "log(x[, base]): natural log by default"),
        _f("mod", 2, 2, "num", "mod(a, b): remainder with the sign of a"),
        _f("min", 1, None, "num", "skips blanks"),
        _f("max", 1, None, "num", "skips blanks"),
        _f("mean", 1, None, "num", "skips blanks"),
        _f("median", 1, None, "num", "skips blanks"),
        _f("sum", 1, None, "num", "skips blanks; blank when every argument is blank"),
        _f("stdev", 1, None, "num", "sample standard deviation; skips blanks"),
        _f("isnumber", 1, 1, "bool"),
        _f("isinteger", 1, 1, "bool"),
        _f("isblankormissingcode", 1, 1, "bool"),
        _f("isblanknotmissingcode", 1, 1, "bool"),
        _f("ismissingcode", 1, 1, "bool"),
        _f("hasmissingcode", 1, 2, "bool", "hasmissingcode(x[, 'A,B']): x holds a (listed) missing-data code"),
        _f("contains", 2, 2, "bool", "case-insensitive"),
        _f("not_contain", 2, 2, "bool", "case-insensitive"),
        _f("starts_with", 2, 2, "bool", "case-insensitive"),
        _f("ends_with", 2, 2, "bool", "case-insensitive"),
        _f("left", 2, 2, "str"),
        _f("right", 2, 2, "str"),
        _f("mid", 3, 3, "str", "mid(text, start, count): start is 1-based"),
        _f("length", 1, 1, "num"),
        _f("trim", 1, 1, "str"),
        _f("upper", 1, 1, "str"),
        _f("lower", 1, 1, "str"),
        _f("find", 2, 2, "num", "find(needle, haystack): 1-based position, 0 when absent; case-insensitive"),
        _f("replace_text", 3, 3, "str", "replace_text(haystack, search, replacement)"),
        _f("concat", 1, None, "str", "blanks count as empty text"),
        _f("concat_ws", 2, None, "str", "concat_ws(separator, ...): blanks are skipped"),
        # trialkit extensions: aggregates over the instances of a repeating instrument, for one record.
        _f("count_instances", 1, 2, "num", "count_instances(form[, condition])", extension=True),
        _f(
            "count_distinct_instances",
            2,
            3,
            "num",
            "count_distinct_instances(form, [field][, condition]): distinct non-blank values of field",
            extension=True,
        ),
        _f("sum_instances", 2, 3, "num", "sum_instances(form, [field][, condition]): skips blanks", extension=True),
        _f("min_instances", 2, 3, "num", "min_instances(form, [field][, condition])", extension=True),
        _f("max_instances", 2, 3, "num", "max_instances(form, [field][, condition])", extension=True),
        _f("any_instance", 2, 2, "bool", "any_instance(form, condition)", extension=True),
    )
}

INSTANCE_AGGREGATES = frozenset(name for name, spec in FUNCTIONS.items() if spec.extension)
