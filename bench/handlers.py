"""Handlers used by the benchmarks (``--handlers bench.handlers``)."""

from __future__ import annotations

import time
from typing import Any

import importd


@importd.handler("stamp")
async def stamp(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Return the wall-clock time at which the handler started, and how long its task took
    to start after the worker handed the claimed job to the executor (ms)."""
    return {"started": time.time(), "task_ms": (time.monotonic() - ctx.started) * 1000}
