"""The worker loop: wait for a reason to look, claim at most the free slots, start them.

Reasons to look: a notification for a queue we serve, the poll interval, the moment the
earliest scheduled job comes due, a (re)connect of the listener, and a slot freeing up
after a claim that filled every slot (there may be more waiting), the moment a rate
limit allows the next start. Notifications that arrive while no slot is free or while a
claim is in flight fold into one flag, so the number of claims follows the claimable
work, not the number of notifications; after a claim that found nothing they also wait a
little (another daemon is taking the work), so that several fold into one.

A daemon runs one worker per queue it gives slots of its own (``Workers``); a worker
claims over its lanes (``lanes.py``): the main one, and one per rate limit in its scope.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from .backoff import STATEMENT_RETRY
from .db import describe_db_error, is_transient
from .executor import Executor, StopReason
from .lanes import Lane, RateLimit, plan_lanes
from .logs import log_enabled
from .models import Job
from .repository import Repository

if TYPE_CHECKING:
    from .services import Stopping

log = structlog.get_logger("importd.worker")

# The loop wakes at least this often (seconds), busy or idle, to prove it is not wedged.
TICK = 1.0


@dataclass(frozen=True)
class WorkerOptions:
    """How the loop claims."""

    worker_id: str
    capacity: int
    poll_interval: float
    lease_margin: float
    queues: Sequence[str] | None = None
    kinds: Sequence[str] | None = None
    # drain: stop once nothing is runnable and nothing runs; max_jobs caps the claims.
    drain: bool = False
    max_jobs: int | None = None
    # Round-robin across tenants; the per-tenant cap over every daemon (None: none).
    fair: bool = False
    tenant_cap: int | None = None
    # Rate limits in this worker's scope (each claimed in a lane of its own).
    rate_limits: Sequence[RateLimit] = ()
    # Results waiting for the writer beyond which claims pause (None: 2 x capacity).
    backlog_limit: int | None = None
    name: str = "all"  # the queue(s) served, for logs


class Worker:
    """Claims jobs and hands them to the executor, within ``capacity``."""

    def __init__(
        self,
        repo: Repository,
        executor: Executor,
        options: WorkerOptions,
        stopping: Stopping,
        backlog: Callable[[], int] = lambda: 0,
        claimed_so_far: Callable[[], int] | None = None,
    ) -> None:
        self._repo = repo
        self._stop = stopping.requested  # the daemon's stop state, read, never kept here
        self._backlog = backlog
        self._executor = executor
        self._opts = options
        self._lanes = plan_lanes(options.queues, options.kinds, options.rate_limits)
        self._turn = 0  # which lane claims first: rotates, so no lane starves another
        self._backlog_limit = options.backlog_limit or 2 * options.capacity
        self.active = 0  # this worker's handlers running now
        self._kick = asyncio.Event()
        self._notified = True  # look once at start: the catch-up claim
        # After claims that found nothing (another daemon was quicker), notifications wait
        # a little, 2 ms doubling to 50 ms, so that several fold into one claim.
        self._empty_streak = 0
        self._rate_held = False  # the last claim left jobs to a rate limit's next turn
        self._quiet_until = 0.0
        self._more = False
        self._poll_at = 0.0
        self._due_at = math.inf
        self._runs = 0  # started and not yet written back
        # Called whenever one of this worker's runs ends (``Workers`` waits on it).
        self.on_run_end: Callable[[], None] = lambda: None
        self.claimed = 0
        # What counts against max_jobs: this worker's claims, or all workers' of a daemon.
        self._claimed_so_far = claimed_so_far or (lambda: self.claimed)
        self.claims = 0
        self.last_tick = 0.0
        self.last_wake = 0.0  # loop time of the last notification or poll
        self.first_claim_done = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Jobs started and not yet written back."""
        return self._runs

    @property
    def name(self) -> str:
        return self._opts.name

    def _free(self) -> int:
        """Slots for new jobs: ``capacity`` bounds the handlers running at once. A run
        whose handler returned holds no slot while its result waits for the next batched
        write (as River's completer does), so claims overlap result writes; claims stop
        while twice ``capacity`` results wait, which bounds memory and how far claims may
        run ahead of the writes."""
        if self._backlog() >= self._backlog_limit:
            return 0
        return self._opts.capacity - self.active

    def notify(self, queue: str | None = None) -> None:
        """A hint that work may be waiting (None: after a reconnect, look anyway)."""
        queues = self._opts.queues
        if queue is not None and queues and queue not in queues:
            return
        self._notified = True
        self.last_wake = asyncio.get_running_loop().time()
        self._kick.set()

    def slot_freed(self) -> None:
        """Called by the executor when one of this worker's handlers has returned."""
        self.active -= 1
        self._kick.set()

    def wake(self) -> None:
        """Look at the stop state now: once ``Stopping`` is requested ``run`` returns
        (``Workers`` settles the running jobs)."""
        self._kick.set()

    async def run(self) -> None:
        """The loop; returns once the daemon stops (or, draining, when nothing is left)."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            ready = await self._wait_for_work(loop)
            if not ready:
                return
            free = self._free()
            if self._opts.max_jobs is not None:
                free = min(free, self._opts.max_jobs - self._claimed_so_far())
                if free <= 0:  # another worker of this drain took the rest
                    continue
            self._notified = False
            self.claimed += free  # reserved while the claim runs (max_jobs is shared)
            leased_at = time.monotonic()  # the leases run from the claim, not its reply
            try:
                jobs, held = await self._claim(free)
            except Exception as exc:
                self.claimed -= free
                if not is_transient(exc):
                    raise
                failures += 1
                delay = STATEMENT_RETRY.ceiling(failures)
                log.warning("claim_failed", error=describe_db_error(exc), retry_in_s=delay)
                self._notified = True
                await self._sleep_unless_stopped(delay)
                continue
            failures = 0
            self.claimed -= free - len(jobs)
            if jobs:
                self._empty_streak = 0
                self._quiet_until = 0.0
            else:
                self._empty_streak += 1
                pause = min(0.001 * 2**self._empty_streak, 0.05)
                self._quiet_until = loop.time() + pause
            if jobs:
                self._count_claimed(jobs)
            if jobs:
                self.active += len(jobs)
                self._runs += len(jobs)
                self._executor.start_many(jobs, self.slot_freed, leased_at, self._run_ended)
            now = loop.time()
            self.last_tick = now
            if now >= self._poll_at:
                self.last_wake = now
            self._poll_at = now + self._opts.poll_interval
            self._more = len(jobs) == free
            self._rate_held = bool(held)
            if not self._more:
                # Nothing more runnable now: when is the next scheduled job due? Asked
                # after the claimed jobs started, so it adds nothing to their latency:
                # their tasks first run at the loop's next step, which the query would
                # put off until it is sent (the pool and the statement, 0.2 ms of the
                # 1.5 ms from commit to handler start at 50 jobs/s; with the yield, a
                # handler starts 0.1 ms after the claim's reply instead of 0.26).
                if jobs:
                    await asyncio.sleep(0)
                await self._schedule_next_due(loop, held)
            self.first_claim_done.set()

    def _count_claimed(self, jobs: list[Job]) -> None:
        """The claim's metrics and debug lines: counters once per kind and queue, the
        start latencies per job into a histogram child looked up once per queue."""
        metrics = self._executor.metrics
        groups: dict[tuple[str, str], int] = {}
        waits: dict[str, list[float]] = {}
        for job in jobs:
            key = (job.kind, job.queue)
            groups[key] = groups.get(key, 0) + 1
            waits.setdefault(job.queue, []).append(job.waited)
        for (kind, queue), n in groups.items():
            metrics.count(metrics.claimed, kind, queue, n)
        for queue, values in waits.items():
            metrics.observe_many(metrics.start_latency, values, queue)
        if log_enabled(logging.DEBUG, log):
            for job in jobs:
                log.debug(
                    "job_claimed",
                    job_id=job.id,
                    kind=job.kind,
                    queue=job.queue,
                    attempt=job.attempt,
                )

    async def _claim(self, free: int) -> tuple[list[Job], dict[str, float]]:
        """Claim up to ``free`` jobs over the lanes, the first lane changing each time.
        Returns the jobs and, per lane a rate limit held back, when it allows more."""
        jobs: list[Job] = []
        held: dict[str, float] = {}
        lanes = self._lanes
        first = self._turn % len(lanes)
        self._turn += 1
        for lane in lanes[first:] + lanes[:first]:
            want = free - len(jobs)
            if want <= 0:
                break
            got, wait = await self._repo.claim_lane(
                lane,
                want,
                self._opts.worker_id,
                lease_margin=self._opts.lease_margin,
                fair=self._opts.fair,
                tenant_cap=self._opts.tenant_cap,
            )
            if got:
                lane.walked_to(got[-1].queue, got[-1].tenant_id)
            jobs.extend(got)
            self.claims += 1
            self._executor.metrics.claim(bool(got))
            if wait is not None:
                held[lane.name] = wait
        return jobs, held

    async def _schedule_next_due(
        self, loop: asyncio.AbstractEventLoop, held: dict[str, float]
    ) -> None:
        due: float | None = None
        try:
            for lane in self._lanes:
                if lane.name in held:
                    lane_due: float | None = held[lane.name]
                else:
                    lane_due = await self._next_due(lane)
                if lane_due is not None:
                    due = lane_due if due is None else min(due, lane_due)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("next_due_failed", error=describe_db_error(exc))
            self._due_at = loop.time() + 1.0
            return
        now = loop.time()
        if due is None:
            self._due_at = math.inf
        elif due > 0:
            self._due_at = now + due
        elif self._opts.tenant_cap is not None:
            # Due but not claimed: most likely its tenant is at the cap. Our own
            # completions look again at once (see _task_done); other daemons' within a
            # second.
            self._due_at = now + TICK
        else:
            # Due already but not claimed: locked by a claim in flight elsewhere. Look
            # again soon rather than at the next poll.
            self._due_at = now + 0.05

    async def _next_due(self, lane: Lane) -> float | None:
        return await self._repo.next_due_in(
            queues=lane.queues,
            kinds=lane.kinds,
            skip_queues=lane.skip_queues,
            skip_kinds=lane.skip_kinds,
        )

    def _run_ended(self) -> None:
        """Called by the executor once a run's outcome is written (or abandoned)."""
        self._runs -= 1
        if self._opts.tenant_cap is not None:
            # Its result is written: its tenant may be under the cap again.
            self._notified = True
        self._kick.set()
        self.on_run_end()

    async def _wait_for_work(self, loop: asyncio.AbstractEventLoop) -> bool:
        while True:
            if self._stop.is_set():
                return False
            now = loop.time()
            self.last_tick = now
            capped = (
                self._opts.max_jobs is not None and self._claimed_so_far() >= self._opts.max_jobs
            )
            free = 0 if capped else self._free()
            if self._opts.drain:
                if free > 0 and (self._refill(free) or self._notified or now >= self._due_at):
                    return True
                if self.in_flight == 0 and not self._rate_held:
                    return False  # drained: nothing runnable, nothing running
                # Jobs a rate limit holds back are runnable: wait for their turn.
                timeout: float | None = min(TICK, max(self._due_at - now, 0.0))
            else:
                wake_at = min(self._poll_at, self._due_at)
                if self._notified:
                    wake_at = min(wake_at, self._quiet_until)
                if free > 0 and (self._refill(free) or now >= wake_at):
                    return True
                # With no free slot only a finishing job (or stop) can change anything,
                # but tick at least every second so the watchdog sees a live loop.
                timeout = TICK if free <= 0 else min(max(wake_at - now, 0.0), TICK)
            self._kick.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._kick.wait()
            except TimeoutError:
                pass

    def _refill(self, free: int) -> bool:
        """Whether to claim again for ``free`` slots while more work is known to wait.

        Under a flood, slots free up a few at a time as result batches commit; claiming
        for each few would mean many small claims. Wait for half the slots unless no
        result write is under way (then nothing else will free a slot soon)."""
        if not self._more:
            return False
        return free * 2 >= self._opts.capacity or self._backlog() == 0

    async def _sleep_unless_stopped(self, delay: float) -> None:
        """Back off after a failed claim, still ticking every second: a loop that waits
        for the database to come back is alive, not wedged."""
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while not self._stop.is_set() and (left := end - loop.time()) > 0:
            self.last_tick = loop.time()
            self._kick.clear()
            try:
                async with asyncio.timeout(min(left, TICK)):
                    await self._kick.wait()
            except TimeoutError:
                pass


class Workers:
    """The workers of one daemon, one per served queue (or one for every queue), seen
    from the daemon as one service: notifications fan out, a stop reaches all.

    Its stop has two phases, both driven by ``Stopping``: stop claiming and wait for the
    running jobs while the grace lasts (and the stop is not hurried), then interrupt the
    rest (the executor cancels their handlers for ``Stopping.job_reason``) and wait for
    their write-backs. The claim loops themselves are never cancelled by a stop: a claim
    in flight starts what it leased, which is then interrupted and written back, rather
    than being left leased to nobody."""

    name = "worker"

    def __init__(self, workers: Sequence[Worker], executor: Executor, stopping: Stopping) -> None:
        self.members = list(workers)
        self.first_claim_done = asyncio.Event()
        self.interrupted = 0  # runs whose handler the stop interrupted
        # Awaited before the first claim (a drain's rescue of jobs a dead daemon held).
        self.before: Callable[[], Awaitable[object]] | None = None
        self._executor = executor
        self._stopping = stopping
        self._ended = asyncio.Event()  # set whenever a run of any member ends
        for w in self.members:
            w.on_run_end = self._ended.set

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.members)

    @property
    def claims(self) -> int:
        return sum(w.claims for w in self.members)

    @property
    def last_tick(self) -> float:
        """The stalest worker's last tick: the daemon is alive only if all are."""
        return min(w.last_tick for w in self.members)

    @property
    def last_wake(self) -> float:
        return max(w.last_wake for w in self.members)

    def notify(self, queue: str | None = None) -> None:
        for w in self.members:
            w.notify(queue)

    def request_stop(self) -> None:
        """Stop claiming (each worker reads ``Stopping``, already requested); ``run``
        then settles the running jobs (see the class)."""
        for w in self.members:
            w.wake()

    def grace(self, stopping: Stopping) -> float | None:
        """None: the workers end their runs within ``stopping``'s grace themselves."""
        return None

    async def run(self) -> None:
        """Run every worker until stopped (or, draining, until nothing is left), then
        settle the jobs still running."""

        async def first_claims() -> None:
            await asyncio.gather(*(w.first_claim_done.wait() for w in self.members))
            self.first_claim_done.set()

        if self.before is not None:
            await self.before()
        waiter = asyncio.create_task(first_claims())
        try:
            async with asyncio.TaskGroup() as tg:
                for w in self.members:
                    tg.create_task(w.run(), name=f"worker-{w.name}")
        except BaseException as exc:
            # A claim loop died (or the daemon itself is torn down): no grace. The
            # running jobs end with their attempt counted (a job that crashes its daemon
            # must use up its attempts).
            cancelled = isinstance(exc, asyncio.CancelledError)
            await self._interrupt(self._stopping.job_reason if cancelled else StopReason.CRASH)
            raise
        finally:
            waiter.cancel()
        await self._settle()

    async def _runs_end(self, timeout: float | None, *also: asyncio.Future[Any]) -> None:
        """Wait until a run ends (or one of ``also`` is done), at most ``timeout`` s."""
        self._ended.clear()
        waiter = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait(
                [waiter, *also], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()

    async def _settle(self) -> None:
        """Wait for the running jobs while the grace lasts, then interrupt the rest."""
        stopping = self._stopping
        if self.in_flight and stopping.left() > 0:
            log.info("shutdown_waiting", running=self.in_flight, grace_s=stopping.grace)
            hurry = asyncio.create_task(stopping.hurried.wait())
            try:
                while self.in_flight and (left := stopping.left()) > 0 and not hurry.done():
                    await self._runs_end(left, hurry)
            finally:
                hurry.cancel()
        await self._interrupt(stopping.job_reason)

    async def _interrupt(self, reason: StopReason) -> None:
        """Stop the handlers still running for ``reason`` and wait until every run is
        written back. A run whose handler has returned only waits for its batched
        write: it is not interrupted, and gets its write (its outcome is counted)."""
        running = self.in_flight
        if not running:
            return
        stopped = self._executor.stop_all(reason)
        log.warning("shutdown_interrupting", running=stopped, writing=running - stopped)
        self.interrupted += stopped
        while self.in_flight:
            await self._runs_end(None)
