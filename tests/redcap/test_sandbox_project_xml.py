"""Project XML (CDISC ODM): `content=project_xml` exports, `trialkit sandbox serve --project-xml` creates a project
from REDCap's file (a hand-written one in REDCap's shape, and the sandbox's own export), checked through PyCap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redcap import Project
from sandbox_data import longitudinal_spec, post

from trialkit.redcap.sandbox.project import dag_rows

FIXTURE = Path(__file__).parent / "fixtures" / "redcap_project.xml"
TOKEN = "0123456789ABCDEF0123456789ABCDEF"


@contextmanager
def served(xml: Path, db: Path) -> Iterator[Project]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trialkit", "sandbox", "serve", "--format", "json", "--project-xml", str(xml),
         "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TRIALKIT_SANDBOX_TOKEN": TOKEN},
    )
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            raise AssertionError(proc.stderr.read())
        yield Project(json.loads(line)["url"], TOKEN, timeout=10)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _design(project: Project) -> dict:
    return {
        "metadata": project.export_metadata(),
        "arms": project.export_arms(),
        "events": [{k: v for k, v in e.items() if k != "event_id"} for e in project.export_events()],
        "mappings": project.export_instrument_event_mappings(),
        "repeating": project.export_repeating_instruments_events(),
        "dags": [(d["data_access_group_name"], d["unique_group_name"]) for d in project.export_dags()],
        "instruments": project.export_instruments(),
        "records": project.export_records(export_data_access_groups=True),
    }


def test_a_redcap_project_xml_becomes_a_project(tmp_path):
    with served(FIXTURE, tmp_path / "x.db") as project:
        info = project.export_project_info()
        assert info["project_title"] == "Rehearsal trial" and info["record_autonumbering_enabled"] == 0
        assert project.export_arms() == [{"arm_num": 1, "name": "Drug"}, {"arm_num": 2, "name": "Placebo"}]
        assert [e["unique_event_name"] for e in project.export_events()] == [
            "screening_arm_1", "treatment_arm_1", "follow_up_arm_1", "screening_arm_2"]
        assert {"arm_num": 1, "unique_event_name": "follow_up_arm_1", "form": "symptoms"} in \
            project.export_instrument_event_mappings()
        assert project.export_repeating_instruments_events() == [
            {"event_name": "treatment_arm_1", "form_name": "dosing", "custom_form_label": "[dose_mg] mg"},
            {"event_name": "follow_up_arm_1", "form_name": "", "custom_form_label": ""}]
        assert [(d["data_access_group_name"], d["unique_group_name"]) for d in project.export_dags()] == [
            ("Site A", "site_a"), ("dag-b", "dagb")]
        assert project.export_instruments()[0] == {"instrument_name": "enrolment",
                                                    "instrument_label": "Enrolment & consent"}
        meta = {m["field_name"]: m for m in project.export_metadata()}
        assert meta["severity"]["field_type"] == "dropdown"
        assert meta["severity"]["select_choices_or_calculations"] == "1, Mild | 2, Moderate, needs care | 3, Severe"
        assert meta["sym"]["select_choices_or_calculations"] == "1, Headache | 2, Nausea | 99, Other"
        assert meta["site_note"]["field_type"] == "notes" and meta["site_note"]["branching_logic"] == "[consent] = '1'"
        assert meta["weight"]["text_validation_type_or_show_slider_number"] == "integer"
        assert (meta["weight"]["text_validation_min"], meta["weight"]["text_validation_max"]) == ("30", "250")
        assert meta["weight"]["section_header"] == "Body measures"
        assert meta["initials"]["identifier"] == "y" and meta["initials"]["required_field"] == "y"
        assert meta["bmi"]["select_choices_or_calculations"].startswith("round([weight]*10000")
        rows = project.export_records(export_data_access_groups=True)
        keys = [(r["study_id"], r["redcap_event_name"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"],
                 r["redcap_data_access_group"]) for r in rows]
        assert keys == [
            ("101", "screening_arm_1", "", "", "site_a"),
            ("101", "treatment_arm_1", "dosing", 1, "site_a"),
            ("101", "treatment_arm_1", "dosing", 2, "site_a"),
            ("101", "follow_up_arm_1", "", 2, "site_a"),
            ("201", "screening_arm_2", "", "", "dagb"),
        ]
        first = rows[0]
        assert (first["sym___1"], first["sym___2"], first["sym___99"], first["severity"]) == ("1", "0", "1", "2")
        assert first["site_note"] == "first line\nsecond line" and first["enrolment_complete"] == "2"
        assert rows[2]["dose_mg"] == "0.75"


def test_the_sandboxs_own_export_round_trips_through_serve(sandbox, tmp_path):
    spec = longitudinal_spec(title="Round trip <&> \"quoted\"", dags=dag_rows(["Site A", "Site B"]),
                             missing_data_codes="UNK, Unknown")
    token = sandbox.create_project(spec)
    source = sandbox.project(token)
    try:
        source.import_records([
            {"record_id": "1", "redcap_event_name": "screening_arm_1", "consent_date": "2025-01-02", "phq_1": "2",
             "phq_flags___2": "1", "sbp": "120", "redcap_data_access_group": "site_b"},
            {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
             "redcap_repeat_instance": 2, "ses_dose": "0.5", "ses_date": "2025-02-01"},
            {"record_id": "1", "redcap_event_name": "treatment_arm_1", "ae_term": "nausea & <dizziness>"},
            {"record_id": "1", "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": 3,
             "fu_status": "UNK"},
            {"record_id": "10", "redcap_event_name": "baseline_arm_1", "phq_2": "0", "dbp": "80"},
        ])
        reply = post(source.url, token=token, content="project_xml", exportDataAccessGroups="true",
                     returnFormat="json")
        assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/xml")
        assert reply.text.startswith('<?xml version="1.0" encoding="UTF-8" ?>\n<ODM ')
        xml = tmp_path / "export.xml"
        xml.write_bytes(reply.content)
        expected = _design(source)
        with served(xml, tmp_path / "copy.db") as copy:
            assert _design(copy) == expected
            assert copy.export_project_info()["project_title"] == "Round trip <&> \"quoted\""
    finally:
        sandbox.drop_project(token)


def test_metadata_only_export_has_no_clinical_data(longitudinal):
    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "120"}])
    full = post(longitudinal.url, token=longitudinal.token, content="project_xml", returnFormat="json").text
    assert "<ClinicalData" in full and 'SubjectKey="1"' in full
    bare = post(longitudinal.url, token=longitudinal.token, content="project_xml", returnMetadataOnly="true",
                returnFormat="json").text
    assert "<ClinicalData" not in bare and "<MetaDataVersion" in bare


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ODM><Study><GlobalVariables><StudyName>&lol2;</StudyName></GlobalVariables></Study></ODM>
"""


@pytest.mark.parametrize(("text", "message"), [
    (BOMB, "declares entities or a DTD"),
    ("<ODM><Study>\n<MetaDataVersion>\n</Study>", "not well-formed XML"),
    ("<html><body>not a project</body></html>", "not a CDISC ODM file"),
    ("<ODM><Study><MetaDataVersion/></Study></ODM>", "defines no fields"),
])
def test_a_hostile_or_broken_file_is_refused_with_a_clear_message(tmp_path, text, message):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--project-xml", str(path),
                           "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr and "bad.xml" in done.stderr
    assert "Traceback" not in done.stderr and "lol" not in done.stderr


def test_data_the_project_refuses_stops_the_load_without_quoting_values(tmp_path):
    text = FIXTURE.read_text().replace('ItemOID="weight" Value="80"', 'ItemOID="weight" Value="eighty-secret"')
    path = tmp_path / "bad_data.xml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "trialkit", "sandbox", "serve", "--project-xml", str(path),
                           "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "record 101, field weight" in done.stderr
    assert "eighty-secret" not in done.stderr and "Traceback" not in done.stderr


def test_a_classic_project_round_trips_through_the_library(sandbox):
    """Classic projects: slider labels, descriptive and file fields, odd checkbox codes, a repeating instrument."""
    from sandbox_data import CLASSIC_METADATA

    from trialkit.redcap.sandbox import odm
    from trialkit.redcap.sandbox.project import ProjectSpec

    spec = ProjectSpec.classic(CLASSIC_METADATA, title="Classic", dags=dag_rows(["North"]),
                               repeating=({"form_name": "labs", "custom_form_label": "Lab [weight]"},),
                               form_labels=(("demographics", "Demographics"), ("labs", "Lab results")))
    token = sandbox.create_project(spec)
    source = sandbox.project(token)
    copy_token = None
    try:
        source.import_records([
            {"record_id": "1", "name": "A", "race____4": "1", "race___k__9": "1", "smoker": "0",
             "redcap_data_access_group": "north"},
            {"record_id": "1", "redcap_repeat_instrument": "labs", "redcap_repeat_instance": 1, "weight": "70",
             "height": "175.0", "pain": "40", "site": "b", "notes": "line 1\nline 2 <b>&amp;</b>"},
        ])
        xml = post(source.url, token=token, content="project_xml", exportDataAccessGroups="1",
                   returnFormat="json").content
        parsed = odm.parse_project(xml)
        assert parsed.spec.metadata == spec.metadata
        assert parsed.spec.repeating == spec.repeating and parsed.spec.form_labels == spec.form_labels
        assert parsed.spec.events == () and not parsed.spec.is_longitudinal
        copy_token = sandbox.create_project(parsed.spec)
        assert odm.import_rows(sandbox.storage, copy_token, parsed.rows) == 1
        copy = sandbox.project(copy_token)
        assert copy.export_records(export_data_access_groups=True) == \
            source.export_records(export_data_access_groups=True)
        assert copy.export_metadata() == source.export_metadata()
    finally:
        sandbox.drop_project(token)
        if copy_token:
            sandbox.drop_project(copy_token)


def test_characters_xml_cannot_carry_are_left_out_not_written_into_a_broken_file():
    from sandbox_data import classic_spec

    from trialkit.redcap.sandbox import odm

    xml = odm.render(classic_spec(title="Trial\x01 <one>"), [("1", "", "", 0, {"name": "a\x02b\nc & d"}, "")])
    parsed = odm.parse_project(xml)
    assert parsed.spec.title == "Trial <one>"
    assert parsed.rows == [{"record_id": "1", "name": "ab\nc & d"}]


def test_data_of_a_form_no_longer_designated_is_not_written(longitudinal):
    from trialkit.redcap.sandbox import odm

    longitudinal.import_records([{"record_id": "1", "redcap_event_name": "screening_arm_1", "sbp": "120",
                                  "phq_1": "2"}])
    mappings = [m for m in longitudinal.export_instrument_event_mappings() if m["form"] != "vitals"]
    longitudinal.import_instrument_event_mappings(mappings)
    xml = post(longitudinal.url, token=longitudinal.token, content="project_xml", returnFormat="json").content
    parsed = odm.parse_project(xml)
    assert parsed.rows[0]["phq_1"] == "2" and "sbp" not in parsed.rows[0]  # REDCap skips such values too
    odm.check_rows(parsed.spec, parsed.rows)  # so the file loads again
