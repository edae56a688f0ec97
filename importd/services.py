"""The daemon's services: one shape for every background loop, one home for stop state.

A ``Service`` runs until asked to stop, in two phases: ``request_stop`` (graceful: finish
what is under way) and, once its ``grace`` has passed or the stop is hurried, a cancel of
its task. ``Services`` runs a list of them in one TaskGroup, started in the given order
and stopped in the reverse one, after ``Stopping`` says so. ``Stopping`` holds why the
daemon stops, whether it hurries, how runs still going are written back and when the
grace ends: nothing else keeps stop state.

A service that raises is logged here, once, with its cause and traceback, and stops the
daemon at once (no grace, running jobs counted as crashed); it does not tear the
TaskGroup down, so the services after it in the order (the result writer, the lease
keeper) still finish their part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from .db import describe_db_error
from .executor import StopReason

log = structlog.get_logger("importd.daemon")

# ``Stopping.why`` when the main service (a drain's workers) ended on its own.
FINISHED = "finished"


class Stopping:
    """Why and how the daemon stops: requested or not, why, how long the graceful phase
    may last, whether to hurry, and what the runs still going are written back as."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.requested = asyncio.Event()
        self.hurried = asyncio.Event()
        self.why: str | None = None  # the first request's reason
        self.asked: list[str] = []  # every request's reason, in order
        self.job_reason = StopReason.SHUTDOWN
        self.deadline = 0.0  # loop time at which the graceful phase ends

    def request(
        self, why: str, *, grace: float | None = None, reason: StopReason = StopReason.SHUTDOWN
    ) -> bool:
        """Ask the daemon to stop; True the first time. A later request hurries the stop
        (skips what is left of the grace); a crash also turns the runs still going into
        crashed ones."""
        self.asked.append(why)
        if reason is StopReason.CRASH:
            self.job_reason = StopReason.CRASH
        if self.requested.is_set():
            self.hurried.set()
            return False
        self.why = why
        grace = self.grace if grace is None else grace
        self.deadline = asyncio.get_running_loop().time() + grace
        if grace <= 0:
            self.hurried.set()
        self.requested.set()
        return True

    def left(self) -> float:
        """Seconds left of the graceful phase (0 once hurried)."""
        if self.hurried.is_set():
            return 0.0
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)


class Service(Protocol):
    """A background loop of the daemon."""

    @property
    def name(self) -> str: ...

    async def run(self) -> None:
        """Work until stopped (returning early ends the daemon only for the main one)."""

    def request_stop(self) -> None:
        """Phase one: finish what is under way, then return from ``run``."""

    def grace(self, stopping: Stopping) -> float | None:
        """How long phase one may take before the task is cancelled (None: as long as it
        takes; 0: cancel at once). A hurried stop cuts a finite grace short."""


class Loop:
    """A ``Service`` made of a coroutine function: ``stop`` (phase one, if any),
    ``grace`` (0: nothing to finish, cancel at once; None: wait for ``run`` to return),
    ``after`` (awaited when ``run`` ends, however it ends)."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        stop: Callable[[], None] | None = None,
        grace: float | None = 0.0,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._name = name
        self._run = run
        self._stop = stop
        self._grace = grace
        self._after = after

    @property
    def name(self) -> str:
        return self._name

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._after is not None:
                await self._after()

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop()

    def grace(self, stopping: Stopping) -> float | None:
        return self._grace


class Services:
    """Runs services in one TaskGroup: started in order, stopped in reverse order once
    ``stopping`` is requested (or the main service returns, or one crashes)."""

    def __init__(self, stopping: Stopping) -> None:
        self.stopping = stopping
        self.crashed = False
        self._logged: set[int] = set()  # ids of errors already logged

    async def run(self, services: Sequence[Service], main: Service | None = None) -> None:
        """Start ``services`` in order; when a stop is requested, stop each in reverse
        order, the next only once the previous one has ended. ``main`` returning on its
        own (a drain with nothing left) requests the stop."""
        async with asyncio.TaskGroup() as tg:
            tasks = [
                (service, tg.create_task(self._guard(service, main), name=service.name))
                for service in services
            ]
            await self.stopping.requested.wait()
            for service, task in reversed(tasks):
                await self._stop(service, task)

    async def _guard(self, service: Service, main: Service | None) -> None:
        try:
            await service.run()
        except Exception as exc:
            self.crashed = True
            self.log_crash(service.name, exc)
            self.stopping.request(f"{service.name}_crashed", grace=0, reason=StopReason.CRASH)
            return
        if service is main:
            self.stopping.request(FINISHED)

    def log_crash(self, name: str, exc: BaseException) -> None:
        """``service_crashed`` once per cause, with its traceback (not a group's)."""
        for cause in _leaves(exc):
            if id(cause) in self._logged:
                continue
            self._logged.add(id(cause))
            log.error(
                "service_crashed",
                service=name,
                error=describe_db_error(cause),
                exc_info=cause,
            )

    async def _stop(self, service: Service, task: asyncio.Task[None]) -> None:
        if task.done():
            return
        service.request_stop()
        grace = service.grace(self.stopping)
        if grace is None:
            await asyncio.wait([task])
        elif grace > 0 and not self.stopping.hurried.is_set():
            hurry = asyncio.create_task(self.stopping.hurried.wait())
            try:
                await asyncio.wait(
                    [task, hurry], timeout=grace, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                hurry.cancel()
        if not task.done():
            task.cancel()  # phase two
            await asyncio.wait([task])


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups: the causes, not their wrappers."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
