"""Running one job: timeout, heartbeat, outcome, and the fenced, batched result write."""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import structlog

from .backoff import Backoff
from .config import Settings
from .db import is_transient, redact, retry_transient
from .handlers import Registry
from .metrics import Metrics
from .models import Job, Outcome, PermanentError, RetryLater, Status
from .repository import Repository

log = structlog.get_logger("importd.executor")

# A message that starts with its own error name, like "EmptySource: the file is empty".
_TAGGED = re.compile(r"^[A-Z][A-Za-z]+: ")

# How much of an error message is kept in last_error.
MAX_ERROR_CHARS = 2000


class StopReason(enum.StrEnum):
    """Why the daemon cancelled a running job."""

    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"


class JobContext:
    """What a handler gets besides its job: a connection pool, a bound logger, progress
    reporting, the deadline, the daemon's settings and its shared HTTP client."""

    def __init__(
        self,
        job: Job,
        pool: asyncpg.Pool,
        logger: Any,
        deadline: float,
        worker_id: str,
        repo: Repository,
        settings: Settings | None = None,
        http: httpx.AsyncClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.job = job
        self._metrics = metrics
        self._rows_seen = (job.rows_done, job.rows_failed)  # an earlier attempt's count
        self.pool = pool
        self.log = logger
        self.deadline = deadline  # on the event loop's clock
        self.worker_id = worker_id
        self._repo = repo
        self.settings = settings or Settings()
        self.http = http  # one shared client per daemon
        self._progress: dict[str, int | None] = {}
        self.started = asyncio.get_running_loop().time()
        self.finished_in_transaction = False

    @property
    def remaining(self) -> float:
        """Seconds left before the job's timeout."""
        return self.deadline - asyncio.get_running_loop().time()

    def progress(
        self,
        done: int | None = None,
        total: int | None = None,
        *,
        failed: int | None = None,
        bytes_read: int | None = None,
    ) -> None:
        """Record progress; the heartbeat writes it to the job row about once a second."""
        for key, value in (
            ("rows_done", done),
            ("rows_total", total),
            ("rows_failed", failed),
            ("bytes_read", bytes_read),
        ):
            if value is not None:
                self._progress[key] = value
        if self._metrics is not None and (done is not None or failed is not None):
            seen_done, seen_failed = self._rows_seen
            new_done = done if done is not None else seen_done
            new_failed = failed if failed is not None else seen_failed
            self._metrics.rows_progress(
                self.job.kind, new_done - seen_done, new_failed - seen_failed
            )
            self._rows_seen = (new_done, new_failed)

    def take_progress(self) -> dict[str, int | None]:
        """The progress recorded so far (for the heartbeat)."""
        return dict(self._progress)

    async def complete_in(self, conn: asyncpg.Connection, result: Any = None) -> bool:
        """Mark the job completed inside ``conn``'s open transaction, so that the
        handler's own writes and the completion commit together. False when the lease is
        lost: the handler must then roll back (raise)."""
        applied = await self._repo.finish(
            self.worker_id, [(self.job, Outcome.completed(result))], conn=conn
        )
        self.finished_in_transaction = self.job.id in applied
        return self.finished_in_transaction


@dataclass
class RunStats:
    """Counts of how runs ended in this process, and each job's latest outcome."""

    completed: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    cancelled: int = 0
    lost: int = 0
    # Only kept by `importd drain`, whose exit code depends on it; a long-running daemon
    # must not grow with the number of jobs it has run.
    track_jobs: bool = False
    last_status: dict[int, Status] = field(default_factory=dict)


_Item = tuple[Job, Outcome, float, "asyncio.Future[bool]"]


class ResultWriter:
    """Writes run outcomes in batches: whatever piled up while the previous batch was in
    flight goes in the next statement (group commit without a timer). A run counts as
    done only once its batch committed."""

    def __init__(self, repo: Repository, worker_id: str, max_batch: int = 500) -> None:
        self._repo = repo
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._pending: list[_Item] = []
        self._writing = 0
        self._kick = asyncio.Event()
        self._closing = False

    async def submit(self, job: Job, outcome: Outcome, give_up_after: float) -> bool:
        """Queue one outcome; True once written, False if the lease no longer held."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((job, outcome, give_up_after, future))
        self._kick.set()
        return await future

    def close(self) -> None:
        """Finish what is queued, then let ``run`` return."""
        self._closing = True
        self._kick.set()

    async def run(self) -> None:
        """The writer service."""
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._kick.clear()
                await self._kick.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._writing = len(batch)
            try:
                await self._write(batch)
            finally:
                self._writing = 0

    @property
    def backlog(self) -> int:
        """Outcomes queued or being written: slots that will free up shortly."""
        return len(self._pending) + self._writing

    async def _write(self, batch: Sequence[_Item]) -> None:
        runs = [(job, outcome) for job, outcome, _, _ in batch]
        patience = max(give_up for _, _, give_up, _ in batch)
        try:
            applied = await retry_transient(
                "finish_jobs",
                lambda: self._repo.finish(self._worker_id, runs),
                give_up_after=patience,
            )
        except Exception as exc:
            if len(batch) > 1 and not is_transient(exc):
                # One bad row must not sink its neighbours: write them one by one.
                for item in batch:
                    await self._write([item])
                return
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for job, _, _, future in batch:
            if not future.done():
                future.set_result(job.id in applied)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for last_error, redacted and bounded."""
    message = str(exc)
    if _TAGGED.match(message):
        text = message  # already says what kind of error it is ("SourceMissing: ...")
    else:
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return redact(text)[:MAX_ERROR_CHARS]


class Executor:
    """Starts and tracks job tasks; each task runs one job to a written outcome."""

    def __init__(
        self,
        *,
        repo: Repository,
        pool: asyncpg.Pool,
        registry: Registry,
        writer: ResultWriter,
        worker_id: str,
        backoff: Backoff,
        lease_margin: float,
        heartbeat_interval: float,
        settings: Settings | None = None,
        http: httpx.AsyncClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self.metrics = metrics or Metrics(
            kinds=registry.kinds,
            queues=[q.name for q in settings.queue_slots] if settings is not None else (),
        )
        # Handlers running now (a run's result write may still be queued after that).
        self.active = 0
        self.on_handler_done: Callable[[], None] = lambda: None
        self._repo = repo
        self._pool = pool
        self._registry = registry
        self._writer = writer
        self._worker_id = worker_id
        self._backoff = backoff
        self._lease_margin = lease_margin
        self._heartbeat_interval = heartbeat_interval
        self.running: dict[int, tuple[asyncio.Task[None], JobContext]] = {}
        self._starting: set[int] = set()  # started, but their task has not run yet
        self._reasons: dict[int, StopReason] = {}
        self.stats = RunStats()

    def start(
        self, job: Job, on_handler_done: Callable[[], None] | None = None
    ) -> asyncio.Task[None]:
        """Run ``job`` in a task of its own; ``on_handler_done`` is called when its
        handler has returned (its slot is free), before the result is written."""
        self.active += 1  # counted now, not when the task first runs: the slot is taken
        self._starting.add(job.id)
        task = asyncio.create_task(self._run(job, on_handler_done), name=f"job-{job.id}")
        return task

    def stop(self, job_id: int, reason: StopReason) -> bool:
        """Cancel the running job ``job_id`` for ``reason``; False if it is not running."""
        if job_id in self._starting:
            # Its task has not run yet: a cancel now would skip the write-back, so leave
            # the reason for the task to find when it starts.
            self._reasons.setdefault(job_id, reason)
            return True
        entry = self.running.get(job_id)
        if entry is None:
            return False
        self._reasons.setdefault(job_id, reason)
        entry[0].cancel()
        return True

    def control(self, message: str) -> None:
        """A message from the control channel: ``cancel <job id>``."""
        verb, _, arg = message.partition(" ")
        if verb == "cancel" and arg.isdigit() and self.stop(int(arg), StopReason.CANCELLED):
            log.info("job_cancel_requested", job_id=int(arg))

    def stop_all(self, reason: StopReason) -> None:
        """Cancel every running job for ``reason``."""
        for job_id in [*self.running, *self._starting]:
            self.stop(job_id, reason)

    async def _run(self, job: Job, on_handler_done: Callable[[], None] | None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        bound = log.bind(
            job_id=job.id,
            kind=job.kind,
            queue=job.queue,
            attempt=job.attempt,
            tenant_id=job.tenant_id,
        )
        ctx = JobContext(
            job,
            self._pool,
            bound,
            started + job.timeout,
            self._worker_id,
            self._repo,
            self._settings,
            self._http,
            self.metrics,
        )
        ctx.started = started
        task = asyncio.current_task()
        assert task is not None
        self.running[job.id] = (task, ctx)
        self._starting.discard(job.id)
        outcome: Outcome | None
        try:
            if job.id in self._reasons:  # stopped before it started
                raise asyncio.CancelledError
            outcome = await self._outcome(job, ctx, bound)
        except asyncio.CancelledError:
            outcome = self._stopped(job)
        self.active -= 1
        if on_handler_done is not None:
            on_handler_done()
        self.on_handler_done()
        if ctx.finished_in_transaction:
            outcome = None  # the handler committed the completion itself
            self._record(job, Status.COMPLETED, duration=loop.time() - started)
            bound.info("job_completed", duration_ms=round((loop.time() - started) * 1000, 1))
        try:
            if outcome is not None:
                await self._write(job, outcome, bound, loop.time() - started)
        finally:
            self.running.pop(job.id, None)
            self._reasons.pop(job.id, None)

    async def _outcome(self, job: Job, ctx: JobContext, bound: Any) -> Outcome:
        fn = self._registry.get(job.kind)
        if fn is None:
            # Claims take only the kinds this daemon serves, so this cannot happen; if it
            # did, the job goes back to pending, attempt refunded, for a daemon that has
            # the handler: a missing handler is never the job's fault.
            bound.warning("job_kind_not_served", served=self._registry.kinds)
            return Outcome.released(
                f"NotServed: daemon {self._worker_id} has no handler for kind {job.kind!r}; "
                "handed back"
            )
        bound.debug("job_started")
        timer = asyncio.timeout(job.timeout)
        try:
            async with timer:
                result = await fn(job, ctx)
            if result is not None:
                json.dumps(result)  # fail here, with a clear message, not in the batch write
            return Outcome.completed(result)
        except TimeoutError as exc:
            if timer.expired():
                error = f"JobTimeout: the job exceeded its timeout of {job.timeout:g} s"
            else:
                error = describe_error(exc)
            return self._failure(job, error)
        except PermanentError as exc:
            return Outcome.failed(describe_error(exc))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # A URL httpx cannot send: the same URL fails the same way on every attempt.
            return Outcome.failed(
                describe_error(
                    PermanentError(
                        f"InvalidURL: {exc} (URLs must be https:// and lie under the "
                        "url_prefixes setting)"
                    )
                )
            )
        except RetryLater as exc:
            return self._failure(job, describe_error(exc), delay=exc.delay)
        except (TypeError, ValueError) as exc:
            if "JSON" in str(exc) or "serializable" in str(exc):
                return Outcome.failed(f"ResultNotJSON: the handler's result: {exc}")
            return self._failure(job, describe_error(exc))
        except Exception as exc:
            return self._failure(job, describe_error(exc))

    def _failure(self, job: Job, error: str, delay: float | None = None) -> Outcome:
        if job.last_attempt:
            return Outcome.failed(f"{error} (attempt {job.attempt}/{job.max_attempts})")
        if delay is None:
            delay = self._backoff.delay(job.attempt)
        return Outcome.retry(error, min(delay, self._backoff.cap))

    def _stopped(self, job: Job) -> Outcome | None:
        reason = self._reasons.get(job.id, StopReason.SHUTDOWN)
        if reason is StopReason.LEASE_LOST:
            return None
        if reason is StopReason.CANCELLED:
            return Outcome.cancelled("Cancelled: cancelled by an operator while running")
        return Outcome.released("Interrupted: the daemon shut down while the job ran")

    async def _write(self, job: Job, outcome: Outcome, bound: Any, elapsed: float) -> None:
        duration_ms = round(elapsed * 1000, 1)
        patience = job.timeout + self._lease_margin
        try:
            applied = await self._writer.submit(job, outcome, patience)
        except Exception as exc:
            bound.error("job_write_failed", error=describe_error(exc), outcome=str(outcome.status))
            return
        if not applied:
            if outcome.status is Status.CANCELLED:
                # The operator's cancel already ended the row; stopping was our part.
                bound.info("job_cancelled", duration_ms=duration_ms)
                self._record(job, Status.CANCELLED)
                return
            self.stats.lost += 1
            bound.warning("job_lease_lost", outcome=str(outcome.status), duration_ms=duration_ms)
            return
        status = outcome.status
        if status is Status.COMPLETED:
            bound.info("job_completed", duration_ms=duration_ms)
        elif status is Status.FAILED:
            bound.error("job_failed", error=outcome.error, duration_ms=duration_ms)
        elif status is Status.CANCELLED:
            bound.warning("job_cancelled", duration_ms=duration_ms)
        elif outcome.refund:
            bound.warning("job_released", reason=outcome.error, duration_ms=duration_ms)
        else:
            bound.warning(
                "job_retry_scheduled",
                error=outcome.error,
                delay_s=round(outcome.delay, 3),
                duration_ms=duration_ms,
            )
        self._record(job, status, released=bool(outcome.refund), duration=elapsed)

    def _record(
        self, job: Job, status: Status, released: bool = False, duration: float | None = None
    ) -> None:
        stats, m = self.stats, self.metrics
        if status is Status.COMPLETED:
            stats.completed += 1
            m.count(m.completed, job.kind, job.queue)
        elif status is Status.FAILED:
            stats.failed += 1
            m.count(m.failed, job.kind, job.queue)
        elif status is Status.CANCELLED:
            stats.cancelled += 1
        elif released:
            stats.released += 1
        else:
            stats.retried += 1
            m.count(m.retried, job.kind, job.queue)
        if duration is not None and not released:
            m.observe(m.duration, duration, job.kind, job.queue)
        if stats.track_jobs:
            stats.last_status[job.id] = status

    async def heartbeats(self) -> None:
        """The heartbeat service: every interval, one statement stores the progress of
        every job that has run for at least an interval and renews its lease; a job whose
        lease is gone is stopped at once."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            now = loop.time()
            due = [
                (ctx.job, max(ctx.remaining, 0.0) + self._lease_margin, ctx.take_progress())
                for _, ctx in list(self.running.values())
                if now - ctx.started >= self._heartbeat_interval
            ]
            if not due:
                continue
            try:
                held = await self._repo.heartbeat(self._worker_id, due)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # The lease outlasts the timeout, so a missed beat costs nothing yet.
                log.warning("heartbeat_failed", jobs=len(due), error=describe_error(exc))
                continue
            for job, _, _ in due:
                if job.id not in held and job.id in self.running:
                    self.running[job.id][1].log.warning("job_lease_lost", during="run")
                    self.stop(job.id, StopReason.LEASE_LOST)
