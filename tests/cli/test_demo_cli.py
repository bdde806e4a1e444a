"""`trialkit demo`: screens the example data set and writes the HTML report, JSON and screening log."""

from __future__ import annotations

import json

import pytest

from trialkit.cli import main


def test_demo_writes_report_with_all_dispositions(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out-dir", str(tmp_path / "demo")])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "as of 2026-11-02" in out
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Assessed for eligibility" in html
    doc = json.loads((tmp_path / "demo" / "screening.json").read_text())
    counts = doc["summary"]["by_disposition"]
    assert all(counts[d] > 0 for d in ("eligible", "ineligible", "pending")), counts
    assert len(doc["summary"]["by_reason"]) >= 8  # several different primary reasons
    # every result carries the rule set's sha256, the line the demo prints too (as `trialkit screen`'s does)
    assert f"kap_trd 1.0.0 (sha256 {doc['ruleset']['sha256'][:12]}) as of 2026-11-02" in out
    assert doc["summary"]["missing_fields"], "pending candidates list what to collect"
    log = (tmp_path / "demo" / "screening_log.csv").read_text()
    assert "first_name" not in log and "@example.org" not in log


def test_demo_with_missing_data_file_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out-dir", str(tmp_path), "--data", str(tmp_path / "none.csv")])
    assert info.value.code == 2
    assert "demo data not found" in capsys.readouterr().err


def test_demo_through_the_sandbox_agrees_with_offline_screening_and_writes_results_back(capsys, tmp_path):
    import polars as pl

    with pytest.raises(SystemExit) as info:
        main(["demo", "--out-dir", str(tmp_path / "redcap")])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "embedded REDCap sandbox at http://127.0.0.1:" in out and "wrote 300 results back" in out
    # it lists every file it wrote, and leaves none it does not list
    written = sorted(p.name for p in (tmp_path / "redcap").iterdir())
    assert written == sorted(["ledger.sqlite", "redcap_export.csv", "report.html", "screening.json",
                              "screening_log.csv", "validation_findings.csv"])
    for name in written:
        assert str(tmp_path / "redcap" / name) in out, name
    with pytest.raises(SystemExit) as info:
        main(["demo", "--offline", "--out-dir", str(tmp_path / "offline")])
    assert info.value.code == 0
    via_redcap = json.loads((tmp_path / "redcap" / "screening.json").read_text())
    offline = json.loads((tmp_path / "offline" / "screening.json").read_text())
    assert via_redcap["summary"] == offline["summary"]
    # what REDCap holds afterwards: one written-back disposition per candidate, equal to the report's
    export = pl.read_csv(tmp_path / "redcap" / "redcap_export.csv", infer_schema=False)
    stored = dict(export.filter(pl.col("elig_disposition").is_not_null())
                  .select("record_id", "elig_disposition").iter_rows())
    assert stored == {c["record_id"]: c["disposition"] for c in via_redcap["candidates"]}


def test_a_value_redcap_refuses_is_named_by_record_and_field_never_quoted(capsys, tmp_path):
    # REDCap's import error quotes each refused value; the demo printed it whole, identifier values included
    import polars as pl

    from trialkit.screening.run import project_root

    intake = pl.read_csv(project_root() / "examples" / "kap_trd_intake.csv", infer_schema=False)
    intake = intake.filter(pl.col("record_id").is_in(["0001", "0002"])).with_columns(
        pl.when((pl.col("record_id") == "0002") & pl.col("dob").is_not_null())
        .then(pl.lit("1990-13-45")).otherwise(pl.col("dob")).alias("dob")
    )
    data = tmp_path / "intake.csv"
    intake.write_csv(data)
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out-dir", str(tmp_path / "demo"), "--data", str(data)])
    out, err = capsys.readouterr()
    assert info.value.code == 1, err
    assert "1990-13-45" not in out + err
    assert "0002" in err and "dob" in err and "--offline" in err
    assert "Traceback" not in err
