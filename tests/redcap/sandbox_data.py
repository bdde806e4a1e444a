"""Project definitions and helpers shared by the sandbox tests."""

from __future__ import annotations

import datetime as dt

import requests

from trialkit.redcap.sandbox import ProjectSpec

ADMIN_SECRET = "test-admin-secret-0123456789"


def _row(name: str, form: str, ftype: str = "text", label: str = "", choices: str = "", validation: str = "",
         vmin: str = "", vmax: str = "", **extra: str) -> dict[str, str]:
    row = {
        "field_name": name,
        "form_name": form,
        "field_type": ftype,
        "field_label": label or name.replace("_", " ").title(),
        "select_choices_or_calculations": choices,
        "text_validation_type_or_show_slider_number": validation,
        "text_validation_min": vmin,
        "text_validation_max": vmax,
    }
    row.update(extra)
    return row


CLASSIC_METADATA = [
    _row("record_id", "demographics", label="Record ID"),
    _row("name", "demographics", identifier="y"),
    _row("dob", "demographics", validation="date_ymd"),
    _row("email", "demographics", validation="email"),
    _row("age", "demographics", validation="integer"),
    _row("sex", "demographics", "radio", choices="1, Female | 2, Male | 3, Other, please say"),
    _row("race", "demographics", "checkbox",
         choices="1, White | 2, Black | -4, Unknown | k>=9, Odd code | ABC, Letters"),
    _row("smoker", "demographics", "yesno"),
    _row("intro", "demographics", "descriptive", label="Please answer"),
    _row("weight", "labs", validation="number"),
    _row("height", "labs", validation="number_1dp"),
    _row("bmi", "labs", "calc", choices="[weight]/(([height]/100)^(2))"),
    _row("visit_time", "labs", validation="datetime_dmy"),
    _row("site", "labs", "dropdown", choices="a, Alpha | b, Beta"),
    _row("pain", "labs", "slider", choices="None | Some | Worst", validation="number"),
    _row("report", "labs", "file"),
    _row("notes", "labs", "notes"),
]


def classic_spec(**kwargs: object) -> ProjectSpec:
    return ProjectSpec.classic(CLASSIC_METADATA, **kwargs)


LONGITUDINAL_METADATA = [
    _row("record_id", "enrolment", label="Record ID"),
    _row("consent_date", "enrolment", validation="date_ymd"),
    _row("arm_choice", "enrolment", "radio", choices="1, A | 2, B"),
    _row("phq_1", "phq", "radio", choices="0, Not at all | 1, Several days | 2, More than half | 3, Nearly every day"),
    _row("phq_2", "phq", "radio", choices="0, Not at all | 1, Several days | 2, More than half | 3, Nearly every day"),
    _row("phq_flags", "phq", "checkbox", choices="1, Tired | 2, Restless"),
    _row("sbp", "vitals", validation="integer"),
    _row("dbp", "vitals", validation="integer"),
    _row("ses_date", "session", validation="date_ymd"),
    _row("ses_dose", "session", validation="number"),
    _row("ae_term", "adverse_event"),
    _row("fu_status", "followup", "radio", choices="1, Completed | 2, Lost"),
]
LONGITUDINAL_EVENTS = (
    {"event_name": "Screening", "arm_num": 1, "unique_event_name": "screening_arm_1", "custom_event_label": "",
     "event_id": 101},
    {"event_name": "Baseline", "arm_num": 1, "unique_event_name": "baseline_arm_1", "custom_event_label": "",
     "event_id": 102},
    {"event_name": "Treatment", "arm_num": 1, "unique_event_name": "treatment_arm_1", "custom_event_label": "",
     "event_id": 103},
    {"event_name": "Follow-up", "arm_num": 1, "unique_event_name": "followup_arm_1", "custom_event_label": "",
     "event_id": 104},
)
LONGITUDINAL_MAPPINGS = tuple(
    {"arm_num": 1, "unique_event_name": e, "form": f}
    for e, forms in (
        ("screening_arm_1", ("enrolment", "phq", "vitals")),
        ("baseline_arm_1", ("phq", "vitals")),
        ("treatment_arm_1", ("session", "adverse_event")),
        ("followup_arm_1", ("phq", "followup")),
    )
    for f in forms
)
LONGITUDINAL_REPEATING = (
    {"event_name": "treatment_arm_1", "form_name": "session", "custom_form_label": "Session [ses_date]"},
    {"event_name": "followup_arm_1", "form_name": "", "custom_form_label": ""},
)


def longitudinal_spec(**kwargs: object) -> ProjectSpec:
    return ProjectSpec.classic(
        LONGITUDINAL_METADATA,
        arms=({"arm_num": 1, "name": "Arm 1"},),
        events=LONGITUDINAL_EVENTS,
        mappings=LONGITUDINAL_MAPPINGS,
        repeating=LONGITUDINAL_REPEATING,
        **kwargs,
    )


# rows of every kind for the longitudinal project (import with date_format="MDY"): plain rows of several shapes,
# instances of a repeating form ("new"), a repeating event, unchecked boxes, a "2" complete, text to strip
MIXED_ROWS = [
    # the same columns as the third row but with a "2" complete and unchecked boxes: not stored, as blanks
    {"record_id": "1", "redcap_event_name": "screening_arm_1", "consent_date": "02/24/2023", "arm_choice": "1",
     "phq_1": "0", "phq_flags___1": "1", "phq_flags___2": "0", "sbp": "120", "phq_complete": "2"},
    {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
     "redcap_repeat_instance": "new", "ses_date": "03/01/2023", "ses_dose": "0.5"},
    {"record_id": "1", "redcap_event_name": "treatment_arm_1", "redcap_repeat_instrument": "session",
     "redcap_repeat_instance": "new", "ses_date": "03/08/2023", "ses_dose": "0.75"},
    {"record_id": "1", "redcap_event_name": "treatment_arm_1", "ae_term": " nausea "},
    {"record_id": "2", "redcap_event_name": "followup_arm_1", "redcap_repeat_instance": "2", "fu_status": "1"},
    # every box ticked, no complete column: a "clean" shape, whose forms get "0" complete without a cell look
    {"record_id": "2", "redcap_event_name": "screening_arm_1", "consent_date": "02/25/2023", "arm_choice": "2",
     "phq_1": "1", "phq_flags___1": "1", "phq_flags___2": "1", "sbp": "130"},
    {"record_id": "3", "redcap_event_name": "screening_arm_1", "consent_date": "12/31/2023", "arm_choice": "1",
     "phq_1": "0", "phq_flags___1": "0", "phq_flags___2": "0", "sbp": "110", "phq_complete": "1"},
    {"record_id": "3", "redcap_event_name": "baseline_arm_1", "redcap_repeat_instance": "1", "dbp": "80"},
]

class Clock:
    """A settable clock for record change times (dateRangeBegin/End, log)."""

    def __init__(self) -> None:
        self.now = dt.datetime(2025, 1, 1, 9, 0, 0)

    def __call__(self) -> dt.datetime:
        return self.now


def post(url: str, **data: object) -> requests.Response:
    """A raw API call, for what PyCap hides (status codes, content types)."""
    return requests.post(url, data=data, timeout=30)
