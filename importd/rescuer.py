"""Periodic rescue of jobs whose lease expired because their daemon died.

Every daemon runs it; SKIP LOCKED and the status test in the statement make concurrent
rescues harmless.
"""

from __future__ import annotations

import asyncio

import structlog

from .db import describe_db_error, is_transient
from .metrics import Metrics
from .repository import Repository

log = structlog.get_logger("importd.rescuer")

BATCH = 500
PRUNE_INTERVAL = 600.0  # seconds between prunes of old finished jobs
PRUNE_BATCH = 1000


class Rescuer:
    """Returns expired leases to pending (or failed) every ``interval`` seconds."""

    def __init__(
        self,
        repo: Repository,
        interval: float,
        metrics: Metrics | None = None,
        retention: tuple[float, float] | None = None,
    ) -> None:
        self._repo = repo
        self._metrics = metrics
        self._interval = interval
        # (completed, failed and cancelled) retention in seconds; None: no pruning.
        self._retention = retention
        self._next_prune = 0.0
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
        dropped = await self._repo.drop_orphan_staging()
        if dropped:
            log.info("staging_dropped", tables=dropped)
        return moved

    async def prune_once(self) -> int:
        """Delete finished jobs past their retention, in small batches."""
        assert self._retention is not None
        completed, failed = self._retention
        deleted, batches = await self._repo.prune(completed, failed, PRUNE_BATCH)
        if deleted:
            log.info("jobs_pruned", deleted=deleted, batches=batches)
        return deleted

    async def run(self) -> None:
        """The rescuer service: runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.rescue_once()
                if self._retention is not None and loop.time() >= self._next_prune:
                    self._next_prune = loop.time() + PRUNE_INTERVAL
                    await self.prune_once()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("rescue_failed", error=describe_db_error(exc))
            await asyncio.sleep(self._interval)
