"""Sandbox throughput and memory: import then export N records of the KAP-TRD shape through PyCap.

Shape: the real KAP-TRD study (study.yaml: 8 events, repeating `atrq` and `kap_session`). Every record has data
in every event: screening (all its forms) + 2 ATRQ instances, baseline, 8 treatment `kap_session` instances,
end of series, 2 maintenance sessions and the three follow-ups: 18 rows per record. Each form present in a row
gets its first 6 data fields filled with valid values (choices, integers, numbers, dates by validation type).

The server runs as its own process (`trialkit sandbox serve`), so its memory is measured alone: VmHWM is reset
(/proc/PID/clear_refs) before each phase and read after it. Imports go in batches of 500 records, as a sync client
sends them, once as JSON (the PyCap default) and once as CSV text (`import_format="csv"`, the columns of a REDCap
export), each into its own project. The export is ONE call for all N records (timed three times, the fastest
counted, memory the peak of the three): CSV (PyCap returns the text; JSON
for 100,000 records x 18 rows x 186 columns would be ~7 GB of reply that PyCap must decode) plus a JSON export of
5,000 records, so both encoders are measured.

First, the same PyCap calls against a server that does no work (it reads each request and answers a stored reply:
`{"count": 500}`, or the sandbox's own export bytes) give the ceiling PyCap itself sets on this machine, whatever
the server does. It is measured in the same run, so each sandbox figure is also given as a ratio to it, which
holds far better than records/s when other jobs share the machine (issue 11 §3 states its targets so).

Every phase also prints the CPU seconds of the client (this process) and of the server (its /proc stat), and the
load average: on a busy machine wall time and records/s fall, CPU seconds much less.

Targets (issue 11 §3): JSON import >= 50% of PyCap's ceiling, JSON export >= 90% of it, CSV export >= 5,000
records/s, server memory flat during an export (here: growth < 32 MB, whatever the reply size).

    python benchmarks/bench_sandbox.py                 # 10,000 and 100,000 (ceiling: 5,000)
    python benchmarks/bench_sandbox.py --quick         # 1,000 records, ceiling 1,000: about a minute
    python benchmarks/bench_sandbox.py --records 2000  # one size
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlencode

import requests
from redcap import Project

from trialkit.definitions.redcap_names import checkbox_column
from trialkit.redcap.sandbox.project import Schema

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500
JSON_EXPORT_MAX = 5000  # records in the one JSON export measured (JSON of 100,000 records would be ~7 GB)
EXPORT_RUNS = 3  # each export is timed this many times, the fastest counted (memory: the peak of all)
EXPORT_GROWTH_MB = 32  # "flat": the server's memory may grow this much during an export, whatever its size
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
        schema = Schema(spec)
        # the columns of a REDCap export, in order: what a CSV import batch carries
        self.export_columns = [
            schema.def_field, "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance",
            *(c.name for c in schema.columns if c.name != schema.def_field),
        ]

    def _fill(self, row: dict, forms: list[str], rnd: random.Random) -> dict:
        for form in forms:
            for meta in self.fields_of[form]:
                value = _value(meta, rnd)
                if value is None:
                    continue
                if meta["field_type"] == "checkbox":
                    first = meta["select_choices_or_calculations"].split("|")[0].split(",")[0].strip()
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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall, client CPU, server CPU and load over one phase."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.wall = self.client = self.server = 0.0
        self.load = os.getloadavg()[0]

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        s0 = _cpu_s(self.pid) if self.pid else 0.0
        try:
            yield
        finally:
            self.wall += time.perf_counter() - t0
            self.client += time.process_time() - c0
            self.server += (_cpu_s(self.pid) - s0) if self.pid else 0.0
            self.load = max(self.load, os.getloadavg()[0])

    def cpu(self) -> str:
        return f"CPU client {self.client:.2f} s, server {self.server:.2f} s; load {self.load:.1f}"


def best_of(pid: int | None, call):
    """An export is one short call: on a shared machine one run's wall time is mostly luck. EXPORT_RUNS runs,
    the fastest counted (its Meter); returns (the last result, that Meter)."""
    best = None
    for _ in range(EXPORT_RUNS):
        meter = Meter(pid)
        with meter.timing():
            result = call()
        if best is None or meter.wall < best.wall:
            best = meter
    return result, best


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


def csv_text(shape: Shape, batch: list[dict]) -> str:
    """A batch as the CSV a REDCap export gives: every column of the project, in export order."""
    columns = shape.export_columns
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(batch)
    return buf.getvalue()


def batches(n: int, shape: Shape, seed: int) -> Iterator[tuple[int, list[dict]]]:
    """(records in the batch, its rows); generating test data is never timed."""
    rnd = random.Random(seed)
    for start in range(1, n + 1, BATCH):
        batch: list[dict] = []
        for i in range(start, min(start + BATCH, n + 1)):
            batch.extend(shape.record(str(i), rnd))
        yield min(BATCH, n + 1 - start), batch


def import_all(proj: Project, n: int, spec, shape: Shape, fmt: str, *, check: bool = True,
               meter: Meter | None = None) -> tuple[float, int, float]:
    """Seconds spent in PyCap's import_records, rows sent, MB of form data."""
    meter = meter or Meter(None)
    seconds = 0.0
    rows = 0
    payload_mb = 0.0
    for count, batch in batches(n, shape, seed=n):
        rows += len(batch)
        data = batch if fmt == "json" else csv_text(shape, batch)
        t0 = time.perf_counter()
        with meter.timing():
            reply = proj.import_records(data, import_format=fmt)
        seconds += time.perf_counter() - t0
        if check:
            assert reply == {"count": count}, reply
        text = json.dumps(batch, separators=(",", ":")) if fmt == "json" else data
        payload_mb += len(urlencode({"data": text})) / 2**20
    return seconds, rows, payload_mb


def start_server(db: Path, token: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TRIALKIT_SANDBOX_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "trialkit", "sandbox", "serve", "--study", str(ROOT), "--db",
                             str(db), "--format", "json"], stdout=subprocess.PIPE, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())["url"]


def json_export_ids(n: int) -> list[str] | None:
    """The records one JSON export asks for: all of them (no list) up to 5,000, else the first 5,000 by id."""
    return None if n <= JSON_EXPORT_MAX else [str(i) for i in range(1, JSON_EXPORT_MAX + 1)]


def run(n: int, spec, shape: Shape, workdir: Path) -> dict:
    token = "BE" * 16
    # CSV import first, into a project of its own, then the JSON import whose project the exports read
    proc, url = start_server(workdir / f"bench_{n}_csv.db", token)
    try:
        proj = Project(url, token, timeout=600)
        csv_meter = Meter(proc.pid)
        t_csv, _, csv_mb = import_all(proj, n, spec, shape, "csv", meter=csv_meter)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    proc, url = start_server(workdir / f"bench_{n}.db", token)
    try:
        proj = Project(url, token, timeout=600)
        proj.export_metadata()  # warm PyCap's metadata cache outside the timings
        idle = _rss_mb(proc.pid)
        watch = PeakWatcher(proc.pid)
        import_meter = Meter(proc.pid)
        t_import, rows_total, payload_mb = import_all(proj, n, spec, shape, "json", meter=import_meter)
        import_peak = watch.stop()

        before = _rss_mb(proc.pid)
        watch = PeakWatcher(proc.pid)
        text, export_meter = best_of(proc.pid, lambda: proj.export_records(format_type="csv"))
        t_export = export_meter.wall
        export_peak = watch.stop()
        exported_rows = text.count("\n") - 1
        reply_mb = len(text.encode()) / 2**20
        del text

        ids = json_export_ids(n)
        m = len(ids) if ids else n
        json_before = _rss_mb(proc.pid)
        watch = PeakWatcher(proc.pid)
        rows, json_meter = best_of(proc.pid, lambda: proj.export_records(records=ids))
        t_json = json_meter.wall
        json_peak = watch.stop()
        assert len({r["record_id"] for r in rows}) == m
        del rows
        return {
            "records": n, "rows": rows_total, "import_s": t_import, "import_rps": n / t_import,
            "payload_mb": payload_mb, "csv_import_s": t_csv, "csv_import_rps": n / t_csv, "csv_mb": csv_mb,
            "export_s": t_export, "export_rps": n / t_export, "exported_rows": exported_rows, "reply_mb": reply_mb,
            "idle_mb": idle, "import_peak_mb": import_peak, "before_export_mb": before, "export_peak_mb": export_peak,
            "json_records": m, "json_rps": m / t_json, "json_before_mb": json_before, "json_peak_mb": json_peak,
            "meters": {"import": import_meter, "csv_import": csv_meter, "export": export_meter, "json": json_meter},
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _NullHandler(BaseHTTPRequestHandler):
    """Reads the request, answers a stored reply: no parsing, no validation, no storage."""

    protocol_version = "HTTP/1.1"
    replies: ClassVar[dict[str, bytes]] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if b"content=metadata" in body:
            reply, ctype = self.replies["metadata"], "application/json"
        elif b"&data=" in body or body.startswith(b"data="):
            reply, ctype = b'{"count": 500}', "application/json"
        elif b"format=csv" in body and b"content=record" in body:
            reply, ctype = self.replies["csv"], "text/csv; charset=utf-8"
        else:
            reply, ctype = self.replies["json"], "application/json; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def _serve_null(replies: dict[str, bytes], port: multiprocessing.Value) -> None:
    _NullHandler.replies = replies
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NullHandler)
    port.value = server.server_address[1]
    server.serve_forever()


def pycap_floor(n: int, spec, shape: Shape, workdir: Path) -> dict:
    """Records per second PyCap reaches against a server that does no work: the ceiling for any server."""
    token = "BF" * 16
    proc, url = start_server(workdir / "floor.db", token)
    try:
        proj = Project(url, token, timeout=600)
        import_all(proj, n, spec, shape, "json")
        ids = json_export_ids(n)
        replies = {"csv": requests.post(url, data={"token": token, "content": "record", "format": "csv"},
                                        timeout=600).content,
                   "json": requests.post(url, data={"token": token, "content": "record", "format": "json",
                                                    **{f"records[{i}]": r for i, r in enumerate(ids or [])}},
                                         timeout=600).content}
        replies["metadata"] = json.dumps(proj.export_metadata()).encode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    port = multiprocessing.Value("i", 0)
    server = multiprocessing.get_context("fork").Process(target=_serve_null, args=(replies, port), daemon=True)
    server.start()
    try:
        while not port.value:
            time.sleep(0.01)
        proj = Project(f"http://127.0.0.1:{port.value}/api/", token, timeout=600)
        out = {"records": n, "json_records": len(ids) if ids else n,
               "json_reply_kb": len(replies["json"]) / (len(ids) if ids else n) / 1024,
               "csv_reply_kb": len(replies["csv"]) / n / 1024}
        proj.export_metadata()
        meters = {}
        for fmt in ("json", "csv"):
            meter = meters[f"import_{fmt}"] = Meter(server.pid)
            seconds, _, _ = import_all(proj, n, spec, shape, fmt, check=False, meter=meter)
            out[f"import_{fmt}"] = n / seconds
            _, meter = best_of(server.pid, lambda fmt=fmt: proj.export_records(
                format_type=fmt, records=ids if fmt == "json" else None))
            meters[f"export_{fmt}"] = meter
            out[f"export_{fmt}"] = (len(ids) if ids and fmt == "json" else n) / meter.wall
        out["meters"] = meters
        return out
    finally:
        server.terminate()
        server.join()


def figure(name: str, value: float, unit: str, target: str, *, peer: str | None = None,
           ratio: float | None = None, ok: bool | None = None) -> None:
    """One machine-readable line for benchmarks/run_all.py."""
    print("FIGURE " + json.dumps({"name": name, "value": round(value, 3), "unit": unit, "target": target,
                                  "peer": peer, "ratio": None if ratio is None else round(ratio, 3), "ok": ok}))


def main() -> None:
    global FIELDS_PER_FORM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="*", default=None,
                        help="record counts to run (default 10,000 and 100,000; --quick: 1,000)")
    parser.add_argument("--fields-per-form", type=int, default=6,
                        help="data fields filled in each form of a row (default %(default)s)")
    parser.add_argument("--floor-records", type=int, default=None,
                        help="records for PyCap's ceiling against a do-nothing server (0: skip; default 5,000, "
                             "--quick: 1,000)")
    parser.add_argument("--quick", action="store_true", help="a reduced size that runs in under a minute")
    args = parser.parse_args()
    records = args.records or ([1000] if args.quick else [10_000, 100_000])
    floor_n = args.floor_records if args.floor_records is not None else (1000 if args.quick else 5000)
    FIELDS_PER_FORM = args.fields_per_form
    from trialkit.redcap.sandbox import ProjectSpec

    wall0, cpu0 = time.perf_counter(), time.process_time()
    spec = ProjectSpec.from_study(ROOT)
    shape = Shape(spec)
    sample = shape.record("1", random.Random(0))
    cells = sum(len(r) for r in sample)
    print(f"KAP-TRD shape: {len(spec.metadata)} fields, {len(spec.events)} events, {len(sample)} rows and "
          f"{cells} cells per record ({FIELDS_PER_FORM} fields per form); {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        f = None
        if floor_n:
            # the ceiling first, in the same run: every sandbox figure below is also given as a ratio to it
            f = pycap_floor(floor_n, spec, shape, Path(tmp))
            fm = f["meters"]
            print(f"\nPyCap's own ceiling: {f['records']:,} records against a server that only reads the request "
                  "and answers a stored reply")
            print(f"  import  JSON {f['import_json']:8,.0f} records/s ({fm['import_json'].cpu()})")
            print(f"  import  CSV  {f['import_csv']:8,.0f} records/s ({fm['import_csv'].cpu()})")
            print(f"  export  JSON {f['export_json']:8,.0f} records/s ({fm['export_json'].cpu()}; "
                  f"reply {f['json_reply_kb']:.0f} KB per record)")
            print(f"  export  CSV  {f['export_csv']:8,.0f} records/s ({fm['export_csv'].cpu()}; "
                  f"reply {f['csv_reply_kb']:.0f} KB per record)")

        def of(key: str, rps: float) -> str:
            return f" = {rps / f[key]:.2f} x PyCap's ceiling" if f else ""

        def cpu_of(key: str, meter: Meter, count: int | None = None) -> str:
            """PyCap's ceiling over the sandbox in CPU seconds per record (client + server): the ratio that
            holds when other jobs take the CPUs, since waiting for a CPU costs wall time but no CPU time."""
            if not f:
                return ""
            peer = f["meters"][key]
            peer_n = f["json_records"] if key == "export_json" else f["records"]
            ours = (meter.client + meter.server) / (count or n)
            return f"; CPU ratio {(peer.client + peer.server) / peer_n / ours:.2f}" if ours else ""

        for n in records:
            r = run(n, spec, shape, Path(tmp))
            m = r["meters"]
            print(f"\n{r['records']:,} records ({r['rows']:,} rows)")
            print(f"  import  {r['import_s']:7.1f} s  {r['import_rps']:8,.0f} records/s"
                  f"{of('import_json', r['import_rps'])}  JSON ({r['rows'] / r['import_s']:,.0f} rows/s, "
                  f"batches of {BATCH}, {r['payload_mb']:.0f} MB of form data)")
            print(f"          {m['import'].cpu()}{cpu_of('import_json', m['import'])}; server peak "
                  f"{r['import_peak_mb']:.0f} MB, idle {r['idle_mb']:.0f} MB")
            print(f"  import  {r['csv_import_s']:7.1f} s  {r['csv_import_rps']:8,.0f} records/s"
                  f"{of('import_csv', r['csv_import_rps'])}  CSV ({r['rows'] / r['csv_import_s']:,.0f} rows/s, "
                  f"{r['csv_mb']:.0f} MB of form data)")
            print(f"          {m['csv_import'].cpu()}{cpu_of('import_csv', m['csv_import'])}")
            print(f"  export  {r['export_s']:7.1f} s  {r['export_rps']:8,.0f} records/s"
                  f"{of('export_csv', r['export_rps'])}  (one CSV call, {r['exported_rows']:,} rows = "
                  f"{r['exported_rows'] / r['export_s']:,.0f} rows/s, reply {r['reply_mb']:.0f} MB)")
            print(f"          {m['export'].cpu()}{cpu_of('export_csv', m['export'])}")
            growth = r["export_peak_mb"] - r["before_export_mb"]
            json_growth = r["json_peak_mb"] - r["json_before_mb"]
            print(f"          server memory {r['before_export_mb']:.0f} MB before, peak {r['export_peak_mb']:.0f} MB "
                  f"during the export (+{growth:.0f} MB)")
            print(f"  export  JSON, {r['json_records']:,} records in one call: {r['json_rps']:,.0f} records/s"
                  f"{of('export_json', r['json_rps'])}, server peak {r['json_peak_mb']:.0f} MB (+{json_growth:.0f} MB)")
            print(f"          {m['json'].cpu()}{cpu_of('export_json', m['json'], r['json_records'])}")
            tag = f" ({n} records)"
            ratio = r["import_rps"] / f["import_json"] if f else None
            figure("sandbox JSON import through PyCap" + tag, r["import_rps"], "records/s",
                   ">= 0.5 x PyCap ceiling", peer="PyCap against a do-nothing server", ratio=ratio,
                   ok=None if ratio is None else ratio >= 0.5)
            ratio = r["csv_import_rps"] / f["import_csv"] if f else None
            figure("sandbox CSV import through PyCap" + tag, r["csv_import_rps"], "records/s", "none",
                   peer="PyCap against a do-nothing server", ratio=ratio)
            ratio = r["json_rps"] / f["export_json"] if f else None
            figure("sandbox JSON export through PyCap" + tag, r["json_rps"], "records/s",
                   ">= 0.9 x PyCap ceiling", peer="PyCap against a do-nothing server", ratio=ratio,
                   ok=None if ratio is None else ratio >= 0.9)
            figure("sandbox CSV export through PyCap" + tag, r["export_rps"], "records/s", ">= 5000 records/s",
                   peer="PyCap against a do-nothing server", ratio=r["export_rps"] / f["export_csv"] if f else None,
                   ok=r["export_rps"] >= 5000)
            figure("sandbox memory growth during the CSV export" + tag, growth, "MB",
                   f"< {EXPORT_GROWTH_MB} MB (flat)", ok=growth < EXPORT_GROWTH_MB)
            figure("sandbox memory after the import" + tag, r["before_export_mb"], "MB", "none")
    print(f"\nbench_sandbox: wall {time.perf_counter() - wall0:.1f} s, CPU (this process) "
          f"{time.process_time() - cpu0:.1f} s, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
