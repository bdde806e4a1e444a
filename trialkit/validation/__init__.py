"""Intake data validation: pandera schemas generated from the study's instruments, and the findings table.

`validate(intake, study) -> Findings`; see trialkit.validation.core for the checks and their ids.
`validate_file(path, study)` gives the same findings by chunks of whole records (trialkit.validation.chunked),
so a large file is never held whole; `trialkit validate` uses it.
"""

from trialkit.validation.chunked import validate_file as validate_file
from trialkit.validation.core import CheckInfo as CheckInfo
from trialkit.validation.core import validate as validate
from trialkit.validation.findings import COLUMNS as COLUMNS
from trialkit.validation.findings import MASK as MASK
from trialkit.validation.findings import OUTPUT_FORMATS as OUTPUT_FORMATS
from trialkit.validation.findings import Findings as Findings

__all__ = ["COLUMNS", "MASK", "OUTPUT_FORMATS", "CheckInfo", "Findings", "validate", "validate_file"]
