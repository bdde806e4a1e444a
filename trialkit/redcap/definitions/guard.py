"""The nightly job's check that REDCap still has the definitions screening reads.

Screening evaluates the study's choice codes, calculations, validations, branching logic and schedule against
REDCap's data. If the project changed (a choice recoded, a field moved, an event gone), screening its data with
the study's definitions would decide eligibility on values that mean something else: the run stops instead.
Cosmetic differences (labels, notes, field order) do not stop it.
"""

from __future__ import annotations

from trialkit.definitions.model import Study
from trialkit.errors import DefinitionError
from trialkit.redcap.client import RedcapClient
from trialkit.redcap.definitions.diff import DefinitionsDiff, diff_definitions
from trialkit.redcap.definitions.project import fetch, from_study


class DefinitionsDrift(DefinitionError):
    """The project's definitions disagree with the study on something screening reads (exit 2)."""

    def __init__(self, diff: DefinitionsDiff) -> None:
        relevant = DefinitionsDiff(tuple(diff.screening))
        super().__init__(
            "the REDCap project's definitions differ from the study on what screening reads; not screening. "
            "Run `trialkit redcap diff` and push or pull the definitions first:\n" + relevant.render().rstrip())
        self.diff = relevant


def check_definitions(client: RedcapClient, study: Study) -> DefinitionsDiff:
    """The full diff of the project against the study; raises DefinitionsDrift when any change matters to
    screening."""
    diff = diff_definitions(from_study(study), fetch(client))
    if diff.screening:
        raise DefinitionsDrift(diff)
    return diff
