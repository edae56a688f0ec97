"""Backoff is a pure function: exponential, capped, jittered within bounds."""

from __future__ import annotations

import random
from types import SimpleNamespace

from importd.backoff import Backoff, FullJitter


def test_grows_exponentially_then_caps() -> None:
    b = Backoff(base=1.0, cap=30.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30  # no overflow on absurd attempts


def test_jitter_stays_in_the_upper_part_of_the_delay() -> None:
    b = Backoff(base=2.0, cap=600.0, jitter=0.5)
    rng = random.Random(7)
    delays = [b.delay(3, rng) for _ in range(2000)]
    assert min(delays) >= 4.0 and max(delays) <= 8.0
    assert max(delays) - min(delays) > 3.5  # actually spread, not constant


def test_reconnect_waits_grow_with_up_to_a_second_of_jitter_under_the_cap() -> None:
    wait = FullJitter(first=0.2, cap=2.0)
    for n, low in [(1, 0.2), (2, 0.4), (3, 0.8)]:
        waits = [wait(SimpleNamespace(attempt_number=n)) for _ in range(500)]
        assert low <= min(waits) and max(waits) <= low + 1.0
        assert max(waits) - min(waits) > 0.5  # spread, so reconnecting daemons scatter
    assert {wait(SimpleNamespace(attempt_number=n)) for n in (5, 60, 10_000)} == {2.0}
