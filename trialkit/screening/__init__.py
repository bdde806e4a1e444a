"""Eligibility screening: every criterion for every candidate (Kleene mode, column-wise), dispositions with the
primary and all reasons, what is still needed, and the reports (JSON, CSV, table, screening log, HTML).

Public API:
    load_rules(rule_file, study=None) -> CompiledRules           check + compile once (DefinitionError, exit 2)
    compile_rules(ruleset, study) -> CompiledRules
    screen(rules, records_or_intake, *, as_of, instances=None) -> Screening   one row per candidate, any number
    screen_file(path, rules, study, *, as_of) -> Screening       read_intake + screen (DataError, exit 1)
    candidates(screening) -> Iterator[CandidateResult]           per-candidate checklist with values and missing
    summarise(screening) -> Summary; funnel(screening) -> Funnel
    build_report(screening) -> Report; render(report, "table"|"csv"|"json"|"html"); render_screening_log(report)
    result_records(screening, *, screened_at, event=None) -> pl.DataFrame   elig_* fields for REDCap write-back
    run_demo(out_dir, *, data=None, rules=None, study=None, as_of=DEMO_AS_OF) -> DemoOutput
"""

from trialkit.screening.engine import CompiledRules, Screening, compile_rules, screen, select_candidates
from trialkit.screening.explain import Funnel, Summary, candidates, funnel, summarise
from trialkit.screening.outcomes import CandidateResult, CriterionOutcome, Disposition, Result
from trialkit.screening.reports import (
    Report,
    build_report,
    render,
    render_csv,
    render_html,
    render_json,
    render_screening_log,
    render_table,
)
from trialkit.screening.run import DEMO_AS_OF, load_rules, run_demo, screen_file
from trialkit.screening.writeback import result_records

__all__ = [
    "DEMO_AS_OF",
    "CandidateResult",
    "CompiledRules",
    "CriterionOutcome",
    "Disposition",
    "Funnel",
    "Report",
    "Result",
    "Screening",
    "Summary",
    "build_report",
    "candidates",
    "compile_rules",
    "funnel",
    "load_rules",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_screening_log",
    "render_table",
    "result_records",
    "run_demo",
    "screen",
    "screen_file",
    "select_candidates",
    "summarise",
]
