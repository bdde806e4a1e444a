"""One small inline study per diagnostic code: the code comes out, at the right file, line and column."""

from __future__ import annotations

import pytest
from definitions_helpers import BASE, make_study

from trialkit.definitions import check_study, load_study
from trialkit.definitions.checks import CODES
from trialkit.errors import DefinitionError, Diagnostic


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _diags(instruments, study=None) -> list[Diagnostic]:
    from pathlib import Path

    make_study(Path("."), instruments, study)
    return check_study(".").diagnostics


def _one(diags: list[Diagnostic], code: str) -> Diagnostic:
    hits = [d for d in diags if d.code == code]
    assert hits, f"{code} not reported; got {[d.format() for d in diags]}"
    return hits[0]


def _at(d: Diagnostic) -> tuple:
    return (d.file, d.line, d.col)


# (code, instruments, study.yaml or None, expected (file, line, col), expected warning?)
CASES = {
    "IO002": ({"base": b"instrument: base\nfields: []\nlabel: \xff\xfe\n"}, None, ("instruments/base.yaml", 1, 1)),
    "YAML001": ({"base": BASE + "  - name: [oops\n"}, None, ("instruments/base.yaml", 7, 1)),
    "YAML002": ({"base": BASE + "    label: again\n"}, None, ("instruments/base.yaml", 6, 5)),
    "YAML003": ({"base": BASE + "    ? [a, b]\n    : 1\n"}, None, ("instruments/base.yaml", 6, 7)),
    "YAML004": ({"base": "# nothing here\n"}, None, ("instruments/base.yaml", 1, 1)),
    # nine-fold aliases, six deep: 531,441 values; the limit is reached expanding the list on line 5
    "YAML005": (
        {"base": "l0: &l0 [a, a, a, a, a, a, a, a, a]\n"
         + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 6))},
        None,
        ("instruments/base.yaml", 5, 5),
    ),
    "SCH001": ({"base": BASE + "    required: 'yes'\n"}, None, ("instruments/base.yaml", 6, 15)),
    "SCH002": ({"base": BASE + "  - name: age\n    label: Age\n"}, None, ("instruments/base.yaml", 6, 5)),
    "SCH003": ({"base": BASE + "    lable: typo\n"}, None, ("instruments/base.yaml", 6, 5)),
    "SCH004": ({"base": BASE + "  - name: Age\n    type: text\n"}, None, ("instruments/base.yaml", 6, 11)),
    "SCH005": ({"base": BASE + "  - name: age\n    type: textbox\n"}, None, ("instruments/base.yaml", 7, 11)),
    "SCH009": (
        {"base": BASE + "  - name: s\n    type: slider\n    slider_labels: [a, b, c, d]\n"},
        None,
        ("instruments/base.yaml", 8, 20),
    ),
    "DEF001": (
        {"base": BASE, "other": "instrument: other\nfields:\n  - name: record_id\n    type: text\n"},
        None,
        ("instruments/other.yaml", 3, 11),
    ),
    "DEF002": ({"base": BASE}, "study: demo\ninstruments: [base, base]\n", ("study.yaml", 2, 21)),
    "DEF003": ({"base": BASE}, "study: demo\ninstruments:\n  - base\n  - missing\n", ("study.yaml", 4, 5)),
    "DEF004": ({"base": BASE + "  - name: age_\n    type: text\n"}, None, ("instruments/base.yaml", 6, 11)),
    "DEF005": ({"base": BASE + "  - name: sex\n    type: radio\n"}, None, ("instruments/base.yaml", 6, 11)),
    "DEF006": (
        {"base": BASE + "  - name: cb\n    type: checkbox\n    choices:\n      a-b: One\n      a_b: Two\n"},
        None,
        ("instruments/base.yaml", 9, 7),
    ),
    "DEF007": (
        {"base": BASE + "  - name: age\n    type: text\n    validation: integer\n    min: 10\n    max: 5\n"},
        None,
        ("instruments/base.yaml", 9, 10),
    ),
    "DEF008": (
        {"base": BASE + "  - name: d\n    type: text\n    validation: date_ymd\n    min: 2024-02-30\n"},
        None,
        ("instruments/base.yaml", 9, 10),
    ),
    "DEF009": (
        {"base": BASE + "  - name: age\n    type: text\n    validation: integr\n"},
        None,
        ("instruments/base.yaml", 8, 17),
    ),
    "DEF010": ({"base": BASE + "  - name: total\n    type: calc\n"}, None, ("instruments/base.yaml", 6, 11)),
    "DEF011": (
        {"base": BASE + "  - name: total\n    type: calc\n    calculation: '[total] + 1'\n"},
        None,
        ("instruments/base.yaml", 8, 18),
    ),
    "DEF012": (
        {
            "base": BASE
            + "  - name: a\n    type: calc\n    calculation: '[b] + 1'\n"
            + "  - name: b\n    type: calc\n    calculation: '[a] * 2'\n"
        },
        None,
        ("instruments/base.yaml", 8, 18),
    ),
    "DEF013": (
        {"base": BASE, "extra": "instrument: extra\nfields:\n  - name: x\n    type: text\n"},
        "study: demo\ninstruments: [base, extra]\narms:\n  - number: 1\n    events:\n"
        "      - label: Visit\n        instruments: [base]\n",
        ("study.yaml", 2, 21),
    ),
    "DEF014": ({"base": BASE}, "study: demo\ninstruments: [base]\nrepeating_instruments: [nope]\n",
               ("study.yaml", 3, 25)),
    "DEF015": (
        {"base": BASE},
        "study: demo\ninstruments: [base]\narms:\n  - number: 1\n    events:\n"
        "      - label: Visit\n        instruments: [base, ghost]\n",
        ("study.yaml", 7, 29),
    ),
    "DEF016": (
        {"base": BASE},
        "study: demo\ninstruments: [base]\narms:\n  - number: 1\n    events:\n"
        "      - label: Visit\n        name: visit_arm_1\n        instruments: [base]\n"
        "      - label: Visit again\n        name: visit_arm_1\n        instruments: [base]\n",
        ("study.yaml", 10, 15),
    ),
    "DEF017": ({"base": "instrument: base\nfields: []\n"}, None, ("instruments/base.yaml", 2, 9)),
    "DEF018": ({"base": BASE + "  - name: base_complete\n    type: text\n"}, None, ("instruments/base.yaml", 6, 11)),
    "DEF019": (
        {"base": BASE + "  - name: t\n    type: text\n    slider_labels: [lo, mid, hi]\n"},
        None,
        ("instruments/base.yaml", 8, 5),
    ),
    "DEF020": ({"base": BASE.replace("instrument: base", "instrument: basis")}, None,
               ("instruments/base.yaml", 1, 13)),
    "DEF021": (
        {
            "base": BASE
            + "  - name: a\n    type: radio\n    choices: {0: No, 1: Yes}\n    matrix_group: m\n"
            + "  - name: b\n    type: radio\n    choices: {0: No, 1: Yes, 2: Maybe}\n    matrix_group: m\n"
        },
        None,
        ("instruments/base.yaml", 13, 19),
    ),
    "LOG001": (
        {"base": BASE + "  - name: age\n    type: text\n    show_if: \"[record_id] = \"\n"},
        None,
        ("instruments/base.yaml", 8, 29),  # end of the expression: the closing quote
    ),
}
WARNINGS = {"DEF009"}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_code_is_reported_where_the_problem_is(code):
    instruments, study, where = CASES[code]
    d = _one(_diags(instruments, study), code)
    assert _at(d) == where, d.format()
    assert d.is_error is (code not in WARNINGS)


def test_io001_study_file_missing(tmp_path):
    diags = check_study(tmp_path).diagnostics
    assert [d.code for d in diags] == ["IO001"]


def test_def003_unlisted_instrument_file_is_a_warning():
    diags = _diags({"base": BASE, "stray": "instrument: stray\nfields: []\n"}, "study: demo\ninstruments: [base]\n")
    d = _one(diags, "DEF003")
    assert (d.file, d.is_error) == ("instruments/stray.yaml", False)


def test_a_misspelt_instrument_in_study_yaml_gets_the_nearest_name():
    screening = "instrument: screening\nfields:\n  - name: record_id\n    type: text\n"
    study = ("study: demo\ninstruments: [screening]\narms:\n  - number: 1\n    events:\n"
             "      - label: Visit\n        instruments: [screaning]\n        repeating: [screnning]\n")
    diags = _diags({"screening": screening}, study)
    assert "did you mean 'screening'?" in _one(diags, "DEF015").message
    assert "did you mean 'screening'?" in _one(diags, "DEF014").message


def test_every_code_in_the_table_has_a_case():
    tested = set(CASES) | {"IO001", "DEF003"}
    assert set(CODES) <= tested, sorted(set(CODES) - tested)


def test_logic_checker_codes_are_located_in_the_yaml_file():
    text = BASE + "  - name: age\n    type: text\n    validation: integer\n"
    text += "    show_if: \"[record_id] <> '' and [agee] > 1\"\n"
    d = _one(_diags({"base": text}), "LOGIC001")
    # the quoted value starts at col 14, its text at col 15, and "[record_id] <> '' and " is 22 characters long
    assert _at(d) == ("instruments/base.yaml", 9, 37)
    assert "agee" in d.message and "age" in d.message


def test_positions_inside_literal_block_expressions():
    text = BASE + (
        "  - name: cb\n    type: checkbox\n    choices:\n      1: One\n"
        "  - name: total\n    type: calc\n    calculation: |-\n      1 +\n        [cb(7)]\n"
    )
    d = _one(_diags({"base": text}), "LOGIC002")
    assert _at(d) == ("instruments/base.yaml", 14, 9)


def test_all_problems_reported_together_and_sorted():
    text = BASE + "  - name: sex\n    type: radio\n  - name: Bad\n    type: text\n    lable: x\n"
    diags = _diags({"base": text})
    codes = [d.code for d in diags]
    assert {"DEF005", "SCH003", "SCH004"} <= set(codes)
    assert diags == sorted(diags, key=Diagnostic.sort_key)


def test_load_study_raises_definition_error_with_every_diagnostic():
    from pathlib import Path

    make_study(Path("."), {"base": BASE + "  - name: sex\n    type: radio\n  - name: a_\n    type: text\n"})
    with pytest.raises(DefinitionError) as info:
        load_study(".")
    assert {d.code for d in info.value.diagnostics} >= {"DEF005", "DEF004"}


@pytest.mark.parametrize(
    "text",
    [
        "just a string\n",
        "- a\n- b\n",
        "instrument: base\nfields: 3\n",
        "instrument: base\nfields:\n  - 3\n  - [x]\n",
        "instrument: 5\nfields:\n  - name: x\n    type: text\n    choices: [a]\n    min: {a: 1}\n",
        "instrument: base\nfields:\n  - name: x\n    type: calc\n    calculation: 12\n",
        "\ufeffinstrument: base\n\tfields: x\n",
        "instrument: base\nfields:\n  - &a {name: x, type: text}\n  - *a\n",
        "a: !!binary aGVsbG8=\n",
        "---\na: 1\n---\nb: 2\n",
    ],
)
def test_malformed_files_give_diagnostics_not_exceptions(text):
    diags = _diags({"base": text})
    assert any(d.is_error for d in diags)
    assert all(d.file and d.line for d in diags if d.code != "IO001")


def test_a_long_chain_of_calculations_does_not_exhaust_the_stack():
    from trialkit.definitions.checks import _cycles

    chain = {f"c{i}": {f"c{i + 1}"} for i in range(5000)}
    assert _cycles(chain | {"c5000": set()}) == []
    (cycle,) = _cycles(chain | {"c5000": {"c0"}})
    assert cycle[:2] == ["c0", "c1"] and cycle[-1] == "c5000" and len(cycle) == 5001


def test_an_unreadable_instruments_folder_is_reported_not_raised(monkeypatch):
    from pathlib import Path

    make_study(Path("."), {"base": BASE})

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    d = _one(check_study(".").diagnostics, "DEF003")
    assert d.is_error and "base" in d.message


def test_every_unknown_key_of_one_mapping_is_reported_at_its_line():
    # jsonschema raises one error for all of a mapping's unknown keys: only the first was reported
    diags = _diags({"base": BASE + "    lable: x\n    colour: red\n    requird: true\n"})
    found = [(d.line, d.col, d.message) for d in diags if d.code == "SCH003"]
    assert [(line, col) for line, col, _ in found] == [(6, 5), (7, 5), (8, 5)]
    assert "'lable'; did you mean 'label'?" in found[0][2] and "'colour'" in found[1][2]
    assert "did you mean 'required'?" in found[2][2]
