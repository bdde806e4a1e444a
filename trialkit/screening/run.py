"""Screening from files: what the `screen` and `demo` commands (and nightly jobs) call.

I/O stays here, at the edge: reading the study, the rule file and the intake data, writing report files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from trialkit.errors import DataError, DefinitionError, UsageError, sorted_diagnostics
from trialkit.screening.engine import CompiledRules, Screening, compile_rules, screen
from trialkit.screening.reports import Report, build_report, render_html, render_json, render_screening_log

#: The demo data set's screening reference date: `examples/generate_intake.py` makes every date relative to it.
DEMO_AS_OF = dt.date(2026, 11, 2)


def project_root() -> Path:
    """Where the demo's study.yaml, eligibility_rules/ and examples/ live: inside the package when installed from
    a wheel (the build copies them to trialkit/_demo/), else the checkout the package runs from."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_demo"
    return packaged if (packaged / "study.yaml").is_file() else package.parent


def resolve_study(rules_path: Path, study: Any = None) -> Any:
    """The study to check the rules against: given (a Study or a path), else the one the rule file names, else
    the current directory's."""
    from trialkit.definitions import load_study
    from trialkit.definitions.rules import read_ruleset

    if study is not None and not isinstance(study, str | Path):
        return study
    if study is not None:
        return load_study(study)
    ruleset, diags = read_ruleset(rules_path)
    if ruleset is None:
        # the rule file's own problems, not a "no study.yaml here" from a guess at the current folder
        raise DefinitionError(f"{rules_path}: the rule file cannot be read", diagnostics=sorted_diagnostics(diags))
    named = ruleset.study_path()
    if named is None:
        return load_study(".")
    return load_study(named, named_by=f"{rules_path} (line {ruleset.study_pos.line})")


def load_rules(rules_path: str | Path, study: Any = None) -> CompiledRules:
    """Load, check (against the study) and compile a rule file. DefinitionError (exit 2) when anything is wrong."""
    from trialkit.definitions.rules import load_ruleset

    rules_path = Path(rules_path)
    if not rules_path.is_file():
        raise UsageError(f"rule file not found: {rules_path}")
    study = resolve_study(rules_path, study)
    ruleset = load_ruleset(rules_path, study)
    return compile_rules(ruleset, study)


def screen_file(
    data: str | Path,
    rules: CompiledRules,
    study: Any,
    *,
    as_of: dt.date,
    event: str | None = None,
    sheet: str | None = None,
    records: Sequence[str] | None = None,
) -> Screening:
    """Read intake data (any format `read_intake` knows) and screen it, or only the candidates `records`.
    DataError (exit 1) when nothing can be screened: unreadable file, wrong shape, no candidate."""
    from trialkit.records import read_intake

    if records is not None:
        records = [r.strip() for r in records]  # as the data's ids are read
    intake = read_intake(
        data, study, event=event, sheet=sheet, records=records, columns=screen_columns(rules, study), keep_types=True
    )
    if records is not None:
        found = set(intake.records.get_column(intake.record_id).cast(pl.String).to_list())
        unknown = [r for r in records if r not in found]
        if unknown:
            ids = _all_ids(data, study, sheet)
            near = list(dict.fromkeys(n for r in unknown for n in _same_id(r, ids)))
            hint = f"; did you mean {', '.join(near)}? (ids match as written, leading zeros included)" if near else ""
            raise UsageError(f"no candidate {', '.join(unknown)} in {data}{hint}")
    # A coordinator must not be asked for madrs_total when its ten items are there, nor screened on a total that
    # its items contradict: calculated fields are computed from their expressions wherever the inputs allow
    # (stored values that disagree and calcs that cannot be computed are noted).
    before = len(intake.notes)
    intake = intake.for_screening(as_of=as_of, columns=rules.read_columns())
    notes = list(intake.notes[:before])
    notes.append("calculated fields were computed from their inputs where all were there; elsewhere the recorded "
                 "value was used")
    notes += list(intake.notes[before:])
    if intake.records.height == 0:
        raise DataError(f"{data}: no candidate records to screen")
    given = set(intake.raw.columns)
    read = set(rules.columns()) | {i.column for cc in rules.criteria for i in cc.missing_items if i.column}
    if read and not read & given:
        raise DataError(
            f"{data}: none of the {len(read)} fields the rules read is in the data (wrong file or wrong study?)"
        )
    calcs = {name for name, f in study.fields.items() if f.calculation}
    notes += problem_notes(intake.problems, calcs=calcs)
    result = screen(rules, intake, as_of=as_of)
    return replace(result, notes=tuple(notes), data=_with_site(result, intake.raw))


def _all_ids(data: str | Path, study: Any, sheet: str | None) -> set[str]:
    """Every record id of `data` (error path only: standard input cannot be read twice, and says nothing)."""
    from trialkit.records.readers import read_text_frame

    rid = study.record_id_field
    if str(data) == "-":
        return set()
    try:
        frame, _ = read_text_frame(data, sheet=sheet, columns={rid})
    except DataError:
        return set()
    return set(frame.get_column(rid).drop_nulls().to_list()) if rid in frame.columns else set()


def _same_id(wanted: str, found: set[str]) -> list[str]:
    """Ids of `found` that are `wanted` but for spaces or leading zeros (0042 for 42, as Excel drops them)."""
    def key(text: str) -> str:
        text = text.strip()
        return text.lstrip("0") or "0" if text.isdigit() else text

    return sorted(f for f in found if f != wanted and key(f) == key(wanted))


def screen_columns(rules: CompiledRules, study: Any) -> set[str]:
    """The data columns screening and its reports read: the rules' fields with every input of the calculated
    ones among them, the screening log's consent fields, and each repeating form's instance-naming field.
    A Parquet file's other columns are never loaded."""
    from trialkit.records.convert import study_columns
    from trialkit.records.usable import checked_columns
    from trialkit.screening.words import vocabulary

    read = {*rules.read_columns(), "consent_date", "consent_version", *vocabulary(study, rules).instance_name.values()}
    return {c.name for c in checked_columns(study, [c.name for c in study_columns(study)], read)}


def _with_site(result: Screening, raw: pl.DataFrame) -> pl.DataFrame:
    """The candidates' REDCap data access group (their site), when the export has one: reports count by it."""
    site = "redcap_data_access_group"
    data = result.data
    if site not in raw.columns or site in data.columns or data.height == 0:
        return data
    rid = result.record_id
    first = raw.filter(pl.col(site).is_not_null()).group_by(pl.col(rid).cast(pl.String), maintain_order=True).agg(
        pl.col(site).first()
    )
    return data.with_columns(pl.col(rid).cast(pl.String)).join(first, on=rid, how="left", maintain_order="left")


def problem_notes(
    problems: pl.DataFrame | None, limit: int = 10, *, calcs: Collection[str] = ()
) -> list[str]:
    """One note per field and check of the values screening could not use (counts, never values). A calculated
    field's stored value is not needed where its inputs are all there (it is computed from them): `calcs`."""
    if problems is None or problems.height == 0:
        return []
    counts = (
        problems.filter(~pl.col("check").is_in(["input", "conflict"]))  # conflicts have their own notes
        .group_by("field", "check", "problem", maintain_order=True)
        .agg(pl.col("record").n_unique().alias("n"))
    )
    notes = [
        f"{field}: {problem} ({n} record{'s' if n != 1 else ''}); not used: "
        + ("computed from its inputs where they were all there, elsewhere the criteria reading it are unknown"
           if field in calcs else "the criteria reading it are unknown")
        for field, _check, problem, n in counts.head(limit).iter_rows()
    ]
    if counts.height > limit:
        notes.append(f"... and {counts.height - limit} more fields with values that could not be used "
                     "(trialkit validate lists them all)")
    return notes


def identifier_fields(study: Any) -> tuple[str, ...]:
    """Identifier fields and the calcs derived from them (trialkit.definitions.privacy)."""
    from trialkit.definitions.privacy import identifying_fields

    private = identifying_fields(study)
    return tuple(f.name for f in study.iter_fields() if f.name in private)


@dataclass(frozen=True)
class DemoOutput:
    report: Report
    html: Path
    json: Path
    log: Path


def run_demo(
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    rules: str | Path | None = None,
    study: Any = None,
    as_of: dt.date = DEMO_AS_OF,
    generated_at: str | None = None,
    source: str | None = None,
) -> DemoOutput:
    """Screen the example data set (or `data`) and write report.html, screening.json and screening_log.csv.

    Reusable by a demo that first pulls the data from a REDCap server: pass the exported file as `data` and say
    where it came from as `source` ("REDCap <url> project <id>, pulled <time>"; default: the file's path).
    """
    root = project_root()
    data = Path(data) if data is not None else root / "examples" / "kap_trd_intake.csv"
    rules = Path(rules) if rules is not None else root / "eligibility_rules" / "kap_trd.yaml"
    if not data.is_file():
        raise UsageError(f"demo data not found: {data} (run `python examples/generate_intake.py`)")
    study_obj = resolve_study(
        rules, study if study is not None else (root if (root / "study.yaml").is_file() else None)
    )
    compiled = load_rules(rules, study_obj)
    screening = screen_file(data, compiled, study_obj, as_of=as_of)
    report = build_report(screening, study=study_obj, source=source or str(data))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html, js, log = out / "report.html", out / "screening.json", out / "screening_log.csv"
    html.write_text(render_html(report, generated_at=generated_at), encoding="utf-8")
    js.write_text(render_json(report), encoding="utf-8")
    log.write_text(render_screening_log(report, identifiers=identifier_fields(study_obj)), encoding="utf-8")
    return DemoOutput(report, html, js, log)
