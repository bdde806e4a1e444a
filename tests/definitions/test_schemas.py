from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from trialkit.definitions.schemas import load_schema, schema_path


@pytest.mark.parametrize("kind", ["study", "instrument", "ruleset"])
def test_schemas_are_valid_2020_12_and_ship_in_the_package(kind):
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_path(kind).is_file()


def test_repository_files_name_their_schema(repo_root):
    files = [
        repo_root / "study.yaml",
        *sorted((repo_root / "instruments").glob("*.yaml")),
        *sorted((repo_root / "eligibility_rules").glob("*.yaml")),
    ]
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path.name
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.is_file(), path.name
