"""What a nightly run costs as the project grows: requests, bytes over the wire, records pulled and seconds.

For each N, N synthetic KAP-TRD candidates (examples/generate_intake.py) go into a fresh sandbox project, then
the nightly job runs night after night against it through PyCap over HTTP:

- night 1: the first run (full: every record pulled, every result written);
- night 2, 0% changed: nothing changed since night 1 except night 1's own write-back;
- night 3, 1% changed: a coordinator edited 1% of the records during the day;
- night 3 again, an hour later, 0% changed: a rerun within the same day.

The server's clock and the job's move together (a second per reading), so record change times fall where a
real server would put them. The server runs in this process (a thread), so its work is in the seconds; the
bytes are request bodies plus reply bodies as PyCap sent and received them (the client's CallStats).

    python benchmarks/bench_nightly.py                   # N = 2,000 and 20,000
    python benchmarks/bench_nightly.py --records 2000
    python benchmarks/bench_nightly.py --quick           # N = 1,000 (for benchmarks/run_all.py)

Besides the table it prints one `FIGURE {json}` line per headline figure (the benchmarks protocol): requests and
bytes of a night with nothing new, and records pulled when 1% changed, for each N; then CPU time, wall time and
the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from trialkit.definitions import load_study
from trialkit.redcap.client import RedcapClient, Token
from trialkit.redcap.sandbox import ProjectSpec, running_sandbox
from trialkit.redcap.sync import Ledger, run_nightly
from trialkit.screening.run import DEMO_AS_OF, load_rules

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from generate_intake import generate  # noqa: E402


class Ticking:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


#: a night with nothing new asks for definitions and changed ids only: the test suite holds it to this many
QUIET_REQUESTS = 12


def figure(name: str, value: float, unit: str, target: str | None, ok: bool | None) -> None:
    line = {"name": name, "value": value, "unit": unit, "target": target, "peer": None, "ratio": None, "ok": ok}
    print("FIGURE " + json.dumps(line), flush=True)


def bench(n: int) -> None:
    study = load_study(ROOT)
    rules = load_rules(ROOT / "eligibility_rules" / "kap_trd.yaml", study)
    rows = [{k: v for k, v in row.items() if v not in (None, "") and not k.startswith("elig_")
             and k != "eligibility_result_complete"} for row in generate(n)]
    clock = Ticking(dt.datetime(2026, 11, 1, 9, 0, 0))
    with running_sandbox() as sb, TemporaryDirectory() as tmp:
        sb.set_clock(clock)
        token = sb.create_project(ProjectSpec.from_definition(study))
        client = RedcapClient(sb.url, Token(token), chunk_size=500, timeout=600)
        client.import_records(rows)
        ids = client.record_ids()
        ledger = Ledger(Path(tmp) / "ledger.sqlite")

        def night(label: str) -> tuple[int, int, int]:
            before = client.stats.to_dict()
            t0 = time.perf_counter()
            result = run_nightly(client, study, rules, ledger=ledger, as_of=DEMO_AS_OF, now=clock(), clock=clock)
            seconds = time.perf_counter() - t0
            after = client.stats.to_dict()
            requests = after["calls"] - before["calls"]
            wire = sum(after[k] - before[k] for k in ("bytes_sent", "bytes_received"))
            print(f"{n:>7,} {label:<34} {requests:>8} {wire / 1e6:>10.2f} {result.pulled:>8,} "
                  f"{result.written:>8,} {seconds:>8.2f}", flush=True)
            return requests, wire, result.pulled

        clock.now = dt.datetime(2026, 11, 2, 2, 0, 0)
        night("night 1 (first run, full)")
        clock.now += dt.timedelta(days=1)
        quiet_requests, quiet_bytes, quiet_pulled = night("night 2, 0% changed")
        clock.now += dt.timedelta(hours=8)
        edited = random.Random(n).sample(ids, max(1, n // 100))
        client.import_records([{"record_id": r, "redcap_event_name": "screening_arm_1", "current_ad_name": "edited"}
                               for r in edited])
        clock.now += dt.timedelta(hours=16)
        _, _, changed_pulled = night(f"night 3, 1% changed ({len(edited)})")
        clock.now += dt.timedelta(hours=1)
        night("night 3 rerun an hour later, 0%")
        ledger.close()
    figure(f"nightly, nothing new: requests (N={n})", quiet_requests, "requests", f"<= {QUIET_REQUESTS}",
           quiet_requests <= QUIET_REQUESTS)
    # no target of its own: ids of the records changed since the last run (its own write-back) and definitions
    figure(f"nightly, nothing new: bytes (N={n})", quiet_bytes, "bytes", "no record pulled", quiet_pulled == 0)
    figure(f"nightly, 1% changed: records pulled (N={n})", changed_pulled, "records", f"= {len(edited)} (the edited)",
           changed_pulled == len(edited))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, action="append", help="N (repeatable; default 2,000 and 20,000)")
    ap.add_argument("--quick", action="store_true", help="N = 1,000 only (under a minute on 2 cores)")
    args = ap.parse_args(argv)
    cpu, wall = time.process_time(), time.perf_counter()
    print(f"{'N':>7} {'run':<34} {'requests':>8} {'MB':>10} {'pulled':>8} {'written':>8} {'seconds':>8}")
    for n in args.records or ([1000] if args.quick else [2000, 20000]):
        bench(n)
    load = os.getloadavg()
    # the sandbox server is a thread of this process: its work is in the CPU time too
    print(f"CPU {time.process_time() - cpu:.1f} s, wall {time.perf_counter() - wall:.1f} s, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
