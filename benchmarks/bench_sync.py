"""Incremental against full `redcap pull` and `redcap push`: API calls, bytes and seconds, N KAP-TRD records.

For each N: a clean KAP-TRD screening intake of N candidates (the generator of bench_validation: every screening
form plus 0-3 `atrq` instances each, valid by the study) is pushed into an empty sandbox project (full push) and
pulled into a local copy (full pull). Then 1% of the candidates get a changed cell in the intake file, as many
others are edited in REDCap by "someone else"; the push runs again (incremental); 0.1% of the records are then
deleted in REDCap, and the pull runs again (incremental: it learns the deletions from REDCap's log). Last, a push
and a pull with nothing changed show each command's fixed cost. The figures are the client's own counters: every
HTTP exchange PyCap makes (retries included), with its request and reply sizes.

Issue 9's target: incremental runs cost under 5% of a full run's calls and bytes, and grow with the changes, not
with the project. The calls part cannot hold at 10,000 records: an incremental run has a floor of a few calls
(project information, log, changed records, ...) while a full pull of 10,000 records takes about 23 (records in
chunks of 500), so the floor alone is ~20%; it holds from about 100,000 records. See docs/redcap-data-sync.md.

The sandbox runs as its own process (`trialkit sandbox serve`). Client and server share this machine's clock,
so the overlap window (there for clock skew with a real server; 10 minutes by default) is 0 here, and the
phases are a second apart (REDCap's change times have whole seconds).

    python benchmarks/bench_sync.py                    # 10,000 and 100,000 records
    python benchmarks/bench_sync.py --quick            # 10,000 records (about a minute on 2 cores)
    python benchmarks/bench_sync.py --records 2000     # any sizes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sandbox import start_server
from bench_validation import AS_OF, EVENT, generate

from trialkit.definitions.loader import load_study
from trialkit.redcap.client import RedcapClient, RetryPolicy, Token
from trialkit.redcap.data_ledger import DataLedger
from trialkit.redcap.pull import pull
from trialkit.redcap.push import push

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "B" * 32
NO_SKEW = dt.timedelta(0)


def _client(url: str) -> RedcapClient:
    return RedcapClient(url, Token(TOKEN), timeout=600, retry=RetryPolicy(attempts=3), chunk_size=500)


def _figures(name: str, result) -> dict:
    d = result.to_dict()
    return {"phase": name, "calls": d["calls"], "bytes": d["bytes"], "seconds": d["seconds"]}


def _tick() -> None:
    time.sleep(1.1)  # the next phase's changes get a later whole second than the last watermark


def edit(intake: pl.DataFrame, share: float) -> tuple[pl.DataFrame, list[str], list[str]]:
    """Change `education_years` of `share` of the candidates in the file, and pick as many others to be edited
    in REDCap directly."""
    ids = intake["record_id"].unique(maintain_order=True)
    k = max(1, int(ids.len() * share))
    in_file, in_redcap = ids.gather_every(ids.len() // k).head(k), ids.gather_every(ids.len() // k, offset=1).head(k)
    plain = pl.col("redcap_repeat_instrument").is_null()
    hit = plain & pl.col("record_id").is_in(in_file.implode())
    years = pl.col("education_years").cast(pl.Int64, strict=False)
    changed = intake.with_columns(
        pl.when(hit).then(((years.fill_null(10) + 1) % 25 + 1).cast(pl.String)).otherwise(pl.col("education_years"))
        .alias("education_years"))
    return changed, in_file.to_list(), in_redcap.to_list()


def run(n: int, work: Path) -> list[dict]:
    study = load_study(ROOT)
    intake_path = work / "intake.csv"
    info = generate(intake_path, int(n * 2.5), "csv", 0.0)
    print(f"\n{info['candidates']:,} candidates, {info['rows']:,} rows, {info['bytes'] / 1e6:.1f} MB of intake CSV",
          flush=True)
    server, url = start_server(work / "sandbox.db", TOKEN)
    rows = []
    try:
        ledger = DataLedger(work / "ledger.sqlite")
        full_push = push(_client(url), intake_path, study, ledger=ledger, now=dt.datetime.now(), as_of=AS_OF,
                         overlap=NO_SKEW, clock=dt.datetime.now)
        assert full_push.invalid == 0 and not full_push.failures, full_push.to_dict()
        rows.append(_figures("full push", full_push))
        _tick()
        full_pull = pull(_client(url), work / "copy", ledger=ledger, now=dt.datetime.now(), overlap=NO_SKEW)
        rows.append(_figures("full pull", full_pull))

        _tick()
        changed, in_file, in_redcap = edit(pl.read_csv(intake_path, infer_schema=False), 0.01)
        changed.write_csv(work / "intake2.csv")
        _client(url).import_records([{"record_id": r, "redcap_event_name": EVENT, "education_years": "3"}
                                     for r in in_redcap])
        _tick()
        inc_push = push(_client(url), work / "intake2.csv", study, ledger=ledger, now=dt.datetime.now(),
                        as_of=AS_OF, overlap=NO_SKEW, clock=dt.datetime.now)
        # a REDCap edit that happens to set the value the file holds leaves nothing to send back
        assert len(in_file) <= inc_push.changed_records <= len(in_file) + len(in_redcap), inc_push.to_dict()
        rows.append(_figures("incremental push", inc_push) | {"records": inc_push.changed_records})
        gone = _untouched(intake_path, set(in_file) | set(in_redcap), max(1, n // 1000))
        _client(url)._project.delete_records(gone)
        _tick()
        inc_pull = pull(_client(url), work / "copy", ledger=ledger, now=dt.datetime.now(), overlap=NO_SKEW)
        # changed since the pull: by the push, or by an edit in REDCap (one that set the value held changes nothing)
        pushed = set(inc_push.changed_ids)
        assert not inc_pull.full and len(pushed) <= inc_pull.fetched <= len(pushed | set(in_redcap)), inc_pull.to_dict()
        assert inc_pull.deleted == len(gone) and inc_pull.deletions_from == "log", inc_pull.to_dict()
        rows.append(_figures("incremental pull", inc_pull) | {"records": inc_pull.fetched})
        _tick()
        # nothing changed since: what is left is each command's fixed cost (the deleted records stay deleted)
        kept = pl.read_csv(work / "intake2.csv", infer_schema=False).filter(~pl.col("record_id").is_in(gone))
        kept.write_csv(work / "intake3.csv")
        idle_push = push(_client(url), work / "intake3.csv", study, ledger=ledger, now=dt.datetime.now(),
                         as_of=AS_OF, overlap=NO_SKEW, clock=dt.datetime.now)
        rows.append(_figures("idle push", idle_push) | {"records": idle_push.changed_records})
        _tick()
        idle_pull = pull(_client(url), work / "copy", ledger=ledger, now=dt.datetime.now(), overlap=NO_SKEW)
        rows.append(_figures("idle pull", idle_pull) | {"records": idle_pull.fetched})
        ledger.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    full = {"push": rows[0], "pull": rows[1]}
    print(f"{'phase':<18}{'calls':>8}{'bytes':>16}{'seconds':>10}   share of the full run (calls, bytes, seconds)")
    for row in rows:
        base = full[row["phase"].split()[-1]]
        share = "" if row is base else (
            f"   {row['calls'] / base['calls']:.2%}, {row['bytes'] / base['bytes']:.2%}, "
            f"{row['seconds'] / base['seconds']:.2%}")
        print(f"{row['phase']:<18}{row['calls']:>8,}{row['bytes']:>16,}{row['seconds']:>10.2f}{share}", flush=True)
    return rows


def _untouched(intake: Path, busy: set[str], k: int) -> list[str]:
    """k record ids of the intake that the edits left alone (to be deleted in REDCap)."""
    ids = pl.read_csv(intake, infer_schema=False, columns=["record_id"])["record_id"].unique(maintain_order=True)
    return [r for r in ids.to_list()[2::7] if r not in busy][:k]


def figure(name: str, value: float, unit: str, target: str | None, ok: bool | None) -> None:
    print("FIGURE " + json.dumps({"name": name, "value": value, "unit": unit, "target": target, "peer": None,
                                  "ratio": None, "ok": ok}), flush=True)


def report(n: int, rows: list[dict]) -> None:
    by = {r["phase"]: r for r in rows}
    for command in ("pull", "push"):
        full, inc = by[f"full {command}"], by[f"incremental {command}"]
        for what in ("calls", "bytes"):
            share = inc[what] / full[what]
            figure(f"incremental {command} {what}, share of a full {command} ({n:,} records, 1% changed)",
                   round(share * 100, 2), "%", "< 5%", share < 0.05)
    # growth with the project: a run with nothing to do costs a fixed amount, whatever the project's size
    for command in ("pull", "push"):
        idle = by[f"idle {command}"]
        figure(f"{command} with nothing changed: bytes ({n:,} records)", idle["bytes"], "B", None, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--quick", action="store_true", help="10,000 records only")
    args = ap.parse_args()
    sizes = [10_000] if args.quick else args.records
    cpu, wall = time.process_time(), time.perf_counter()
    results = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp:
            results[n] = run(n, Path(tmp))
        report(n, results[n])
    if len(results) > 1:
        # cost per changed record at the largest size against the smallest: about 1 when cost follows changes
        small, large = min(results), max(results)
        per = {n: {r["phase"]: r for r in results[n]}["incremental pull"] for n in (small, large)}
        ratio = (per[large]["bytes"] / per[large]["records"]) / (per[small]["bytes"] / per[small]["records"])
        figure(f"incremental pull bytes per fetched record, {large:,} against {small:,} records", round(ratio, 2),
               "x", "about 1 (grows with the changes)", ratio < 1.5)
    load = os.getloadavg()
    print(f"CPU {time.process_time() - cpu:.1f} s (this process; the sandbox server is another), wall "
          f"{time.perf_counter() - wall:.1f} s, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)


if __name__ == "__main__":
    main()
