"""Apply a study's design to a REDCap project, in an order that never leaves the project unusable.

Additions come first (arms, then events: mappings need them), then the data dictionary (mappings and repeats
name its forms), then the mappings and the repeating set-up, and deletions of events and arms last, once
nothing points at them. After applying, the project is exported again and the diff must be empty.

A project in production refuses dictionary, arm and event imports through the API: then nothing is sent, and
what a person uploads in draft mode is written instead (the data dictionary CSV and the change report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trialkit.definitions.dictionary import rows_to_csv
from trialkit.definitions.redcap_names import unique_event_name
from trialkit.errors import RedcapError, UsageError
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.definitions.diff import DefinitionsDiff, count_affected, diff_definitions
from trialkit.redcap.definitions.project import ProjectDefinition, fetch

DRAFT_DICTIONARY = "data_dictionary.csv"
DRAFT_REPORT = "change_report.txt"
DRAFT_REPORT_JSON = "change_report.json"


@dataclass(frozen=True)
class PushResult:
    """`status`: unchanged (nothing to do), planned (not applied: no --yes), refused (data loss without
    permission), draft (production: files written for draft mode), applied (sent and verified)."""

    status: str
    diff: DefinitionsDiff
    steps: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "steps": list(self.steps), "files": [str(p) for p in self.files],
                "notes": list(self.notes), "diff": self.diff.to_dict()}


def plan(client: RedcapClient, local: ProjectDefinition) -> tuple[DefinitionsDiff, ProjectDefinition]:
    """The diff of the project against the study, with affected records counted."""
    remote = fetch(client)
    diff = diff_definitions(local, remote)
    if not diff.empty:
        diff = count_affected(client, diff, remote)
    return diff, remote


def push_definitions(
    client: RedcapClient,
    local: ProjectDefinition,
    *,
    apply: bool,
    allow_data_loss: bool = False,
    draft_dir: Path | None = None,
) -> PushResult:
    diff, remote = plan(client, local)
    if diff.empty:
        return PushResult("unchanged", diff)
    if local.longitudinal != remote.longitudinal:
        raise UsageError("the study is " + ("longitudinal" if local.longitudinal else "classic")
                         + " and the project is not: turn events " + ("on" if local.longitudinal else "off")
                         + " in REDCap's Project Setup first (the API cannot)")
    blocked = diff.data_loss
    if blocked and not allow_data_loss:
        return PushResult("refused", diff, notes=(
            f"{len(blocked)} critical change(s) land on existing data; nothing was sent "
            "(review the plan, then rerun with --allow-data-loss if the loss is intended)",))
    if not apply:
        return PushResult("planned", diff, notes=("nothing was sent: rerun with --yes to apply",))
    if remote.in_production:
        files = write_draft(local, diff, draft_dir or Path("redcap-draft"))
        return PushResult("draft", diff, files=files, notes=(
            "the project is in production: REDCap accepts dictionary, arm and event imports only in development "
            "status, so nothing was sent. Enter draft mode in the Online Designer, upload "
            f"{files[0]} (Data Dictionary page), review with {files[1]}, and submit the changes",))
    steps = _apply(client, local, remote)
    after = diff_definitions(local, fetch(client))
    if not after.empty:
        raise RedcapError("the project still differs from the study after the push:\n" + after.render())
    return PushResult("applied", diff, steps=tuple(steps))


def _apply(client: RedcapClient, local: ProjectDefinition, remote: ProjectDefinition) -> list[str]:
    steps: list[str] = []
    if local.longitudinal:
        r_arms = dict(remote.arms)
        arms = [{"arm_num": n, "name": name} for n, name in local.arms if r_arms.get(n) != name]
        r_events = {e: label for e, label, _ in remote.events}
        taken = set(r_events)
        new_events = []
        for name, label, arm in local.events:
            if name in r_events:
                if r_events[name] != label:
                    new_events.append({"event_name": label, "arm_num": arm, "unique_event_name": name})
                continue
            # REDCap derives a new event's unique name from its label: a study naming it otherwise cannot match
            derived = unique_event_name(label, arm, frozenset(taken))
            if derived != name:
                raise UsageError(f"event {name}: REDCap would name a new event labelled {label!r} in arm {arm} "
                                 f"{derived}; use that name in study.yaml (or change the label)")
            taken.add(name)
            new_events.append({"event_name": label, "arm_num": arm})
        if arms:
            client.import_arms(arms)
            steps.append(f"arms: {len(arms)} added or renamed")
        if new_events:
            client.import_events(new_events)
            steps.append(f"events: {len(new_events)} added or relabelled")
    if list(local.metadata) != list(remote.metadata):
        client.import_metadata(local.metadata)
        steps.append(f"data dictionary: {len(local.metadata)} field(s) imported")
    # the mappings of events about to be deleted go with them
    local_events = {e for e, _, _ in local.events}
    kept_mappings = frozenset(m for m in remote.mappings if m[1] in local_events)
    if local.longitudinal and local.mappings != kept_mappings:
        # REDCap replaces the project's whole designation (every arm) with an import: send the whole set
        rows = [{"arm_num": a, "unique_event_name": e, "form": f} for a, e, f in sorted(local.mappings)]
        if rows:
            client.import_form_event_mappings(rows)
            steps.append(f"form-event mappings: {len(rows)} (the whole designation, every arm)")
    kept_repeats = frozenset(r for r in remote.repeating if not local.longitudinal or r[0] in local_events)
    if local.repeating != kept_repeats:
        order = {e: i for i, (e, _, _) in enumerate(local.events)}
        pairs = sorted(local.repeating, key=lambda p: (order.get(p[0], 0), p[1]))
        rows = [({"event_name": e} if local.longitudinal else {}) | {"form_name": f, "custom_form_label": ""}
                for e, f in pairs]
        client.import_repeating(rows)
        steps.append(f"repeating set-up: {len(rows)} instrument(s)")
    if local.longitudinal:
        local_arms = {n for n, _ in local.arms}
        gone_arms = [n for n, _ in remote.arms if n not in local_arms]
        gone = [e for e, _, arm in remote.events if e not in local_events and arm not in gone_arms]
        if gone:
            client.delete_events(gone)
            steps.append(f"events deleted: {', '.join(gone)}")
        if gone_arms:
            client.delete_arms(gone_arms)
            steps.append(f"arms deleted: {', '.join(map(str, gone_arms))}")
    return steps


def write_draft(local: ProjectDefinition, diff: DefinitionsDiff, directory: Path) -> tuple[Path, ...]:
    """The data dictionary CSV (as REDCap's Data Dictionary page takes it) and the change report, for a person
    to upload in draft mode."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / DRAFT_DICTIONARY, directory / DRAFT_REPORT, directory / DRAFT_REPORT_JSON)
        paths[0].write_text(rows_to_csv(list(local.metadata)), encoding="utf-8")
        schedule = [c for c in diff.changes if c.area in ("arm", "event", "mapping", "repeating")]
        extra = ("\nThe data dictionary does not carry arms, events, mappings or repeating set-up: make these "
                 f"{len(schedule)} change(s) in Project Setup (Define My Events, Designate Instruments, Repeating "
                 "Instruments).\n") if schedule else ""
        paths[1].write_text(diff.render(title="Changes for draft mode (project -> study)") + extra, encoding="utf-8")
        paths[2].write_text(diff.to_json() + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the draft files in {directory}: {exc.strerror or exc}") from None
    return paths
