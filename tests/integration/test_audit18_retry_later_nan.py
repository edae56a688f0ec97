"""audit18: ``RetryLater(message, delay=nan)`` (a delay computed from a bad header) must
retry with the backoff, not fail the job for good at once as ``OutcomeRefused: …
interval out of range``."""

from __future__ import annotations

from typing import Any

import importd
from tests.helpers import Conn, Drain


@importd.handler("audit18_retry_nan")
async def retry_nan(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise importd.RetryLater("try again later", float("nan"))


async def test_a_nan_retry_delay_retries_with_the_backoff(conn: Conn, drain: Drain) -> None:
    job = await importd.enqueue(conn, "audit18_retry_nan", {}, max_attempts=3)
    assert await drain(handlers=(__name__,)) == 11  # left pending for a later retry
    row = await conn.fetchrow(
        "SELECT status, attempts, last_error FROM import_jobs WHERE id = $1", job
    )
    assert (row["status"], row["attempts"]) == ("pending", 1), dict(row)
    assert row["last_error"] == "RetryLater: try again later"
