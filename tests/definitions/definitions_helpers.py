"""Build small study directories from inline YAML for the definition tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

BASE = """\
instrument: base
fields:
  - name: record_id
    type: text
    label: Record ID
"""


def make_study(root: Path, instruments: dict[str, str | bytes], study: str | None = None) -> Path:
    """Write study.yaml (default: a classic study listing `instruments` in order) and instruments/<name>.yaml."""
    inst_dir = root / "instruments"
    inst_dir.mkdir(parents=True, exist_ok=True)
    for name, text in instruments.items():
        path = inst_dir / f"{name}.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text), encoding="utf-8")
    if study is None:
        study = "study: demo\ninstruments: [" + ", ".join(instruments) + "]\n"
    (root / "study.yaml").write_text(textwrap.dedent(study), encoding="utf-8")
    return root
