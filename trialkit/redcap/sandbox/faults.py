"""Fault injection for testing REDCap clients: the failures real servers produce, on demand and reproducibly.

A `FaultPlan` picks which requests fail: the next N, and/or a seeded share of all requests. Kinds:
- `error`: a REDCap error body (in the request's format) with `status` (default 400);
- `http500`: HTTP 500 with an HTML page;
- `html_fatal`: HTTP 200 whose body is a PHP fatal-error block followed by REDCap's out-of-memory JSON error
  (what REDCap sends for too-large exports, redcap-api.md §1.2);
- `slow`: the request is answered normally after `delay` seconds;
- `drop`: the connection is closed without a reply and the request is NOT processed;
- `drop_after`: the request IS processed (an import is committed), then the connection is closed without a reply:
  the case that tempts a client into sending a write twice.
A per-token rate limit (`rate_limit` requests per `rate_window` seconds) answers HTTP 429 with an error body.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

KINDS = ("error", "http500", "html_fatal", "slow", "drop", "drop_after")

PHP_FATAL = (
    "<br />\n<b>Fatal error</b>:  Allowed memory size of 536870912 bytes exhausted (tried to allocate 20480 bytes) in "
    "<b>/var/www/html/redcap/redcap_v14.5.8/Classes/Records.php</b> on line <b>4391</b><br />\n"
)
RATE_LIMIT_MESSAGE = "You have exceeded the maximum number of API requests allowed. Please try again later."


@dataclass(frozen=True)
class FaultPlan:
    kind: str = "error"
    share: float = 0.0  # fraction of requests that fail, drawn from a Random(seed)
    next_n: int = 0  # the next N requests fail (before the share applies)
    seed: int = 0
    delay: float = 2.0  # seconds, for `slow`
    status: int = 400  # for `error`
    message: str = "The trialkit sandbox injected this error (fault injection)"
    rate_limit: int = 0  # requests per window per token; 0 = no limit
    rate_window: float = 1.0
    contents: tuple[str, ...] = ()  # only requests with these `content` values are affected (empty = all)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError("share must be between 0 and 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FaultPlan:
        data = dict(data)
        if "contents" in data:
            data["contents"] = tuple(data["contents"])
        return cls(**data)


@dataclass
class FaultInjector:
    plan: FaultPlan | None = None
    _random: random.Random = field(default_factory=random.Random)
    _remaining: int = 0
    _hits: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    injected: int = 0

    def configure(self, plan: FaultPlan | None) -> None:
        with self._lock:
            self.plan = plan
            self._random = random.Random(plan.seed if plan else 0)
            self._remaining = plan.next_n if plan else 0
            self._hits.clear()
            self.injected = 0

    def rate_limited(self, token: str) -> bool:
        plan = self.plan
        if plan is None or plan.rate_limit <= 0:
            return False
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(token, deque())
            while hits and now - hits[0] >= plan.rate_window:
                hits.popleft()
            if len(hits) >= plan.rate_limit:
                return True
            hits.append(now)
            return False

    def decide(self, content: str) -> str | None:
        """The fault kind to inject for this request, or None."""
        plan = self.plan
        if plan is None or (plan.contents and content not in plan.contents):
            return None
        with self._lock:
            if self._remaining > 0:
                self._remaining -= 1
                self.injected += 1
                return plan.kind
            if plan.share > 0 and self._random.random() < plan.share:
                self.injected += 1
                return plan.kind
        return None
