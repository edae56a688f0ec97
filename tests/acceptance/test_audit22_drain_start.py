"""audit22: ``importd drain`` whose database connection breaks before its first claim
(the server restarts, an engine backend is terminated). Claims retry a transient error;
the drain's up-front rescue of jobs a dead daemon held, and its progress count, crashed
their services instead (``service_crashed`` twice, exit 1, nothing drained)."""

from __future__ import annotations

import asyncio
from collections import Counter

import importd
from importd import db
from tests.helpers import Conn, StartDaemon, wait_until


async def test_a_drain_rides_out_a_broken_connection_before_its_first_claim(
    dsn: str, runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    await importd.enqueue_many(conn, [importd.NewJob("record", {}) for _ in range(100)])
    # Hold import_jobs so that the drain's first statements on it (the rescue, the
    # progress count) wait on the lock, then terminate the backends that wait.
    locker = await db.connect(dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE import_jobs IN ACCESS EXCLUSIVE MODE")
            proc = daemons("--concurrency", "8", "--heartbeat-interval", "0.2", command="drain")

            async def waiting() -> list[int]:
                rows = await conn.fetch(
                    "SELECT pid, query FROM pg_stat_activity "
                    "WHERE application_name = 'importd-engine' AND wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                queries = " ".join(r["query"] for r in rows)
                # Both of them: the rescue and the progress count.
                if "lease expired" in queries and "pending jobs are due" in queries:
                    return [r["pid"] for r in rows]
                return []

            pids = await wait_until(waiting, timeout=20, what="the drain's statements to wait")
            for pid in pids:
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep(0.3)
    finally:
        await locker.close()
    assert await proc.wait_exit(60) == 0, proc.text()[-3000:]
    assert not proc.saw("service_crashed")
    assert proc.saw("rescue_failed")
    runs = Counter(r["job_id"] for r in await conn.fetch("SELECT job_id FROM test_runs"))
    assert len(runs) == 100 and set(runs.values()) == {1}
