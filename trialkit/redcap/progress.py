"""Progress of long pulls and pushes: one self-rewriting line on a terminal, nothing when piped."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`update(...)` redraws one stderr line at most 10 times a second, and only when stderr is a terminal."""

    def __init__(self, what: str, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(f"\r\033[K{self.what}: {text}")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
