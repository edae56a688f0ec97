"""audit22: a daemon started before its transaction-mode pooler is up (boot order: the
service starts, pgbouncer a few seconds later). It keeps trying to connect, as it does
for a database that is down, and once the pooler answers it must still see it and turn
prepared statements off: the pooler check at start gave up at the first refusal and left
them on, so the pool's own set-up failed (``prepared statement "__asyncpg_stmt_6__"
does not exist``) and the daemon exited 5 as soon as the pooler came up."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import importd
from tests.helpers import Conn, PgServer, StartDaemon, wait_until
from tests.pgbouncer import PgBouncer


async def test_a_daemon_started_before_its_pooler_turns_prepared_statements_off(
    pg_server: PgServer, dsn: str, runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    await importd.enqueue_many(conn, [importd.NewJob("record", {}) for _ in range(200)])
    # A pooler of this test's own, with fewer server connections than the daemon has
    # clients, so that a named statement soon meets a server session that lacks it.
    bouncer = PgBouncer(pg_server.admin_dsn, pool_size=2)
    try:
        target = bouncer.dsn_for(dsn.rpartition("/")[2])
        proc = daemons("--no-listen", "--poll-interval", "1", "--concurrency", "8", target=target)
        await proc.wait_for_event("db_retry", timeout=20)  # refused: nothing listens yet
        await asyncio.to_thread(bouncer.start)

        async def done() -> Any:
            n = await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'completed'")
            if proc.proc.poll() is not None:
                raise AssertionError(f"importd exited {proc.proc.returncode}:\n{proc.text()}")
            return n == 200

        await wait_until(done, timeout=60, what="every job through the pooler")
        assert proc.saw("pooler_detected")
        runs = Counter(r["job_id"] for r in await conn.fetch("SELECT job_id FROM test_runs"))
        assert len(runs) == 200 and set(runs.values()) == {1}
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    finally:
        bouncer.stop()
