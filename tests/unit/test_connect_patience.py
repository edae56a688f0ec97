"""How long a command keeps trying an unreachable database (the README's exit code 5:
``run`` keeps trying for 60 s and ``drain`` for 10 s before it gives up): the budget is
the whole time, the last pause included, not a check made only after each attempt."""

from __future__ import annotations

import random
import time

import pytest

from importd import db


async def test_retrying_gives_up_when_its_budget_is_spent_not_a_pause_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No jitter: the pauses are 0.05, 0.1, 0.2, 0.4, 0.8 s. With a 1 s budget the fifth
    # would end at 1.55 s; it must be cut to what is left of the budget.
    monkeypatch.setattr(random, "uniform", lambda low, _high: low)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError(111, "Connect call failed")

    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await db.retry_transient("connect", refused, give_up_after=1.0, max_wait=5.0)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.3, elapsed
    assert calls >= 5  # it kept trying until the budget was spent


async def test_a_budget_spent_by_the_first_attempt_ends_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, _high: low)

    async def slow_refusal() -> None:
        time.sleep(0.3)  # a connect that took the whole budget before it was refused
        raise ConnectionRefusedError(111, "Connect call failed")

    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await db.retry_transient("connect", slow_refusal, give_up_after=0.2, max_wait=5.0)
    assert time.monotonic() - started < 0.45  # one attempt, no second one after a pause
