"""importd web's live updates: server-sent events fed by the database.

One LISTEN connection per web process (importd's own :class:`~importd.listener.Listener`,
with its health probe and reconnects) wakes every open stream when a job becomes pending.
Progress is not notified, so each stream also reads once per ``interval``. A stream
sends a snapshot (one small statement, ``web_live``) only when it changed, and never reads
more often than every ``min_gap`` seconds: one open stream costs at most 1 / min_gap
statements a second, however busy the queue.

The snapshot is also the pages' signal: when what a page shows changed in it (a new job,
counts, the running jobs, the page's job), ``static/app.js`` asks the server for the
page's parts again (the page's own URL with the ``x-importd-part`` header: its main block),
at most every 2 s (the overview, six statements, every 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog

from .. import db, repository
from ..listener import Listener
from ..redaction import redact_value

log = structlog.get_logger("importd.web")


class Hub:
    """The web process's LISTEN connection and the streams it wakes."""

    def __init__(
        self, pool: db.Pool, dsn: str, *, interval: float = 1.0, min_gap: float = 0.5
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.min_gap = min_gap
        self.reads = 0  # statements the streams ran (for the bench and the tests)
        self._wakers: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.listener = Listener(dsn, self._wake, probe_interval=15.0)

    def _wake(self, _queue: str | None) -> None:
        for event in self._wakers:
            event.set()

    def stop(self) -> None:
        """End every stream (the server is shutting down); safe from a signal handler."""
        self.stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, None)

    async def snapshot(self, job_id: int | None) -> dict[str, Any]:
        """One read of what the pages show live."""
        self.reads += 1
        async with self.pool.acquire() as conn:
            data = await repository.live(conn, job_id)
        data = redact_value(data)
        if isinstance(data.get("job"), dict) and data["job"].get("last_error"):
            data["job"]["last_error"] = data["job"]["last_error"][:2000]
        return data  # type: ignore[no-any-return]

    async def stream(self, job_id: int | None, until: float | None = None) -> AsyncIterator[str]:
        """Server-sent events: a ``data:`` line per change, a comment every 15 s; ended at
        ``until`` (Unix seconds: the session's end), if given."""
        loop = self._loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self._wakers.add(wake)
        last = ""
        quiet_since = loop.time()
        try:
            yield "retry: 2000\n\n"
            while not self.stopping:
                if until is not None and time.time() >= until:
                    return
                started = loop.time()
                try:
                    text = json.dumps(await self.snapshot(job_id), separators=(",", ":"))
                except Exception as exc:
                    # The page keeps its last picture; the next read may work again.
                    log.warning("web_live_read_failed", error=f"{type(exc).__name__}: {exc}")
                    text = last
                if text != last:
                    last = text
                    quiet_since = loop.time()
                    yield f"data: {text}\n\n"
                elif loop.time() - quiet_since > 15:
                    quiet_since = loop.time()
                    yield ": still here\n\n"
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.interval)
                if self.stopping:
                    break
                gap = self.min_gap - (loop.time() - started)
                if gap > 0:
                    await asyncio.sleep(gap)
        finally:
            self._wakers.discard(wake)
