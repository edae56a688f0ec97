"""Periodic rescue of jobs whose lease expired because their daemon died.

Every daemon runs it; SKIP LOCKED and the status test in the statement make concurrent
rescues harmless.
"""

from __future__ import annotations

import asyncio

import structlog

from . import tables
from .db import describe_db_error, is_transient
from .metrics import Metrics
from .repository import Repository

log = structlog.get_logger("importd.rescuer")

BATCH = 500


class Rescuer:
    """Returns expired leases to pending (or failed) every ``interval`` seconds."""

    def __init__(self, repo: Repository, interval: float, metrics: Metrics | None = None) -> None:
        self._repo = repo
        self._metrics = metrics
        self._interval = interval
        self.rescued = 0

    async def rescue_once(self) -> int:
        """One pass; returns how many jobs it moved."""
        moved = 0
        while True:
            rows = await self._repo.rescue(BATCH)
            for row in rows:
                if self._metrics is not None:
                    self._metrics.count(self._metrics.rescued, row["kind"], row["queue"])
                log.warning(
                    "job_rescued",
                    job_id=row["id"],
                    kind=row["kind"],
                    queue=row["queue"],
                    tenant_id=row["tenant_id"],
                    attempt=row["attempts"],
                    status=row["status"],
                    lost_by=row["lost_by"],
                )
            moved += len(rows)
            if len(rows) < BATCH:
                break
        self.rescued += moved
        # Staging tables of jobs that ended while their daemon was dead.
        async with self._repo.pool.acquire() as conn:
            dropped = await tables.drop_orphan_staging(conn)
        if dropped:
            log.info("staging_dropped", tables=dropped)
        return moved

    async def run(self) -> None:
        """The rescuer service: runs until cancelled."""
        while True:
            try:
                await self.rescue_once()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("rescue_failed", error=describe_db_error(exc))
            await asyncio.sleep(self._interval)
