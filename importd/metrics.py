"""Prometheus metrics and the health endpoints, served by one small asyncio HTTP server.

``/metrics`` (Prometheus text format), ``/healthz`` (200 while the worker loop ticks),
``/readyz`` (200 while the listener is up and the schema is current). Off unless
``metrics_address`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = structlog.get_logger("importd.metrics")

_DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300)


class Metrics:
    """Every metric importd exports, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        labels = ["kind", "queue"]
        self.claimed = Counter("importd_jobs_claimed", "Jobs claimed", labels, registry=r)
        self.completed = Counter(
            "importd_jobs_completed", "Runs that completed the job", labels, registry=r
        )
        self.failed = Counter(
            "importd_jobs_failed", "Runs that failed the job for good", labels, registry=r
        )
        self.retried = Counter(
            "importd_jobs_retried", "Runs that scheduled a retry", labels, registry=r
        )
        self.rescued = Counter(
            "importd_jobs_rescued",
            "Jobs this daemon rescued from an expired lease",
            labels,
            registry=r,
        )
        self.duration = Histogram(
            "importd_job_duration_seconds",
            "Run time of a job",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.start_latency = Histogram(
            "importd_job_start_latency_seconds",
            "From the time a job was due to its claim",
            ["queue"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("importd_jobs_in_flight", "Jobs this daemon is running", registry=r)
        self.jobs = Gauge(
            "importd_jobs",
            "Pending and running jobs in the table (sampled)",
            ["queue", "status"],
            registry=r,
        )
        self.listener_up = Gauge(
            "importd_listener_connected", "1 while the LISTEN connection is up", registry=r
        )
        self.since_wake = Gauge(
            "importd_seconds_since_last_wake",
            "Seconds since the last notification or poll",
            registry=r,
        )
        self.claims = Counter(
            "importd_claim_statements",
            "Claim statements run, by whether they found jobs",
            ["found"],
            registry=r,
        )
        self.notifications = Counter(
            "importd_notifications", "Job notifications received", registry=r
        )
        self.rows = Counter(
            "importd_rows", "Rows imported or rejected by imports", ["kind", "outcome"], registry=r
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        # labels() looks the child up under a lock on every call; cache it.
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def count(self, metric: Any, kind: str, queue: str, value: float = 1.0) -> None:
        """Add ``value`` to a counter labelled by kind and queue."""
        self._child(metric, kind, queue).inc(value)

    def claim(self, found: bool) -> None:
        """Count one claim statement."""
        self._child(self.claims, "yes" if found else "no").inc()

    def observe(self, metric: Any, value: float, *labels: str) -> None:
        """Observe ``value`` in a histogram."""
        self._child(metric, *labels).observe(value)

    def rows_progress(self, kind: str, loaded: int, rejected: int) -> None:
        """Count rows an import loaded / rejected since its last report."""
        if loaded > 0:
            self._child(self.rows, kind, "loaded").inc(loaded)
        if rejected > 0:
            self._child(self.rows, kind, "rejected").inc(rejected)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz and /readyz on ``host:port``."""

    def __init__(
        self, address: str, metrics: Metrics, alive: Callable[[], bool], ready: Callable[[], bool]
    ) -> None:
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self._metrics = metrics
        self._alive = alive
        self._ready = ready
        self.server: asyncio.Server | None = None

    async def run(self) -> None:
        """The server service: runs until cancelled."""
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = list(self.server.sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("metrics_listening", address=f"{self.host}:{self.port}")
        async with self.server:
            await self.server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, body, ctype = 405, b"method not allowed\n", "text/plain"
            elif path == "/metrics":
                status, body, ctype = 200, self._metrics.render(), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                ok = self._alive()
                status, body, ctype = (
                    (200 if ok else 503),
                    (b"ok\n" if ok else b"wedged\n"),
                    "text/plain",
                )
            elif path == "/readyz":
                ok = self._ready()
                status, body, ctype = (
                    (200 if ok else 503),
                    (b"ready\n" if ok else b"not ready\n"),
                    "text/plain",
                )
            else:
                status, body, ctype = 404, b"not found\n", "text/plain"
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[status]
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head + (body if method == "GET" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
