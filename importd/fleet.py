"""The registry of running daemons (table ``importd_daemons``) and what it tells.

Each daemon registers at start with the kinds it has handlers for and the queues it
claims from, refreshes its row every few seconds from a small service of its own, and
deletes it on exit. Every daemon prunes the rows of daemons not seen for a while (killed,
or on a host that is gone). ``importd status`` and ``importd doctor`` read the table to
list the live daemons and to name the pending kinds that no live daemon serves: those
jobs wait (they never fail for want of a handler) until a daemon with the handler runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from . import __version__
from .db import describe_db_error, is_transient
from .repository import Repository

log = structlog.get_logger("importd.fleet")

# Seconds between refreshes of a daemon's row, at most (a daemon refreshes it every
# heartbeat interval, at least a second apart, at most this far apart).
REFRESH_INTERVAL = 5.0
# A daemon not seen for this long is not live: status and doctor leave it out, and the
# other daemons delete its row.
STALE_AFTER = 30.0


class Registration:
    """This daemon's row in ``importd_daemons``: join, refresh (a service), leave."""

    def __init__(
        self,
        repo: Repository,
        name: str,
        kinds: Sequence[str],
        queues: Sequence[str] | None,
        *,
        interval: float = REFRESH_INTERVAL,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self._repo = repo
        self.name = name
        self._kinds = list(kinds)
        self._queues = list(queues) if queues is not None else None
        self._interval = interval
        self._stale_after = stale_after

    async def _upsert(self) -> None:
        await self._repo.register_daemon(
            self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            kinds=self._kinds,
            queues=self._queues,
        )

    async def join(self) -> None:
        """Register; a transient error is only logged (the service tries again)."""
        try:
            await self._upsert()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("daemon_register_failed", error=describe_db_error(exc))
            return
        log.info("daemon_registered", name=self.name, kinds=self._kinds, queues=self._queues)

    async def run(self) -> None:
        """The service: refresh this daemon's row and prune stale ones, until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._upsert()
                for name in await self._repo.prune_daemons(self._stale_after):
                    log.info("daemon_pruned", name=name, stale_after_s=self._stale_after)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("daemon_refresh_failed", error=describe_db_error(exc))

    async def leave(self, timeout: float = 3.0) -> None:
        """Delete this daemon's row; on failure the others prune it later."""
        try:
            async with asyncio.timeout(timeout):
                await self._repo.remove_daemon(self.name)
        except Exception as exc:
            log.warning(
                "daemon_unregister_failed",
                error=describe_db_error(exc),
                exc_info=not is_transient(exc),
            )


@dataclass(frozen=True)
class Unserved:
    """Pending jobs of a kind that no live daemon claims: ``pending`` of them, in
    ``queues`` (``everywhere``: in every queue that has pending jobs of the kind)."""

    kind: str
    pending: int
    queues: tuple[str, ...]
    everywhere: bool

    @property
    def text(self) -> str:
        """``thumbnail: 40 pending, no daemon serves it`` (naming the queues when the
        kind is served in others)."""
        where = "" if self.everywhere else f" in queue {', '.join(self.queues)}"
        return f"{self.kind}: {self.pending:,} pending{where}, no daemon serves it"


def serves(daemon: dict[str, Any], queue: str, kind: str) -> bool:
    """Whether a registered daemon claims jobs of ``kind`` in ``queue``."""
    queues = daemon["queues"]
    return kind in (daemon["kinds"] or ()) and (queues is None or queue in queues)


def unserved(
    pending: Iterable[tuple[str, str, int]], daemons: Sequence[dict[str, Any]]
) -> list[Unserved]:
    """The kinds with pending jobs (``(queue, kind, count)``) that no daemon of
    ``daemons`` serves, in kind order."""
    missing: dict[str, dict[str, int]] = {}
    queues_of_kind: dict[str, set[str]] = {}
    for queue, kind, n in pending:
        if not n:
            continue
        queues_of_kind.setdefault(kind, set()).add(queue)
        if not any(serves(d, queue, kind) for d in daemons):
            by_queue = missing.setdefault(kind, {})
            by_queue[queue] = by_queue.get(queue, 0) + n
    return [
        Unserved(
            kind,
            sum(by_queue.values()),
            tuple(sorted(by_queue)),
            set(by_queue) == queues_of_kind[kind],
        )
        for kind, by_queue in sorted(missing.items())
    ]
