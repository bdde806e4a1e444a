"""Data Access Groups in the sandbox: `dag` export/import/delete/switch, `userDagMapping`, the
`redcap_data_access_group` column, and exports limited to the token user's group, through PyCap 2.7.0."""

from __future__ import annotations

import pytest
from redcap import RedcapError
from sandbox_data import classic_spec, post


@pytest.fixture
def sites(sandbox):
    """A classic project with two sites as Data Access Groups (as `study.yaml` data_access_groups: would give)."""
    from trialkit.redcap.sandbox.project import dag_rows

    token = sandbox.create_project(classic_spec(dags=dag_rows(["Site A", "Site B"])))
    yield sandbox.project(token)
    sandbox.drop_project(token)


def test_dags_export_import_rename_and_delete(classic):
    assert classic.export_dags() == []
    assert classic.import_dags([{"data_access_group_name": "New DAG", "unique_group_name": ""},
                                {"data_access_group_name": "dag-a", "unique_group_name": ""}]) == 2
    dags = classic.export_dags()
    assert [(d["data_access_group_name"], d["unique_group_name"]) for d in dags] == [
        ("New DAG", "new_dag"), ("dag-a", "daga")]  # REDCap's generated names (PyCap doctest, REDCap's XML)
    assert all(isinstance(d["data_access_group_id"], int) for d in dags)
    # a known unique name renames; an unknown one is refused
    assert classic.import_dags([{"data_access_group_name": "Site A", "unique_group_name": "daga"}]) == 1
    assert classic.export_dags()[1]["data_access_group_name"] == "Site A"
    with pytest.raises(RedcapError, match="not valid"):
        classic.import_dags([{"data_access_group_name": "X", "unique_group_name": "nope"}])
    assert classic.delete_dags(["new_dag"]) == 1
    assert [d["unique_group_name"] for d in classic.export_dags()] == ["daga"]
    with pytest.raises(RedcapError):
        classic.delete_dags(["new_dag"])


def test_records_carry_their_group_in_and_out(sites):
    sites.import_records([{"record_id": "1", "age": "30", "redcap_data_access_group": "site_a"},
                          {"record_id": "2", "age": "40", "redcap_data_access_group": "site_b"},
                          {"record_id": "3", "age": "50"}])
    rows = sites.export_records(export_data_access_groups=True)
    assert [(r["record_id"], r["redcap_data_access_group"]) for r in rows] == [
        ("1", "site_a"), ("2", "site_b"), ("3", "")]
    assert list(rows[0])[:2] == ["record_id", "redcap_data_access_group"]
    assert "redcap_data_access_group" not in sites.export_records()[0]
    labels = sites.export_records(export_data_access_groups=True, raw_or_label="label")
    assert labels[0]["redcap_data_access_group"] == "Site A"
    with pytest.raises(RedcapError, match="not a valid data access group"):
        sites.import_records([{"record_id": "4", "redcap_data_access_group": "site_z"}])
    # moving a record to another group
    sites.import_records([{"record_id": "3", "redcap_data_access_group": "site_b"}])
    assert sites.export_records(records=["3"], export_data_access_groups=True)[0]["redcap_data_access_group"] == \
        "site_b"


def test_a_user_in_a_group_sees_and_changes_only_its_records(sites):
    sites.import_records([{"record_id": "1", "age": "30", "redcap_data_access_group": "site_a"},
                          {"record_id": "2", "age": "40", "redcap_data_access_group": "site_b"},
                          {"record_id": "3", "age": "50"}])
    assert sites.export_user_dag_assignment() == [{"username": "sandbox_user", "redcap_data_access_group": ""}]
    assert sites.switch_dag("site_a") == "1"
    assert sites.export_user_dag_assignment() == [{"username": "sandbox_user", "redcap_data_access_group": "site_a"}]
    user = sites.export_users()[0]
    assert (user["data_access_group"], user["data_access_group_id"]) == ("site_a", 1)
    assert [r["record_id"] for r in sites.export_records()] == ["1"]
    # no group column for a user in a group, even when asked
    assert "redcap_data_access_group" not in sites.export_records(export_data_access_groups=True)[0]
    # new records join the user's group; another group's record cannot be changed or deleted
    sites.import_records([{"record_id": "9", "age": "20"}])
    assert [r["record_id"] for r in sites.export_records()] == ["1", "9"]
    with pytest.raises(RedcapError, match="another data access group"):
        sites.import_records([{"record_id": "2", "age": "41"}])
    with pytest.raises(RedcapError, match="do not exist"):
        sites.delete_records(["2"])
    # the project XML of a group user holds its group's records only
    xml = post(sites.url, token=sites.token, content="project_xml", returnFormat="json").text
    assert 'SubjectKey="1"' in xml and 'SubjectKey="2"' not in xml
    # back out of the group through userDagMapping: every record again
    assert sites.import_user_dag_assignment([{"username": "sandbox_user", "redcap_data_access_group": ""}]) == 1
    rows = sites.export_records(export_data_access_groups=True)
    assert [(r["record_id"], r["redcap_data_access_group"]) for r in rows] == [
        ("1", "site_a"), ("2", "site_b"), ("3", ""), ("9", "site_a")]


def test_switch_and_mapping_refuse_unknown_groups_and_users(sites):
    reply = post(sites.url, token=sites.token, content="dag", action="switch", dag="site_z", returnFormat="csv")
    assert reply.status_code == 400 and "site_z" in reply.text
    with pytest.raises(RedcapError, match="not a user"):
        sites.import_user_dag_assignment([{"username": "someone", "redcap_data_access_group": "site_a"}])
    with pytest.raises(RedcapError, match="does not exist"):
        sites.import_user_dag_assignment([{"username": "sandbox_user", "redcap_data_access_group": "site_z"}])


def test_deleting_a_group_keeps_its_records_in_no_group(sites):
    sites.import_records([{"record_id": "1", "redcap_data_access_group": "site_a"}])
    sites.switch_dag("site_a")
    assert sites.delete_dags(["site_a"]) == 1
    assert sites.export_user_dag_assignment()[0]["redcap_data_access_group"] == ""
    assert sites.export_records(export_data_access_groups=True)[0]["redcap_data_access_group"] == ""


def test_dag_changes_are_logged_as_design(sites):
    sites.import_dags([{"data_access_group_name": "Site C", "unique_group_name": ""}])
    sites.switch_dag("site_c")
    details = [e["details"] for e in sites.export_logging(log_type="manage")]
    assert details[0] == "Switch data access group (site_c)"
    assert details[1].startswith("Create/rename data access groups")

