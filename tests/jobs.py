"""Handlers the tests run through real importd processes (``--handlers tests.jobs``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import asyncpg

import importd


@importd.handler("sleep")
async def sleep(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Sleep ``payload.seconds``; record the run in ``test_runs`` when that table exists."""
    await _record(job, ctx)
    await asyncio.sleep(float(job.payload.get("seconds", 0)))
    with contextlib.suppress(asyncpg.UndefinedTableError):
        await ctx.pool.execute(
            "UPDATE test_runs SET ended_at = clock_timestamp() WHERE job_id = $1 AND attempt = $2",
            job.id,
            job.attempt,
        )
    return {"slept": job.payload.get("seconds", 0)}


@importd.handler("fail")
async def fail(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Raise a RuntimeError with ``payload.message`` until attempt ``payload.succeed_on``."""
    await _record(job, ctx)
    succeed_on = job.payload.get("succeed_on")
    if succeed_on is not None and job.attempt >= succeed_on:
        return {"succeeded_on": job.attempt}
    raise RuntimeError(job.payload.get("message", "boom"))


@importd.handler("permanent")
async def permanent(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Raise PermanentError."""
    raise importd.PermanentError(job.payload.get("message", "this cannot work"))


@importd.handler("record")
async def record(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Record the run (job id, attempt, start time) in ``test_runs``."""
    await _record(job, ctx)
    return None


async def _record(job: importd.Job, ctx: importd.JobContext) -> None:
    # Tests that count runs create test_runs; the others do not need it.
    with contextlib.suppress(asyncpg.UndefinedTableError):
        # The daemon that runs it: the one whose lease the row holds (locked_by).
        await ctx.pool.execute(
            "INSERT INTO test_runs (job_id, attempt, worker, started_at) "
            "SELECT id, $2, locked_by, clock_timestamp() FROM import_jobs WHERE id = $1",
            job.id,
            job.attempt,
        )


@importd.handler("fetch")
async def fetch(job: importd.Job, ctx: importd.JobContext) -> Any:
    """GET ``payload.url`` with the daemon's client, unchecked (an invalid URL raises
    httpx.InvalidURL inside the handler)."""
    assert ctx.http is not None
    response = await ctx.http.get(job.payload["url"])
    return {"status": response.status_code}


@importd.handler("steps")
async def steps(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Report progress through ``payload.total`` rows, one more every ``payload.pause``
    seconds, like an import reading a file."""
    total = int(job.payload.get("total", 100))
    pause = float(job.payload.get("pause", 0.1))
    for done in range(total + 1):
        ctx.progress(done, total, bytes_read=done * 100)
        await asyncio.sleep(pause)
    return {"rows": total}


@importd.handler("quick_progress")
async def quick_progress(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Report progress and end at once (well within a heartbeat interval): return, or
    fail for good when ``payload.fail``."""
    ctx.progress(done=1, total=3, bytes_read=42)
    if job.payload.get("fail"):
        raise importd.PermanentError("stopped after the first of three")
    return {"ok": True}


@importd.handler("introspect")
async def introspect(job: importd.Job, ctx: importd.JobContext) -> Any:
    """What the handler can reach through its context: the names it offers, the names
    of its settings, and the positions of the ``payload.needles`` that appear anywhere
    in either (but the job itself)."""
    # Everything but the job itself (its payload holds the needles).
    seen = repr({k: v for k, v in vars(ctx).items() if k != "job"})
    seen += repr(dataclasses.asdict(ctx.settings))
    seen += "".join(
        str(getattr(ctx, name, "")) for name in dir(ctx) if name not in ("job", "__dict__")
    )
    return {
        "context": sorted(name for name in dir(ctx) if not name.startswith("_")),
        "own": sorted(vars(ctx)),
        "settings": sorted(f.name for f in dataclasses.fields(ctx.settings)),
        "found": [n for n, needle in enumerate(job.payload.get("needles", [])) if needle in seen],
    }
