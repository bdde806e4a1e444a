"""`trialkit sandbox serve`: a local REDCap-API-compatible server (SQLite file, real HTTP on loopback)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from trialkit.cli.options import SuggestingGroup, envelope, exit_codes
from trialkit.errors import UsageError

TOKEN_ENV = "TRIALKIT_SANDBOX_TOKEN"
ADMIN_ENV = "TRIALKIT_SANDBOX_ADMIN_SECRET"


@exit_codes("done (serve: stopped with Ctrl-C)", usage="a usage or definition error (bad study, dictionary or "
            "project XML; a --db holding another design without --replace; the port is taken)")
@click.group(cls=SuggestingGroup)
def sandbox() -> None:
    """A local REDCap-compatible server for trying a study build or a nightly job safely.

    \b
    Example:
      trialkit sandbox serve --study . --db kap.db --port 8765
    """


@exit_codes("stopped with Ctrl-C after serving", usage="a usage or definition error (bad study, "
            "dictionary or project XML; a --db holding another design without --replace; the port is taken)")
@sandbox.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=Path("sandbox.db"),
              show_default=True, help="SQLite file holding the project and its data (kept across restarts).")
@click.option("--study", type=click.Path(exists=True, path_type=Path), help="Create the project from a trialkit "
              "study (directory with study.yaml, or the file): longitudinal design included.")
@click.option("--dictionary", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Create a classic project from a REDCap data dictionary CSV.")
@click.option("--project-xml", "project_xml", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Create the project from REDCap's project XML export (CDISC ODM): metadata, arms, events, "
              "mappings, repeating set-up, Data Access Groups and, when the file holds it, the data.")
@click.option("--title", default=None, help="Project title (default: the study's title).")
@click.option("--fault", type=click.Choice(["error", "http500", "html_fatal", "slow", "drop", "drop_after"]),
              help="Inject this failure into a share of requests (see --fault-share / --fault-next).")
@click.option("--fault-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of requests that fail (seeded, reproducible).")
@click.option("--fault-next", type=click.IntRange(0), default=0, show_default=True,
              help="Make the next N requests fail.")
@click.option("--fault-seed", type=int, default=0, show_default=True)
@click.option("--fault-delay", type=float, default=2.0, show_default=True, help="Seconds, for --fault slow.")
@click.option("--rate-limit", type=click.IntRange(0), default=0, show_default=True,
              help="Allow at most N requests per second per token (HTTP 429 beyond); 0 = unlimited.")
@click.option("--status", type=click.Choice(["development", "production"]), default=None,
              help="Project status (default: development for a new project, else as stored). In production, "
              "dictionary, arm and event imports are refused, as REDCap does.")
@click.option("--replace", is_flag=True, help="Replace the design of the project stored in --db by the one from "
              "--study/--dictionary (its records are kept). Without it a different design is refused.")
@click.option("--max-body-mb", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Largest request body accepted (HTTP 413 beyond).")
@click.option("--log-requests", is_flag=True, help="Print one line per request (content and status, never data).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="How to print the URL and token at start-up (json: one line for scripts).")
def serve(host: str, port: int, db: Path, study: Path | None, dictionary: Path | None, project_xml: Path | None,
          title: str | None,
          fault: str | None, fault_share: float, fault_next: int, fault_seed: int, fault_delay: float,
          rate_limit: int, status: str | None, replace: bool, max_body_mb: int, log_requests: bool,
          fmt: str) -> None:
    """Serve the REDCap API at http://HOST:PORT/api/ until interrupted.

    The token is taken from $TRIALKIT_SANDBOX_TOKEN when set (32 characters; then it is not printed), else the
    project's stored token, else a new one, printed once. A --study or --dictionary whose design differs from the
    project already stored in --db is refused unless --replace is given. The database file is created readable by
    its owner only. With $TRIALKIT_SANDBOX_ADMIN_SECRET set, the admin
    endpoint (/admin/..., header X-Trialkit-Admin) lets a test harness reset projects and set faults.

    \b
    Examples:
      trialkit sandbox serve --study . --db kap.db --port 8765
      trialkit sandbox serve --dictionary dd.csv --fault error --fault-share 0.1 --fault-seed 3
      trialkit sandbox serve --project-xml MyProject.REDCap.xml --db rehearsal.db
      TRIALKIT_SANDBOX_TOKEN=... trialkit sandbox serve --db kap.db --format json
    """
    from trialkit.redcap.sandbox import FaultPlan, ProjectSpec, Sandbox
    from trialkit.redcap.sandbox.wsgi import Limits

    if sum(x is not None for x in (study, dictionary, project_xml)) > 1:
        raise UsageError("give one of --study, --dictionary and --project-xml")
    env_token = os.environ.get(TOKEN_ENV) or None
    if env_token is not None and len(env_token) != 32:
        raise UsageError(f"${TOKEN_ENV} must hold a 32-character token")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}, not loopback: anyone who can reach it can use the token's "
                   "project (the sandbox has no TLS)", err=True)
    extra = {"title": title} if title else {}
    spec = None
    if study is not None:
        spec = ProjectSpec.from_study(study, **extra)
    elif dictionary is not None:
        from trialkit.definitions.dictionary import decode_dictionary, import_dictionary

        try:
            raw = dictionary.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {dictionary}: {exc.strerror or exc}") from None
        text = decode_dictionary(raw, str(dictionary))
        spec = ProjectSpec.from_definition(import_dictionary(text, path=str(dictionary)), **extra)
    odm_rows: list[dict[str, str]] = []
    if project_xml is not None:
        from trialkit.redcap.sandbox import odm

        try:
            text = project_xml.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {project_xml}: {exc.strerror or exc}") from None
        parsed = odm.parse_project(text, path=str(project_xml), **extra)
        spec, odm_rows = parsed.spec, parsed.rows
        odm.check_rows(spec, odm_rows, path=str(project_xml))  # before anything is created
    if spec is not None and status is not None:
        spec = spec.with_(in_production=status == "production")
    try:
        server = Sandbox(db=db, host=host, port=port, admin_secret=os.environ.get(ADMIN_ENV) or None,
                         log_requests=log_requests, limits=Limits(max_body=max_body_mb << 20))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    started = False
    try:
        token = server.open_project(spec, env_token, replace=replace)
        if odm_rows:
            from trialkit.redcap.sandbox import odm

            n = odm.import_rows(server.storage, token, odm_rows, path=str(project_xml))
            click.echo(f"trialkit sandbox: loaded {n} records from {project_xml}", err=True)
        if status is not None:  # also for a stored project served as it is (its design unchanged)
            _set_status(server, token, status == "production")
        if fault is not None or rate_limit:
            server.set_faults(FaultPlan(kind=fault or "error", share=fault_share, next_n=fault_next,
                                        seed=fault_seed, delay=fault_delay, rate_limit=rate_limit, rate_window=1.0))
        shown = "(from $" + TOKEN_ENV + ")" if env_token is not None else token
        if fmt == "json":
            doc = envelope("sandbox serve", True, url=server.url, token=None if env_token else token, db=str(db))
            click.echo(json.dumps(doc))  # one line: a script reads it with readline()
        else:
            click.echo(f"trialkit sandbox: REDCap API at {server.url}")
            click.echo(f"  database: {db}")
            click.echo(f"  token:    {shown}")
            click.echo("  stop with Ctrl-C")
        started = True
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("trialkit sandbox: stopped", err=True)
    finally:
        server.close()
        if not started:
            server.storage.close(remove_created=True)  # a failed start leaves no new database file behind


def _set_status(server: object, token: str, production: bool) -> None:
    storage = server.storage  # type: ignore[attr-defined]
    con = storage.connect()
    try:
        _, schema, _ = storage.project_for_token(con, token)
    finally:
        con.close()
    server.redefine(schema.spec.with_(in_production=production), token)  # type: ignore[attr-defined]
