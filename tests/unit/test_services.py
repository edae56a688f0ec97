"""The service runner and the stop state, without a database: the order services start
and stop in, the two phases of a stop, hurry, and what a crashing service does."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from importd.executor import StopReason
from importd.services import FINISHED, Loop, Service, Services, Stopping
from tests.helpers import wait_until


class Probe:
    """A service that records when it starts, is asked to stop, and ends; ``linger``
    seconds of work after the stop request (None: ignores it until cancelled)."""

    def __init__(
        self, name: str, log: list[str], *, linger: float | None = 0.0, grace: float | None = 0.0
    ) -> None:
        self.name = name
        self._log = log
        self._linger = linger
        self._grace = grace
        self._asked = asyncio.Event()

    async def run(self) -> None:
        self._log.append(f"start {self.name}")
        try:
            await self._asked.wait()
            if self._linger is None:
                await asyncio.Event().wait()  # never returns by itself
            else:
                await asyncio.sleep(self._linger)
            self._log.append(f"end {self.name}")
        except asyncio.CancelledError:
            self._log.append(f"cancelled {self.name}")
            raise

    def request_stop(self) -> None:
        self._log.append(f"stop {self.name}")
        self._asked.set()

    def grace(self, stopping: Stopping) -> float | None:
        return self._grace


async def test_services_start_in_order_and_stop_in_reverse_each_after_the_last() -> None:
    log: list[str] = []
    stopping = Stopping(grace=5)
    # b finishes some work after its stop request: a is asked only once b has ended.
    probes = [Probe("a", log, grace=None), Probe("b", log, linger=0.05, grace=None)]
    probes.append(Probe("c", log, grace=None))
    runner = asyncio.create_task(Services(stopping).run(probes))
    await wait_until(lambda: len(log) == 3, what="three starts")
    assert stopping.request("test")
    await runner
    assert log == [
        "start a",
        "start b",
        "start c",
        "stop c",
        "end c",
        "stop b",
        "end b",
        "stop a",
        "end a",
    ]


async def test_a_service_that_ignores_its_stop_is_cancelled_after_its_grace() -> None:
    log: list[str] = []
    stopping = Stopping(grace=5)
    stubborn = Probe("stubborn", log, linger=None, grace=0.2)
    runner = asyncio.create_task(Services(stopping).run([stubborn]))
    await wait_until(lambda: log, what="the start")
    loop = asyncio.get_running_loop()
    began = loop.time()
    stopping.request("test")
    await runner
    assert log == ["start stubborn", "stop stubborn", "cancelled stubborn"]
    assert 0.2 <= loop.time() - began < 2


async def test_a_hurried_stop_cancels_without_waiting_for_the_grace() -> None:
    log: list[str] = []
    stopping = Stopping(grace=5)
    stubborn = Probe("stubborn", log, linger=None, grace=60)
    runner = asyncio.create_task(Services(stopping).run([stubborn]))
    await wait_until(lambda: log, what="the start")
    stopping.request("first")
    await wait_until(lambda: "stop stubborn" in log, what="the stop request")
    assert not stopping.request("second")  # a second request hurries
    await asyncio.wait_for(runner, 5)
    assert log[-1] == "cancelled stubborn"
    assert stopping.hurried.is_set() and stopping.asked == ["first", "second"]


async def test_a_crashing_service_is_logged_once_and_stops_the_rest_in_order() -> None:
    log: list[str] = []
    stopping = Stopping(grace=30)

    async def crash() -> None:
        log.append("start boom")
        raise RuntimeError("boom")

    services = Services(stopping)
    probes: list[Service] = [Probe("writer", log, linger=0.01, grace=None), Loop("boom", crash)]
    probes.append(Probe("workers", log, grace=None))
    with structlog.testing.capture_logs() as lines:
        await asyncio.wait_for(services.run(probes), 5)
    assert services.crashed
    assert (stopping.why, stopping.job_reason) == ("boom_crashed", StopReason.CRASH)
    assert stopping.left() == 0  # no grace after a crash
    # The workers stop first; the writer still finishes its part afterwards.
    assert log[-4:] == ["stop workers", "end workers", "stop writer", "end writer"]
    crashed = [line for line in lines if line["event"] == "service_crashed"]
    assert len(crashed) == 1 and crashed[0]["service"] == "boom"
    assert crashed[0]["error"] == "RuntimeError: boom"


async def test_the_main_service_ending_stops_the_daemon_as_finished() -> None:
    log: list[str] = []
    stopping = Stopping(grace=30)

    async def drained() -> None:
        log.append("drained")

    main = Loop("workers", drained)
    await asyncio.wait_for(
        Services(stopping).run([Probe("writer", log, grace=None), main], main), 5
    )
    assert stopping.why == FINISHED and stopping.job_reason is StopReason.SHUTDOWN
    assert log == ["start writer", "drained", "stop writer", "end writer"]


async def test_a_crash_during_a_graceful_stop_hurries_it_and_counts_the_runs_as_crashed() -> None:
    stopping = Stopping(grace=30)
    assert stopping.request("SIGTERM")
    assert 29 < stopping.left() <= 30
    assert stopping.job_reason == StopReason.SHUTDOWN
    assert not stopping.request("x_crashed", grace=0, reason=StopReason.CRASH)
    assert (stopping.left(), stopping.job_reason) == (0, StopReason.CRASH)
    assert stopping.why == "SIGTERM"


@pytest.mark.parametrize("grace", [0, -1])
async def test_a_stop_without_grace_is_hurried_from_the_start(grace: float) -> None:
    stopping = Stopping(grace=grace)
    stopping.request("now")
    assert stopping.hurried.is_set() and stopping.left() == 0
