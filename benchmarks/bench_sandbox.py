"""Sandbox throughput and memory: import then export N records of the KAP-TRD shape through PyCap.

Shape: the real KAP-TRD study (study.yaml: 8 events, repeating `atrq` and `kap_session`). Every record has data
in every event: screening (all its forms) + 2 ATRQ instances, baseline, 8 treatment `kap_session` instances,
end of series, 2 maintenance sessions and the three follow-ups: 18 rows per record. Each form present in a row
gets its first 6 data fields filled with valid values (choices, integers, numbers, dates by validation type).

The server runs as its own process (`trialkit sandbox serve`), so its memory is measured alone: VmHWM is reset
(/proc/PID/clear_refs) before each phase and read after it. Imports go in batches of 500 records (JSON, the
PyCap default), as a sync client sends them. The export is ONE call for all N records: CSV (PyCap returns the
text; JSON for 100,000 records x 18 rows x 186 columns would be ~5 GB of reply that PyCap must decode) plus a
JSON export of 5,000 records, so both encoders are measured.

    python benchmarks/bench_sandbox.py                 # 10,000 and 100,000
    python benchmarks/bench_sandbox.py --records 2000  # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from redcap import Project

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500
FIELDS_PER_FORM = 6


def _value(row: dict[str, str], rnd: random.Random) -> str | None:
    ftype = row["field_type"]
    validation = row["text_validation_type_or_show_slider_number"]
    if ftype in ("descriptive", "calc", "file", "sql"):
        return None
    if ftype in ("radio", "dropdown"):
        codes = [p.split(",", 1)[0].strip() for p in row["select_choices_or_calculations"].split("|") if p.strip()]
        return rnd.choice(codes)
    if ftype in ("yesno", "truefalse"):
        return rnd.choice(("0", "1"))
    if ftype == "slider":
        return str(rnd.randint(0, 100))
    if validation.startswith("date_"):
        return f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
    if validation.startswith("datetime_seconds"):
        return f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} 10:{rnd.randint(0, 59):02d}:00"
    if validation.startswith("datetime"):
        return f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} 10:{rnd.randint(0, 59):02d}"
    if validation in ("time",):
        return f"{rnd.randint(8, 17):02d}:{rnd.randint(0, 59):02d}"
    if validation == "integer":
        lo = int(float(row["text_validation_min"] or 0))
        hi = int(float(row["text_validation_max"] or lo + 100))
        return str(rnd.randint(lo, hi))
    if validation.startswith("number"):
        lo = float(row["text_validation_min"] or 0)
        hi = float(row["text_validation_max"] or lo + 100)
        digits = int(validation[7]) if validation[:7] == "number_" and validation[7].isdigit() else 1
        return f"{rnd.uniform(lo, hi):.{digits}f}"
    if validation == "email":
        return f"p{rnd.randint(1, 10**6)}@example.org"
    if validation:
        return None  # phone, zipcode...: left blank rather than guessed
    return rnd.choice(("ok", "see notes", "none", "stable dose"))


class Shape:
    def __init__(self, spec) -> None:
        self.spec = spec
        forms: dict[str, list[dict]] = {}
        for row in spec.metadata[1:]:
            forms.setdefault(row["form_name"], []).append(row)
        self.fields_of = {}
        for form, rows in forms.items():
            usable = [r for r in rows if r["field_type"] not in ("descriptive", "calc", "file", "sql")]
            self.fields_of[form] = usable[:FIELDS_PER_FORM]
        self.event_forms: dict[str, list[str]] = {}
        for m in spec.mappings:
            self.event_forms.setdefault(m["unique_event_name"], []).append(m["form"])
        self.repeating = {(r["event_name"], r["form_name"]) for r in spec.repeating}

    def _fill(self, row: dict, forms: list[str], rnd: random.Random) -> dict:
        for form in forms:
            for meta in self.fields_of[form]:
                value = _value(meta, rnd)
                if value is None:
                    continue
                if meta["field_type"] == "checkbox":
                    first = meta["select_choices_or_calculations"].split("|")[0].split(",")[0].strip()
                    from trialkit.definitions.redcap_names import checkbox_column

                    row[checkbox_column(meta["field_name"], first)] = "1"
                else:
                    row[meta["field_name"]] = value
        return row

    def record(self, rid: str, rnd: random.Random) -> list[dict]:
        rows = []
        instances = {"treatment_arm_1": 8, "maintenance_arm_1": 2, "screening_arm_1": 2}
        for event, forms in self.event_forms.items():
            plain = [f for f in forms if (event, f) not in self.repeating]
            if plain:
                rows.append(self._fill({"record_id": rid, "redcap_event_name": event}, plain, rnd))
            for form in forms:
                if (event, form) in self.repeating:
                    for i in range(1, instances.get(event, 1) + 1):
                        rows.append(self._fill({"record_id": rid, "redcap_event_name": event,
                                                "redcap_repeat_instrument": form, "redcap_repeat_instance": i},
                                               [form], rnd))
        return rows


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakWatcher:
    """Reset the kernel's high-water mark and also sample RSS (in case clear_refs is not permitted)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.start_rss = _rss_mb(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb(self.pid))
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _hwm_mb(self.pid))


def run(n: int, spec, shape: Shape, workdir: Path) -> dict:
    db = workdir / f"bench_{n}.db"
    token = "BE" * 16
    env = {**os.environ, "TRIALKIT_SANDBOX_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "trialkit", "sandbox", "serve", "--study", str(ROOT), "--db",
                             str(db), "--format", "json"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = json.loads(proc.stdout.readline())["url"]
        proj = Project(url, token, timeout=600)
        proj.export_metadata()  # warm PyCap's metadata cache outside the timings
        rnd = random.Random(n)
        idle = _rss_mb(proc.pid)
        watch = PeakWatcher(proc.pid)
        rows_total = 0
        t_import = t_encode = 0.0
        payload_mb = 0.0
        for start in range(1, n + 1, BATCH):
            batch = []
            for i in range(start, min(start + BATCH, n + 1)):
                batch.extend(shape.record(str(i), rnd))  # generating test data is not timed
            rows_total += len(batch)
            t0 = time.perf_counter()
            reply = proj.import_records(batch)
            t_import += time.perf_counter() - t0
            assert reply == {"count": min(BATCH, n + 1 - start)}, reply
            # what PyCap + requests spend encoding the same batch on the client (JSON, then form-urlencoding)
            t0 = time.perf_counter()
            body = urlencode({"data": json.dumps(batch, separators=(",", ":"))})
            t_encode += time.perf_counter() - t0
            payload_mb += len(body) / 2**20
        import_peak = watch.stop()

        before = _rss_mb(proc.pid)
        watch = PeakWatcher(proc.pid)
        t0 = time.perf_counter()
        text = proj.export_records(format_type="csv")
        t_export = time.perf_counter() - t0
        export_peak = watch.stop()
        exported_rows = text.count("\n") - 1
        reply_mb = len(text.encode()) / 2**20
        del text

        m = min(n, 5000)
        watch = PeakWatcher(proc.pid)
        t0 = time.perf_counter()
        rows = proj.export_records(records=[str(i) for i in range(1, m + 1)])
        t_json = time.perf_counter() - t0
        json_peak = watch.stop()
        assert len({r["record_id"] for r in rows}) == m
        del rows
        return {
            "records": n, "rows": rows_total, "import_s": t_import, "import_rps": n / t_import,
            "encode_s": t_encode, "payload_mb": payload_mb, "server_import_rps": n / max(t_import - t_encode, 1e-9),
            "export_s": t_export, "export_rps": n / t_export, "exported_rows": exported_rows, "reply_mb": reply_mb,
            "idle_mb": idle, "import_peak_mb": import_peak, "before_export_mb": before, "export_peak_mb": export_peak,
            "json_records": m, "json_rps": m / t_json, "json_peak_mb": json_peak,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    global FIELDS_PER_FORM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--fields-per-form", type=int, default=6,
                        help="data fields filled in each form of a row (default %(default)s)")
    args = parser.parse_args()
    FIELDS_PER_FORM = args.fields_per_form
    from trialkit.redcap.sandbox import ProjectSpec

    spec = ProjectSpec.from_study(ROOT)
    shape = Shape(spec)
    sample = shape.record("1", random.Random(0))
    cells = sum(len(r) for r in sample)
    print(f"KAP-TRD shape: {len(spec.metadata)} fields, {len(spec.events)} events, {len(sample)} rows and "
          f"{cells} cells per record ({FIELDS_PER_FORM} fields per form); {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.records:
            r = run(n, spec, shape, Path(tmp))
            print(f"\n{r['records']:,} records ({r['rows']:,} rows)")
            print(f"  import  {r['import_s']:7.1f} s  {r['import_rps']:8,.0f} records/s  "
                  f"({r['rows'] / r['import_s']:,.0f} rows/s, batches of {BATCH}; "
                  f"server peak {r['import_peak_mb']:.0f} MB, idle {r['idle_mb']:.0f} MB)")
            print(f"          of which {r['encode_s']:.1f} s is PyCap/requests encoding {r['payload_mb']:.0f} MB of "
                  f"form data on the client; the rest: {r['server_import_rps']:,.0f} records/s")
            print(f"  export  {r['export_s']:7.1f} s  {r['export_rps']:8,.0f} records/s  (one CSV call, "
                  f"{r['exported_rows']:,} rows = {r['exported_rows'] / r['export_s']:,.0f} rows/s, "
                  f"reply {r['reply_mb']:.0f} MB)")
            print(f"          server memory {r['before_export_mb']:.0f} MB before, peak {r['export_peak_mb']:.0f} MB "
                  f"during the export (+{r['export_peak_mb'] - r['before_export_mb']:.0f} MB)")
            print(f"  export  JSON, {r['json_records']:,} records in one call: {r['json_rps']:,.0f} records/s, "
                  f"server peak {r['json_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
