"""A local REDCap-API-compatible server backed by SQLite, for demos, trial builds and tests of REDCap clients.

    from trialkit.redcap.sandbox import ProjectSpec, running_sandbox

    with running_sandbox(ProjectSpec.from_study(".")) as sb:      # real HTTP on 127.0.0.1, a free port
        proj = sb.project()                                       # PyCap redcap.Project(sb.url, sb.token)
        proj.import_records([...])
        token2 = sb.create_project(ProjectSpec.from_dictionary_csv("dd.csv"))
        sb.reset(token2)                                          # delete its data, keep its design
        sb.set_faults(FaultPlan(kind="html_fatal", next_n=1))     # the next request fails as REDCap can

Command line: `trialkit sandbox serve [--study DIR | --dictionary CSV | --project-xml FILE] [--db FILE] [--port N]`.

What it follows (shared/reference/redcap-api.md): request parameters as PyCap 2.7.0 sends them (booleans as
True/False/true/false/1/0, lists as `key[i]`), reply shapes and types (strings everywhere except
`redcap_repeat_instance`, JSON ints in arm/event/project replies), error bodies by returnFormat/format/XML with
REDCap's verbatim messages and 400/403 codes, flat and EAV rows in REDCap's column order, checkbox columns,
`<form>_complete` defaults, all-or-nothing imports with REDCap's `"record","field","value","message"` lines,
`count` as distinct records, normal/overwrite blank handling, auto-numbering, filterLogic through
`trialkit.logic` (record-events in longitudinal projects), dateRangeBegin/End on each record's last change.

Choices where REDCap's behaviour is not documented (`[?]` in the reference), kept in one place each:
- records sort naturally (numeric ids as numbers, then text ids);
- calc and file values in a record import are accepted and ignored; calc fields are then computed from the
  record's data with trialkit.logic, as REDCap's auto-calculation on import does (`ProjectSpec(compute_calcs=
  False)` leaves them blank); files go through `content=file`; descriptive fields and checkbox base names are
  refused as import columns;
- min/max of text validation are not enforced (soft in REDCap); missing-data codes pass every field check;
- EAV export lists each checked checkbox option as (field, code); grey forms export `_complete` "0";
- `redcap_repeat_instance` "1" on a non-repeating row is accepted and ignored (PyCap's own examples send it);
- rawOrLabel=both is treated as label; eventName is ignored (the event column follows rawOrLabel); a label export
  names a repeating instrument by its label, not by its custom (piped) instance label;
- deleting an event, or replacing the schedule with `override=1`, deletes the gone events' mappings, repeat
  settings, data and files; a partial record delete keeps the record even with no data left (it still counts for
  `generateNextRecordName`); the delete count is plain text in every format.
Issue 11 §2 behaviours (whole-mapping imports, the Manage/Design log, the single-arm default event, file download
types, Data Access Groups, project XML) and their sources: docs/redcap-sandbox.md, which also lists what the sandbox
does not do: reports, PDFs, surveys, user roles, the file repository (answered HTTP 501 "does not support"), XML
record imports, record locking; `decimalCharacter` and `exportSurveyFields` are accepted and ignored (there are no
surveys).
"""

from trialkit.redcap.sandbox.faults import FaultPlan
from trialkit.redcap.sandbox.project import ProjectSpec
from trialkit.redcap.sandbox.server import Sandbox, running_sandbox

__all__ = ["FaultPlan", "ProjectSpec", "Sandbox", "running_sandbox"]
