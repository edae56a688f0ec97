"""Handlers used by the benchmarks (``--handlers bench.handlers``)."""

from __future__ import annotations

import time
from typing import Any

import importd


@importd.handler("stamp")
async def stamp(job: importd.Job, ctx: importd.JobContext) -> Any:
    """Return the wall-clock time at which the handler started."""
    return {"started": time.time()}
