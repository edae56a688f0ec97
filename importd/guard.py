"""What keeps a daemon's promises when its event loop cannot: two threads of their own.

The lease keeper renews the leases of the jobs this process runs, over a connection of
its own driven by a small event loop of its own, so a handler that blocks the daemon's
event loop (``time.sleep`` in an ``async def``) cannot let a lease expire while the
process lives and still runs it. The loop monitor measures the daemon loop's lag: a stall
over ``loop_block_warn`` seconds logs ``loop_blocked`` once, with the running jobs and
the main thread's stack; a stall that keeps a job past its timeout plus the lease margin
(its timeout cannot fire on a blocked loop) hands every job back with the attempt counted
and ends the process, so the jobs run again elsewhere and never twice at once. The
monitor also decides the systemd watchdog ping and what ``/healthz`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from . import db
from .models import ExitCode, Job, Outcome, Status
from .repository import finish_runs, renew_leases, run_state

if TYPE_CHECKING:
    from .metrics import Metrics
    from .systemd import Notifier

log = structlog.get_logger("importd.guard")

# How often the loop proves it is alive and the monitor looks (at most; a quarter of
# loop_block_warn when that is shorter): often enough to see a stall within a quarter of
# the threshold, rarely enough to cost nothing while idle.
TICK = 0.25
# Frames of the main thread's stack kept in a loop_blocked line (the innermost ones).
STACK_FRAMES = 25


@dataclass
class Lease:
    """One job this process runs, as the keeper sees it."""

    job: Job
    deadline: float  # time.monotonic() at which the job's timeout ends
    expires: float  # time.monotonic() before which the lease surely holds
    progress: Callable[[], dict[str, int | None]]
    started: float
    in_thread: bool  # a synchronous handler: nothing but its own return can stop it
    handler_running: bool = True
    expiring: bool = False  # its handler was told to stop before the lease runs out
    # Its handler wrote the completion inside its own transaction (``complete_in``): once
    # that commits, the row is no longer running, and that is the run's end, not a loss.
    completing: bool = False
    completed: bool = False  # the completion committed: nothing left to renew


class LeaseKeeper:
    """Renews the leases of registered jobs every ``interval`` seconds from a thread."""

    def __init__(
        self,
        dsn: str,
        worker_id: str,
        *,
        interval: float,
        margin: float,
        statement_cache_size: int = 100,
    ) -> None:
        self._dsn = dsn
        self._worker_id = worker_id
        self._interval = interval
        self._margin = margin
        self._cache = statement_cache_size
        # A renewal (or a connect) may take this long: well inside the margin, so that a
        # stuck one still leaves time to act before a lease runs out.
        self._timeout = min(max(interval * 2, 5.0), max(margin / 2, 0.5))
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._db_lock: asyncio.Lock | None = None
        self._conn: db.Connection | None = None
        self._stopping = False
        self._ready = threading.Event()
        # Set once the keeper's first connection attempt is over (made or failed).
        self.connected = threading.Event()
        self._on_lost: Callable[[list[int]], None] = lambda _ids: None
        self.beats = 0

    # -- called from the daemon's loop ------------------------------------------------

    def start(self, on_lost: Callable[[list[int]], None]) -> None:
        """Start the thread; ``on_lost(ids)`` runs on the caller's loop when leases of
        jobs whose handlers still run are gone (or about to go unrenewed)."""
        caller = asyncio.get_running_loop()

        def lost(ids: list[int]) -> None:
            caller.call_soon_threadsafe(on_lost, ids)

        self._on_lost = lost
        self._thread = threading.Thread(target=self._main, name="importd-leases", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def register(
        self,
        job: Job,
        *,
        deadline: float,
        leased_at: float,
        progress: Callable[[], Any],
        in_thread: bool = False,
    ) -> Lease:
        """Keep ``job``'s lease from now on; the claim leased it at ``leased_at``. The
        lease returned is the one kept: its owner may set ``handler_running`` and read
        ``expires`` without the lock (one attribute, written or read whole)."""
        lease = Lease(
            job,
            deadline=deadline,
            expires=leased_at + job.timeout + self._margin,
            progress=progress,
            started=time.monotonic(),
            in_thread=in_thread,
        )
        with self._lock:
            self._leases[job.id] = lease
        return lease

    def register_many(
        self,
        jobs: Sequence[Job],
        *,
        deadlines: Sequence[float],
        leased_at: float,
        progress: Sequence[Callable[[], Any]],
    ) -> list[Lease]:
        """``register`` for each of ``jobs`` (leased by one claim at ``leased_at``), under
        one acquisition of the lock."""
        started = time.monotonic()
        margin = self._margin
        leases = [
            Lease(
                job,
                deadline=deadline,
                expires=leased_at + job.timeout + margin,
                progress=read,
                started=started,
                in_thread=False,
            )
            for job, deadline, read in zip(jobs, deadlines, progress, strict=True)
        ]
        with self._lock:
            for lease in leases:
                self._leases[lease.job.id] = lease
        return leases

    def attach(self, job_id: int, progress: Callable[[], dict[str, int | None]]) -> None:
        """Where the heartbeat reads ``job_id``'s progress from."""
        with self._lock:
            if (lease := self._leases.get(job_id)) is not None:
                lease.progress = progress

    def mark_thread(self, job_id: int) -> None:
        """``job_id``'s handler runs in a worker thread."""
        with self._lock:
            if (lease := self._leases.get(job_id)) is not None:
                lease.in_thread = True

    def handler_done(self, job_id: int) -> None:
        """The handler of ``job_id`` has really ended (its result may still be written)."""
        with self._lock:
            if (lease := self._leases.get(job_id)) is not None:
                lease.handler_running = False

    def completing(self, job_id: int) -> None:
        """``job_id``'s handler wrote the job's completion in its own open transaction:
        when a heartbeat then misses its row, the row is read to tell that commit from a
        lost lease."""
        with self._lock:
            if (lease := self._leases.get(job_id)) is not None:
                lease.completing = True

    def unregister(self, job_id: int) -> None:
        """Stop renewing ``job_id``'s lease: its run is written (or abandoned)."""
        with self._lock:
            self._leases.pop(job_id, None)

    def unregister_many(self, job_ids: list[int]) -> None:
        """``unregister`` for each of ``job_ids``, under one acquisition of the lock."""
        with self._lock:
            pop = self._leases.pop
            for job_id in job_ids:
                pop(job_id, None)

    def lease_left(self, job_id: int) -> float:
        """Seconds the lease of ``job_id`` surely holds (0 when not kept here)."""
        with self._lock:
            lease = self._leases.get(job_id)
        return max(lease.expires - time.monotonic(), 0.0) if lease is not None else 0.0

    def snapshot(self) -> list[Lease]:
        """The leases kept now."""
        with self._lock:
            return list(self._leases.values())

    def stop(self) -> None:
        """Stop renewing, close the connection, end the thread."""
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread is not None:
            self._thread.join(10)

    # -- called from any thread ---------------------------------------------------------

    def hand_back(self, runs: Sequence[tuple[Job, Outcome]], timeout: float) -> set[int]:
        """Write ``runs`` over the keeper's connection, waiting at most ``timeout``
        seconds; the ids written (empty when the database could not be reached)."""
        if self._loop is None or not runs:
            return set()
        future = asyncio.run_coroutine_threadsafe(self._finish(list(runs)), self._loop)
        try:
            return future.result(timeout)
        except Exception as exc:
            log.error("hand_back_failed", jobs=len(runs), error=db.describe_db_error(exc))
            return set()

    # -- the thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            log.exception("lease_keeper_crashed")

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._db_lock = asyncio.Lock()
        self._ready.set()
        try:
            # Connected now, while the daemon starts, not at the first heartbeat in the
            # middle of its first drain (the beat connects again if this fails).
            try:
                await self._connection()
            except Exception as exc:
                if db.is_transient(exc):
                    log.warning("lease_keeper_connect_failed", error=db.describe_db_error(exc))
                else:  # (unexpected: with its traceback, as a failed heartbeat's)
                    log.error(
                        "lease_keeper_connect_failed",
                        error=db.describe_db_error(exc),
                        exc_info=exc,
                    )
            finally:
                self.connected.set()
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                if self._stopping:
                    break
                await self._beat()
        finally:
            if self._conn is not None:
                try:
                    await asyncio.wait_for(self._conn.close(), 2)
                except Exception:  # closing a broken connection: nothing to do
                    self._conn.terminate()

    async def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await db.connect(
                self._dsn,
                timeout=self._timeout,
                application_name="importd-leases",
                statement_cache_size=self._cache,
                arrays=True,
            )
        return self._conn

    async def _finish(self, runs: list[tuple[Job, Outcome]]) -> set[int]:
        assert self._db_lock is not None
        async with self._db_lock:
            conn = await self._connection()
            return await finish_runs(conn, self._worker_id, runs)

    async def _beat(self) -> None:
        now = time.monotonic()
        leases = [
            lease
            for lease in self.snapshot()
            if now - lease.started >= self._interval and not lease.completed
        ]
        if leases:
            beats = [
                (lease.job, max(lease.deadline - now, 0.0) + self._margin, lease.progress())
                for lease in leases
            ]
            try:
                held = await self._renew(beats)
            except Exception as exc:
                held = None
                if db.is_transient(exc):
                    log.warning(
                        "heartbeat_failed", jobs=len(beats), error=db.describe_db_error(exc)
                    )
                else:
                    log.error(
                        "heartbeat_failed",
                        jobs=len(beats),
                        error=db.describe_db_error(exc),
                        exc_info=exc,
                    )
                if self._conn is not None and db.is_transient(exc):
                    self._conn.terminate()
                    self._conn = None
            if held is not None:
                self.beats += 1
                lost = []
                with self._lock:
                    for lease, (_, lease_s, _) in zip(leases, beats, strict=True):
                        if lease.job.id in held:
                            lease.expires = max(lease.expires, now + lease_s)
                        elif self._leases.get(lease.job.id) is lease:
                            lost.append(lease.job.id)
                if lost:
                    lost = await self._not_completed(lost)
                if lost:
                    self._on_lost(lost)
        self._check_expiring()

    async def _not_completed(self, missing: list[int]) -> list[int]:
        """Of the jobs a heartbeat missed, those whose lease is really lost: not the
        ones whose handler completed the job in its own transaction, which the heartbeat
        (waiting on the row that transaction held) found completed once it committed."""
        with self._lock:
            completing = {
                job_id: lease
                for job_id in missing
                if (lease := self._leases.get(job_id)) is not None and lease.completing
            }
        if not completing:
            return missing
        assert self._db_lock is not None
        done: set[int] = set()
        try:
            async with self._db_lock, asyncio.timeout(self._timeout):
                conn = await self._connection()
                for job_id, lease in completing.items():
                    row = await run_state(conn, job_id)
                    # Only this attempt's fenced write completes the row with this count.
                    if (
                        row is not None
                        and row["status"] == str(Status.COMPLETED)
                        and row["attempts"] == lease.job.attempt
                    ):
                        done.add(job_id)
        except Exception as exc:
            # Unknown: say lost, as before (the executor reads the row again anyway).
            log.warning("run_state_unknown", jobs=len(completing), error=db.describe_db_error(exc))
        if done:
            with self._lock:
                for job_id in done:
                    completing[job_id].completed = True
        return [job_id for job_id in missing if job_id not in done]

    async def _renew(self, beats: list[tuple[Job, float, dict[str, int | None]]]) -> set[int]:
        assert self._db_lock is not None
        async with self._db_lock, asyncio.timeout(self._timeout):
            conn = await self._connection()
            try:
                return await renew_leases(conn, self._worker_id, beats)
            except Exception as exc:
                if db.is_transient(exc):
                    raise
                # The progress a handler reported was refused: keep the lease all the same.
                log.error("progress_refused", error=db.describe_db_error(exc), exc_info=exc)
                return await renew_leases(
                    conn, self._worker_id, [(job, lease_s, {}) for job, lease_s, _ in beats]
                )

    def _check_expiring(self) -> None:
        """A lease the keeper could not renew is about to expire while its handler runs:
        stop that handler before another daemon may take the job. A thread cannot be
        stopped: then the process ends, as a crash would."""
        now = time.monotonic()
        safety = min(1.0, self._margin / 4)
        expiring = [
            lease
            for lease in self.snapshot()
            if lease.handler_running
            and not lease.expiring
            and not lease.completed
            and now > lease.expires - safety
        ]
        if not expiring:
            return
        for lease in expiring:
            lease.expiring = True  # told once
        jobs = [{"job_id": lease.job.id, "kind": lease.job.kind} for lease in expiring]
        if any(lease.in_thread for lease in expiring):
            log.error("lease_expiring", jobs=jobs, action="exit")
            _exit(ExitCode.ERROR)
        log.error("lease_expiring", jobs=jobs, action="stop")
        self._on_lost([lease.job.id for lease in expiring])


def _exit(code: int) -> None:
    """End the process now: the event loop may be blocked, so no clean shutdown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream: nothing left to flush
            stream.flush()
    os._exit(int(code))


def _job_on_stack(frame: FrameType | None) -> Job | None:
    """The job whose run is on this stack (the executor's frame holds it), if any."""
    while frame is not None:
        if frame.f_code.co_name == "_run" and frame.f_globals.get("__name__") == (
            "importd.executor"
        ):
            job = frame.f_locals.get("job")
            return job if isinstance(job, Job) else None
        frame = frame.f_back
    return None


class LoopMonitor:
    """Watches the daemon's event loop from a thread: stalls, the watchdog, /healthz."""

    def __init__(
        self,
        keeper: LeaseKeeper,
        *,
        warn_after: float,
        margin: float,
        backoff: Callable[[Job], float],
        metrics: Metrics,
        notifier: Notifier,
        healthy: Callable[[], bool],
        watchdog_interval: float | None,
    ) -> None:
        self._keeper = keeper
        self._warn = warn_after
        self._tick = min(TICK, warn_after / 4)
        self._margin = margin
        self._backoff = backoff
        self._metrics = metrics
        self._notifier = notifier
        self._healthy = healthy
        self._watchdog_interval = watchdog_interval
        self._main_ident = threading.main_thread().ident
        self._last_beat = time.monotonic()
        self._stall_started: float | None = None
        self._stall_logged = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.watchdog_enabled = False  # the supervisor turns it on once READY was sent

    @property
    def lag(self) -> float:
        """Seconds the event loop is late with its beat: how long it has been blocked, at
        most one tick less than the truth."""
        return max(time.monotonic() - self._last_beat - self._tick, 0.0)

    @property
    def stalled(self) -> bool:
        """Whether the event loop is blocked beyond ``loop_block_warn`` right now."""
        return self.lag > self._warn

    async def beat(self) -> None:
        """The loop's side (a service): prove every tick that it runs."""
        loop = asyncio.get_running_loop()
        self._main_ident = threading.get_ident()
        while True:
            self._last_beat = loop.time()
            await asyncio.sleep(self._tick)

    def start(self) -> None:
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._main, name="importd-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    def _main(self) -> None:
        next_ping = time.monotonic()
        withheld_logged = 0.0
        wait = self._tick
        while not self._stopping.wait(wait):
            try:
                self._watch()
                now = time.monotonic()
                if (
                    self._watchdog_interval is not None
                    and self.watchdog_enabled
                    and (now >= next_ping)
                ):
                    next_ping = now + self._watchdog_interval
                    lag = self.lag
                    if lag <= self._warn and self._healthy():
                        self._notifier.watchdog()
                    elif now - withheld_logged >= self._watchdog_interval:
                        withheld_logged = now
                        log.error("watchdog_withheld", loop_lag_s=round(lag, 2))
                # While the loop keeps its beat there is nothing to see before the
                # moment a stall would pass the threshold (or the next ping): sleep till
                # then, so that an idle daemon costs next to nothing.
                wake = self._last_beat + self._tick + self._warn
                if self._watchdog_interval is not None and self.watchdog_enabled:
                    wake = min(wake, next_ping)
                wait = self._tick if self._stall_started is not None else wake - now
                wait = min(max(wait, 0.01), self._tick + self._warn)
            except Exception:
                log.exception("monitor_failed")
                wait = self._tick

    def _watch(self) -> None:
        lag = self.lag
        if lag <= self._warn:
            if self._stall_started is not None and self._stall_logged:
                # From the beat it missed to the beat it ran again (a lower bound).
                stalled = self._last_beat - self._stall_started - self._tick
                log.warning("loop_unblocked", stalled_s=round(max(stalled, 0.0), 2))
            self._stall_started = None
            self._stall_logged = False
            return
        started = self._last_beat
        if self._stall_started != started:
            self._stall_started = started
            self._stall_logged = False
        frame = sys._current_frames().get(self._main_ident or 0)
        blocker = _job_on_stack(frame)
        if not self._stall_logged:
            self._stall_logged = True
            self._metrics.loop_blocked.inc()
            stack = "".join(traceback.format_stack(frame)[-STACK_FRAMES:]) if frame else ""
            log.error(
                "loop_blocked",
                blocked_s=round(lag, 2),
                job_id=blocker.id if blocker else None,
                kind=blocker.kind if blocker else None,
                running=[
                    {"job_id": lease.job.id, "kind": lease.job.kind}
                    for lease in self._keeper.snapshot()
                    if lease.handler_running
                ],
                stack=stack,
            )
            self._notifier.status(
                f"event loop blocked for {lag:.1f} s"
                + (f" by job {blocker.id} ({blocker.kind})" if blocker else "")
            )
        now = time.monotonic()
        overdue = [
            lease
            for lease in self._keeper.snapshot()
            if lease.handler_running and not lease.in_thread and now > lease.deadline + self._margin
        ]
        if overdue:
            self._give_up(lag, blocker, overdue)

    def _give_up(self, lag: float, blocker: Job | None, overdue: list[Lease]) -> None:
        """The loop has been blocked past a job's timeout plus the margin: hand every job
        back (the attempt counted for the one that blocked) and end the process."""
        leases = self._keeper.snapshot()
        suspects = {blocker.id} if blocker is not None else {lease.job.id for lease in leases}
        runs: list[tuple[Job, Outcome]] = []
        for lease in leases:
            job = lease.job
            # Never let the job start elsewhere before this process is gone.
            delay = max(self._backoff(job), 1.0)
            if job.id in suspects:
                error = (
                    f"LoopBlocked: the daemon's event loop was blocked for {lag:.1f} s while "
                    f"this job ran, past its timeout of {job.timeout:g} s plus the lease "
                    f"margin of {self._margin:g} s (a blocking call in an async handler?); "
                    f"the daemon handed its jobs back and exited"
                )
                if job.last_attempt:
                    outcome = Outcome.failed(f"{error} (attempt {job.attempt}/{job.max_attempts})")
                else:
                    outcome = Outcome.retry(error, delay)
            else:
                outcome = Outcome(
                    Status.PENDING,
                    error=f"Interrupted: job {blocker.id if blocker else '?'} blocked the "
                    f"daemon's event loop and the daemon exited",
                    delay=delay,
                    refund=1,
                )
            runs.append((job, outcome))
        written = self._keeper.hand_back(runs, timeout=5.0)
        log.error(
            "loop_blocked_exit",
            blocked_s=round(lag, 2),
            job_id=blocker.id if blocker else None,
            overdue=[lease.job.id for lease in overdue],
            handed_back=sorted(written),
            exit_code=int(ExitCode.ERROR),
        )
        _exit(ExitCode.ERROR)
