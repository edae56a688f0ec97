"""audit22: a daemon's connections when the database restarts or their backends are
terminated: no job lost or run twice, the daemon keeps running, and its log stays JSON
(one object a line: asyncpg's own warnings must not reach stderr as plain text)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest

import importd
from importd import db
from tests.helpers import Conn, DaemonProcess, PgServer, StartDaemon, wait_until

FAST = ("--poll-interval", "1", "--rescue-interval", "0.5", "--heartbeat-interval", "0.2")


def not_json(proc: DaemonProcess) -> list[str]:
    """The lines of the daemon's log that are no JSON object."""
    return [e["line"] for e in proc.events() if e["event"] == "_raw"]


async def completed(conn: Conn, total: int) -> bool:
    n = await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'completed'")
    return bool(n == total)


async def runs_per_job(conn: Conn) -> Counter[int]:
    rows = await conn.fetch("SELECT job_id, count(*) AS n FROM test_runs GROUP BY job_id")
    return Counter({r["job_id"]: r["n"] for r in rows})


async def test_a_restart_of_the_database_leaves_the_log_json(
    pg_server: PgServer, dsn: str, runs_table: Conn, daemons: StartDaemon
) -> None:
    """The engine pool's connections die with the server; while it is down nothing but
    importd's own JSON lines may be written (asyncpg 0.32 keeps a pool's ``min_size``
    as a floor, reconnecting in the background and logging each failed try, with its
    traceback, through the standard library's logging: plain text on stderr)."""
    if pg_server.cluster is None:
        pytest.skip(f"the server ({pg_server.how}) is not the suite's to stop and start")
    conn = runs_table
    await importd.enqueue_many(conn, [importd.NewJob("record", {}) for _ in range(100)])
    proc = daemons("--concurrency", "4", "--probe-interval", "0.5", *FAST)
    await wait_until(lambda: completed(conn, 100), timeout=30, what="the first 100 jobs")
    await conn.close()
    cluster = pg_server.cluster
    await asyncio.to_thread(cluster.stop, "fast")
    await asyncio.sleep(4)  # long enough for a few reconnection attempts to fail
    await asyncio.to_thread(cluster.start)
    conn = await db.connect(dsn)
    try:
        await importd.enqueue_many(conn, [importd.NewJob("record", {}) for _ in range(100)])
        await wait_until(lambda: completed(conn, 200), timeout=60, what="every job")
        runs = await runs_per_job(conn)
        assert len(runs) == 200 and set(runs.values()) == {1}
    finally:
        await conn.close()
    assert proc.proc.poll() is None, "the daemon must ride out the restart"
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
    assert not_json(proc) == []
