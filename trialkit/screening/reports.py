"""Screening outputs: JSON document, candidate CSV, plain-text table, screening log CSV, self-contained HTML.

Every output carries the rule set stamp (id, version, sha256 of the rule file) and the as-of date. Writers take
an optional `generated_at` so golden-file tests stay stable; the library never reads the clock itself.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from trialkit.errors import UsageError
from trialkit.screening.engine import Screening
from trialkit.screening.explain import Funnel, Summary, candidates, funnel, summarise
from trialkit.screening.outcomes import CandidateResult
from trialkit.spreadsheet import safe_cell

FORMATS = ("table", "csv", "json", "html")


@dataclass(frozen=True)
class Report:
    """Everything a report shows, computed once."""

    screening: Screening
    summary: Summary
    candidates: tuple[CandidateResult, ...]
    funnel: Funnel

    @property
    def stamp(self) -> dict[str, Any]:
        return self.screening.stamp()


def build_report(screening: Screening) -> Report:
    summary = summarise(screening)
    return Report(screening, summary, tuple(candidates(screening)), funnel(screening, summary))


# ---------------------------------------------------------------------------------------------------------------
# JSON


def to_document(report: Report) -> dict[str, Any]:
    s = report.screening
    return {
        "ruleset": s.rules.stamp(),
        "as_of": s.as_of.isoformat(),
        "reference_date": s.rules.reference_field,
        "notes": list(s.notes),
        "summary": report.summary.to_dict(),
        "criteria": [
            {"id": cc.id, "kind": cc.kind.value, "text": cc.criterion.text, "attested": cc.criterion.is_attested}
            for cc in s.rules.criteria
        ],
        "candidates": [c.to_dict() for c in report.candidates],
    }


def render_json(report: Report) -> str:
    return json.dumps(to_document(report), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# CSV of candidates (one row each, one column per criterion)


def render_csv(report: Report) -> str:
    crits = report.screening.rules.criteria
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["record_id", "disposition", "primary_reason", "reasons", "still_needed", "to_correct"]
        + [cc.id for cc in crits]
        + ["ruleset_id", "ruleset_version", "ruleset_sha256", "as_of"]
    )
    stamp = report.screening.rules.stamp()
    for c in report.candidates:
        w.writerow(
            [safe_cell(c.record_id), c.disposition, c.primary_reason or "", ";".join(c.reasons),
             ";".join(c.still_needed), safe_cell(";".join(c.to_correct))]
            + [o.result for o in c.criteria]
            + [stamp["id"], stamp["version"], stamp["sha256"], report.screening.as_of.isoformat()]
        )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Plain-text table for the terminal


def render_table(report: Report, *, limit: int | None = None, details: bool = False) -> str:
    """The terminal view: stamp, counts, one line per candidate; with `details`, each candidate's checklist."""
    s = report.screening
    stamp = s.rules.stamp()
    sm = report.summary
    lines = [
        f"Screening against {stamp['id']} {stamp['version']} (sha256 {stamp['sha256'][:12]}) "
        f"as of {s.as_of.isoformat()}",
        f"{sm.total} assessed: {sm.by_disposition['eligible']} eligible, {sm.by_disposition['ineligible']} "
        f"ineligible, {sm.by_disposition['pending']} pending",
        "",
    ]
    rows = [("record_id", "disposition", "primary reason", "still needed")]
    shown = report.candidates if limit is None else report.candidates[:limit]
    for c in shown:
        needed = ", ".join(c.still_needed)
        if c.to_correct:
            needed = "; ".join([needed, f"to correct: {', '.join(c.to_correct)}"] if needed else
                               [f"to correct: {', '.join(c.to_correct)}"])
        rows.append((c.record_id, c.disposition, c.primary_reason or "", needed))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    if limit is not None and len(report.candidates) > limit:
        lines.append(f"... {len(report.candidates) - limit} more")
    if details:
        for c in shown:
            lines += [
                "",
                f"Record {c.record_id}: {c.disposition}"
                + (f", primary reason {c.primary_reason}" if c.primary_reason else ""),
            ]
            for o in c.criteria:
                vals = "; ".join(f"{k} = {'blank' if v is None else v}" for k, v in o.values.items())
                miss = f"  MISSING: {', '.join(o.missing)}" if o.missing else ""
                if o.to_correct:
                    miss += f"  TO CORRECT: {', '.join(o.to_correct)}"
                lines.append(f"  {o.id:<4} {o.kind:<9} {o.result:<14} {vals}{miss}")
    if sm.by_primary_reason:
        lines += ["", "Ineligible by primary reason:"]
        lines += [f"  {cid:<5} {n}" for cid, n in sm.by_primary_reason.items()]
    if sm.missing_forms:
        lines += ["", "Still needed by instrument (pending candidates):"]
        lines += [f"  {form:<32} {n}" for form, n in sm.missing_forms]
    if sm.missing:
        lines += ["", "Missing fields, by pending candidates they would help decide:"]
        lines += [f"  {m.field:<32} {m.pending}" for m in sm.missing[:15]]
    if s.notes:  # how the data was read where it was not plain (rows that disagree, unnumbered instances, ...)
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in s.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Screening log (ICH E6 8.3.20 / NIDCR shape): no identifier fields, ever.

LOG_COLUMNS = (
    "screen_id",
    "consent_date",
    "consent_version",
    "screened_on",
    "evaluation_as_of",
    "ruleset",
    "ruleset_sha256",
    "disposition",
    "primary_reason",
    "all_reasons",
    "still_needed",
    "to_correct",
)
_LOG_DISPOSITION = {"eligible": "eligible", "ineligible": "ineligible", "pending": "pending_data"}


def screening_log_rows(
    report: Report,
    *,
    consent_date: str | None = "consent_date",
    consent_version: str | None = "consent_version",
    identifiers: Iterable[str] = (),
) -> list[dict[str, str]]:
    """One row per candidate. Columns from the data are read only when the field is not an identifier (PHI)."""
    s = report.screening
    banned = set(identifiers)
    data = s.data
    rid = s.record_id

    def column(name: str | None) -> dict[str, str]:
        if not name or name in banned or name not in data.columns:
            return {}
        values = data.select(rid, name).rows()
        return {
            str(k): ("" if v is None else (v.isoformat() if hasattr(v, "isoformat") else str(v))) for k, v in values
        }

    consent = column(consent_date)
    version = column(consent_version)
    screened = column(s.rules.reference_field)
    stamp = s.rules.stamp()
    out = []
    for c in report.candidates:
        out.append(
            {
                "screen_id": c.record_id,
                "consent_date": consent.get(c.record_id, ""),
                "consent_version": version.get(c.record_id, ""),
                "screened_on": screened.get(c.record_id, ""),
                "evaluation_as_of": s.as_of.isoformat(),
                "ruleset": f"{stamp['id']}@{stamp['version']}",
                "ruleset_sha256": stamp["sha256"],
                "disposition": _LOG_DISPOSITION[c.disposition],
                "primary_reason": c.primary_reason or "",
                "all_reasons": ";".join(c.reasons),
                "still_needed": ";".join(c.still_needed),
                "to_correct": ";".join(c.to_correct),
            }
        )
    return out


def render_screening_log(report: Report, *, identifiers: Sequence[str] = ()) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), lineterminator="\n")
    w.writeheader()
    rows = screening_log_rows(report, identifiers=identifiers)
    w.writerows({k: safe_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# HTML


def _funnel_svg(f: Funnel, kinds: dict[str, str]) -> dict[str, Any]:
    """Geometry of the CONSORT figure: the main column (assessed -> eligible) with two side boxes (excluded, by
    primary reason split into inclusion not met / exclusion met, and pending). Plain numbers keep the template
    declarative."""
    incl = [(cid, n, text) for cid, text, n in f.excluded.items if kinds.get(cid) == "inclusion"]
    excl = [(cid, n, text) for cid, text, n in f.excluded.items if kinds.get(cid) != "inclusion"]
    rows = max(len(incl), len(excl), 1)
    main_w, side_w = 300, 460
    x_main, x_side = 20, 400
    y_assessed = 20
    y_excl = 110
    ex_h = 78 + 18 * rows
    y_pending = y_excl + ex_h + 36
    y_eligible = y_pending + 56 + 50
    return {
        "width": x_side + side_w + 20,
        "height": y_eligible + 76,
        "main_w": main_w,
        "side_w": side_w,
        "x_main": x_main,
        "x_side": x_side,
        "x_col2": x_side + side_w // 2 + 10,
        "y_assessed": y_assessed,
        "y_excl": y_excl,
        "ex_h": ex_h,
        "y_pending": y_pending,
        "y_eligible": y_eligible,
        "mid_x": x_main + main_w // 2,
        "incl": incl,
        "excl": excl,
        "n_incl": sum(n for _, n, _ in incl),
        "n_excl": sum(n for _, n, _ in excl),
    }


#: Beyond this many candidates the HTML page keeps the table but not every checklist (it would weigh ~7 kB each).
MAX_CHECKLISTS = 2000


def render_html(
    report: Report,
    *,
    generated_at: str | None = None,
    title: str | None = None,
    max_checklists: int = MAX_CHECKLISTS,
) -> str:
    from jinja2 import Environment, select_autoescape

    env = Environment(
        autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True, lstrip_blocks=True
    )
    source = resources.files("trialkit.screening").joinpath("templates", "report.html.j2").read_text("utf-8")
    template = env.from_string(source)
    s = report.screening
    return template.render(
        title=title or f"Screening report: {s.rules.ruleset.title}",
        ruleset=s.rules.ruleset,
        stamp=s.rules.stamp(),
        as_of=s.as_of.isoformat(),
        reference_field=s.rules.reference_field,
        notes=s.notes,
        summary=report.summary,
        candidates=report.candidates,
        checklists=report.candidates[:max_checklists],
        criteria=s.rules.criteria,
        funnel=report.funnel,
        svg=_funnel_svg(report.funnel, {cc.id: cc.kind.value for cc in s.rules.criteria}),
        generated_at=generated_at,
    )


def render(report: Report, fmt: str, **kwargs: Any) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report, **kwargs)
    if fmt == "table":
        return render_table(report)
    raise UsageError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
