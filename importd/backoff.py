"""Retry timing as pure functions: when a failed attempt runs again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with a cap and partial jitter.

    Attempt n (1-based) waits ``base * 2**(n-1)``, capped at ``cap``; the last ``jitter``
    fraction of that is randomised so that jobs that failed together do not all come back
    together.
    """

    base: float = 1.0
    cap: float = 600.0
    jitter: float = 0.5

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter for ``attempt``."""
        exponent = min(max(attempt - 1, 0), 60)  # 2**60 s is far past any cap
        return float(min(self.cap, self.base * (2.0**exponent)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed ``attempt`` before the next one."""
        ceiling = self.ceiling(attempt)
        spread = ceiling * self.jitter
        roll = (rng or random).random()
        return ceiling - spread + spread * roll


# The pause before a daemon's statement that failed ``n`` times in a row on a transient
# database error runs again (a claim, a drain's first rescue): 0.2 s, doubling, at most
# 5 s; no jitter (one daemon's own loop, not many jobs coming back together).
STATEMENT_RETRY = Backoff(base=0.2, cap=5.0, jitter=0.0)


class _Attempt(Protocol):
    attempt_number: int


@dataclass(frozen=True, slots=True)
class FullJitter:
    """Reconnect timing for tenacity's ``wait=``: attempt n waits ``first * 2**(n-1)`` plus
    up to ``jitter`` seconds at random, at most ``cap`` (the formula of tenacity's
    ``wait_exponential_jitter``, whose first-wait argument changed name between releases
    that importd supports)."""

    first: float
    cap: float
    jitter: float = 1.0

    def __call__(self, state: _Attempt) -> float:
        exponent = min(max(state.attempt_number - 1, 0), 60)
        return min(self.first * 2.0**exponent + random.uniform(0, self.jitter), self.cap)
