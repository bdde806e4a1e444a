"""`trialkit redcap pull-definitions`: the project written as trialkit files that check clean and diff empty
against the same project (KAP-TRD, the classic fixture, and the real dictionaries in ../shared/data)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from definitions_data import ROOT, classic_study, client_for, new_project, run_cli

from trialkit.definitions import check_study, load_study
from trialkit.errors import DefinitionError, UsageError
from trialkit.redcap.definitions.diff import diff_definitions
from trialkit.redcap.definitions.project import fetch, from_study
from trialkit.redcap.definitions.pull import pull_definitions
from trialkit.redcap.sandbox import ProjectSpec


def round_trip(client, out):
    paths = pull_definitions(client, out)
    checked = check_study(out)
    assert checked.errors == [], [d.format() for d in checked.errors]
    assert diff_definitions(from_study(load_study(out)), fetch(client)).empty
    return paths


def test_kap_trd_round_trip(sandbox, tmp_path):
    study = load_study(ROOT)
    token, client = new_project(sandbox, study)
    try:
        paths = round_trip(client, tmp_path / "kap")
        assert len(paths) == 1 + len(study.instruments)
        pulled = load_study(tmp_path / "kap")
        # REDCap keeps no order of forms within an event: they come back in form order
        assert [(e.name, e.label, set(e.instruments), e.repeating) for e in pulled.events] == \
            [(e.name, e.label, set(e.instruments), e.repeating) for e in study.events]
        assert list(pulled.fields.values()) == list(study.fields.values())
        assert pulled.title == study.title
    finally:
        sandbox.drop_project(token)


def test_classic_project_round_trip(sandbox, tmp_path):
    study = classic_study()
    token, client = new_project(sandbox, study)
    try:
        round_trip(client, tmp_path / "classic")
        pulled = load_study(tmp_path / "classic")
        assert not pulled.longitudinal
        assert pulled.repeating_instruments == ("adverse_events",)
        assert list(pulled.fields.values()) == list(study.fields.values())
    finally:
        sandbox.drop_project(token)


@pytest.mark.parametrize("name", ["bridge2ai_phq9_gad7_subset_DataDictionary.csv",
                                  "redcapAPI_TestRedcapAPI_DataDictionary.csv"])
def test_real_dictionaries_round_trip(sandbox, shared_dictionaries, tmp_path, name):
    token = sandbox.create_project(ProjectSpec.from_dictionary_csv(shared_dictionaries / name))
    try:
        round_trip(client_for(sandbox, token), tmp_path / "pulled")
    finally:
        sandbox.drop_project(token)


def test_pull_refuses_to_overwrite_and_what_a_study_cannot_hold(sandbox, tmp_path):
    token, client = new_project(sandbox, load_study(ROOT))
    try:
        pull_definitions(client, tmp_path)
        with pytest.raises(UsageError, match="exists already"):
            pull_definitions(client, tmp_path)
        spec = ProjectSpec.from_definition(load_study(ROOT))
        whole_event = ({"event_name": "treatment_arm_1", "form_name": "", "custom_form_label": ""},)
        sandbox.redefine(spec.with_(repeating=spec.repeating + whole_event), token)
        with pytest.raises(DefinitionError, match="treatment_arm_1"):
            pull_definitions(client, tmp_path / "again")
    finally:
        sandbox.drop_project(token)


def test_pull_cli_then_check_is_clean(sandbox, tmp_path, capsys, monkeypatch):
    token, _ = new_project(sandbox, classic_study())
    try:
        monkeypatch.setenv("REDCAP_API_TOKEN", token)
        code, out, err = run_cli(["redcap", "pull-definitions", "--url", sandbox.url, "--out", str(tmp_path / "s")],
                                 capsys)
        assert code == 0, err
        assert "wrote 4 file(s)" in out
        code, out, err = run_cli(["check", str(tmp_path / "s")], capsys)
        assert code == 0, out + err
    finally:
        sandbox.drop_project(token)


def test_data_access_groups_come_back(sandbox, tmp_path):
    # study.yaml's sites -> REDCap's groups -> study.yaml: pulling must not drop them (it did, silently)
    study = replace(classic_study(), data_access_groups=("Site A", "Site B"))
    token, client = new_project(sandbox, study)
    try:
        assert fetch(client).dags == ()  # diff and the nightly check do not ask (one request less each night)
        assert "data access group export" not in client.calls
        assert fetch(client, dags=True).dags == ("Site A", "Site B")
        round_trip(client, tmp_path / "sites")
        assert load_study(tmp_path / "sites").data_access_groups == ("Site A", "Site B")
    finally:
        sandbox.drop_project(token)


def test_pull_cli_speaks_json_like_every_redcap_command(sandbox, tmp_path, capsys, monkeypatch):
    # docs/cli.md: --format json is the envelope for `redcap ...` commands, also when the command fails
    token, _ = new_project(sandbox, classic_study())
    try:
        monkeypatch.setenv("REDCAP_API_TOKEN", token)
        args = ["redcap", "pull-definitions", "--url", sandbox.url, "--out", str(tmp_path / "s"), "--format", "json"]
        code, out, _ = run_cli(args, capsys)
        doc = json.loads(out)
        assert (code, doc["command"], doc["ok"], len(doc["files"])) == (0, "redcap pull-definitions", True, 4)
        code, out, err = run_cli(args, capsys)  # the files are there now: refused without --force
        doc = json.loads(out)
        assert (code, doc["ok"], doc["error"]["exit_code"]) == (2, False, 2) and "--force" in err
    finally:
        sandbox.drop_project(token)


def test_a_study_name_that_is_not_an_id_is_refused_before_anything_is_written(sandbox, tmp_path):
    token, client = new_project(sandbox, classic_study())
    try:
        with pytest.raises(UsageError, match="--name"):
            pull_definitions(client, tmp_path / "s", name="My Study")
        assert not (tmp_path / "s").exists()
        assert client.calls == []
    finally:
        sandbox.drop_project(token)
