"""Prometheus metrics and the health endpoints, served by a small threaded HTTP server.

``/metrics`` (Prometheus text format), ``/healthz`` (200 while the worker loop ticks),
``/readyz`` (200 while the listener is up and the schema is current). Off unless
``metrics_address`` is set.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = structlog.get_logger("importd.metrics")
_M = TypeVar("_M", Counter, Gauge, Histogram)

_DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300)


# Label values are bounded: a kind is labelled by name only when this daemon has a
# handler for it, a queue only when it is configured (or, when the daemon serves every
# queue, while it holds one of MAX_QUEUE_LABELS slots); everything else is "other". A slot
# goes back to the pool when a new queue needs it and its queue has been idle for
# IDLE_SAMPLES samples of the job gauges (no pending or running job at the last sample,
# no claim or completion counted since), so /metrics stays small whatever kinds and
# queues producers invent.
OTHER = "other"
MAX_QUEUE_LABELS = 20
IDLE_SAMPLES = 12  # a minute, at the daemon's sample interval of 5 s


class Metrics:
    """Every metric importd exports, in a registry of its own, with bounded labels.

    ``kinds``: the kinds with a handler (None: any kind gets its own label, for callers
    that only ever see a few); ``queues``: the configured queues (empty: every queue, up
    to ``max_queues`` labels at a time)."""

    def __init__(
        self,
        kinds: Iterable[str] | None = None,
        queues: Iterable[str] = (),
        *,
        max_queues: int = MAX_QUEUE_LABELS,
        idle_samples: int = IDLE_SAMPLES,
    ) -> None:
        self._kinds = frozenset(kinds) if kinds is not None else None
        self._configured = frozenset(queues)
        self._max_queues = max_queues
        self._idle_samples = idle_samples
        # A sample's number, counted by set_job_counts: the clock of slot use (a plain
        # assignment on the hot path, no clock call).
        self._generation = 0
        self._queue_used: dict[str, int] = {}  # labelled queue -> generation of last use
        self._busy: frozenset[str] = frozenset()  # queues with jobs at the last sample
        self._layout: dict[int, tuple[str, ...]] = {}
        r = self.registry = CollectorRegistry()
        labels = ["kind", "queue"]
        self.claimed = self._add(
            Counter("importd_jobs_claimed", "Jobs claimed", labels, registry=r)
        )
        self.completed = self._add(
            Counter("importd_jobs_completed", "Runs that completed the job", labels, registry=r)
        )
        self.failed = self._add(
            Counter("importd_jobs_failed", "Runs that failed the job for good", labels, registry=r)
        )
        self.retried = self._add(
            Counter("importd_jobs_retried", "Runs that scheduled a retry", labels, registry=r)
        )
        self.rescued = self._add(
            Counter(
                "importd_jobs_rescued",
                "Jobs this daemon rescued from an expired lease",
                labels,
                registry=r,
            )
        )
        self.duration = self._add(
            Histogram(
                "importd_job_duration_seconds",
                "Run time of a job",
                labels,
                buckets=_DURATION_BUCKETS,
                registry=r,
            )
        )
        self.start_latency = self._add(
            Histogram(
                "importd_job_start_latency_seconds",
                "From the time a job was due to its claim",
                ["queue"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.in_flight = Gauge("importd_jobs_in_flight", "Jobs this daemon is running", registry=r)
        self.jobs = self._add(
            Gauge(
                "importd_jobs",
                "Pending and running jobs in the table (sampled)",
                ["queue", "status"],
                registry=r,
            )
        )
        self.listener_up = Gauge(
            "importd_listener_connected", "1 while the LISTEN connection is up", registry=r
        )
        self.since_wake = Gauge(
            "importd_seconds_since_last_wake",
            "Seconds since the last notification or poll",
            registry=r,
        )
        self.claims = self._add(
            Counter(
                "importd_claim_statements",
                "Claim statements run, by whether they found jobs",
                ["found"],
                registry=r,
            )
        )
        self.notifications = Counter(
            "importd_notifications", "Job notifications received", registry=r
        )
        self.rows = self._add(
            Counter(
                "importd_rows",
                "Rows imported or rejected by imports",
                ["kind", "outcome"],
                registry=r,
            )
        )
        self.loop_blocked = Counter(
            "importd_loop_blocked",
            "Stalls of the event loop beyond loop_block_warn (a blocking handler)",
            registry=r,
        )
        self.loop_lag = Gauge(
            "importd_loop_lag_seconds",
            "Seconds since the event loop last ran its heartbeat task",
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}  # by label values
        self._resolved: dict[tuple[Any, ...], tuple[Any, str | None]] = {}  # by raw values

    def _add(self, metric: _M) -> _M:
        self._layout[id(metric)] = tuple(metric._labelnames)
        return metric

    def kind_label(self, kind: str) -> str:
        """The ``kind`` label of ``kind``: itself when a handler serves it, else other."""
        if self._kinds is None or kind in self._kinds:
            return kind
        return OTHER

    def queue_label(self, queue: str) -> str:
        """The ``queue`` label of ``queue`` (see MAX_QUEUE_LABELS)."""
        if queue in self._configured:
            return queue
        if self._configured:
            return OTHER  # a queue this daemon does not serve (seen by the sampler)
        now = self._generation
        if queue in self._queue_used:
            self._queue_used[queue] = now
            return queue
        if len(self._queue_used) >= self._max_queues and not self._free_a_slot(now):
            return OTHER
        self._queue_used[queue] = now
        return queue

    def _free_a_slot(self, now: int) -> bool:
        idle = [
            (used, queue)
            for queue, used in self._queue_used.items()
            if queue not in self._busy and now - used >= self._idle_samples
        ]
        if not idle:
            return False
        self.forget_queue(min(idle)[1])
        return True

    def forget_queue(self, queue: str) -> None:
        """Drop every series labelled with ``queue`` (its slot is free again)."""
        self._queue_used.pop(queue, None)
        self._resolved.clear()  # a queue counted as other may get the slot now
        for key in list(self._children):
            metric_id, *values = key
            names = self._layout.get(metric_id, ())
            if "queue" in names and values[names.index("queue")] == queue:
                metric = self._children.pop(key)[0]
                with contextlib.suppress(KeyError):
                    metric.remove(*values)

    def _child(self, metric: Any, *values: str) -> Any:
        # The hot path (every claim and completion): one look-up by the raw values.
        # labels() would look the child up under a lock on every call.
        key = (id(metric), *values)
        entry = self._resolved.get(key)
        if entry is not None:
            if entry[1] is not None:
                self._queue_used[entry[1]] = self._generation  # the slot is in use
            return entry[0]
        names = self._layout.get(id(metric), ())
        labels = values
        if names:
            labels = tuple(
                self.kind_label(v) if n == "kind" else self.queue_label(v) if n == "queue" else v
                for n, v in zip(names, values, strict=True)
            )
        labelled = (id(metric), *labels)
        found = self._children.get(labelled)
        if found is None:
            found = self._children[labelled] = (metric, metric.labels(*labels))
        queue = labels[names.index("queue")] if "queue" in names else None
        if len(self._resolved) >= 10_000:  # raw names are unbounded: so is not this
            self._resolved.clear()
        self._resolved[key] = (found[1], queue if queue in self._queue_used else None)
        return found[1]

    def count(self, metric: Any, kind: str, queue: str, value: float = 1.0) -> None:
        """Add ``value`` to a counter labelled by kind and queue."""
        self._child(metric, kind, queue).inc(value)

    def claim(self, found: bool) -> None:
        """Count one claim statement."""
        self._child(self.claims, "yes" if found else "no").inc()

    def observe(self, metric: Any, value: float, *labels: str) -> None:
        """Observe ``value`` in a histogram."""
        self._child(metric, *labels).observe(value)

    def observe_many(self, metric: Any, values: Sequence[float], *labels: str) -> None:
        """Observe each of ``values`` in a histogram: its child looked up once, and each
        bucket and the sum added to once (what ``observe`` per value adds up to; a test
        compares the two). A client library whose histogram child is laid out otherwise
        gets ``observe`` per value."""
        if not values:
            return
        child = self._child(metric, *labels)
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(child, "_sum", None)
        if (
            bounds is None
            or buckets is None
            or total is None
            or len(bounds) != len(buckets)
            or len(values) < 2
        ):
            for value in values:
                child.observe(value)
            return
        counts = [0] * len(bounds)
        for value in values:
            # observe() puts a value in the first bucket whose bound is >= it (+Inf last),
            # and a NaN in none.
            if not math.isnan(value):
                counts[bisect.bisect_left(bounds, value)] += 1
        total.inc(sum(values))
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)

    def rows_progress(self, kind: str, loaded: int, rejected: int) -> None:
        """Count rows an import loaded / rejected since its last report."""
        if loaded > 0:
            self._child(self.rows, kind, "loaded").inc(loaded)
        if rejected > 0:
            self._child(self.rows, kind, "rejected").inc(rejected)

    def set_job_counts(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """The sampled ``(queue, status, n)`` of pending and running jobs: the biggest
        queues by their label, the rest summed as other, and series of queues that have
        no jobs any more dropped."""
        self._generation += 1
        self._resolved.clear()  # a queue counted as other may get a slot now
        rows = sorted(counts, key=lambda row: -row[2])
        self._busy = frozenset(queue for queue, _, n in rows if n)
        totals: dict[tuple[str, str], int] = {}
        full = False  # once a queue found no slot, none of the smaller ones will
        for queue, status, n in rows:
            if full and queue not in self._queue_used and queue not in self._configured:
                label = OTHER
            else:
                label = self.queue_label(queue)
                full = label == OTHER
            key = (label, status)
            totals[key] = totals.get(key, 0) + n
        for stale in [k for k in self._children if k[0] == id(self.jobs)]:
            if tuple(stale[1:]) not in totals:
                self._children.pop(stale)
                with contextlib.suppress(KeyError):
                    self.jobs.remove(*stale[1:])
        for (queue, status), n in totals.items():
            child = (id(self.jobs), queue, status)
            entry = self._children.get(child)
            if entry is None:
                entry = self._children[child] = (self.jobs, self.jobs.labels(queue, status))
            entry[1].set(n)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HealthServer:
    """Serves /metrics, /healthz and /readyz on ``host:port`` from threads of its own, so
    a blocked event loop is reported (503) instead of leaving the probe unanswered."""

    def __init__(
        self,
        address: str,
        metrics: Metrics,
        alive: Callable[[], str | None],
        ready: Callable[[], bool],
    ) -> None:
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self._metrics = metrics
        self._alive = alive  # None while alive, else what is wrong
        self._ready = ready

    async def run(self) -> None:
        """The server service: serves from a thread until cancelled."""
        server = self._bind()
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="importd-http",
            daemon=True,
        )
        thread.start()
        log.info("metrics_listening", address=f"{self.host}:{self.port}")
        try:
            await asyncio.Event().wait()
        finally:
            server.shutdown()
            server.server_close()

    def _bind(self) -> _Server:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                status, text, ctype = outer.respond(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(text)))
                self.send_header("Connection", "close")
                self.end_headers()
                if body:
                    self.wfile.write(text)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # requests are not events worth a log line

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("HealthHTTPServer", (_Server,), {"address_family": family})
        server: _Server = server_class((self.host, self.port), Handler)
        return server

    def respond(self, path: str) -> tuple[int, bytes, str]:
        """Status, body and content type for a GET of ``path``."""
        if path == "/metrics":
            return 200, self._metrics.render(), CONTENT_TYPE_LATEST
        if path == "/healthz":
            problem = self._alive()
            if problem is None:
                return 200, b"ok\n", "text/plain"
            return 503, f"wedged: {problem}\n".encode(), "text/plain"
        if path == "/readyz":
            ok = self._ready()
            return (200 if ok else 503), (b"ready\n" if ok else b"not ready\n"), "text/plain"
        return 404, b"not found\n", "text/plain"
