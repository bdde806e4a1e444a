"""Intake data validation: pandera schemas generated from the study's instruments, and the findings table.

`validate(intake, study) -> Findings`; see trialkit.validation.core for the checks and their ids.
"""

from trialkit.validation.core import CheckInfo as CheckInfo
from trialkit.validation.core import validate as validate
from trialkit.validation.findings import COLUMNS as COLUMNS
from trialkit.validation.findings import MASK as MASK
from trialkit.validation.findings import OUTPUT_FORMATS as OUTPUT_FORMATS
from trialkit.validation.findings import Findings as Findings

__all__ = ["COLUMNS", "MASK", "OUTPUT_FORMATS", "CheckInfo", "Findings", "validate"]
