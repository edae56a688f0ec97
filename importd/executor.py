"""Running one job: timeout, heartbeat, outcome, and the fenced, batched result write."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import enum
import functools
import inspect
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from .backoff import Backoff
from .config import Settings
from .context import Fence, HandlerSettings, JobContext, encode_result
from .db import (
    MAX_JSON_DEPTH,
    Connection,
    DeepJSON,
    Pool,
    describe_db_error,
    is_transient,
    retry_transient,
)
from .guard import Lease, LeaseKeeper
from .handlers import Registry
from .logs import LazyBound, log_enabled
from .metrics import Metrics
from .models import Job, Outcome, PermanentError, RetryLater, Status
from .redaction import clean_text, traceback_text
from .repository import Repository, save_checkpoint

log = structlog.get_logger("importd.executor")

# A message that starts with its own error name, like "EmptySource: the file is empty".
_TAGGED = re.compile(r"^[A-Z][A-Za-z]+: ")

# How much of an error message is kept in last_error.
MAX_ERROR_CHARS = 2000


# The outcome of every run whose handler returned None (an outcome is never changed).
_COMPLETED = Outcome(Status.COMPLETED)


class StopReason(enum.StrEnum):
    """Why the daemon cancelled a running job."""

    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"
    # A service of the daemon died: the runs end with their attempt counted, so a job
    # that crashes its daemon uses up its attempts instead of looping.
    CRASH = "crash"


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


class _Run:
    """A run whose handler has ended and whose outcome waits for the writer: what its
    end needs once the batch is written (no task waits for it)."""

    __slots__ = ("bound", "elapsed", "error", "lease", "on_end")

    def __init__(
        self,
        bound: Any,
        elapsed: float,
        error: BaseException | None,
        lease: Lease | None,
        on_end: Callable[[], None] | None,
    ) -> None:
        self.bound = bound
        self.elapsed = elapsed
        self.error = error
        self.lease = lease
        self.on_end = on_end


# (job, outcome, seconds to retry a transient failure for, who waits for it): a future
# (``submit``) or a run that the writer hands to ``on_written`` with its batch (``post``).
_Item = tuple[Job, Outcome, float, "asyncio.Future[bool] | _Run"]
# What ``on_written`` gets per posted run: True once written, False if the lease no longer
# held, or the exception the write ended with.
Written = tuple[Job, Outcome, "bool | BaseException", _Run]


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
        # Gets the posted runs of each batch once it is written (the executor's).
        self.on_written: Callable[[list[Written]], None] = lambda _done: None

    async def submit(self, job: Job, outcome: Outcome, give_up_after: float) -> bool:
        """Queue one outcome; True once written, False if the lease no longer held."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((job, outcome, give_up_after, future))
        self._kick.set()
        return await future

    def post(self, job: Job, outcome: Outcome, give_up_after: float, run: _Run) -> None:
        """Queue one outcome; ``on_written`` gets it with its batch once written (no
        future, no task to wake per run)."""
        self._pending.append((job, outcome, give_up_after, run))
        self._kick.set()

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
            self._settle(batch, exc)
            return
        self._settle(batch, applied)

    def _settle(self, batch: Sequence[_Item], applied: set[int] | BaseException) -> None:
        written: list[Written] = []
        for job, outcome, _, waiter in batch:
            result = applied if isinstance(applied, BaseException) else job.id in applied
            if isinstance(waiter, _Run):
                written.append((job, outcome, result, waiter))
            elif not waiter.done():
                if isinstance(result, BaseException):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
        if written:
            self.on_written(written)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for last_error: redacted, without NUL, bounded."""
    try:
        message = str(exc)
    except Exception:  # a __str__ that raises, or returns no text
        message = "(its message could not be read: its __str__ failed)"
    if _TAGGED.match(message):
        text = message  # already says what kind of error it is ("SourceMissing: ...")
    else:
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return clean_text(text, MAX_ERROR_CHARS)


class Deadlines:
    """The job timeouts of one event loop on one timer handle, armed for the earliest
    deadline: a job that ends before its timeout (nearly every one) costs a dict entry,
    not a timer handle pushed onto the loop's heap and cancelled again. When the handle
    fires, the timeouts due by then fire and it is armed for the next one."""

    __slots__ = ("_at", "_handle", "_timers")

    def __init__(self) -> None:
        self._timers: dict[_Timeout, float] = {}  # each open block and its deadline
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the handle fires

    def add(self, timer: _Timeout, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timers[timer] = when
        if when < self._at:
            self._arm(loop, when)

    def discard(self, timer: _Timeout) -> None:
        # The handle stays armed: when it fires it finds nothing due and moves on.
        self._timers.pop(timer, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = when
        self._handle = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        due_by = self._at  # the loop ran the handle: its time has come
        self._handle, self._at = None, math.inf
        due = [timer for timer, when in self._timers.items() if when <= due_by]
        for timer in due:
            del self._timers[timer]
            timer.fire()
        if self._timers:
            self._arm(loop, min(self._timers.values()))


class _Timeout:
    """``asyncio.timeout(delay)`` for the task running a job, as a plain ``with`` block:
    the same cancel of the task when it fires and the same ``TimeoutError`` out of the
    block, without the asynchronous context manager's coroutines and look-ups on every
    run, and on the shared timer of ``deadlines`` (a timer of its own when None)."""

    __slots__ = ("_cancelling", "_deadlines", "_delay", "_expired", "_open", "_task")

    def __init__(
        self, task: asyncio.Task[Any], delay: float, deadlines: Deadlines | None = None
    ) -> None:
        self._task = task
        self._delay = delay
        self._deadlines = deadlines if deadlines is not None else Deadlines()
        self._cancelling = 0
        self._expired = False
        self._open = False

    def __enter__(self) -> _Timeout:
        loop = self._task.get_loop()
        self._cancelling = self._task.cancelling()
        self._open = True
        self._deadlines.add(self, loop, loop.time() + self._delay)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self._open = False
        self._deadlines.discard(self)
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc  # no other cancel was asked for: ours to handle

    def fire(self) -> None:
        """The deadline has come while the block runs: cancel its task."""
        if self._open and not self._expired:
            self._task.cancel()
            self._expired = True

    def expired(self) -> bool:
        """Whether the timeout fired while the block ran."""
        return self._expired


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  (an instance with an async __call__)
    )


class Executor:
    """Starts and tracks job tasks; each task runs one job to a written outcome."""

    def __init__(
        self,
        *,
        repo: Repository,
        pool: Pool,
        registry: Registry,
        writer: ResultWriter,
        keeper: LeaseKeeper,
        worker_id: str,
        backoff: Backoff,
        lease_margin: float,
        settings: Settings | None = None,
        http: httpx.AsyncClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._handler_settings = HandlerSettings.of(settings or Settings())
        self._http = http
        self.metrics = metrics or Metrics(
            kinds=registry.kinds,
            queues=[q.name for q in settings.queue_slots] if settings is not None else (),
        )
        # Handlers running now (a run's result write may still be queued after that).
        self.active = 0
        self._repo = repo
        self._pool = pool
        self._registry = registry
        self._writer = writer
        writer.on_written = self._batch_written
        # Runs whose batched write failed or found no lease, going on in a task.
        self._followups: set[asyncio.Task[None]] = set()
        self._deadlines = Deadlines()  # the job timeouts, on one timer handle
        self._debug = True  # whether runs log at debug level (see start_many)
        self._keeper = keeper
        self._worker_id = worker_id
        self._backoff = backoff
        self._lease_margin = lease_margin
        self.running: dict[int, tuple[asyncio.Task[None], JobContext]] = {}
        self._starting: set[int] = set()  # started, but their task has not run yet
        self._in_handler: set[int] = set()  # their handler has not ended yet
        self._reasons: dict[int, StopReason] = {}
        self._async_handlers: dict[int, bool] = {}  # by id(handler): async def or not
        self._on_rows: dict[str, Callable[[int, int], None]] = {}  # by kind
        self.stats = RunStats()
        # Synchronous (plain def) handlers run here: one thread per slot at most.
        slots = settings.total_slots if settings is not None else 8
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(slots, 1), thread_name_prefix="importd-handler"
        )

    def _fence_maker(self, job: Job) -> Callable[[], Fence]:
        """What builds ``job``'s fence when its handler first writes under the lease (a
        closure, like the fence's own functions: the context shows no more of the run)."""
        return lambda: self._fence(job)

    def _fence(self, job: Job) -> Fence:
        """The writes ``job``'s handler may make in its own transaction, under its lease."""

        async def finish(conn: Connection, outcome: Outcome) -> bool:
            applied = await self._repo.finish(self._worker_id, [(job, outcome)], conn=conn)
            if job.id in applied:
                # Once this transaction commits the row is no longer running: the lease
                # keeper must take a heartbeat that misses it for the run's end, not a loss.
                self._keeper.completing(job.id)
            return job.id in applied

        async def checkpoint(conn: Connection, data: dict[str, Any], **counters: Any) -> bool:
            return await save_checkpoint(conn, job, self._worker_id, data, **counters)

        return Fence(finish=finish, checkpoint=checkpoint)

    def close(self) -> None:
        """Release the handler threads (each finishes what it runs)."""
        self._threads.shutdown(wait=False)

    def retry_delay(self, job: Job) -> float:
        """The backoff delay after a failed run of ``job``."""
        return min(self._backoff.delay(job.attempt), self._backoff.cap)

    def start(
        self,
        job: Job,
        on_handler_done: Callable[[], None] | None = None,
        leased_at: float | None = None,
        on_run_end: Callable[[], None] | None = None,
    ) -> asyncio.Task[None]:
        """Run ``job`` in a task of its own; ``on_handler_done`` is called when its
        handler has returned (its slot is free), before the result is written, and
        ``on_run_end`` once its run is over (its outcome written or abandoned): the task
        may end before that, the write being the result writer's. ``leased_at``
        (time.monotonic()) is when the claim that leased it was sent."""
        return self.start_many([job], on_handler_done, leased_at, on_run_end)[0]

    def start_many(
        self,
        jobs: Sequence[Job],
        on_handler_done: Callable[[], None] | None = None,
        leased_at: float | None = None,
        on_run_end: Callable[[], None] | None = None,
    ) -> list[asyncio.Task[None]]:
        """``start`` for each of ``jobs``, leased by one claim: their leases registered
        with the keeper at once."""
        now = time.monotonic()
        # Whether runs log at debug level: looked up once per claim, not once per run.
        self._debug = log_enabled(logging.DEBUG, log)
        contexts = []
        for job in jobs:
            self.active += 1  # counted now, not when the task first runs: the slot is taken
            self._starting.add(job.id)
            on_rows = self._on_rows.get(job.kind)
            if on_rows is None:
                on_rows = self._on_rows[job.kind] = functools.partial(
                    self.metrics.rows_progress, job.kind
                )
            contexts.append(
                JobContext(
                    job,
                    pool=self._pool,
                    # Its fields are bound only when a line is logged at an enabled level.
                    log=LazyBound(
                        log,
                        job_id=job.id,
                        kind=job.kind,
                        queue=job.queue,
                        attempt=job.attempt,
                        tenant_id=job.tenant_id,
                    ),
                    deadline=now + job.timeout,
                    settings=self._handler_settings,
                    http=self._http,
                    make_fence=self._fence_maker(job),
                    on_rows=on_rows,
                    started=now,
                )
            )
        # The leases are kept from now on, from the keeper's thread, until the runs are
        # written.
        leases = self._keeper.register_many(
            jobs,
            deadlines=[ctx.deadline for ctx in contexts],
            leased_at=leased_at if leased_at is not None else now,
            progress=[ctx.take_progress for ctx in contexts],
        )
        tasks = []
        create_task = asyncio.get_running_loop().create_task  # named once, not twice
        for job, ctx, lease in zip(jobs, contexts, leases, strict=True):
            self._in_handler.add(job.id)
            tasks.append(
                create_task(
                    self._run(job, ctx, lease, on_handler_done, on_run_end), name=f"job-{job.id}"
                )
            )
        return tasks

    def stop(self, job_id: int, reason: StopReason) -> bool:
        """Cancel the running job ``job_id`` for ``reason``; False if it is not running."""
        if job_id in self._starting:
            # Its task has not run yet: a cancel now would skip the write-back, so leave
            # the reason for the task to find when it starts.
            self._reasons.setdefault(job_id, reason)
            return True
        entry = self.running.get(job_id)
        if entry is None or job_id not in self._in_handler:
            return False  # its handler has ended: only its (fenced) write is left
        self._reasons.setdefault(job_id, reason)
        entry[0].cancel()
        return True

    def control(self, message: str) -> None:
        """A message from the control channel: ``cancel <job id>``."""
        verb, _, arg = message.partition(" ")
        if (
            verb == "cancel"
            and arg.isascii()
            and arg.isdigit()
            and self.stop(int(arg), StopReason.CANCELLED)
        ):
            log.info("job_cancel_requested", job_id=int(arg))

    def stop_all(self, reason: StopReason) -> int:
        """Cancel every job whose handler still runs (or has yet to start) for
        ``reason``; a run that only waits for its result write is left to get it.
        Returns how many were stopped."""
        return sum(self.stop(job_id, reason) for job_id in [*self.running, *self._starting])

    def leases_lost(self, job_ids: list[int]) -> None:
        """From the lease keeper: these jobs' leases are gone; stop their handlers."""
        for job_id in job_ids:
            entry = self.running.get(job_id)
            if entry is not None and job_id in self._in_handler:
                entry[1].log.warning("job_lease_lost", during="run")
                self.stop(job_id, StopReason.LEASE_LOST)

    async def _run(
        self,
        job: Job,
        ctx: JobContext,
        lease: Lease | None,
        on_handler_done: Callable[[], None] | None,
        on_run_end: Callable[[], None] | None,
    ) -> None:
        posted = False
        try:
            posted = await self._execute(job, ctx, lease, on_handler_done, on_run_end)
        except Exception as exc:
            log.error(
                "job_task_crashed", job_id=job.id, error=repr(exc), exception=traceback_text(exc)
            )
        finally:
            if not posted:
                self._end(job.id, on_run_end)

    async def _execute(
        self,
        job: Job,
        ctx: JobContext,
        lease: Lease | None,
        on_handler_done: Callable[[], None] | None,
        on_run_end: Callable[[], None] | None,
    ) -> bool:
        """The run up to its outcome; True when the outcome went to the result writer
        (the run then ends in ``_batch_written``, once its batch is written)."""
        bound = ctx.log
        started = ctx.started
        task = asyncio.current_task()
        assert task is not None
        self.running[job.id] = (task, ctx)
        self._starting.discard(job.id)
        outcome: Outcome | None
        error: BaseException | None = None
        try:
            if job.id in self._reasons:  # stopped before it started
                raise asyncio.CancelledError
            outcome, error = await self._outcome(job, ctx, bound, task)
        except asyncio.CancelledError:
            outcome = self._stopped(job)
        finally:  # the slot frees whatever happened
            self._in_handler.discard(job.id)
            if lease is not None:
                lease.handler_running = False  # read by the keeper's thread
            else:
                self._keeper.handler_done(job.id)
            self.active -= 1
            if on_handler_done is not None:
                on_handler_done()
        elapsed = time.monotonic() - started
        if ctx.finished_in_transaction and not (
            error is None and outcome is not None and outcome.status is Status.COMPLETED
        ):
            # The handler wrote the completion in its transaction, then did not return:
            # whether that transaction committed (a failed COMMIT, or a stop while it
            # ran, leaves the row as it was) is only known from the row.
            ctx.finished_in_transaction = await self._committed(job, bound)
        if ctx.finished_in_transaction:
            outcome = None  # the handler committed the completion itself
            self._record(job, Status.COMPLETED, duration=elapsed)
            bound.info("job_completed", duration_ms=round(elapsed * 1000, 1))
        if outcome is None:
            return False
        patience = (
            lease.expires - time.monotonic()
            if lease is not None
            else self._keeper.lease_left(job.id)
        )
        run = _Run(bound, elapsed, error, lease, on_run_end)
        unread = ctx.unread_progress()
        if unread is not None:  # a short run: no heartbeat wrote what it reported
            outcome = dataclasses.replace(outcome, progress=unread)
        self._writer.post(job, outcome, max(patience, 1.0), run)
        return True

    def _end(self, job_id: int, on_run_end: Callable[[], None] | None) -> None:
        """The run of ``job_id`` is over: its lease is no longer kept, its worker told."""
        self._in_handler.discard(job_id)
        self._keeper.unregister(job_id)
        self.running.pop(job_id, None)
        self._reasons.pop(job_id, None)
        if on_run_end is not None:
            on_run_end()

    def _batch_written(self, done: list[Written]) -> None:
        """The result writer wrote a batch: the posted runs in it end here, those whose
        write failed or found no lease go on in a task of their own (read back, retry).
        Completions are counted once per kind and queue, their log level looked up once."""
        ended: list[int] = []
        completed: dict[tuple[str, str], list[float]] = {}
        logged = log_enabled(logging.INFO, log)
        track = self.stats.track_jobs
        for job, outcome, result, run in done:
            if result is not True:
                follow = asyncio.create_task(
                    self._after_write(job, outcome, run, result), name=f"job-{job.id}-write"
                )
                self._followups.add(follow)
                follow.add_done_callback(self._followups.discard)
                continue
            if outcome.status is Status.COMPLETED:
                if logged:
                    run.bound.info("job_completed", duration_ms=round(run.elapsed * 1000, 1))
                durations = completed.get((job.kind, job.queue))
                if durations is None:
                    durations = completed[job.kind, job.queue] = []
                durations.append(run.elapsed)
                if track:
                    self.stats.last_status[job.id] = Status.COMPLETED
            else:
                self._report(job, outcome, run.bound, run.elapsed, run.error)
            ended.append(job.id)
            self.running.pop(job.id, None)
            self._reasons.pop(job.id, None)
            if run.on_end is not None:
                run.on_end()
        m = self.metrics
        for (kind, queue), durations in completed.items():
            self.stats.completed += len(durations)
            m.count(m.completed, kind, queue, len(durations))
            m.observe_many(m.duration, durations, kind, queue)
        if ended:
            self._keeper.unregister_many(ended)

    async def _after_write(
        self, job: Job, outcome: Outcome, run: _Run, first: bool | BaseException
    ) -> None:
        """A posted run whose batched write failed or found no lease: what ``_write``
        does after a write, from that first answer on."""
        try:
            await self._write(job, outcome, run.bound, run.elapsed, run.error, first=first)
        except Exception as exc:
            log.error(
                "job_task_crashed", job_id=job.id, error=repr(exc), exception=traceback_text(exc)
            )
        finally:
            self._end(job.id, run.on_end)

    async def _committed(self, job: Job, bound: Any) -> bool:
        """Whether the row says this run completed the job (its handler's transaction
        committed the completion). When the row cannot be read, False: the run's outcome
        is then written, fenced, which changes the row only if the completion did not
        commit."""
        known, state = await self._run_state(job, bound)
        return (
            known
            and state is not None
            and state["status"] == str(Status.COMPLETED)
            and state["attempts"] == job.attempt
        )

    async def _run_state(self, job: Job, bound: Any) -> tuple[bool, Any]:
        """The job row's state, read back (``(True, row or None)``), or ``(False, None)``
        when it cannot be read (said in the log)."""
        try:
            return True, await retry_transient(
                "read_run", lambda: self._repo.run_state(job.id), give_up_after=5.0
            )
        except Exception as exc:
            bound.warning("run_state_unknown", error=describe_error(exc))
            return False, None

    async def _outcome(
        self, job: Job, ctx: JobContext, bound: Any, task: asyncio.Task[Any]
    ) -> tuple[Outcome, BaseException | None]:
        """Run the handler; how the run ended, and the exception that ended it (for the
        log line's traceback)."""
        fn = self._registry.get(job.kind)
        if fn is None:
            # Claims take only the kinds this daemon serves, so this cannot happen; if it
            # did, the job goes back to pending, attempt refunded, for a daemon that has
            # the handler: a missing handler is never the job's fault.
            bound.warning("job_kind_not_served", served=self._registry.kinds)
            return Outcome.released(
                f"NotServed: daemon {self._worker_id} has no handler for kind {job.kind!r}; "
                "handed back"
            ), None
        if isinstance(job.payload, DeepJSON):
            # (Decoded as its text by the claim: see ``db.json_in``.)
            return Outcome.failed(
                f"PayloadTooDeep: the payload nests deeper than {MAX_JSON_DEPTH} levels, "
                "more than importd reads; flatten it"
            ), None
        if self._debug:
            bound.debug("job_started")
        is_async = self._async_handlers.get(id(fn))
        if is_async is None:
            is_async = self._async_handlers[id(fn)] = _is_async(fn)
        timer = _Timeout(task, job.timeout, self._deadlines)
        thread: asyncio.Future[Any] | None = None
        try:
            with timer:
                if is_async:
                    result = await fn(job, ctx)
                else:
                    # A plain def runs in a worker thread, so it cannot block the loop.
                    self._keeper.mark_thread(job.id)
                    call = functools.partial(contextvars.copy_context().run, fn, job, ctx)
                    thread = asyncio.get_running_loop().run_in_executor(self._threads, call)
                    result = await asyncio.shield(thread)
                    if inspect.isawaitable(result):
                        result = await result
        except TimeoutError as exc:
            if not timer.expired():
                return self._failure(job, describe_error(exc)), exc
            error = f"JobTimeout: the job exceeded its timeout of {job.timeout:g} s"
            if ctx.timeout_hint:
                error += f"; {ctx.timeout_hint}"
            if thread is not None and not thread.done():
                late = await self._outlive(job, ctx, thread, bound)
                error += (
                    f"; its synchronous handler cannot be interrupted and returned "
                    f"{late:.1f} s later"
                )
            return self._failure(job, error), None
        except asyncio.CancelledError as exc:
            if thread is not None and not thread.done():
                await self._outlive(job, ctx, thread, bound)
            current = asyncio.current_task()
            if job.id in self._reasons or (current is not None and current.cancelling()):
                raise  # the daemon stopped it: shutdown, cancel or lost lease
            # Nobody here cancelled the job: the handler let a CancelledError escape (an
            # inner task it awaited was cancelled). A failed run like any other.
            return self._failure(
                job,
                "HandlerCancelled: the handler raised CancelledError although the daemon "
                "did not cancel it (an inner task or future it awaited was cancelled?)",
            ), exc
        except PermanentError as exc:
            return Outcome.failed(describe_error(exc)), None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # A URL httpx cannot send: the same URL fails the same way on every attempt.
            return Outcome.failed(
                describe_error(
                    PermanentError(
                        f"InvalidURL: {exc} (URLs must be https:// and lie under the "
                        "url_prefixes setting)"
                    )
                )
            ), None
        except RetryLater as exc:
            return self._failure(job, describe_error(exc), delay=exc.delay), None
        except Exception as exc:
            return self._failure(job, describe_error(exc)), exc
        except SystemExit as exc:  # sys.exit() in a handler ends the run, not the daemon
            error = f"HandlerExited: the handler called sys.exit({_safe_repr(exc.code)})"
            return self._failure(job, error), exc
        except BaseException as exc:
            # KeyboardInterrupt, GeneratorExit, a BaseException of the handler's own: the
            # handler's, not the daemon's (its signals come through the loop's handlers),
            # so a failed attempt like any other error, never a dead or wedged daemon.
            error = describe_error(exc)
            return self._failure(job, f"HandlerRaised: {error}"), exc
        if timer.expired():
            # The timeout's cancellation was swallowed and the handler went on to return:
            # the run still exceeded its timeout, and says so.
            late = max(time.monotonic() - ctx.deadline, 0.0)
            bound.warning("job_timeout_overrun", timeout_s=job.timeout, handler="async")
            return self._failure(
                job,
                f"JobTimeout: the job exceeded its timeout of {job.timeout:g} s; its "
                f"handler ignored the cancellation and returned {late:.1f} s later",
            ), None
        encoded, problem = encode_result(result)
        if problem is not None:
            # Retrying would return the same: the job fails at once, with what is wrong.
            return Outcome.failed(
                f"ResultNotJSON: the handler's result cannot be stored: {problem}"
            ), None
        if result is None:
            return _COMPLETED, None
        # Encoded once: the result write sends this text.
        return Outcome(Status.COMPLETED, result=result, encoded=encoded), None

    async def _outlive(
        self, job: Job, ctx: JobContext, thread: asyncio.Future[Any], bound: Any
    ) -> float:
        """Wait for a synchronous handler's thread to really end: its slot and lease are
        held till then. Returns how long after its deadline it ended."""
        overrun = time.monotonic() - ctx.deadline
        if overrun >= 0:
            bound.warning("job_timeout_overrun", timeout_s=job.timeout, handler="thread")
        while not thread.done():
            try:
                await asyncio.shield(thread)
            except asyncio.CancelledError:
                continue  # held until the thread ends, whoever asks (the stop is noted)
            except BaseException:  # noqa: S112  (its error is the run's; read below)
                continue
        late = time.monotonic() - ctx.deadline
        if late > 0:
            bound.warning("job_thread_ended", late_s=round(late, 3))
        return max(late, 0.0)

    def _failure(self, job: Job, error: str, delay: float | None = None) -> Outcome:
        if job.last_attempt:
            return Outcome.failed(f"{error} (attempt {job.attempt}/{job.max_attempts})")
        if delay is None or math.isnan(delay):  # (NaN: a delay from a bad header)
            delay = self._backoff.delay(job.attempt)
        return Outcome.retry(error, min(delay, self._backoff.cap))

    def _stopped(self, job: Job) -> Outcome | None:
        reason = self._reasons.get(job.id, StopReason.SHUTDOWN)
        if reason is StopReason.LEASE_LOST:
            return None
        if reason is StopReason.CANCELLED:
            return Outcome.cancelled("Cancelled: cancelled by an operator while running")
        if reason is StopReason.CRASH:
            return self._failure(
                job, "Interrupted: the daemon stopped on an internal error while the job ran"
            )
        return Outcome.released("Interrupted: the daemon shut down while the job ran")

    async def _write(
        self,
        job: Job,
        outcome: Outcome,
        bound: Any,
        elapsed: float,
        error: BaseException | None = None,
        first: bool | BaseException | None = None,
    ) -> None:
        duration_ms = round(elapsed * 1000, 1)
        try:
            applied = await self._submit(job, outcome, bound, first)
        except Exception as exc:
            if is_transient(exc):
                bound.error(
                    "job_write_failed",
                    error=describe_error(exc),
                    outcome=str(outcome.status),
                    exception=traceback_text(exc),
                )
                return
            # PostgreSQL refused this run's data: the job fails with its message instead
            # of running again and again.
            refused = Outcome.failed(
                f"OutcomeRefused: PostgreSQL refused to store this run's outcome "
                f"({outcome.status}): {describe_db_error(exc)}"
            )
            bound.error("job_outcome_refused", error=refused.error, exception=traceback_text(exc))
            outcome, error = refused, None
            try:
                applied = await self._submit(job, outcome, bound)
            except Exception as again:
                bound.error(
                    "job_write_failed",
                    error=describe_error(again),
                    outcome="failed",
                    exception=traceback_text(again),
                )
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
        self._report(job, outcome, bound, elapsed, error)

    def _report(
        self,
        job: Job,
        outcome: Outcome,
        bound: Any,
        elapsed: float,
        error: BaseException | None,
    ) -> None:
        """The log line and the counts of a run whose outcome was written."""
        duration_ms = round(elapsed * 1000, 1)
        status = outcome.status
        tb = {"exception": traceback_text(error)} if error is not None else {}
        if status is Status.COMPLETED:
            bound.info("job_completed", duration_ms=duration_ms)
        elif status is Status.FAILED:
            bound.error("job_failed", error=outcome.error, duration_ms=duration_ms, **tb)
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
                **tb,
            )
        self._record(job, status, released=bool(outcome.refund), duration=elapsed)

    async def _submit(
        self, job: Job, outcome: Outcome, bound: Any, first: bool | BaseException | None = None
    ) -> bool:
        """Write one outcome, retried for as long as the lease surely holds; True once
        written. A write whose reply was lost (the connection dropped after the commit)
        is read back before the lease is called lost. ``first``: the answer of a write
        already made (the batched one of a posted run), instead of writing now."""
        if first is None:
            patience = max(self._keeper.lease_left(job.id), 1.0)
            applied = await self._writer.submit(job, outcome, patience)
        elif isinstance(first, BaseException):
            raise first
        else:
            applied = first
        if applied:
            return True
        known, state = await self._run_state(job, bound)
        if known and state is not None and _written(job, outcome, state):
            bound.info("job_write_confirmed", outcome=str(outcome.status))
            return True
        return False

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


def _safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder when its ``__repr__`` fails."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} without a repr>"


def _written(job: Job, outcome: Outcome, row: Any) -> bool:
    """Whether ``row`` is in the state this run's outcome wrote (a reply lost after the
    commit): same status, no lease, this attempt's count and, unless completed, this
    run's error. A rescue leaves another error; a later run, another attempt count."""
    if row["status"] != str(outcome.status) or row["locked_by"] is not None:
        return False
    if row["attempts"] != job.attempt - outcome.refund:
        return False
    if outcome.status is Status.COMPLETED:
        return True
    return bool(row["last_error"] == clean_text(outcome.error or ""))
