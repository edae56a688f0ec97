"""Handlers only some daemons of a test fleet load (``--handlers tests.fleet_jobs``).

Never import this module in the test process itself: its kinds would then be registered
for every in-process daemon too."""

from __future__ import annotations

import asyncio
from typing import Any

import importd

from .jobs import _record


@importd.handler("thumbnail")
async def thumbnail(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Record the run (``test_runs``, when it exists) and say who ran it."""
    await _record(job, ctx)
    by = await ctx.pool.fetchval("SELECT locked_by FROM import_jobs WHERE id = $1", job.id)
    return {"by": by}


@importd.handler("slow_tx")
async def slow_tx(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Complete in a transaction of its own that takes ``payload.seconds``, as an atomic
    import does: the completion is written at the end of that transaction."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1")
        await asyncio.sleep(float(job.payload.get("seconds", 1)))
        await ctx.complete_in(conn, {"slept": job.payload.get("seconds", 1)})
    return None
