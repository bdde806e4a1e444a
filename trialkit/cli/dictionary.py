"""`trialkit dictionary export|import`: the study as a REDCap data dictionary CSV, and back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trialkit.cli.options import SuggestingGroup, exit_codes, format_option, resolve_format, study_option

if TYPE_CHECKING:
    from trialkit.definitions.model import Study


@exit_codes("done", usage="a usage or definition error (a dictionary that cannot be read, or that REDCap "
            "itself would refuse)")
@click.group(
    cls=SuggestingGroup,
    epilog="""\b
Examples:
  trialkit dictionary export --out kap_trd_DataDictionary.csv
  trialkit dictionary import MyProject_DataDictionary.csv --out myproject/
  trialkit dictionary import MyProject.REDCap.xml --out myproject/
"""
)
def dictionary() -> None:
    """REDCap data dictionary: export the study's, or import one into instrument YAML files."""


@exit_codes("written", usage="a usage or definition error (the study cannot be loaded, --out not writable)")
@dictionary.command("export")
@study_option(default=Path("."))
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the CSV to this file (default: standard output).")
@format_option(["csv", "json"], default="csv",
               help="csv: REDCap's Data Dictionary download; json: the API's metadata rows (a list, as REDCap's "
               "API takes it). Default: the one --out's extension names, else csv.")
@click.option("--bom/--no-bom", default=False, show_default=True, help="Start the CSV with a UTF-8 byte order mark.")
def export_cmd(study_path: Path, out: str | None, fmt: str, bom: bool) -> None:
    """Write the study's data dictionary exactly as REDCap's Data Dictionary download.

    \b
    Example:
      trialkit dictionary export --out dictionary.csv
    """
    import json

    from trialkit.definitions import load_study
    from trialkit.definitions.dictionary import export_dictionary, metadata_rows
    from trialkit.errors import UsageError

    fmt = resolve_format(fmt, out, ["csv", "json"])
    study = load_study(study_path)
    if fmt == "json":
        text = json.dumps(metadata_rows(study), indent=2, ensure_ascii=False) + "\n"
    else:
        text = export_dictionary(study, bom=bom)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out} ({len(study.fields)} fields, {len(study.instruments)} instruments)", err=True)


@exit_codes("written (problems REDCap accepts are printed as notes)",
            usage="a usage error, or a dictionary that cannot be read or that REDCap itself would refuse (unknown "
            "field type, bad names)")
@dictionary.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for study.yaml and instruments/*.yaml.")
@click.option("--name", "name", default=None, help="Study id (default: derived from the output directory name).")
@click.option("--force", is_flag=True, help="Replace files that exist already.")
def import_cmd(file: str, out: str, name: str | None, force: bool) -> None:
    """Turn a REDCap data dictionary CSV (UTF-8, with or without BOM) into study.yaml and instrument files.

    A REDCap project XML (Project Setup > "Download ... XML", CDISC ODM; a file ending in .xml) gives the events,
    arms, repeating instruments and Data Access Groups too.

    The files export back to the same dictionary, cell for cell. Problems REDCap itself would refuse (unknown
    field type, bad or duplicate names) stop the import; anything else is reported by `trialkit check`.

    \b
    Examples:
      trialkit dictionary import MyProject_DataDictionary.csv --out myproject/
      trialkit dictionary import MyProject.REDCap.xml --out myproject/
    """
    import re

    from trialkit.definitions.dictionary import decode_dictionary, import_dictionary
    from trialkit.definitions.loader import display_path
    from trialkit.definitions.redcap_names import FIELD_NAME
    from trialkit.errors import UsageError

    if name is not None and not FIELD_NAME.fullmatch(name):
        # written into study.yaml as is: it must be a valid study id (and plain YAML)
        raise UsageError("--name: a study id is lowercase letters, digits and _, starting with a letter")
    path = Path(file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        # a definition file, not data: unreadable is a definition problem (exit 2), as in `trialkit check`
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    out_dir = Path(out)
    study_name = name or re.sub(r"[^a-z0-9_]", "_", out_dir.resolve().name.lower()).strip("_") or "study"
    if not study_name[0].isalpha():
        study_name = f"s_{study_name}"
    notes: list[str] = []
    if path.suffix.lower() == ".xml" or raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        from trialkit.definitions.odm import study_from_project_xml

        study, notes = study_from_project_xml(raw, name=study_name, path=display_path(path))
        _write(study, out_dir, out, force, notes)
        return
    study = import_dictionary(decode_dictionary(raw, file), name=study_name, path=display_path(path))
    _write(study, out_dir, out, force, notes)


def _write(study: Study, out_dir: Path, out: str, force: bool, notes: list[str]) -> None:
    from trialkit.definitions.loader import check_study
    from trialkit.definitions.yamlwrite import write_study

    written = write_study(study, out_dir, overwrite=force)
    click.echo(f"wrote {len(written)} files under {out} ({len(study.fields)} fields, "
               f"{len(study.instruments)} instruments)", err=True)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    result = check_study(out_dir)
    for d in result.diagnostics:
        click.echo(d.format(), err=True)
    if result.diagnostics:
        click.echo(f"note: `trialkit check {out}` reports {len(result.errors)} error(s), "
                   f"{len(result.warnings)} warning(s)", err=True)
