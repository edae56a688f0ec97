"""Claims plan the same without statistics: on a table that was never analyzed (just
bulk-loaded) and on one whose statistics say nothing is pending, every statement a claim
runs reads an index in claim order; none reads and sorts the backlog.

The statements run inside the claim functions, so their plans are read with auto_explain
(nested statements, as notices). Rate-limited claims run the same functions inside the
rate limit's transaction.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

import importd
from importd import NewJob, sql
from tests.helpers import Conn

PENDING = 4000
TENANTS = 40


async def _load(conn: Any, stale: bool) -> None:
    if stale:
        # Statistics gathered while the table held only finished jobs.
        await conn.execute(
            "INSERT INTO import_jobs (kind, status, attempts, started_at, finished_at) "
            "SELECT 'noop', 'completed', 1, now(), now() FROM generate_series(1, 3000)"
        )
        await conn.execute("ANALYZE import_jobs")
    for start in range(0, PENDING, 1000):
        await importd.enqueue_many(
            conn,
            [
                NewJob("noop", {}, tenant_id=f"t{i % TENANTS}", queue="q1" if i % 3 else "q2")
                for i in range(start, start + 1000)
            ],
        )


async def _plans(conn: Any, query: str, *args: Any) -> list[str]:
    """The plans of every statement ``query`` runs, nested ones included; rolled back."""
    notices: list[str] = []

    def collect(_conn: Any, message: Any) -> None:
        notices.append(message.message)

    conn.add_log_listener(collect)
    try:
        async with conn.transaction():
            await conn.execute(
                "LOAD 'auto_explain'; SET LOCAL auto_explain.log_min_duration = 0; "
                "SET LOCAL auto_explain.log_nested_statements = on; "
                "SET LOCAL auto_explain.log_level = notice; "
                "SET LOCAL auto_explain.log_analyze = on; SET LOCAL auto_explain.log_timing = off; "
                "SET LOCAL auto_explain.log_buffers = on"
            )
            rows = await conn.fetch(query, *args)
            assert len(rows) == 16
            await conn.execute("SET LOCAL auto_explain.log_min_duration = -1")
            raise _Rollback
    except _Rollback:
        pass
    finally:
        conn.remove_log_listener(collect)
    plans = [n for n in notices if "import_jobs" in n and "plan:" in n]
    assert plans, "auto_explain reported no plan"
    return plans


class _Rollback(Exception):
    pass


def _check(plans: list[str]) -> None:
    for plan in plans:
        assert not re.search(r"(Seq Scan|Bitmap Heap Scan) on import_jobs", plan), plan
        # No statement reads the backlog: every scan stops after a few entries.
        for line in plan.splitlines():
            if re.search(r"Scan .*on import_jobs", line):
                rows = re.search(r"actual rows=(\d+) loops=(\d+)", line)
                assert rows is not None, line
                assert int(rows[1]) * int(rows[2]) <= 100, plan
        if "LockRows" in plan:  # a probe: the next jobs in claim order
            assert "Index Scan using import_jobs_" in plan, plan
            assert "Sort" not in plan.split("LockRows", 1)[1], plan


# A daemon always passes the kinds it has handlers for ($4 / $5); the others are the
# statements' variants with optional filters.
KINDS = ["noop", "csv"]
CLAIMS = {
    "plain": ("claim_jobs", (16, "w", None, KINDS, 30.0, None, None)),
    "plain, filtered": ("claim_jobs", (16, "w", ["q1", "q2"], None, 30.0, None, ["x"])),
    "fair": ("claim_fair", (16, "w", 30.0, None, KINDS, None, None, None, None, None)),
    "fair, one queue": ("claim_fair", (16, "w", 30.0, ["q1"], KINDS, None, None, None, None, None)),
    "fair, capped": ("claim_fair", (16, "w", 30.0, None, KINDS, None, None, 1, "q1", "t7")),
    "fair, filtered": (
        "claim_fair",
        (16, "w", 30.0, ["q1", "q2"], None, ["z"], None, 2, None, None),
    ),
}


@pytest.mark.parametrize("stale", [False, True], ids=["never-analyzed", "stale-statistics"])
async def test_claims_read_an_index_without_statistics(conn: Conn, stale: bool) -> None:
    await _load(conn, stale)
    for name, (query, args) in CLAIMS.items():
        plans = await _plans(conn, sql.query(query), *args)
        try:
            _check(plans)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


async def test_without_the_settings_the_same_statement_sorts_the_backlog(conn: Conn) -> None:
    # The control: the plain claim's statement outside its function, on the same
    # never-analyzed table, reads every pending row and sorts them. What the function's
    # settings prevent.
    await _load(conn, stale=False)
    statement = (
        "EXPLAIN SELECT id FROM import_jobs WHERE status = 'pending' AND run_at <= now() "
        "ORDER BY priority, run_at, id LIMIT 16 FOR UPDATE SKIP LOCKED"
    )
    plan = "\n".join(r[0] for r in await conn.fetch(statement))
    assert "Sort" in plan, plan


@pytest.mark.parametrize("stale", [False, True], ids=["never-analyzed", "stale-statistics"])
@pytest.mark.parametrize("queues", [None, ["q1"]], ids=["every-queue", "one-queue"])
async def test_a_fair_claim_with_one_tenant_at_work_runs_two_statements(
    conn: Conn, stale: bool, queues: list[str] | None
) -> None:
    # The common case: one (queue, tenant) pair holds every pending job, nothing to share.
    # Half of the backlog was claimed and finished first, so the index entries of those
    # jobs lie dead at the start of the pair's range, as during a drain.
    if stale:
        await conn.execute(
            "INSERT INTO import_jobs (kind, queue, status, attempts, started_at, finished_at) "
            "SELECT 'noop', 'q1', 'completed', 1, now(), now() FROM generate_series(1, 3000)"
        )
        await conn.execute("ANALYZE import_jobs")
    for _ in range(4):
        await importd.enqueue_many(conn, [NewJob("noop", {}, queue="q1") for _ in range(1000)])
    claimed = await conn.fetch(sql.query("claim_jobs"), 2000, "w", None, KINDS, 30.0, None, None)
    await conn.execute(
        "UPDATE import_jobs SET status = 'completed', finished_at = now(), locked_by = NULL, "
        "locked_until = NULL WHERE id = ANY ($1::bigint[])",
        [r["id"] for r in claimed],
    )
    args = (16, "w", 30.0, queues, KINDS, None, None, None, "q1", "")
    plans = await _plans(conn, sql.query("claim_fair"), *args)
    nested = [p for p in plans if "public.import_jobs" in p]
    # the probe for a second pair, and the claim: not the walk's five
    assert len(nested) == 2, nested
    _check(plans)
    # the probe reads a few index pages from the live end, never the 2,000 dead entries
    # (about ten pages of import_jobs_fair_idx)
    probe = nested[0]
    assert "Index Scan Backward using import_jobs_fair_idx" in probe, probe
    pages = [int(n) for n in re.findall(r"shared hit=(\d+)", probe)]
    assert pages and max(pages) <= 8, probe


async def _explain(conn: Any, query: str, *args: Any) -> str:
    """``EXPLAIN ANALYZE`` of ``query``, rolled back."""
    plan = ""
    try:
        async with conn.transaction():
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN ANALYZE {query}", *args))
            raise _Rollback
    except _Rollback:
        pass
    return plan


async def test_result_writes_read_their_own_rows_without_statistics(conn: Conn) -> None:
    # A drain's writes on a never-analyzed table: 1,600 jobs leased and completed first
    # leave their entries in import_jobs_rescue_idx (a partial index on running jobs)
    # until a vacuum. A write (and the heartbeat's renewal) must read its own rows by key,
    # not all those entries.
    await importd.enqueue_many(conn, [NewJob("noop", {}) for _ in range(3000)])
    claim = sql.query("claim_jobs")
    for _ in range(100):
        rows = await conn.fetch(claim, 16, "w", None, KINDS, 30.0, None, None)
        await conn.fetch(
            sql.query("finish_completed"),
            "w",
            [r["id"] for r in rows],
            [r["attempts"] for r in rows],
            [None] * 16,
        )
    rows = await conn.fetch(claim, 16, "w", None, KINDS, 30.0, None, None)
    ids, attempts = [r["id"] for r in rows], [r["attempts"] for r in rows]
    writes = {
        "finish_completed": ("w", ids, attempts, [None] * 16),
        "finish_jobs": (
            "w",
            ids,
            attempts,
            ["completed"] * 16,
            [None] * 16,
            [None] * 16,
            [0.0] * 16,
            [0] * 16,
            *([[None] * 16] * 4),
        ),
        # the lease keeper's renewal of every running job, once a second
        "heartbeat_jobs": ("w", ids, attempts, [30.0] * 16, *([[None] * 16] * 4)),
    }
    for name, args in writes.items():
        plan = await _explain(conn, sql.query(name), *args)
        # Every one of the 16 rows passed the fence and was written.
        assert re.search(r"Update on import_jobs .*actual time=\S+ rows=16 ", plan), plan
        for line in plan.splitlines():
            if re.search(r"Scan .*on import_jobs", line):
                found = re.search(r"actual time=\S+ rows=(\d+) loops=(\d+)", line)
                assert found is not None, line
                assert int(found[1]) * int(found[2]) <= 100, f"{name}:\n{plan}"
