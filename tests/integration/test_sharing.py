"""Fair sharing, the claim itself on a real PostgreSQL: tenant-fair claim order, the
per-tenant cap, rate-limited claims, a kind's limit in a drain. Daemons sharing these
(real processes, wake-up storms) are in tests/acceptance/test_sharing.py."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import importd
from importd import db
from importd.lanes import Lane, RateLimit, plan_lanes
from importd.models import Job
from importd.repository import Repository
from tests.helpers import Conn, Drain, count_jobs

# -- the claim itself ---------------------------------------------------------------------


async def walk(repo: Repository, lane: Lane, limit: int, **options: Any) -> list[Job]:
    """A fair claim of ``lane`` that moves the lane's cursor on, as a worker does."""
    jobs, _ = await repo.claim_lane(lane, limit, "w", lease_margin=1, fair=True, **options)
    if jobs:
        lane.walked_to(jobs[-1].queue, jobs[-1].tenant_id)
    return jobs


async def test_fair_claim_order_round_robin_within_priority(conn: Conn, dsn: str) -> None:
    """One job per claim: the order a single free slot sees."""
    jobs = [importd.NewJob("noop", {"n": i}, tenant_id="A") for i in range(6)]
    jobs += [importd.NewJob("noop", {"n": i}, tenant_id="B") for i in range(2)]
    jobs += [importd.NewJob("noop", {"n": i}, tenant_id="C") for i in range(2)]
    jobs += [importd.NewJob("noop", {"n": 0})]  # no tenant: a tenant of its own
    jobs += [importd.NewJob("noop", {"n": 0}, tenant_id="Z", priority=-1)]  # urgent
    await importd.enqueue_many(conn, jobs)
    pool = await db.create_pool(dsn, max_size=2)
    try:
        repo = Repository(pool)
        lane = Lane(None, None)
        order = []
        for _ in range(12):
            (job,) = await walk(repo, lane, 1)
            order.append((job.tenant_id or "-", job.payload["n"]))
        assert await walk(repo, lane, 1) == []
        # strict priority first; then round-robin by tenant, oldest first within each
        # (the walk goes in tenant order from where the last claim stopped, at Z)
        assert order == [
            ("Z", 0),
            ("-", 0),
            ("A", 0),
            ("B", 0),
            ("C", 0),
            ("A", 1),
            ("B", 1),
            ("C", 1),
            ("A", 2),
            ("A", 3),
            ("A", 4),
            ("A", 5),
        ]
        # with fairness off, the same table drains in global FIFO order
        await conn.execute(
            "UPDATE import_jobs SET status = 'pending', attempts = 0, "
            "locked_by = NULL, locked_until = NULL"
        )
        fifo = [
            j.tenant_id or "-"
            for j in await repo.claim(12, "w", queues=None, kinds=None, lease_margin=1)
        ]
        assert fifo[:7] == ["Z", "A", "A", "A", "A", "A", "A"]
    finally:
        await pool.close()


async def test_fair_claim_shares_a_big_claim_evenly(conn: Conn, dsn: str) -> None:
    await importd.enqueue_many(
        conn, [importd.NewJob("noop", {}, tenant_id=t) for t in "AAAAAAAAAABBBBC"]
    )
    pool = await db.create_pool(dsn, max_size=2)
    try:
        jobs, _ = await Repository(pool).claim_lane(
            Lane(None, None), 9, "w", lease_margin=1, fair=True
        )
        tenants = sorted(str(j.tenant_id) for j in jobs)
        assert tenants == ["A", "A", "A", "A", "B", "B", "B", "B", "C"]
        # with a cap of 2 the same claim takes 2 + 2 + 1 and leaves the rest pending
        await conn.execute(
            "UPDATE import_jobs SET status = 'pending', attempts = 0, "
            "locked_by = NULL, locked_until = NULL"
        )
        jobs, _ = await Repository(pool).claim_lane(
            Lane(None, None), 9, "w", lease_margin=1, fair=True, tenant_cap=2
        )
        assert sorted(str(j.tenant_id) for j in jobs) == ["A", "A", "B", "B", "C"]
    finally:
        await pool.close()


# (tenant, queue, what its jobs are: "" a mix, "later" all scheduled, "other" all of a
# kind the claim does not serve)
ONE_PAIR_SCENARIOS: dict[str, list[tuple[str | None, str, str]]] = {
    # every pending job in one (queue, tenant) pair: the claim takes its one-pair path
    "no tenant": [(None, "default", "")],
    "one tenant": [("T", "default", "")],
    # a second pair with only scheduled jobs, or only jobs of a kind not served: the walk
    "and a scheduled tenant": [("T", "default", ""), ("U", "default", "later")],
    "and another kind's tenant": [(None, "default", ""), ("U", "default", "other")],
    "and another queue": [("T", "default", ""), (None, "elsewhere", "")],
}


@pytest.mark.parametrize("scenario", list(ONE_PAIR_SCENARIOS))
async def test_fair_claim_with_one_pair_at_work_claims_what_the_walk_claims(
    conn: Conn, dsn: str, scenario: str
) -> None:
    """The fair claim's one-pair path (0007) against the walk it short-cuts: the same jobs
    in the same order, claim after claim, over priorities, scheduled jobs and kinds the
    daemon does not serve. The walk is forced by excluding a kind no job has."""
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    jobs = []
    for tenant, queue, what in ONE_PAIR_SCENARIOS[scenario]:
        for i in range(40):
            kind = "other" if what == "other" or i % 7 == 3 else "noop"
            # due at different moments, the later-enqueued ones earlier
            run_at = later if what == "later" or i % 5 == 1 else now - timedelta(seconds=i)
            priority = (0, 5, -1)[i % 3]
            jobs.append(
                importd.NewJob(
                    kind, {"n": i}, tenant_id=tenant, queue=queue, priority=priority, run_at=run_at
                )
            )
    await importd.enqueue_many(conn, jobs)
    pool = await db.create_pool(dsn, max_size=2)
    try:
        repo = Repository(pool)
        orders: list[list[list[int]]] = []
        for skip in (None, ("absent",)):
            await conn.execute(
                "UPDATE import_jobs SET status = 'pending', attempts = 0, "
                "locked_by = NULL, locked_until = NULL"
            )
            lane = Lane(None, ("noop", "csv"), skip_kinds=skip)
            order: list[list[int]] = []
            for size in (1, 2, 16, 3, 16, 16, 16):
                got = await walk(repo, lane, size)
                order.append([j.id for j in got])
            orders.append(order)
        fast, walked = orders
        assert fast == walked
        claimed = sum(len(c) for c in fast)
        runnable = await count_jobs(conn, "kind = 'noop' AND run_at <= now()")
        assert claimed == runnable > 0
    finally:
        await pool.close()


async def test_fair_claim_with_two_tenants_at_work_still_takes_turns(conn: Conn, dsn: str) -> None:
    # The kinds given, as a daemon gives them: the claim checks for a second pair and walks.
    await importd.enqueue_many(
        conn, [importd.NewJob("noop", {}, tenant_id=t) for t in "AAAAB" + "B"]
    )
    pool = await db.create_pool(dsn, max_size=2)
    try:
        repo, lane = Repository(pool), Lane(None, ("noop",))
        order: list[str | None] = []
        for _ in range(4):
            (job,) = await walk(repo, lane, 1)
            order.append(job.tenant_id)
        assert order == ["A", "B", "A", "B"]
    finally:
        await pool.close()


@pytest.mark.timing
async def test_rate_limited_claim_takes_what_the_limit_allows_and_says_when(
    conn: Conn, dsn: str
) -> None:
    await importd.enqueue_many(conn, [importd.NewJob("noop", {}, queue="hooks") for _ in range(10)])
    pool = await db.create_pool(dsn, max_size=2)
    try:
        repo = Repository(pool)
        rate = RateLimit.parse("hooks=4/s:2")
        await repo.ensure_rate_limits([rate.key])
        (lane,) = plan_lanes(["hooks"], None, [rate])
        jobs, wait = await repo.claim_lane(lane, 8, "w", lease_margin=1)
        assert len(jobs) == 2  # the burst
        # then one every 1/4 s; a start may come half an interval early (see rate_take.sql)
        assert wait == pytest.approx(0.125, abs=0.04)
        jobs, wait = await repo.claim_lane(lane, 8, "w", lease_margin=1)
        assert jobs == [] and wait is not None and 0 < wait <= 0.25
        await asyncio.sleep(wait)  # the behaviour under test: the limit says how long to wait
        jobs, _ = await repo.claim_lane(lane, 8, "w", lease_margin=1)
        assert len(jobs) == 1
        # what is not claimed is not spent: an idle limit is full again after 2/4 s (the
        # time passing is the behaviour under test)
        await asyncio.sleep(0.55)
        jobs, wait = await repo.claim_lane(lane, 8, "w", lease_margin=1)
        assert len(jobs) == 2
        assert await count_jobs(conn, "status = 'pending'") == 5  # held back, not parked
    finally:
        await pool.close()


@pytest.mark.timing
async def test_a_kind_limit_holds_back_only_its_kind(runs_table: Conn, drain: Drain) -> None:
    conn = runs_table
    await importd.enqueue_many(
        conn,
        [importd.NewJob("record", {}) for _ in range(6)]
        + [importd.NewJob("sleep", {"seconds": 0}) for _ in range(30)],
    )
    began = time.monotonic()
    assert await drain(rate_limits=("kind:record=5/s",), concurrency=4) == 0
    # 6 starts at 5/s: at 0, then (each allowed half an interval early) 0.1, 0.3 ... 0.9 s
    assert time.monotonic() - began >= 0.85
    starts = await conn.fetch(
        "SELECT j.kind, extract(epoch FROM r.started_at)::float8 AS t FROM test_runs r "
        "JOIN import_jobs j ON j.id = r.job_id ORDER BY r.started_at"
    )
    records = [r["t"] for r in starts if r["kind"] == "record"]
    sleeps = [r["t"] for r in starts if r["kind"] == "sleep"]
    assert len(records) == 6 and len(sleeps) == 30
    assert records[-1] - records[0] >= 0.85
    # the other kind was not queued behind the limited one
    assert max(sleeps) < records[-1]
