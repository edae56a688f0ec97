"""The run's cheap stand-ins behave as what they replace: the job timeout as
``asyncio.timeout``, the lazily bound logger as ``logger.bind``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from io import StringIO
from typing import Any, cast

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from importd import logs
from importd.executor import Deadlines, _Timeout
from importd.metrics import Metrics
from importd.models import Job
from importd.repository import _job

# A block that runs under a timeout of LIMIT seconds: what it does, as a coroutine function.
# (Long enough that a loaded machine's stall does not fire it where it must not fire.)
LIMIT = 0.5
Body = Callable[[], Awaitable[str]]


async def _sleeps() -> str:
    await asyncio.sleep(5)
    return "returned"


async def _returns() -> str:
    await asyncio.sleep(0)
    return "returned"


async def _swallows() -> str:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(5)
    return "returned"


async def _raises() -> str:
    await asyncio.sleep(0)
    raise ValueError("boom")


async def _times_out_inside() -> str:
    async with asyncio.timeout(0.001):
        await asyncio.sleep(5)
    return "returned"


async def _under(body: Body, cheap: bool, cancel_after: float | None) -> tuple[str, bool]:
    """What leaves the block (its return value or the exception's name) and whether the
    timeout says it expired, for the real ``asyncio.timeout`` or ``_Timeout``."""

    async def run() -> tuple[str, bool]:
        task = asyncio.current_task()
        assert task is not None
        timer: Any = _Timeout(task, LIMIT) if cheap else asyncio.timeout(LIMIT)
        try:
            if cheap:
                with timer:
                    out = await body()
            else:
                async with timer:
                    out = await body()
        except (TimeoutError, ValueError) as exc:
            return type(exc).__name__, timer.expired()
        return out, timer.expired()

    task = asyncio.create_task(run())
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "CancelledError", False


@pytest.mark.parametrize("body", [_sleeps, _returns, _swallows, _raises, _times_out_inside])
@pytest.mark.parametrize("cancel_after", [None, 0.01])
async def test_the_job_timeout_ends_a_block_as_asyncio_timeout_does(
    body: Body, cancel_after: float | None
) -> None:
    real = await _under(body, cheap=False, cancel_after=cancel_after)
    cheap = await _under(body, cheap=True, cancel_after=cancel_after)
    assert cheap == real


async def test_the_job_timeout_leaves_the_task_uncancelled_after_it_fired() -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError), _Timeout(task, 0.01):
        await asyncio.sleep(5)
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # the task runs on: nothing left to cancel it


async def test_timeouts_sharing_one_timer_each_fire_at_their_own_deadline() -> None:
    """Blocks under one ``Deadlines``: each one that outlives its delay ends with
    ``TimeoutError`` after that delay, not another block's; one that ends first is left
    alone, and so is the task after its block has ended."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def under(delay: float, body: Body) -> tuple[str, float]:
        task = asyncio.current_task()
        assert task is not None
        try:
            with _Timeout(task, delay, deadlines):
                out = await body()
        except TimeoutError:
            out = "TimeoutError"
        ended = loop.time() - began
        await asyncio.sleep(LIMIT)  # a fired timer must not reach the task after its block
        return out, ended

    results = await asyncio.gather(
        under(3 * LIMIT, _sleeps), under(LIMIT, _returns), under(LIMIT, _sleeps)
    )
    (late, late_at), (early, _), (first, first_at) = results
    assert (late, early, first) == ("TimeoutError", "returned", "TimeoutError")
    assert LIMIT <= first_at < 3 * LIMIT <= late_at


def _histogram(metrics: Metrics) -> dict[str, float]:
    """The duration histogram's samples of kind noop, queue default, by name and bound."""
    return {
        f"{sample.name}{sample.labels.get('le', '')}": sample.value
        for family in metrics.registry.collect()
        if family.name == "importd_job_duration_seconds"
        for sample in family.samples
        if sample.labels.get("kind") == "noop" and not sample.name.endswith("_created")
    }


@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6) | st.sampled_from([0.005, 0.1, 1.0, 3600.0]),
        max_size=40,
    ),
    st.lists(st.floats(min_value=0, max_value=1e4), max_size=5),
)
def test_observing_many_values_at_once_counts_what_observing_each_counts(
    values: list[float], before: list[float]
) -> None:
    """``observe_many`` (buckets added to once each) against the client library's own
    ``observe`` per value: the same bucket counts and count, the same sum but for
    rounding, also on a histogram that already holds values."""
    each, many = Metrics(kinds=["noop"]), Metrics(kinds=["noop"])
    for metrics in (each, many):
        for value in before:
            metrics.observe(metrics.duration, value, "noop", "default")
    for value in values:
        each.observe(each.duration, value, "noop", "default")
    many.observe_many(many.duration, values, "noop", "default")
    expected, got = _histogram(each), _histogram(many)
    total = expected.pop("importd_job_duration_seconds_sum", 0.0)
    assert got.pop("importd_job_duration_seconds_sum", 0.0) == pytest.approx(total, abs=1e-6)
    assert got == expected


def test_a_claimed_row_becomes_the_job_its_columns_say() -> None:
    """``_job`` passes the fields by position: each one must come from its column."""
    row: dict[str, Any] = {
        "id": 1,
        "kind": "kind",
        "queue": "queue",
        "tenant_id": "tenant",
        "payload": {"p": 1},
        "priority": 2,
        "run_at": datetime(2001, 1, 1, tzinfo=UTC),
        "attempts": 3,
        "max_attempts": 4,
        "timeout_s": 5.5,
        "created_at": datetime(2002, 2, 2, tzinfo=UTC),
        "rows_done": 6,
        "rows_failed": 7,
        "rows_total": 8,
        "checkpoint": {"c": 9},
        "waited_s": 10.5,
    }
    renamed = {"attempts": "attempt", "timeout_s": "timeout", "waited_s": "waited"}
    expected = {renamed.get(column, column): value for column, value in row.items()}
    job = _job(cast("Any", row))
    assert dataclasses.asdict(job) == expected
    assert {f.name for f in dataclasses.fields(Job)} == set(expected)
    assert _job(cast("Any", {**row, "waited_s": -1.0})).waited == 0.0  # clocks apart


@pytest.fixture
def json_lines() -> Iterator[StringIO]:
    """structlog configured at level warning, its JSON lines written to a buffer."""
    out = StringIO()
    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    try:
        yield out
    finally:
        structlog.configure(**old)


def test_a_lazily_bound_logger_logs_what_the_bound_one_logs(json_lines: StringIO) -> None:
    logger = structlog.get_logger("test")
    fields: dict[str, Any] = {"job_id": 7, "kind": "noop", "tenant_id": None}
    lazy = logs.LazyBound(logger, **fields)
    lazy.debug("not_written", n=1)
    lazy.info("not_written_either")
    lazy.warning("written", n=2)
    lazy.bind(extra=True).error("bound_further")
    eager = logger.bind(**fields)
    eager.warning("written", n=2)
    eager.bind(extra=True).error("bound_further")
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["written", "bound_further"] * 2
    assert lines[:2] == lines[2:]
    assert lines[0] == {"event": "written", "n": 2, "level": "warning", **fields}


def test_a_lazily_bound_logger_binds_only_for_a_line_it_writes(json_lines: StringIO) -> None:
    binds: list[dict[str, Any]] = []

    class Counting:
        def __init__(self) -> None:
            self.inner = structlog.get_logger("test")

        def is_enabled_for(self, level: int) -> bool:
            return bool(self.inner.is_enabled_for(level))

        def bind(self, **kw: Any) -> Any:
            binds.append(kw)
            return self.inner.bind(**kw)

    lazy = logs.LazyBound(Counting(), job_id=1)
    for _ in range(3):
        lazy.debug("job_started")
        lazy.info("job_completed", duration_ms=1.0)
    assert binds == []
    lazy.warning("job_lease_lost")
    lazy.error("job_failed")
    assert binds == [{"job_id": 1}]
    assert [json.loads(x)["event"] for x in json_lines.getvalue().splitlines()] == [
        "job_lease_lost",
        "job_failed",
    ]
