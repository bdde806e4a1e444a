"""What a long REDCap job is doing, stage by stage: events the library emits, and how an operator sees them.

The library (trialkit.redcap.sync) only calls `report(StageEvent(...))`; `StageReporter` is the edge that shows
them: one self-rewriting line on a terminal (trialkit.redcap.progress), nothing when stderr is piped, or, for a
scheduler's log, one JSON line per finished stage and per retry.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from trialkit.redcap.progress import Progress

#: the nightly's stages, in order; "retry" is reported whenever a request is retried, in any stage
STAGES = ("definitions", "changes", "pull", "screen", "write-back", "verify")


@dataclass(frozen=True)
class StageEvent:
    stage: str
    status: str  # "start", "progress", "done", or "retry"
    done: int | None = None  # records (or rows) handled so far
    total: int | None = None
    detail: str = ""  # a retry's reason, or what a stage found
    calls: int = 0  # HTTP requests made so far by the run

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in (("stage", self.stage), ("status", self.status), ("done", self.done),
                                  ("total", self.total), ("detail", self.detail), ("requests", self.calls))
                if v not in (None, "")}


Report = Callable[[StageEvent], None]


class StageReporter:
    """Shows stage events on `stream` (stderr by default). `tty`: whether it is a terminal (None: ask the stream);
    `log`: one JSON line per finished stage and per retry, whatever the stream is (a scheduler's log), instead
    of the redrawn line."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, log: bool = False,
                 what: str = "nightly", clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.log = log
        self._clock = clock
        self._began: dict[str, float] = {}
        self._progress = Progress(what, self.stream, enabled=False if log else tty)

    def __call__(self, event: StageEvent) -> None:
        if event.status == "start":
            self._began[event.stage] = self._clock()
        if self.log:
            if event.status in ("done", "retry"):
                line = event.to_dict()
                if event.status == "done" and event.stage in self._began:
                    line["seconds"] = round(self._clock() - self._began[event.stage], 3)
                self.stream.write(json.dumps(line) + "\n")
                self.stream.flush()
            return
        # stage changes and retries are always drawn; progress within a stage at most 10 times a second
        self._progress.update(_line(event), force=event.status != "progress")

    def close(self) -> None:
        self._progress.done()


def _line(event: StageEvent) -> str:
    if event.status == "retry":
        return f"{event.stage}: retrying ({event.detail})"
    count = ""
    if event.done is not None:
        count = f" {event.done}/{event.total}" if event.total is not None else f" {event.done}"
    tail = f", {event.detail}" if event.detail else ""
    return f"{event.stage}{count}{tail} ({event.calls} requests)"
