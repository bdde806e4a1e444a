"""A REDCap project XML as study and instrument YAML, and Data Access Groups in study.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from definitions_helpers import BASE, make_study

from trialkit.definitions import load_study
from trialkit.definitions.loader import check_study
from trialkit.definitions.odm import study_from_project_xml
from trialkit.definitions.yamlwrite import study_yaml
from trialkit.errors import DefinitionError

FIXTURE = Path(__file__).resolve().parents[1] / "redcap" / "fixtures" / "redcap_project.xml"


def test_a_project_xml_becomes_a_study_with_its_schedule():
    study, notes = study_from_project_xml(FIXTURE.read_bytes(), name="rehearsal", path="project.xml")
    assert study.title == "Rehearsal trial"
    assert [i.name for i in study.instruments] == ["enrolment", "symptoms", "dosing"]
    assert study.instrument("enrolment").label == "Enrolment & consent"
    assert [(a.number, a.name) for a in study.arms] == [(1, "Drug"), (2, "Placebo")]
    events = {e.name: e for e in study.events}
    assert list(events) == ["screening_arm_1", "treatment_arm_1", "follow_up_arm_1", "screening_arm_2"]
    assert events["screening_arm_1"].instruments == ("enrolment", "symptoms")
    assert events["treatment_arm_1"].repeating == ("dosing",)
    assert events["follow_up_arm_1"].day_offset == 30 and events["follow_up_arm_1"].label == "Follow up"
    assert study.data_access_groups == ("Site A", "dag-b")
    assert [(c.code, c.label) for c in study.missing_codes] == [("UNK", "Unknown"), ("NA", "Not applicable")]
    assert study.field("weight").validation == "integer"
    # what a study cannot hold is said, not dropped silently
    assert notes == ["the project has repeating events (follow_up_arm_1); a trialkit study has no repeating "
                     "events yet, so they were left out",
                     "custom event labels (follow_up_arm_1) and custom repeating instrument labels (dosing) were "
                     "left out: a trialkit study has no place for them"]


def test_dictionary_import_writes_yaml_that_checks_clean_and_loads_back(tmp_path):
    out = tmp_path / "rehearsal"
    done = subprocess.run([sys.executable, "-m", "trialkit", "dictionary", "import", str(FIXTURE), "--out",
                           str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "repeating events (follow_up_arm_1)" in done.stderr
    assert check_study(out).errors == []
    loaded = load_study(out)
    expected, _ = study_from_project_xml(FIXTURE.read_bytes(), name="rehearsal")
    assert loaded.arms == expected.arms and loaded.instruments == expected.instruments
    assert loaded.data_access_groups == ("Site A", "dag-b") and loaded.title == "Rehearsal trial"


def test_a_file_that_is_not_a_project_is_a_definition_error(tmp_path):
    with pytest.raises(DefinitionError, match="not a CDISC ODM file"):
        study_from_project_xml(b"<html/>", path="x.xml")
    bad = tmp_path / "x.xml"
    bad.write_text("<ODM><Study>")
    done = subprocess.run([sys.executable, "-m", "trialkit", "dictionary", "import", str(bad), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not well-formed XML" in done.stderr and "Traceback" not in done.stderr


OTHER_ODM = b"""<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3" FileType="Snapshot" FileOID="x" SourceSystem="OC">
 <Study OID="S_1"><MetaDataVersion OID="v1" Name="v1">
  <FormDef OID="F_1" Name="Demo" Repeating="No"><ItemGroupRef ItemGroupOID="IG_1" Mandatory="Yes"/></FormDef>
  <ItemGroupDef OID="IG_1" Name="G" Repeating="No"><ItemRef ItemOID="I_AGE" Mandatory="No"/></ItemGroupDef>
  <ItemDef OID="I_AGE" Name="AGE" DataType="integer"/>
 </MetaDataVersion></Study>
</ODM>
"""


def test_an_odm_file_from_another_system_is_said_to_be_not_redcaps():
    # CDISC ODM from another EDC: its OIDs are no REDCap names; say what the file is, not four name errors
    with pytest.raises(DefinitionError) as info:
        study_from_project_xml(OTHER_ODM, path="oc.xml")
    (diag,) = info.value.diagnostics
    assert diag.code == "ODM001" and "not a REDCap project XML" in diag.message


STUDY_WITH_DAGS = """\
study: demo
instruments: [base]
data_access_groups:
  - Site A
  - "Site B: Oslo"
"""


def test_study_yaml_data_access_groups_load_write_and_become_the_projects_groups(tmp_path):
    from trialkit.redcap.sandbox import ProjectSpec

    root = make_study(tmp_path, {"base": BASE}, STUDY_WITH_DAGS)
    assert check_study(root).errors == []
    study = load_study(root)
    assert study.data_access_groups == ("Site A", "Site B: Oslo")
    assert "data_access_groups:\n  - Site A\n  - 'Site B: Oslo'\n" in study_yaml(study) or \
        'data_access_groups:\n  - Site A\n  - "Site B: Oslo"\n' in study_yaml(study)
    spec = ProjectSpec.from_definition(study)
    assert [(d["data_access_group_name"], d["unique_group_name"], d["data_access_group_id"]) for d in spec.dags] \
        == [("Site A", "site_a", 1), ("Site B: Oslo", "site_b_oslo", 2)]


@pytest.mark.parametrize("groups", ["[Site A, Site A]", "[\"\"]", "Site A", "[\"--\"]"])
def test_bad_data_access_groups_are_reported_by_check(tmp_path, groups):
    root = make_study(tmp_path, {"base": BASE}, f"study: demo\ninstruments: [base]\ndata_access_groups: {groups}\n")
    errors = check_study(root).errors
    assert errors and "data_access_groups" in errors[0].message + str(errors[0])
