"""report.html in a real browser (headless Chromium): a desktop window, a phone (390 px), and print to PDF.

Skipped when Chromium is not installed, unless TRIALKIT_BROWSER_TESTS=required (CI installs Debian's chromium
and sets it, so there these tests cannot be skipped silently).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from trialkit.screening.reports import build_report, render_html

from .conftest import TRIALS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("TRIALKIT_BROWSER_TESTS") == "required":
        raise RuntimeError("TRIALKIT_BROWSER_TESTS=required but chromium is not installed")
    pytestmark = pytest.mark.skip(reason="chromium not installed (apt-get install chromium); CI runs these tests")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: appended to the page: writes layout measurements into the DOM, which --dump-dom then returns
PROBE = """<script>
(function () {
  var d = document.documentElement, out = {};
  out.scrollWidth = d.scrollWidth;
  out.viewport = window.innerWidth;
  var li = document.querySelector(".flow li");
  out.flowFont = li ? parseFloat(getComputedStyle(li).fontSize) : 0;
  var miss = document.querySelector('.checklist tbody td[data-label="missing"]:not(:empty)');
  var r = miss.getBoundingClientRect();
  out.missingRight = r.right; out.missingWidth = r.width;
  out.filtersDisplay = getComputedStyle(document.getElementById("filters")).display;
  var sel = document.querySelector('select[data-filter="disposition"]');
  sel.value = "pending"; sel.dispatchEvent(new Event("change", {bubbles: true}));
  out.shownPending = Array.prototype.filter.call(
    document.querySelectorAll("#candidate-table tbody tr"), function (tr) { return !tr.hidden; }).length;
  sel.value = ""; sel.dispatchEvent(new Event("change", {bubbles: true}));
  var sort = document.querySelector("#candidate-table thead th:first-child button");
  if (sort) { sort.click(); sort.click(); }
  out.firstAfterSort = document.querySelector("#candidate-table tbody tr").dataset.record;
  (window.parent !== window ? parent.document : document).body.setAttribute("data-probe", JSON.stringify(out));
})();
</script>"""


A4_HEIGHT = 841.89  # points


def _chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    started = time.perf_counter()
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    print(f"chromium {args[-2]}: {time.perf_counter() - started:.1f} s")
    return done.stdout


def _probe(tmp_path: Path, html: str, width: int) -> dict:
    import html as html_lib
    import json

    # Headless windows are at least 500 px wide: a phone's 390 px is an iframe of that width (its media queries
    # see 390 px). A srcdoc frame shares the page's origin, so the probe can write into the outer document.
    inner = html.replace("</body>", PROBE + "</body>")
    page = tmp_path / f"probe-{width}.html"
    page.write_text(
        f'<!DOCTYPE html><body style="margin:0"><iframe style="border:0;width:{width}px;height:844px" '
        f'srcdoc="{html_lib.escape(inner)}"></iframe></body>',
        encoding="utf-8",
    )
    dom = _chromium(tmp_path, f"--window-size={max(width, 500) + 20},900", "--dump-dom", page.as_uri())
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the probe script did not run"
    return json.loads(html_lib.unescape(found.group(1)))


def pdf_layout(data: bytes) -> tuple[int, dict[str, tuple[int, float]]]:
    """Page count, and the page (1-based) and height from the page's bottom (points) of each named destination
    (the targets of in-page links) of a PDF as Chromium writes it (plain objects, no object streams)."""
    objs = {int(m.group(1)): m.group(2) for m in re.finditer(rb"(?m)^(\d+) 0 obj\n(.*?)endobj", data, re.S)}
    root = int(re.search(rb"/Type /Catalog.*?/Pages (\d+) 0 R", data, re.S).group(1))
    pages: list[int] = []

    def walk(n: int) -> None:
        kids = re.search(rb"/Kids \[([^\]]*)\]", objs[n])
        if kids and b"/Type /Pages" in objs[n]:
            for k in re.findall(rb"(\d+) 0 R", kids.group(1)):
                walk(int(k))
        else:
            pages.append(n)

    walk(root)
    dests = {}
    table = re.search(rb"/Dests (\d+) 0 R", data)
    if table:
        for name, page, y in re.findall(rb"/([\w-]+) \[(\d+) 0 R /XYZ [\d.]+ ([\d.]+)", objs[int(table.group(1))]):
            dests[name.decode()] = (pages.index(int(page)) + 1, float(y))
    return len(pages), dests


def _print(tmp_path: Path, html: str, name: str) -> tuple[int, dict[str, tuple[int, float]]]:
    page = tmp_path / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    pdf = tmp_path / f"{name}.pdf"
    _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    return pdf_layout(pdf.read_bytes())


@pytest.fixture(scope="module")
def many(study, rules):
    """20 candidates of ten kinds (several printed pages of checklists), with reasons on many criteria, so the
    flow has as many lines as a real study's."""
    from trialkit.records import IntakeData
    from trialkit.screening.engine import screen

    from .conftest import AS_OF, ELIGIBLE, flat_rows

    kinds = [
        {},
        {"madrs_total": None, "madrs_10": None},
        {"vs_sbp_1": "175"},
        {"mini_bipolar_1": "1"},
        {"hx_aneurysm": "1"},
        {"ketamine_hypersensitivity": "1"},
        {"maoi_past_month": "1"},
        {"consent_signed": "0"},
        {"dob": "2015-01-01"},
        {"episode_start_date": "2026-10-20"},
    ]
    built = {}
    for i in range(20):
        fields = {k: v for k, v in {**ELIGIBLE, **kinds[i % len(kinds)]}.items() if v is not None}
        built[f"{i + 1:04d}"] = (fields, TRIALS)
    return build_report(screen(rules, IntakeData.from_frame(flat_rows(built), study), as_of=AS_OF), study=study)


def test_a_phone_gets_one_column_without_sideways_scrolling(tmp_path, many):
    got = _probe(tmp_path, render_html(many), 390)
    assert got["viewport"] == 390
    assert got["scrollWidth"] <= 390, got  # tables stack or scroll inside their box, the page does not
    assert got["flowFont"] >= 12, got  # the flow's text is text, not a drawing scaled to 5 px
    assert got["missingWidth"] > 100 and got["missingRight"] <= 390, got  # the 'missing' column is on screen
    assert got["filtersDisplay"] != "none", got
    assert got["shownPending"] == many.summary.by_disposition["pending"] > 0  # the disposition filter works
    assert got["firstAfterSort"] == f"{many.total:04d}"  # the second click on 'record' sorts descending


def test_a_desktop_window_without_javascript_lists_everyone_and_hides_the_controls(tmp_path, many):
    page = render_html(many)
    start = page.index("<script>")
    no_js = page[:start] + page[page.index("</script>", start) + len("</script>"):]
    got = _probe(tmp_path, no_js, 1280)
    assert got["scrollWidth"] <= 1280 and got["flowFont"] >= 12, got
    assert got["filtersDisplay"] == "none", got  # controls that would do nothing are not shown
    assert got["shownPending"] == many.total  # every candidate is listed


def test_print_puts_the_flow_on_page_one_and_the_summary_mode_leaves_checklists_out(tmp_path, many):
    full_pages, full = _print(tmp_path, render_html(many, summary=False, max_checklists=6), "full")
    summary_pages, summary = _print(tmp_path, render_html(many, summary=True), "summary")
    # the flow starts on page 1 and ends there: the next section begins on page 1 or at the top of page 2
    assert full["funnel"][0] == 1, full
    assert full["missing"][0] == 1 or (full["missing"][0] == 2 and full["missing"][1] > A4_HEIGHT - 20), full
    print(f"pages: {full_pages} with 6 checklists, {summary_pages} in summary mode")
    assert summary_pages <= 4 and full_pages >= summary_pages + 6, (summary_pages, full_pages)
    assert "candidates-detail" in full and "candidates-detail" not in summary
    # 20 candidates default to the full print; more than 50 to the summary
    assert 'id="print-summary">' in render_html(many)
