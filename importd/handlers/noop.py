"""The ``noop`` handler: does nothing (optionally sleeps); for smoke tests and benchmarks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..models import InvalidPayload

if TYPE_CHECKING:
    from ..context import JobContext
    from ..models import Job


async def noop(job: Job, ctx: JobContext) -> Any:
    """Return at once, or after ``payload.sleep`` seconds."""
    sleep = job.payload.get("sleep")
    if sleep is not None:
        if not isinstance(sleep, int | float) or isinstance(sleep, bool) or sleep < 0:
            raise InvalidPayload("payload.sleep must be a number of seconds ≥ 0")
        await asyncio.sleep(sleep)
    return None
