"""The operators' commands against a real database (and a real daemon where it matters)."""

from __future__ import annotations

import importd
from importd import ops, sql
from tests.helpers import Conn, wait_until


async def test_status_queries_use_the_indexes_on_a_big_history(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (kind, status, finished_at, created_at) "
        "SELECT 'csv', 'completed', now() - (i || ' minutes')::interval, now() "
        "FROM generate_series(1, 200000) AS i"
    )
    await importd.enqueue_many(conn, [importd.NewJob("csv", {}) for _ in range(10)])
    # The insert's statistics reach the shared counters a moment later; an ANALYZE before
    # them would be added to by them (an estimate of twice the rows).
    await wait_until(
        lambda: conn.fetchval(
            "SELECT n_live_tup >= 200000 FROM pg_stat_all_tables "
            "WHERE relid = 'import_jobs'::regclass"
        ),
        what="the insert's statistics",
    )
    await conn.execute("ANALYZE import_jobs")
    for name in ("status_counts", "status_summary", "status_running", "status_sharing"):
        text = sql.query(name)
        params = [20] if "$1" in text else []
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + text, *params))
        assert "Seq Scan on import_jobs" not in plan, (name, plan)
    # Too big to count on every status: an estimate, and said to be one.
    text = await ops.status(conn)
    assert "jobs in table: about 200,0" in text, text
