"""Intake data: files in any supported format to typed records, per-event rows and repeating-instrument tables.

`read_intake(path, study)` and `IntakeData.from_frame(frame, study)` are the entry points; see
trialkit.records.intake for the shapes.
"""

from trialkit.records.convert import EVENT as EVENT
from trialkit.records.convert import META_COLUMNS as META_COLUMNS
from trialkit.records.convert import REPEAT_INSTANCE as REPEAT_INSTANCE
from trialkit.records.convert import REPEAT_INSTRUMENT as REPEAT_INSTRUMENT
from trialkit.records.convert import Column as Column
from trialkit.records.convert import study_columns as study_columns
from trialkit.records.convert import typed_expr as typed_expr
from trialkit.records.intake import IntakeData as IntakeData
from trialkit.records.intake import default_event as default_event
from trialkit.records.intake import read_intake as read_intake
from trialkit.records.readers import FORMATS as FORMATS
from trialkit.records.readers import ROW as ROW

__all__ = [
    "EVENT",
    "FORMATS",
    "META_COLUMNS",
    "REPEAT_INSTANCE",
    "REPEAT_INSTRUMENT",
    "ROW",
    "Column",
    "IntakeData",
    "default_event",
    "read_intake",
    "study_columns",
    "typed_expr",
]
