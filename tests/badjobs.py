"""Handlers that misbehave, for tests that run them through real importd processes
(``--handlers tests.badjobs``): what users' handlers do that they should not."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import importd

from .jobs import _record


def _stamp(job: importd.Job, what: str) -> None:
    """Append ``job attempt pid what wall-time`` to ``payload.log`` (synchronously: the
    event loop may be the thing that is blocked)."""
    path = job.payload.get("log")
    if path:
        with Path(path).open("a") as fh:
            fh.write(f"{job.id} {job.attempt} {os.getpid()} {what} {time.time():.6f}\n")


@importd.handler("block")
async def block(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Block the event loop with ``time.sleep`` for ``payload.seconds``, stamping the
    time every tenth of a second."""
    _stamp(job, "start")
    end = time.monotonic() + float(job.payload["seconds"])
    while time.monotonic() < end:
        time.sleep(0.1)  # blocking the loop is the point of this handler
        _stamp(job, "tick")
    _stamp(job, "end")
    return {"blocked": job.payload["seconds"]}


@importd.handler("escape_cancel")
async def escape_cancel(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Await an inner task that gets cancelled: its CancelledError escapes the handler."""
    await _record(job, ctx)
    inner = asyncio.create_task(asyncio.sleep(10))
    asyncio.get_running_loop().call_later(0.05, inner.cancel)
    await inner
    return {"unreachable": True}


@importd.handler("nan_result")
async def nan_result(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Return a result JSON cannot hold."""
    await _record(job, ctx)
    return {"ratio": float("nan")}


@importd.handler("nul_result")
async def nul_result(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Return a string PostgreSQL text cannot hold."""
    await _record(job, ctx)
    return {"body": "a\u0000b"}


@importd.handler("nul_error")
async def nul_error(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Raise an error whose message holds a NUL byte (and is very long)."""
    await _record(job, ctx)
    raise importd.PermanentError("bad\x00byte " + "x" * 10_000)


@importd.handler("bad_progress")
async def bad_progress(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Report progress the job row cannot hold."""
    await _record(job, ctx)
    ctx.progress(done=job.payload.get("done", -1))
    return {"reported": True}


@importd.handler("ignore_cancel")
async def ignore_cancel(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Swallow the timeout's cancellation and go on for ``payload.seconds`` in all."""
    end = time.monotonic() + float(job.payload["seconds"])
    while (left := end - time.monotonic()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(left)
    return {"ignored": True}


@importd.handler("sync_sleep")
def sync_sleep(job: importd.Job, ctx: importd.JobContext) -> Any:
    """A plain ``def``: sleeps ``payload.seconds`` (on the first attempt only, with
    ``payload.first_only``) in whatever thread runs it."""
    _stamp(job, "start")
    if job.attempt == 1 or not job.payload.get("first_only"):
        time.sleep(float(job.payload.get("seconds", 0)))
    _stamp(job, "end")
    return {
        "thread": threading.current_thread().name,
        "main": threading.current_thread() is threading.main_thread(),
    }


@importd.handler("huge_number")
async def huge_number(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Return a number JSON can write but PostgreSQL's numeric cannot hold."""
    await _record(job, ctx)
    sys.set_int_max_str_digits(0)
    return {"n": 10**140_000}


@importd.handler("sys_exit")
async def sys_exit(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Call sys.exit(), as a script turned handler might."""
    await _record(job, ctx)
    sys.exit(3)
