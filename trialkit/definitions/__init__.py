"""Study definitions: the model, YAML loading and checking, REDCap names and data dictionary.

Public API (import from here):
    load_study(path_or_dir) -> Study            raises DefinitionError carrying every Diagnostic
    check_study(path_or_dir) -> CheckResult     never raises for bad input: .study, .diagnostics, .errors, .ok
    Study, Arm, Event, Instrument, Field, FieldType, Choice
    field_specs(study) / Study.field_specs() -> {name: trialkit.logic.FieldSpec}
    checkbox_column, complete_field, unique_event_name, export_field_names
    VALIDATION_TYPES, ValidationType
"""

from trialkit.definitions.loader import CheckResult, check_instrument_file, check_study, load_study
from trialkit.definitions.model import (
    Arm,
    Choice,
    Event,
    Field,
    FieldType,
    Instrument,
    Position,
    Study,
)
from trialkit.definitions.redcap_names import (
    checkbox_column,
    complete_field,
    export_field_names,
    unique_event_name,
)
from trialkit.definitions.specs import field_specs
from trialkit.definitions.validation_types import VALIDATION_TYPES, ValidationType

__all__ = [
    "VALIDATION_TYPES",
    "Arm",
    "CheckResult",
    "Choice",
    "Event",
    "Field",
    "FieldType",
    "Instrument",
    "Position",
    "Study",
    "ValidationType",
    "check_instrument_file",
    "check_study",
    "checkbox_column",
    "complete_field",
    "export_field_names",
    "field_specs",
    "load_study",
    "unique_event_name",
]
