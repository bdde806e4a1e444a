"""Projects made from a trialkit study and from real REDCap dictionaries; DAGs and missing-data codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from redcap import RedcapError
from sandbox_data import CLASSIC_METADATA

from trialkit.redcap.sandbox import ProjectSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kap(sandbox):
    token = sandbox.create_project(ProjectSpec.from_study(ROOT))
    yield sandbox.project(token)
    sandbox.drop_project(token)


def test_kap_study_becomes_a_longitudinal_project(kap):
    from trialkit.definitions import load_study
    from trialkit.definitions.dictionary import metadata_rows

    study = load_study(ROOT)
    assert kap.is_longitudinal
    assert kap.export_metadata() == metadata_rows(study)
    assert [e["unique_event_name"] for e in kap.export_events()] == [e.name for e in study.events]
    pairs = {(m["unique_event_name"], m["form"]) for m in kap.export_instrument_event_mappings()}
    assert pairs == {(e.name, f) for e in study.events for f in e.instruments}
    repeats = {(r["event_name"], r["form_name"]) for r in kap.export_repeating_instruments_events()}
    assert repeats == set(study.repeating_pairs)
    assert [r["export_field_name"] for r in kap.export_field_names()] == [
        c for c in study.export_field_names()
        if study.fields.get(c) is None or study.fields[c].type.value != "file"
    ]


def test_kap_record_with_repeating_treatment_history(kap):
    kap.import_records([
        {"record_id": "K-001", "redcap_event_name": "screening_arm_1", "consent_signed": "1",
         "consent_date": "2025-03-01", "dob": "1980-05-17", "sex": "1"},
        {"record_id": "K-001", "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "atrq",
         "redcap_repeat_instance": "1", "atrq_drug": "sertraline", "atrq_dose": "150"},
        {"record_id": "K-001", "redcap_event_name": "screening_arm_1", "redcap_repeat_instrument": "atrq",
         "redcap_repeat_instance": "2", "atrq_drug": "bupropion", "atrq_dose": "300"},
        {"record_id": "K-001", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "kap_session",
         "redcap_repeat_instance": "1", "ks_dose_mgkg": "0.50"},
    ])
    rows = kap.export_records(fields=["record_id", "dob", "atrq_drug", "ks_dose_mgkg"])
    shape = [(r["redcap_event_name"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"]) for r in rows]
    assert shape == [("screening_arm_1", "", ""), ("screening_arm_1", "atrq", 1), ("screening_arm_1", "atrq", 2),
                     ("treatment_arm_1", "kap_session", 1)]
    assert [r["atrq_drug"] for r in rows] == ["", "sertraline", "bupropion", ""]
    with pytest.raises(RedcapError) as err:  # number_2dp needs two decimals
        kap.import_records([{"record_id": "K-002", "redcap_event_name": "treatment_arm_1",
                             "redcap_repeat_instrument": "kap_session", "redcap_repeat_instance": "1",
                             "ks_dose_mgkg": "0.5"}])
    assert '"K-002","ks_dose_mgkg","0.5"' in err.value.args[0]["error"]


def test_kap_calculated_fields_are_computed_on_import(kap):
    kap.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "dob": "1980-06-30",
                         "screening_date": "2025-06-29", "vs_height_cm": "170.0", "vs_weight_kg": "80.0",
                         **{f"phq9_{i}": "2" for i in range(1, 10)}}])
    row = kap.export_records(fields=["record_id", "age_screening", "vs_bmi", "phq9_total"])[0]
    assert (row["age_screening"], row["vs_bmi"], row["phq9_total"]) == ("44", "27.7", "18")
    kap.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "phq9_9": ""}],
                       overwrite="overwrite")
    assert kap.export_records(fields=["record_id", "phq9_total"])[0]["phq9_total"] == ""  # '+' propagates blanks


@pytest.mark.parametrize("name", ["redcapAPI_TestRedcapAPI_DataDictionary.csv",
                                  "bridge2ai_phq9_gad7_subset_DataDictionary.csv"])
def test_real_dictionaries_round_trip_through_the_api(sandbox, shared_dictionaries, name):
    from trialkit.definitions.dictionary import read_dictionary_csv

    path = shared_dictionaries / name
    token = sandbox.create_project(ProjectSpec.from_dictionary_csv(path))
    proj = sandbox.project(token)
    rows = [r.cells for r in read_dictionary_csv(path.read_text(encoding="utf-8"), str(path))]
    assert proj.export_metadata() == rows
    assert proj.import_metadata(proj.export_metadata()) == len(rows)
    sandbox.drop_project(token)


def test_data_access_groups(sandbox):
    dags = ({"data_access_group_name": "Site A", "unique_group_name": "site_a", "data_access_group_id": 11},
            {"data_access_group_name": "Site B", "unique_group_name": "site_b", "data_access_group_id": 12})
    proj = sandbox.project(sandbox.create_project(ProjectSpec.classic(CLASSIC_METADATA, dags=dags)))
    proj.import_records([{"record_id": "1", "redcap_data_access_group": "site_b", "age": "3"}, {"record_id": "2"}])
    rows = proj.export_records(export_data_access_groups=True, fields=["record_id", "age"])
    assert rows == [{"record_id": "1", "redcap_data_access_group": "site_b", "age": "3"},
                    {"record_id": "2", "redcap_data_access_group": "", "age": ""}]
    assert "redcap_data_access_group" not in proj.export_records(fields=["record_id"])[0]
    label = proj.export_records(export_data_access_groups=True, fields=["record_id"], raw_or_label="label")
    assert label[0]["redcap_data_access_group"] == "Site B"
    with pytest.raises(RedcapError):
        proj.import_records([{"record_id": "3", "redcap_data_access_group": "site_z"}])
    sandbox.drop_project(proj.token)


def test_missing_data_codes_are_accepted_in_any_field(sandbox):
    proj = sandbox.project(sandbox.create_project(
        ProjectSpec.classic(CLASSIC_METADATA, missing_data_codes="UNK, Unknown | NA, Not applicable")))
    assert proj.export_project_info()["missing_data_codes"] == "UNK, Unknown | NA, Not applicable"
    proj.import_records([{"record_id": "1", "age": "UNK", "sex": "NA", "dob": "UNK"}])
    row = proj.export_records()[0]
    assert (row["age"], row["sex"], row["dob"]) == ("UNK", "NA", "UNK")
    with pytest.raises(RedcapError):
        proj.import_records([{"record_id": "1", "age": "XX"}])
    sandbox.drop_project(proj.token)


def test_return_content_nothing_and_reset(sandbox, classic):
    assert classic.import_records([{"record_id": "1"}], return_content="nothing") == [{}]
    assert len(classic.export_records()) == 1
    sandbox.reset(classic.token)
    assert classic.export_records() == []
    assert classic.export_logging() == []
    assert len(classic.export_metadata()) == len(CLASSIC_METADATA)  # the design stays
