"""JSON Schemas (2020-12) of the definition file formats, shipped with the package.

Editors can use them through a first-line comment such as
`# yaml-language-server: $schema=../trialkit/definitions/schemas/instrument.schema.json`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

SCHEMA_FILES = {
    "study": "study.schema.json",
    "instrument": "instrument.schema.json",
    "ruleset": "ruleset.schema.json",
}


def schema_path(kind: str) -> Path:
    return Path(str(resources.files(__name__).joinpath(SCHEMA_FILES[kind])))


@cache
def load_schema(kind: str) -> dict:
    return json.loads(resources.files(__name__).joinpath(SCHEMA_FILES[kind]).read_text(encoding="utf-8"))
