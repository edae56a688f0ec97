"""What a worker claims from: its queues and their slots, rate limits, and the lanes
these make.

A daemon runs one worker per ``--queue NAME=SLOTS`` (or one worker for every queue), so
a queue's jobs never take another queue's slots. Inside a worker, each rate limit in its
scope gets a lane of its own, claimed under that limit; the rest of the worker's jobs
form the main lane. A job is governed by at most one limit: its queue's, if its queue
has one, else its kind's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_QUEUE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$")
_RATE = re.compile(
    r"^(?:(?P<scope>queue|kind):)?(?P<name>[^=\s]+)\s*=\s*"
    r"(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<unit>s|sec|second|m|min|minute|h|hour)"
    r"(?::(?P<burst>\d+))?$"
)
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class QueueSlots:
    """``NAME`` or ``NAME=SLOTS``: a queue a daemon serves and its own concurrency."""

    name: str
    slots: int | None = None  # None: the daemon's --concurrency

    @classmethod
    def parse(cls, text: str) -> QueueSlots:
        name, eq, slots = text.partition("=")
        name = name.strip()
        if not _QUEUE.match(name):
            raise ValueError(f"{text!r}: a queue name is letters, digits and _ . : -")
        if not eq:
            return cls(name)
        if not (slots.strip().isascii() and slots.strip().isdigit()) or int(slots) < 1:
            raise ValueError(f"{text!r}: give the queue's slots as a whole number ≥ 1")
        return cls(name, int(slots))


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_s`` job starts a second for a queue or a kind, over every daemon.

    ``burst`` is how many may start back to back after an idle spell (default 1: starts
    are spaced by 1/rate, each allowed up to half an interval early so that late wake-ups
    are not lost). In any window of W seconds at most ``per_s * W + burst`` jobs start
    (rounded half up).
    Written ``webhooks=10/s``, ``kind:http=600/min`` or ``webhooks=10/s:5``.
    """

    scope: str  # "queue" or "kind"
    name: str
    per_s: float
    burst: int = 1

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.match(text.strip())
        if not match:
            raise ValueError(
                f"{text!r} is not a rate limit (like webhooks=10/s, kind:http=600/min, "
                "webhooks=10/s:5)"
            )
        per_s = float(match["count"]) / _UNIT_S[match["unit"]]
        if per_s <= 0:
            raise ValueError(f"{text!r}: a rate limit must allow some jobs")
        burst = int(match["burst"]) if match["burst"] else 1
        if burst < 1:
            raise ValueError(f"{text!r}: the burst must be at least 1")
        return cls(match["scope"] or "queue", match["name"], per_s, burst)

    @property
    def key(self) -> str:
        """The row of ``importd_rate_limits`` all daemons share for this limit."""
        return f"{self.scope}:{self.name}"

    @property
    def interval(self) -> float:
        """Seconds between two starts at the limit's pace."""
        return 1.0 / self.per_s


@dataclass
class Lane:
    """One claim scope of a worker: its filters, its rate limit, and where its
    tenant-fair walk stopped last time."""

    queues: tuple[str, ...] | None
    kinds: tuple[str, ...] | None
    skip_queues: tuple[str, ...] | None = None
    skip_kinds: tuple[str, ...] | None = None
    rate: RateLimit | None = None
    cursor: tuple[str, str] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.rate.key if self.rate else "main"

    def walked_to(self, queue: str, tenant_id: str | None) -> None:
        """The fair walk's next claim starts after this (queue, tenant) pair: the last
        job a claim of this lane took."""
        self.cursor = (queue, tenant_id or "")


def plan_lanes(
    queues: Sequence[str] | None,
    kinds: Sequence[str] | None,
    limits: Iterable[RateLimit],
) -> list[Lane]:
    """The lanes of a worker serving ``queues`` (None: all) and ``kinds`` (None: all)."""
    queue_limits = {r.name: r for r in limits if r.scope == "queue"}
    kind_limits = {r.name: r for r in limits if r.scope == "kind"}
    if queues is not None:
        queue_limits = {q: r for q, r in queue_limits.items() if q in queues}
    if kinds is not None:
        kind_limits = {k: r for k, r in kind_limits.items() if k in kinds}
    scope_q = tuple(queues) if queues is not None else None
    scope_k = tuple(kinds) if kinds is not None else None
    limited_q = tuple(sorted(queue_limits)) or None
    limited_k = tuple(sorted(kind_limits)) or None

    lanes: list[Lane] = []
    unlimited_queues = (
        None if scope_q is None else tuple(q for q in scope_q if q not in queue_limits)
    )
    if unlimited_queues is None or unlimited_queues:
        lanes.append(Lane(unlimited_queues, scope_k, limited_q, limited_k))
    for name in sorted(queue_limits):
        lanes.append(Lane((name,), scope_k, rate=queue_limits[name]))
    if unlimited_queues is None or unlimited_queues:
        for name in sorted(kind_limits):
            lanes.append(Lane(unlimited_queues, (name,), limited_q, rate=kind_limits[name]))
    return lanes
