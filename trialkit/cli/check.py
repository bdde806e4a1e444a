"""`trialkit check`: check study, instrument and rule files; print every problem with its location."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trialkit.cli.options import dumps, exit_codes, format_option, study_option
from trialkit.errors import Diagnostic, sorted_diagnostics

if TYPE_CHECKING:
    from trialkit.definitions.loader import CheckResult

RULES_DIR = "eligibility_rules"
# a rule file's references to fields, unjudgeable while the study lacks fields through its own errors
_UNJUDGED = frozenset({"LOGIC001", "LOGIC005", "LOGIC006", "LOGIC012", "LOGIC013", "RULE010", "RULE013"})


@dataclass
class Checked:
    """What a check went through, for the closing line: a clean run says what it found clean."""

    studies: list[str] = field(default_factory=list)
    instruments: set[str] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)

    def add_study(self, result: CheckResult) -> None:
        if result.sources.study_doc is not None and result.sources.study_doc.path not in self.studies:
            self.studies.append(result.sources.study_doc.path)
        self.instruments.update(doc.path for doc in result.sources.instrument_docs.values())

    def __str__(self) -> str:
        parts = list(self.studies)
        for count, word in ((len(self.instruments), "instrument"), (len(self.rules), "rule file"),
                            (len(self.others), "other file")):
            if count or (word == "instrument" and self.studies):
                parts.append(f"{count} {word}{'' if count == 1 else 's'}")
        return ", ".join(parts) or "nothing"


def _top_keys(path: Path) -> set[str]:
    from trialkit.definitions.yamlio import read_yaml

    doc = read_yaml(path)
    return set(doc.data) if isinstance(doc.data, dict) else set()


def _check_rules(
    paths: list[Path], study_dir: Path | None, checked: dict[Path, CheckResult] | None = None,
    tally: Checked | None = None,
) -> list[Diagnostic]:
    """Each rule file checked as `screen` and the nightly job check it before screening, and more thoroughly.

    The study is the one the file names (`study:`, as screening uses it; an error when it does not exist) or else
    the one at `study_dir`; its own problems are reported too, since screening refuses a broken study. Then the
    rule file is loaded by `trialkit.screening.run.load_rules`, the very function `screen` and `nightly` call, so
    whatever they refuse (expressions, attestations, criteria reading more fields than screening can track...)
    `check` reports, and cannot drift from them. `checked`: studies already checked, by resolved study file."""
    from trialkit.definitions.loader import check_study, display_path, find_study_file
    from trialkit.definitions.rules import check_ruleset, read_ruleset
    from trialkit.errors import DefinitionError
    from trialkit.screening.run import load_rules

    studies = dict(checked or {})
    diags: list[Diagnostic] = []
    for p in paths:
        shown = display_path(p)
        if tally is not None:
            tally.rules.add(shown)
        ruleset, found = read_ruleset(shown)
        diags += found
        if ruleset is None:
            continue
        named = ruleset.study_path()
        if named is not None and not find_study_file(named).is_file():
            at = ruleset.study_pos
            diags.append(Diagnostic("RULE015", f"study '{ruleset.study}' not found "
                                    f"({display_path(find_study_file(named))})", at.file, at.line, at.col))
            diags += check_study(named, named_by=f"{shown} (line {at.line})").errors  # what `screen` says
            continue
        where = named if named is not None else study_dir
        if where is None:
            continue
        key = find_study_file(where).resolve()
        if key not in studies:
            studies[key] = check_study(where)
        result = studies[key]
        if tally is not None:
            tally.add_study(result)
        diags += result.errors  # screening refuses a study with errors: they are the rule file's problem too
        if result.study is None:
            continue
        # Checked even when an instrument has an error (everything is reported at once), but where the study lacks
        # fields because of one, "not in the study" would only repeat it.
        rule_diags = check_ruleset(ruleset, result.study)
        if result.sources.incomplete:
            rule_diags = [d for d in rule_diags if d.code not in _UNJUDGED]
        diags += rule_diags
        if not result.ok or any(d.is_error for d in found + rule_diags):
            continue  # load_rules would stop at these
        try:
            load_rules(shown, result.study)
        except DefinitionError as exc:
            diags += exc.diagnostics or [Diagnostic("RULE000", exc.message, shown)]
    return diags


def _study_dir_for(path: Path) -> Path | None:
    for candidate in (path.parent, path.parent.parent, Path(".")):
        if (candidate / "study.yaml").is_file():
            return candidate
    return None


def collect(paths: tuple[str, ...], tally: Checked | None = None) -> list[Diagnostic]:
    """Diagnostics for the given paths (default: the study in the current directory and its rule files);
    `tally`, when given, is told what was checked."""
    from trialkit.definitions.loader import (
        check_instrument_file,
        check_study,
        display_path,
        find_study_file,
        unique_diagnostics,
        yaml_files,
    )

    diags: list[Diagnostic] = []
    tally = Checked() if tally is None else tally
    targets = [Path(p) for p in paths] or [Path(".")]
    for target in targets:
        if not target.exists():
            diags.append(Diagnostic("IO001", "no such file or directory", display_path(target)))
            continue
        if target.is_dir():
            result = check_study(target, pointer="trialkit check DIR")
            diags += result.diagnostics
            tally.add_study(result)
            rules = yaml_files(target / RULES_DIR)
            if rules and (target / "study.yaml").is_file():
                diags += _check_rules(rules, target, {find_study_file(target).resolve(): result}, tally)
            continue
        keys = _top_keys(target)
        if "criteria" in keys or target.parent.name == RULES_DIR:
            diags += _check_rules([target], _study_dir_for(target), tally=tally)
        elif target.name == "study.yaml" or "study" in keys:
            result = check_study(target)
            diags += result.diagnostics
            tally.add_study(result)
        elif "instrument" in keys:
            # An instrument of the study is checked with the study (its expressions may use other instruments'
            # fields); one the study does not list is checked on its own as well.
            study_dir = _study_dir_for(target)
            shown = display_path(target)
            listed = False
            if study_dir is not None and target.parent.name == "instruments":
                result = check_study(study_dir)
                diags += [d for d in result.diagnostics if d.file == shown]
                listed = any(doc.path == shown for doc in result.sources.instrument_docs.values())
            if not listed:
                diags += check_instrument_file(target)[1]
            tally.instruments.add(shown)
        else:
            # Not recognisable: check it as an instrument, which reports YAML and schema problems with places.
            diags += check_instrument_file(target)[1]
            tally.others.add(display_path(target))
    return sorted_diagnostics(unique_diagnostics(diags))


@exit_codes("no error (warnings are printed but do not fail)",
            usage="an error in the definitions checked (or a usage error)")
@click.command(
    epilog="""\b
Examples:
  trialkit check            # study.yaml, instruments/ and eligibility_rules/ of the current directory
  trialkit check instruments/phq9.yaml
  trialkit check --format json path/to/study
"""
)
@click.argument("paths", nargs=-1, type=click.Path())
@study_option(help="Study directory (holding study.yaml) or the study file to check, with its rule files: the "
                   "same as giving it as PATHS (default: the current directory).")
@format_option(["text", "json"])
def check(paths: tuple[str, ...], study_path: Path | None, fmt: str) -> None:
    """Check study definitions: YAML, JSON Schema, names, choices, ranges, schedule and every expression.

    Prints each problem as `file:line:col: CODE message`.
    """
    if study_path is not None:  # README: every command takes --study (docs/intake-messages.md names it for check)
        paths = (*paths, str(study_path))
    tally = Checked()
    diags = collect(paths, tally)
    errors = sum(1 for d in diags if d.is_error)
    warnings = len(diags) - errors
    if fmt == "json":
        # the same sorted list as the text output, one object per diagnostic
        click.echo(dumps("check", not errors, errors=errors, warnings=warnings,
                         diagnostics=[d.to_dict() for d in diags]))
    else:
        for d in diags:
            click.echo(d.format())
        found = f"{errors} error(s), {warnings} warning(s)" if diags else "no problems"
        summary = f"checked {tally}: {found}"
        click.echo(summary, err=True)
    if errors:
        sys.exit(2)
