"""The composition root: pools, then every service (``services.py``) in one order.

Signals are installed here and only here: the first SIGTERM/SIGINT starts a graceful
shutdown (stop claiming, wait up to the grace, interrupt the rest and write them back to
pending); a second one skips the wait. If any service dies, the others are stopped in
order with no grace, the running jobs are written back with their attempt counted, and
the process exits non-zero for systemd to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import structlog

from . import db, handlers, migrate, redaction, sql
from ._version import version
from .backoff import STATEMENT_RETRY, Backoff
from .cluster import ClusterError, persistent
from .config import Settings
from .executor import Executor, ResultWriter
from .fleet import REFRESH_INTERVAL, Registration
from .guard import LeaseKeeper, LoopMonitor
from .lanes import QueueSlots
from .listener import Listener
from .metrics import HealthServer, Metrics
from .models import ExitCode, Status
from .repository import Repository
from .rescuer import Rescuer
from .services import FINISHED, Loop, Service, Services, Stopping
from .systemd import Notifier
from .worker import TICK, Worker, WorkerOptions, Workers

log = structlog.get_logger("importd.daemon")


@dataclass(frozen=True)
class DrainOptions:
    """What ``importd drain`` runs: every runnable job of these queues / kinds."""

    queues: Sequence[str] | None = None
    kinds: Sequence[str] | None = None
    max_jobs: int | None = None
    timeout: float | None = None
    # Called with (jobs ended, jobs to go through) while draining, for a progress bar.
    on_progress: Callable[[int, int], None] | None = None
    # Called at the end with the pending jobs, by kind, that this drain left because it
    # has no handler for their kind.
    on_unserved: Callable[[dict[str, int]], None] | None = None


T = TypeVar("T")


class _StoppedStarting(Exception):
    """A stop was requested while the daemon started (``Daemon._unless_stopped``)."""


class StartupError(Exception):
    """The daemon could not start; ``code`` is the exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


# The engine's own statements (claim, finish, heartbeat, rescue) run on a small pool of
# their own whose connections skip asyncpg's per-release reset query: they leave no
# session state, and the saved round trip is a third of a claim's cost. All of them open
# with the pool and stay open: a connection opened in the middle of a drain (when the
# registry's refresh or a rescue finds the claim's and the writer's connections busy)
# forks a backend and runs its set-up queries while claims wait, a stall of 10 to 15 ms
# each time. Handlers get a separate, ordinary pool that opens connections only when a
# handler asks for one.
ENGINE_POOL_SIZE = 4
SAMPLE_INTERVAL = 5.0  # seconds between samples of the job-count gauges
KEEPER_CONNECT_WAIT = 5.0  # seconds the first claim waits for the lease keeper's connection
# How long the listener may stay disconnected before the watchdog pings stop (systemd
# then restarts the daemon).
LISTENER_BUDGET = 60.0


async def open_pool(settings: Settings, *, patience: float, engine: bool = False) -> db.Pool:
    """A pool, retrying an unreachable database for ``patience`` seconds."""
    dsn = settings.require_dsn()
    try:
        pool: db.Pool = await db.retry_transient(
            "connect",
            lambda: db.create_pool(
                dsn,
                min_size=ENGINE_POOL_SIZE if engine else 0,
                max_size=ENGINE_POOL_SIZE if engine else settings.effective_pool_size,
                statement_cache_size=settings.statement_cache_size,
                reset_sessions=not engine,
                application_name="importd-engine" if engine else "importd",
                idle_lifetime=0.0 if engine else 300.0,
            ),
            give_up_after=patience,
        )
    except Exception as exc:
        raise StartupError(
            f"cannot connect to the database: {db.describe_db_error(exc)}",
            # (A DSN option the driver cannot read is the configuration's fault.)
            ExitCode.CONFIG if db.is_configuration_error(exc) else ExitCode.UNAVAILABLE,
        ) from exc
    return pool


async def _cache_for_pooler(settings: Settings, *, patience: float) -> Settings:
    """``settings`` with ``statement_cache_size`` 0 when the DSN goes through a pooler
    (``db.statement_cache_for``, waiting up to ``patience`` seconds for the database)."""
    cache = await db.statement_cache_for(
        settings.require_dsn(), settings.statement_cache_size, patience=patience
    )
    if cache == settings.statement_cache_size:
        return settings
    return dataclasses.replace(settings, statement_cache_size=cache)


def warn_unmaskable(settings: Settings) -> None:
    """One warning naming the secret settings too short to be masked in free text (a
    log line, an error, a job row); never their values."""
    short = settings.too_short_to_mask()
    if short:
        log.warning(
            "secret_too_short_to_mask",
            settings=short,
            detail=f"secrets shorter than {redaction.MIN_SECRET_LENGTH} characters are not "
            "masked in logs, errors and job rows: use longer ones",
        )


class Daemon:
    """One importd process's engine, for ``run`` and for ``drain``."""

    def __init__(self, settings: Settings, drain: DrainOptions | None = None) -> None:
        self.settings = settings
        self.drain = drain
        self.worker_id = f"{settings.worker_id}:{secrets.token_hex(3)}"
        self.stopping = Stopping(settings.shutdown_grace)
        self.notifier = Notifier()
        self.interrupted = 0
        self.notifications = 0
        self.schema_current = True
        self.progress_total = 0  # verified at start; the sampler keeps checking
        # The thread compiling the redaction's patterns (``_start``), joined before the
        # first claim.
        self.warming: threading.Thread | None = None
        # The kinds this daemon claims: those it has handlers for (a drain's --kind
        # narrows them), and the queues (None: every queue). Set once handlers load.
        self.kinds: list[str] = []
        self.queues: list[str] | None = None

    def request_stop(self, why: str) -> None:
        """First call: graceful shutdown. Later calls: skip the grace."""
        if self.stopping.request(why):
            log.info("shutdown_requested", reason=why, grace_s=self.settings.shutdown_grace)
            self.notifier.stopping()
        else:
            log.warning("shutdown_hurried", reason=why)

    async def run(self) -> int:
        """Start, serve until stopped (or drained), shut down; returns the exit code.

        SIGTERM and SIGINT are this daemon's from its first step to its last: one that
        comes while it starts (up to a minute of waiting for an unreachable database)
        ends the start at once and cleanly, exit 0 (``drain``: 12, stopped before it was
        done), where the signal's default action killed the process with no log line
        (143); one that comes while it shuts down hurries the shutdown."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        try:
            return await self._start()
        except _StoppedStarting:
            code = ExitCode.DRAIN_INTERRUPTED if self.drain is not None else ExitCode.OK
            log.info("daemon_stopped", before_serving=True, exit_code=int(code))
            return code
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _start(self) -> int:
        """``run``'s start: the database reached (every step of it cut short by a stop
        request: ``_unless_stopped``), the schema checked, the pools opened; then serve."""
        warn_unmaskable(self.settings)
        # The redaction's patterns compiled now, in a thread, beside the start's waits for
        # the database (about 0.4 s of CPU): not on the event loop when a first text
        # holding "bearer" is redacted, nor beside the first claims (``before``).
        self.warming = threading.Thread(target=redaction.warm, name="importd-warm", daemon=True)
        self.warming.start()
        registry = handlers.load(self.settings.handlers)
        # One budget for reaching the database, whichever connection waits for it.
        budget = 10.0 if self.drain else 60.0
        started = time.monotonic()

        def left(least: float = 0.0) -> float:
            return max(budget - (time.monotonic() - started), least)

        s = self.settings = await self._unless_stopped(
            _cache_for_pooler(self.settings, patience=budget)
        )
        engine = await self._unless_stopped(open_pool(s, patience=left(), engine=True))
        try:
            # (at least a second: a check that fails once just as the budget ends tries
            # again once)
            await self._unless_stopped(self._verify_schema(engine, left(1.0)))
            pool = await self._unless_stopped(open_pool(s, patience=left()))
            try:
                return await self._serve(engine, pool, registry)
            finally:
                await pool.close()
        finally:
            await engine.close()

    @staticmethod
    async def _verify_schema(engine: db.Pool, patience: float) -> None:
        """The schema check of the start, its transient failures (a connection broken by
        a restarting server, a terminated backend) tried again within what is left of
        the start's budget, as the connections are: a crash there (exit 1) only had
        systemd start the daemon again. Exit 4 when the schema does not match; exit 5
        when the database stays away."""

        async def verify() -> None:
            async with engine.acquire() as conn:
                await migrate.verify(conn)

        try:
            await db.retry_transient("verify_schema", verify, give_up_after=patience)
        except migrate.SchemaMismatch as exc:
            raise StartupError(str(exc), ExitCode.SCHEMA) from exc
        except Exception as exc:
            if not db.is_transient(exc):
                raise
            raise StartupError(
                f"cannot reach the database: {db.describe_db_error(exc)}", ExitCode.UNAVAILABLE
            ) from exc

    async def _unless_stopped(self, step: Awaitable[T]) -> T:
        """``step`` of the start, unless a stop is requested first (a signal while the
        daemon waits for its database): then it is cancelled and ``_StoppedStarting``
        raised. (Once the services run, they stop themselves.)"""
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self.stopping.requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise _StoppedStarting
        return task.result()

    async def _serve(self, engine: db.Pool, pool: db.Pool, registry: handlers.Registry) -> int:
        # One HTTP client for every job of this daemon: connection reuse, one set of limits.
        async with httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max(self.settings.total_slots, 10)),
            headers={"User-Agent": f"importd/{version()}"},
        ) as http:
            return await self._serve_with(engine, pool, registry, http)

    async def _serve_with(
        self,
        engine: db.Pool,
        pool: db.Pool,
        registry: handlers.Registry,
        http: httpx.AsyncClient,
    ) -> int:
        s = self.settings
        drain = self.drain
        self._scope(registry)
        repo = Repository(engine)
        writer = ResultWriter(repo, self.worker_id)
        keeper = LeaseKeeper(
            s.require_dsn(),
            self.worker_id,
            interval=s.heartbeat_interval,
            margin=s.lease_margin,
            statement_cache_size=s.statement_cache_size,
        )
        executor = Executor(
            repo=repo,
            pool=pool,
            registry=registry,
            writer=writer,
            keeper=keeper,
            worker_id=self.worker_id,
            backoff=Backoff(s.backoff_base, s.backoff_max, s.backoff_jitter),
            lease_margin=s.lease_margin,
            settings=s,
            http=http,
        )
        executor.stats.track_jobs = drain is not None
        workers = self._workers(repo, executor, writer)
        await repo.ensure_rate_limits([r.key for r in s.parsed_rate_limits])
        listener = None
        if s.listen and drain is None:
            listener = Listener(
                s.effective_listen_dsn,
                self._counting(workers.notify, executor.metrics),
                on_control=executor.control,
                probe_interval=s.probe_interval,
            )
        rescuer = Rescuer(
            repo,
            s.rescue_interval,
            executor.metrics,
            retention=(s.retention_completed, s.retention_failed),
        )
        self._wire_gauges(executor, workers, listener)
        registration = Registration(
            repo,
            self.worker_id,
            self.kinds,
            self.queues,
            interval=min(max(s.heartbeat_interval, 1.0), REFRESH_INTERVAL),
        )
        await registration.join()
        watchdog = self.notifier.watchdog_interval
        # A worker loop that missed three ticks (it ticks every second) is wedged.
        stale = max(3 * TICK, watchdog or 0.0)
        monitor = LoopMonitor(
            keeper,
            warn_after=s.loop_block_warn,
            margin=s.lease_margin,
            backoff=executor.retry_delay,
            metrics=executor.metrics,
            notifier=self.notifier,
            healthy=lambda: self._problem(workers, listener, None, stale) is None,
            watchdog_interval=watchdog,
        )
        executor.metrics.loop_lag.set_function(lambda: monitor.lag)

        services = Services(self.stopping)
        order = self._services(
            registration, keeper, monitor, writer, executor, repo, rescuer, listener, workers
        )

        async def before() -> None:
            """Awaited before the first claim: the lease keeper connected (at most a few
            seconds: it connects again at its first heartbeat if this failed), so that
            its connection's set-up does not run in the middle of the first claims; a
            drain's rescue of the jobs a dead daemon held (they are runnable too); the
            redaction's patterns compiled."""
            await asyncio.to_thread(keeper.connected.wait, KEEPER_CONNECT_WAIT)
            if self.warming is not None:
                await asyncio.to_thread(self.warming.join)
            if drain is not None:
                await self._rescue_up_front(rescuer)

        workers.before = before

        log.info(
            "daemon_starting",
            worker_id=self.worker_id,
            mode="drain" if drain else "run",
            concurrency=s.concurrency,
            kinds=self.kinds,
            queues=self.queues,
            listen=listener is not None,
        )
        code = ExitCode.OK
        try:
            await services.run(order, main=workers)
        except Exception as exc:  # outside every service (they are guarded)
            services.log_crash("daemon", exc)
            code = ExitCode.ERROR
        finally:
            executor.close()
        if services.crashed:
            code = ExitCode.ERROR
        self.interrupted = workers.interrupted
        if drain is not None and code is ExitCode.OK:
            await self._left_unserved(repo, registry)
        stats = executor.stats
        if drain is not None and drain.on_progress is not None:
            ended = self._ended(executor)
            drain.on_progress(ended, max(self.progress_total, ended))
        if code is ExitCode.OK and drain is not None:
            interrupted = any(why != FINISHED for why in self.stopping.asked)
            code = self._drain_code(executor, interrupted=interrupted)
        log.info(
            "daemon_stopped",
            completed=stats.completed,
            failed=stats.failed,
            retried=stats.retried,
            released=stats.released,
            lease_lost=stats.lost,
            interrupted=self.interrupted,
            claim_statements=workers.claims,
            notifications=self.notifications,
            exit_code=int(code),
        )
        return code

    def _services(
        self,
        registration: Registration,
        keeper: LeaseKeeper,
        monitor: LoopMonitor,
        writer: ResultWriter,
        executor: Executor,
        repo: Repository,
        rescuer: Rescuer,
        listener: Listener | None,
        workers: Workers,
    ) -> list[Service]:
        """Every service of this daemon, in the order they start (they stop in reverse):
        what the others lean on comes first, so that it is still there while they stop.
        The workers stop first (claims end, running jobs get the grace, then are
        interrupted) while the listener still hears cancels and the writer still writes;
        the writer finishes every queued outcome before the lease keeper stops; the
        daemon leaves the registry last."""
        s, drain = self.settings, self.drain
        stopping = self.stopping

        async def heartbeat() -> None:
            keeper.start(executor.leases_lost)
            monitor.start()
            try:
                await monitor.beat()
            finally:
                monitor.stop()
                keeper.stop()

        order: list[Service] = [
            Loop("registration", registration.run, after=registration.leave),
            Loop("heartbeat", heartbeat),
            Loop("writer", writer.run, stop=writer.close, grace=None),
        ]
        if drain is None:
            order.append(Loop("rescuer", rescuer.run))
            if s.metrics_address:
                health = HealthServer(
                    s.metrics_address,
                    executor.metrics,
                    alive=lambda: self._problem(workers, None, monitor, 10.0),
                    ready=lambda: self.schema_current and (listener is None or listener.connected),
                )
                order.append(Loop("metrics", health.run))
                order.append(Loop("sampler", lambda: self._sample(repo, executor.metrics)))
        if listener is not None:
            order.append(Loop("listener", listener.run))
        if drain is None:
            order.append(
                Loop("supervisor", lambda: self._supervise(workers, executor, listener, monitor))
            )
        else:
            if drain.on_progress is not None:
                report = drain.on_progress
                order.append(
                    Loop("progress", lambda: self._report(repo, executor, workers, report))
                )
            if drain.timeout is not None:
                timeout = drain.timeout

                async def timer() -> None:
                    await asyncio.sleep(timeout)
                    log.warning("drain_timeout", timeout_s=timeout)
                    stopping.request("drain_timeout", grace=0)

                order.append(Loop("drain-timeout", timer))
        order.append(workers)
        return order

    async def _rescue_up_front(self, rescuer: Rescuer) -> None:
        """A drain's rescue before its first claim, a transient database error retried
        as a failed claim is (a growing pause, until it passes or the drain is asked to
        stop): it runs in the workers' service, which a raised error would crash (exit
        1, nothing drained) where the claims after it get past the same error."""
        failures = 0
        while not self.stopping.requested.is_set():
            try:
                await rescuer.rescue_once()
                return
            except Exception as exc:
                if not db.is_transient(exc):
                    raise
                failures += 1
                delay = STATEMENT_RETRY.ceiling(failures)
                log.warning("rescue_failed", error=db.describe_db_error(exc), retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.requested.wait(), delay)

    def _counting(
        self, notify: Callable[[str | None], None], metrics: Metrics
    ) -> Callable[[str | None], None]:
        """``notify``, counting the notifications (the catch-up wake is not one)."""

        def wake(queue: str | None) -> None:
            if queue is not None:
                self.notifications += 1
                metrics.notifications.inc()
            notify(queue)

        return wake

    def _scope(self, registry: handlers.Registry) -> None:
        """What this daemon claims: the kinds it has handlers for (within a drain's
        --kind), from its queues. A job of any other kind stays pending for a daemon that
        serves it; it never fails here for want of a handler."""
        served = registry.kinds
        drain = self.drain
        if drain is not None and drain.kinds:
            missing = sorted(set(drain.kinds) - set(served))
            if missing:
                log.warning("drain_kinds_not_served", kinds=missing, served=served)
            served = [k for k in served if k in drain.kinds]
        self.kinds = served
        if drain is not None and drain.queues:
            self.queues = [QueueSlots.parse(q).name for q in drain.queues]
        elif self.settings.queue_slots:
            self.queues = [spec.name for spec in self.settings.queue_slots]
        else:
            self.queues = None

    async def _left_unserved(self, repo: Repository, registry: handlers.Registry) -> None:
        """After a drain: say how many pending jobs it left because no handler here
        serves their kind."""
        drain = self.drain
        assert drain is not None
        try:
            left = await repo.count_unserved(self.queues, drain.kinds or None, registry.kinds)
        except Exception as exc:
            # Only a closing report: the drain's work and exit code stand either way.
            log.warning(
                "count_unserved_failed",
                error=db.describe_db_error(exc),
                exc_info=not db.is_transient(exc),
            )
            return
        if left:
            log.warning("drain_left_unserved", pending=sum(left.values()), kinds=left)
        if drain.on_unserved is not None:
            drain.on_unserved(left)

    def _workers(self, repo: Repository, executor: Executor, writer: ResultWriter) -> Workers:
        """One worker per served queue with its own slots, or one for every queue."""
        s = self.settings
        drain = self.drain
        specs = s.queue_slots
        if drain is not None and drain.queues:
            specs = tuple(QueueSlots.parse(q) for q in drain.queues)
        base = WorkerOptions(
            worker_id=self.worker_id,
            capacity=s.concurrency,
            poll_interval=s.poll_interval,
            lease_margin=s.lease_margin,
            kinds=self.kinds,
            drain=drain is not None,
            max_jobs=drain.max_jobs if drain else None,
            fair=s.fair,
            tenant_cap=s.tenant_concurrency,
            rate_limits=s.parsed_rate_limits,
            backlog_limit=2 * s.total_slots,
        )
        options = [
            dataclasses.replace(
                base, capacity=spec.slots or s.concurrency, queues=(spec.name,), name=spec.name
            )
            for spec in specs
        ] or [base]
        members: list[Worker] = []

        def claimed_so_far() -> int:  # --max-jobs counts the claims of every worker
            return sum(w.claimed for w in members)

        members.extend(
            Worker(
                repo,
                executor,
                o,
                self.stopping,
                backlog=lambda: writer.backlog,
                claimed_so_far=claimed_so_far,
            )
            for o in options
        )
        return Workers(members, executor, self.stopping)

    def _drain_code(self, executor: Executor, *, interrupted: bool) -> ExitCode:
        final = executor.stats.last_status.values()
        if any(status is Status.FAILED for status in final):
            return ExitCode.DRAIN_FAILED
        if interrupted:
            return ExitCode.DRAIN_INTERRUPTED
        if any(status is Status.PENDING for status in final):
            return ExitCode.DRAIN_PENDING
        return ExitCode.OK

    def _wire_gauges(self, executor: Executor, workers: Workers, listener: Listener | None) -> None:
        m = executor.metrics
        m.in_flight.set_function(lambda: workers.in_flight)
        m.listener_up.set_function(lambda: 1 if listener is None or listener.connected else 0)
        loop = asyncio.get_running_loop()
        m.since_wake.set_function(
            lambda: loop.time() - workers.last_wake if workers.last_wake else 0.0
        )

    def _problem(
        self,
        workers: Workers,
        listener: Listener | None,
        monitor: LoopMonitor | None,
        stale: float,
    ) -> str | None:
        """What is wrong with this daemon, or None while it is alive; asked from threads
        (the watchdog, /healthz), so it reads only plain attributes."""
        now = time.monotonic()  # the event loop's clock too
        if monitor is not None and monitor.stalled:
            return f"event loop blocked for {monitor.lag:.1f} s"
        if now - workers.last_tick >= stale:
            return f"worker loop has not ticked for {now - workers.last_tick:.1f} s"
        if (
            listener is not None
            and not listener.connected
            and (now - listener.last_ok >= LISTENER_BUDGET)
        ):
            return f"listener down for {now - listener.last_ok:.0f} s"
        return None

    async def _sample(self, repo: Repository, metrics: Metrics) -> None:
        """Every few seconds: job counts by queue and status, and whether the schema is
        still the one this code knows (readiness)."""
        while True:
            try:
                rows = await repo.count_jobs()
                metrics.set_job_counts((r["queue"], r["status"], r["n"]) for r in rows)
                self.schema_current = await repo.schema_current()
            except Exception as exc:
                if not db.is_transient(exc):
                    raise
                log.warning("sample_failed", error=db.describe_db_error(exc))
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def _report(
        self,
        repo: Repository,
        executor: Executor,
        workers: Workers,
        report: Callable[[int, int], None],
    ) -> None:
        """Drain progress: runs ended so far, of those runnable at the start plus any
        claimed since. The count at the start is tried again after a transient error
        (the bar counts what it has meanwhile; the first failure is logged); another
        error crashes the service."""
        runnable = 0
        counted = failed = False
        while True:
            if not counted:
                try:
                    runnable = await repo.count_runnable(self.queues, self.kinds)
                    counted = True
                except Exception as exc:
                    if not db.is_transient(exc):
                        raise
                    if not failed:
                        log.warning("progress_count_failed", error=db.describe_db_error(exc))
                    failed = True
            ended = self._ended(executor)
            self.progress_total = max(runnable, ended + workers.in_flight)
            report(ended, self.progress_total)
            await asyncio.sleep(0.2)

    @staticmethod
    def _ended(executor: Executor) -> int:
        stats = executor.stats
        return stats.completed + stats.failed + stats.retried + stats.cancelled

    async def _supervise(
        self,
        workers: Workers,
        executor: Executor,
        listener: Listener | None,
        monitor: LoopMonitor,
    ) -> None:
        """READY once listening and caught up; then STATUS. WATCHDOG=1 is the loop
        monitor's to send (from its thread, so that a blocked loop stops the pings)."""
        if listener is not None:
            await listener.ready.wait()
        await workers.first_claim_done.wait()
        self.notifier.ready(self._status_line(workers, executor, listener))
        log.info("daemon_ready", worker_id=self.worker_id)
        monitor.watchdog_enabled = True
        interval = self.notifier.watchdog_interval or 5.0
        while True:
            await asyncio.sleep(interval)
            self.notifier.status(self._status_line(workers, executor, listener))

    def _status_line(self, workers: Workers, executor: Executor, listener: Listener | None) -> str:
        listening = (
            "poll only"
            if listener is None
            else ("listener ok" if listener.connected else "listener reconnecting")
        )
        return (
            f"running {workers.in_flight}/{self.settings.total_slots}, "
            f"{executor.stats.completed:,} done, {listening}"
        )


EMBEDDED_DIR = Path("~/.local/share/importd/postgres")


def run_embedded(settings: Settings, directory: Path | None) -> int:
    """``importd run --embedded``: the daemon on a local PostgreSQL it manages in
    ``directory``, for trying importd without a server."""
    try:
        cluster = persistent(directory or EMBEDDED_DIR)
    except ClusterError as exc:
        log.error("startup_failed", error=str(exc), exit_code=int(ExitCode.CONFIG))
        return ExitCode.CONFIG
    try:
        dsn = cluster.dsn_for("importd")
        asyncio.run(_create_database(cluster.dsn, "importd", dsn))
        log.info("embedded_postgres", dsn=dsn, data_dir=str(cluster.directory))
        print(
            f"importd: embedded PostgreSQL at {dsn} (data in {cluster.directory})",
            file=sys.stderr,
            flush=True,
        )
        return run(dataclasses.replace(settings, dsn=dsn, listen_dsn=None))
    finally:
        cluster.stop()


async def _create_database(admin_dsn: str, name: str, dsn: str) -> None:
    admin = await db.connect(admin_dsn)
    try:
        if not await admin.fetchval(sql.query("find_database"), name):
            # SQL text in Python, and the one place: CREATE DATABASE cannot run in a
            # transaction block, so no DO block can quote the name with format('%I'); the
            # name is a constant of this module ("importd").
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await db.connect(dsn)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()


def run(settings: Settings, drain: DrainOptions | None = None) -> int:
    """Run the daemon (or a drain) to completion; returns the process exit code."""
    daemon = Daemon(settings, drain)
    try:
        return asyncio.run(daemon.run())
    except StartupError as exc:
        log.error("startup_failed", error=redaction.redact(str(exc)), exit_code=int(exc.code))
        return exc.code
    except handlers.HandlerError as exc:
        # A handler module that fails to import: its traceback says where.
        cause = {"exc_info": exc.__cause__} if exc.__cause__ is not None else {}
        log.error("startup_failed", error=str(exc), exit_code=int(ExitCode.CONFIG), **cause)
        return ExitCode.CONFIG
    except KeyboardInterrupt:  # a signal before the handlers were installed
        with contextlib.suppress(Exception):
            log.warning("interrupted_during_startup")
        return ExitCode.ERROR
    except Exception as exc:  # outside every service: still one line, with its traceback
        log.error(
            "daemon_crashed",
            error=db.describe_db_error(exc),
            exit_code=int(ExitCode.ERROR),
            exc_info=exc,
        )
        return ExitCode.ERROR
