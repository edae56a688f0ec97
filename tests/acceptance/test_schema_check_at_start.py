"""The schema check at start-up rides out a broken connection: a daemon whose check of
the applied migrations loses its backend (the server restarting, a backend terminated)
tries again within its start-up budget, as for the connections themselves, instead of
crashing (``daemon_crashed``, exit 1)."""

from __future__ import annotations

import signal

import importd
from importd import db
from tests.helpers import Conn, StartDaemon, wait_until


async def test_the_schema_check_rides_out_a_broken_connection(
    dsn: str, conn: Conn, daemons: StartDaemon
) -> None:
    locker = await db.connect(dsn)
    try:
        async with locker.transaction():
            # The check reads importd_migrations: held, it waits on the lock.
            await locker.execute("LOCK TABLE importd_migrations IN ACCESS EXCLUSIVE MODE")
            proc = daemons("--heartbeat-interval", "0.2")

            async def waiting() -> list[int]:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = "
                    "'importd-engine' AND wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                return [r["pid"] for r in rows]

            pids = await wait_until(waiting, timeout=20, what="the schema check on the lock")
            await conn.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS p", pids)
    finally:
        await locker.close()
    await proc.wait_for_event("daemon_ready", timeout=30)
    job = await importd.enqueue(conn, "noop", {})

    async def done() -> bool:
        status = await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", job)
        return bool(status == "completed")

    await wait_until(done, timeout=20, what="the job to complete")
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
    assert not proc.saw("daemon_crashed") and not proc.saw("service_crashed")
    assert proc.saw("db_retry", operation="verify_schema")
