from __future__ import annotations

import pytest

from trialkit.errors import LogicError, LogicSyntaxError
from trialkit.logic import (
    MAX_DEPTH,
    MAX_LENGTH,
    Binary,
    Bool,
    BoolOp,
    Call,
    FieldRef,
    FormName,
    Number,
    SmartVar,
    String,
    Unary,
    parse,
    render,
)


def syntax_error(text: str, **kw) -> LogicSyntaxError:
    with pytest.raises(LogicSyntaxError) as info:
        parse(text, **kw)
    return info.value


def test_references_of_every_shape():
    assert parse("[age]") == FieldRef("age")
    assert parse("[meds(2)]") == FieldRef("meds", code="2")
    assert parse("[meds(-4)]") == FieldRef("meds", code="-4")
    assert parse("[baseline_arm_1][weight]") == FieldRef("weight", event="baseline_arm_1")
    assert parse("[visit_date][2]") == FieldRef("visit_date", instance=2)
    assert parse("[visit_date][last-instance]") == FieldRef("visit_date", instance="last-instance")
    assert parse("[screening][bp][previous-instance]") == FieldRef(
        "bp", event="screening", instance="previous-instance"
    )
    assert parse("[previous-event-name][weight]") == FieldRef("weight", event="previous-event-name")
    assert parse("[record-name]") == SmartVar("record-name")
    assert parse("[current-instance]") == SmartVar("current-instance")
    assert parse("[age:value]") == FieldRef("age")


def test_literals_and_operators():
    assert parse("'a b'") == String("a b")
    assert parse('"it\'s"') == String("it's")
    assert parse("''") == String("")
    assert parse(".5") == Number("0.5")
    assert parse("TRUE") == Bool(True)
    assert parse("[a] != 1") == Binary("<>", FieldRef("a"), Number("1"))
    assert parse("[a] == 1") == Binary("=", FieldRef("a"), Number("1"))
    tree = parse("[a] = 1 AnD [b] = 2 OR nOt [c] = 3")
    assert isinstance(tree, BoolOp) and tree.op == "or"
    assert tree.operands[0] == BoolOp("and", (parse("[a] = 1"), parse("[b] = 2")))
    assert tree.operands[1] == Unary("not", parse("[c] = 3"))
    assert parse("1 + 2 * 3 ^ 2") == Binary(
        "+", Number("1"), Binary("*", Number("2"), Binary("^", Number("3"), Number("2")))
    )
    assert parse("-2^2") == Unary("-", Binary("^", Number("2"), Number("2")))


def test_unparenthesised_chains_stay_flat_and_parentheses_are_kept():
    flat = parse("[a] or [b] or [c]")
    assert isinstance(flat, BoolOp) and len(flat.operands) == 3
    nested = parse("([a] or [b]) or [c]")
    assert len(nested.operands) == 2 and isinstance(nested.operands[0], BoolOp)


def test_comments_and_newlines():
    text = "[a] = 1 # screening age\nand // second line\n[b] = 'x#y'"
    assert parse(text) == BoolOp("and", (parse("[a] = 1"), parse("[b] = 'x#y'")))


def test_function_names_are_case_insensitive_and_today_may_be_bare():
    assert parse("DateDiff([d], today, 'y')") == Call("datediff", (FieldRef("d"), String("today"), String("y")))
    assert parse("count_instances(atrq, [x] = 1)") == Call("count_instances", (FormName("atrq"), parse("[x] = 1")))


def test_positions_are_absolute_in_the_file():
    tree = parse("[a] = 1 and\n  [bb] > 2", file="rules.yaml", line=10, col=7)
    first, second = tree.operands
    assert (first.left.line, first.left.col) == (10, 7)
    assert (second.left.line, second.left.col) == (11, 3)


def test_error_names_position_expectation_and_caret():
    err = syntax_error("datediff([a], [b], 'y'")
    assert str(err) == "1:23: expected ',' or ')' after arguments of datediff, found end of input"
    assert err.caret() == "datediff([a], [b], 'y'\n                      ^"
    err = syntax_error("datediff([a], [b] 'y')")
    assert "1:19" in str(err) and "after arguments of datediff" in str(err) and "found ''y''" in str(err)


def test_error_positions_follow_offsets_but_caret_uses_the_expression():
    err = syntax_error("[a] = 1 and\n[b] >", file="r.yaml", line=20, col=12)
    assert (err.line, err.col) == (21, 6)
    assert err.location.file == "r.yaml"
    assert err.caret() == "[b] >\n     ^"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty expression"),
        ("  # only a comment", "empty expression"),
        ("[a] = ", "expected a value"),
        ("([a] = 1", "expected ')' to close '('"),
        ("[a] = 1)", "expected an operator or end of expression"),
        ("1 < 2 < 3", "comparisons cannot be chained"),
        ("datedif([a], [b], 'y')", "unknown function 'datedif'; did you mean datediff()?"),
        ("round(1, 2, 3)", "round() takes 1 to 2 arguments, got 3"),
        ("if(1, 2)", "if() takes 3 arguments, got 2"),
        ("[a] = 'abc", "unclosed string"),
        ("[abc = 1", "unclosed '['"),
        ("[a b] = 1", "is not a field reference"),
        ("[1a] = 1", "is not a field reference"),
        ("[a][b][c][d]", "at most three brackets"),
        ("[a][0]", "instance numbers start at 1"),
        ("[a] = b", "expected '(' after a function name"),
        ("sum(b)", "unexpected name 'b'"),
        ("count_instances([a] = 1)", "needs an instrument name"),
        ("[a] = 1 & [b] = 2", "'&' is not an operator: write 'and'"),
        ("[a] = 1 ; 2", "unexpected character ';'"),
    ],
)
def test_syntax_errors(text, needle):
    assert needle in str(syntax_error(text))


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("[age] => 18", "1:7", "'=>' is not an operator: write '>='"),
        ("[age] =< 18", "1:7", "'=<' is not an operator: write '<='"),
        ("[age] >== 18", "1:7", "'>==' is not an operator: write '>='"),
        ("[a] = 1 && [b] = 2", "1:9", "'&&' is not an operator: write 'and'"),
        ("[a] = 1 || [b] = 2", "1:9", "'||' is not an operator: write 'or'"),
        ("[a] = 1 or\n  [b] => 2", "2:7", "'=>' is not an operator: write '>='"),
        ("![a]", "1:1", "'!' is not an operator: 'not equal' is written '<>'"),
        ("[a] ≠ 1", "1:5", "'≠' is not an operator: write '<>'"),
        ("[a] % 2 = 0", "1:5", "'%' is not an operator: the remainder is mod(a, b)"),
        ("[a] is null", "1:5", "blank is written ''"),
        ("[a] = NULL", "1:7", "blank is written ''"),
        ("=if([a] = 1, 1, 0)", "1:1", "an expression does not start with '='"),
        ("[sex] = \u2018f\u2019", "1:9", "curly quote"),
        ("[sex] = \u201cf\u201d", "1:9", "curly quote"),
    ],
)
def test_common_typos_from_excel_sql_and_python_say_the_fix(text, where, message):
    err = syntax_error(text)
    assert str(err).startswith(f"{where}: {message}")
    assert "\u2018f" not in str(err) and "\u201cf" not in str(err)  # the typo's fix, never the expression's text


@pytest.mark.parametrize("text", ["[a] <> 1", "[a] != 1", "[a] = 1 AND [b] = 2", "[a] = 1 Or [b] = 2",
                                  "NOT [a] = 1"])
def test_what_redcap_accepts_is_no_typo(text):
    parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "[a].__class__",
        "open('/etc/passwd')",
        "lambda: 1",
        "os.system('ls')",
        "[a] if 1 else 2",
        "eval('1')",
        "exec('1')",
        "{1: 2}",
        "[a]; 1",
    ],
)
def test_python_syntax_is_not_in_the_grammar(text):
    syntax_error(text)


def test_deep_nesting_and_long_input_give_clean_errors():
    for text in ("(" * 10_000 + "1" + ")" * 10_000, "(" * 10_000, "not " * 10_000 + "1", "-" * 10_000 + "1"):
        err = syntax_error(text)
        assert "nested too deeply" in str(err) or "expected" in str(err)
    err = syntax_error("1" + "+1" * 5000)
    assert "nested too deeply" in str(err)
    err = syntax_error("1" + " " * MAX_LENGTH)
    assert "too long" in str(err)


def test_quotes_and_parentheses_in_comments_do_not_hide_or_add_nesting():
    deep = "(" * 10_000 + "1" + ")" * 10_000
    for comment in ("# patient's age\n", "// it's\n"):
        assert "nested too deeply" in str(syntax_error(comment + deep))
    assert parse("# " + "(" * (MAX_DEPTH + 1) + "\n[a] = 1") == parse("[a] = 1")


def test_nesting_up_to_the_limit_parses_and_renders():
    depth = MAX_DEPTH - 2
    text = "(" * depth + "[a]" + ")" * depth
    assert parse(text) == FieldRef("a")
    chain = " and ".join(f"[f{i}] = {i}" for i in range(500))  # long flat chains are not deep
    assert len(parse(chain).operands) == 500
    nested = "if([a] = 1, 1, " * 50 + "0" + ")" * 50
    assert parse(render(parse(nested))) == parse(nested)


def test_render_refuses_extensions_unless_asked():
    tree = parse("count_instances(atrq, [ok] = '1') >= 2")
    with pytest.raises(LogicError, match="trialkit extension"):
        render(tree)
    assert render(tree, extensions=True) == "count_instances(atrq, [ok] = '1') >= 2"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("[a]=1 AND [b]<>2 or NOT [c]", "[a] = 1 and [b] <> 2 or not [c]"),
        ("[a] != 1", "[a] <> 1"),
        ("(1+2)*3", "(1 + 2) * 3"),
        ("1-(2-3)", "1 - (2 - 3)"),
        ("2^3", "(2)^(3)"),
        ("-(-1)", "-(-1)"),
        ('datediff( [dob] , today , "y" )', "datediff([dob], 'today', 'y')"),
        ('[e][f][last-instance] = "it\'s"', '[e][f][last-instance] = "it\'s"'),
        ("not ([a] or [b])", "not ([a] or [b])"),
        ("[a] or ([b] or [c])", "[a] or ([b] or [c])"),
        ("([a] = 1) = ([b] = 1)", "([a] = 1) = ([b] = 1)"),
    ],
)
def test_canonical_rendering(text, canonical):
    assert render(parse(text)) == canonical
    assert parse(canonical) == parse(text)
