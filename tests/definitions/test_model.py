from __future__ import annotations

import pytest

from trialkit.definitions import Choice, Field, FieldType, load_study


@pytest.fixture(scope="module")
def kap(repo_root):
    return load_study(repo_root)


def test_action_tags_are_read_from_the_annotation():
    f = Field(name="x", type=FieldType.TEXT, form="f", annotation=" @READONLY @DEFAULT='a@b.c'\n@HIDDEN-SURVEY note")
    assert f.action_tags == ("@READONLY", "@DEFAULT", "@HIDDEN-SURVEY")


@pytest.mark.parametrize(
    ("ftype", "validation", "kind"),
    [
        (FieldType.TEXT, "date_dmy", "date"),
        (FieldType.TEXT, "datetime_seconds_ymd", "datetime"),
        (FieldType.TEXT, "time_mm_ss", "time"),
        (FieldType.TEXT, "integer", "integer"),
        (FieldType.TEXT, "number_2dp_comma_decimal", "number"),
        (FieldType.TEXT, "email", "text"),
        (FieldType.TEXT, "", "text"),
        (FieldType.RADIO, "", "choice"),
        (FieldType.YESNO, "", "choice"),
        (FieldType.CHECKBOX, "", "checkbox"),
        (FieldType.CALC, "", "number"),
        (FieldType.SLIDER, "number", "integer"),
        (FieldType.FILE, "signature", "file"),
        (FieldType.DESCRIPTIVE, "", "none"),
        (FieldType.NOTES, "", "text"),
    ],
)
def test_value_kind(ftype, validation, kind):
    assert Field(name="x", type=ftype, form="f", validation=validation).value_kind == kind


def test_implicit_choices_of_yesno_and_truefalse():
    assert Field(name="x", type=FieldType.YESNO, form="f").effective_choices == (Choice("1", "Yes"), Choice("0", "No"))
    assert Field(name="x", type=FieldType.TRUEFALSE, form="f").choice_codes == ("1", "0")
    assert Field(name="x", type=FieldType.DESCRIPTIVE, form="f").has_data is False


def test_study_navigation(kap):
    assert kap.record_id_field == "record_id"
    assert kap.field("madrs_total").form == "madrs"
    assert kap.instrument("atrq").field("atrq_drug").choices[0] == Choice("sertraline", "Sertraline")
    assert kap.events_of("kap_session") == ("treatment_arm_1", "maintenance_arm_1")
    assert kap.event("baseline_arm_1").label == "Baseline"
    assert ("screening_arm_1", "atrq") in kap.repeating_pairs
    with pytest.raises(KeyError):
        kap.field("nope")


def test_field_specs_for_the_logic_layer(kap):
    specs = kap.field_specs()
    assert specs["race"].field_type == "checkbox" and specs["race"].choices == ("1", "2", "3", "4", "5", "9")
    assert specs["dob"].validation == "date_ymd" and specs["dob"].kind == "date"
    assert specs["cssrs_q4"].codes == ("1", "0")
    assert specs["atrq_dose"].repeating and specs["atrq_dose"].form == "atrq"
    assert specs["atrq_dose"].events == frozenset({"screening_arm_1"})
    assert specs["phq9_total"].events == frozenset(
        {"screening_arm_1", "baseline_arm_1", "end_of_series_arm_1", "followup_1m_arm_1", "followup_3m_arm_1",
         "followup_6m_arm_1"}
    )
    assert specs["phq9_complete"].choices == ("0", "1", "2")
    assert next(iter(specs)) == "record_id"
