"""audit18: a handler that raises KeyboardInterrupt (an ``async def`` on the loop, or a
plain ``def`` in its thread) must fail its attempt like any other error, with a clear
``last_error``; the daemon goes on serving and stops with exit 0 at SIGTERM. (It used to
end the process on the loop, logging ``interrupted_during_startup``, exit 1, the job left
``running``; from a thread it wedged the daemon, its other jobs stuck ``running``.)"""

from __future__ import annotations

import signal
from typing import Any

import pytest

import importd
from tests.helpers import Conn, StartDaemon, wait_until


@importd.handler("audit18_interrupt")
async def interrupt(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise KeyboardInterrupt


@importd.handler("audit18_sync_interrupt")
def sync_interrupt(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["audit18_interrupt", "audit18_sync_interrupt"])
async def test_keyboard_interrupt_in_a_handler_fails_the_attempt(
    conn: Conn, daemons: StartDaemon, kind: str
) -> None:
    proc = daemons("--handlers", __name__, "--backoff-base", "0.05", "--backoff-max", "0.2")
    await proc.wait_for_event("daemon_ready")
    job = await importd.enqueue(conn, kind, {}, max_attempts=2)

    async def ended() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT status IN ('failed', 'completed') FROM import_jobs WHERE id = $1", job
            )
        )

    await wait_until(ended, timeout=20, what="the job to end")
    row = await conn.fetchrow(
        "SELECT status, attempts, last_error FROM import_jobs WHERE id = $1", job
    )
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "KeyboardInterrupt" in row["last_error"]
    assert proc.proc.poll() is None, "the daemon must go on"
    after = await importd.enqueue(conn, "noop", {})

    async def completed() -> bool:
        return bool(
            await conn.fetchval("SELECT status = 'completed' FROM import_jobs WHERE id = $1", after)
        )

    await wait_until(completed, timeout=20, what="a later job to complete")
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit(30) == 0
