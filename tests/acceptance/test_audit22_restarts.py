"""audit22: a daemon's connections when the database restarts or their backends are
terminated: no job lost or run twice, the daemon keeps running, and its log stays JSON
(one object a line: asyncpg's own warnings must not reach stderr as plain text)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator

import pytest

import importd
from importd import db, migrate
from importd.cluster import Cluster, ClusterError
from tests.helpers import Conn, DaemonProcess, StartDaemon, wait_until

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


@pytest.fixture
async def own_cluster() -> AsyncIterator[Cluster]:
    """A throwaway PostgreSQL of this test's own, migrated, with ``test_runs``: one it
    may stop and start whatever server the rest of the suite uses (IMPORTD_TEST_DSN
    included). No server binaries: the test fails, it is not skipped."""
    cluster = Cluster(settings={"fsync": "off", "max_connections": "50"})
    try:
        cluster.init().start()
    except ClusterError as exc:
        cluster.destroy()
        pytest.fail(f"could not start a throwaway PostgreSQL: {exc}\n{cluster.log_tail()}")
    try:
        conn = await db.connect(cluster.dsn)
        try:
            await migrate.apply(conn)
            await conn.execute(
                "CREATE TABLE test_runs (job_id bigint, attempt int, worker text, "
                "started_at timestamptz, ended_at timestamptz)"
            )
        finally:
            await conn.close()
        yield cluster
    finally:
        cluster.destroy()


async def test_a_restart_of_the_database_leaves_the_log_json(
    own_cluster: Cluster, daemons: StartDaemon
) -> None:
    """The engine pool's connections die with the server; while it is down nothing but
    importd's own JSON lines may be written (asyncpg 0.32 keeps a pool's ``min_size``
    as a floor, reconnecting in the background and logging each failed try, with its
    traceback, through the standard library's logging: plain text on stderr)."""
    cluster, dsn = own_cluster, own_cluster.dsn
    conn = await db.connect(dsn)
    await importd.enqueue_many(conn, [importd.NewJob("record", {}) for _ in range(100)])
    proc = daemons("--concurrency", "4", "--probe-interval", "0.5", *FAST, target=dsn)
    await wait_until(lambda: completed(conn, 100), timeout=30, what="the first 100 jobs")
    await conn.close()
    await asyncio.to_thread(cluster.stop, "fast")
    # Down until the daemon has met the outage twice (a claim each second): long enough
    # for the pool's reconnection attempts, if any ran in the background, to fail too.
    await proc.wait_for_event("claim_failed", count=2, timeout=30)
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
