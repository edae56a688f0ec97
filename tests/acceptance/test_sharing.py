"""Fair sharing: queues with slots of their own, tenant-fair claims and the per-tenant
cap, rate limits shared by daemons, wake-up storms. Real processes, real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

import importd
from importd import db
from tests.helpers import Conn, StartDaemon, count_jobs, wait_until

FAST = ("--poll-interval", "60", "--rescue-interval", "0.5", "--heartbeat-interval", "0.2")


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    from tests.helpers import run_importd  # noqa: PLC0415

    done = run_importd(
        "run", "--dsn", "postgresql://x@127.0.0.1:1/x", "--rate-limit", "webhooks=lots"
    )
    assert done.returncode == 3
    assert "--rate-limit:" in done.stderr and "not a rate limit" in done.stderr
    done = run_importd(
        "run", "--dsn", "postgresql://x@127.0.0.1:1/x", "--queue", "a=1", "--queue", "a=2"
    )
    assert done.returncode == 3 and "named twice" in done.stderr


# -- real daemons ---------------------------------------------------------------------------


@pytest.mark.timing
@pytest.mark.parametrize("fair", [True, False], ids=["fair", "fifo"])
async def test_small_tenants_are_not_stuck_behind_a_big_one(
    runs_table: Conn, daemons: StartDaemon, fair: bool
) -> None:
    conn = runs_table
    fairness = () if fair else ("--no-fair",)
    procs = [daemons("--concurrency", "4", *FAST, *fairness) for _ in range(2)]
    for proc in procs:
        await proc.wait_for_event("daemon_ready")
    await importd.enqueue_many(
        conn, [importd.NewJob("sleep", {"seconds": 0.05}, tenant_id="A") for _ in range(400)]
    )
    await wait_until(lambda: count_jobs(conn, "status <> 'pending'"), what="A under way")
    async with conn.transaction():
        await importd.enqueue_many(
            conn,
            [
                importd.NewJob("sleep", {"seconds": 0.05}, tenant_id=t)
                for t in ("B", "C")
                for _ in range(10)
            ],
        )
        since = await conn.fetchval("SELECT now()")
    small_done = "tenant_id IN ('B', 'C') AND status = 'completed'"
    await wait_until(lambda: _eq(conn, small_done, 20), timeout=120, what="B and C done")
    a_meanwhile = await conn.fetchval(
        "SELECT count(*) FROM test_runs r JOIN import_jobs j ON j.id = r.job_id "
        "WHERE j.tenant_id = 'A' AND r.started_at > $1 AND r.started_at < "
        "(SELECT max(r2.started_at) FROM test_runs r2 JOIN import_jobs j2 ON j2.id = r2.job_id"
        " WHERE j2.tenant_id IN ('B', 'C'))",
        since,
    )
    if fair:
        assert a_meanwhile < 40, a_meanwhile
    else:
        assert a_meanwhile > 300, a_meanwhile  # FIFO: B and C wait for nearly all of A
    for proc in procs:
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in procs] == [0, 0]


async def _eq(conn: Conn, where: str, n: int) -> bool:
    return await count_jobs(conn, where) == n


@pytest.mark.timing
async def test_tenant_cap_holds_across_three_daemons(conn: Conn, daemons: StartDaemon) -> None:
    procs = [daemons("--concurrency", "4", "--tenant-concurrency", "2", *FAST) for _ in range(3)]
    for proc in procs:
        await proc.wait_for_event("daemon_ready")
    await importd.enqueue_many(
        conn,
        [
            importd.NewJob("sleep", {"seconds": 0.1}, tenant_id=t)
            for _ in range(15)
            for t in ("A", "B", "C", "D")
        ],
    )
    peaks: dict[str, int] = {}
    peak_total = 0

    async def done_watching_peaks() -> bool:
        nonlocal peak_total
        rows = await conn.fetch(
            "SELECT tenant_id, count(*) AS n FROM import_jobs "
            "WHERE status = 'running' GROUP BY tenant_id"
        )
        for r in rows:
            peaks[r["tenant_id"]] = max(peaks.get(r["tenant_id"], 0), r["n"])
        peak_total = max(peak_total, sum(r["n"] for r in rows))
        return not await count_jobs(conn, "status IN ('pending', 'running')")

    await wait_until(done_watching_peaks, timeout=60, interval=0.01, what="every job done")
    assert await count_jobs(conn, "status = 'completed'") == 60
    assert max(peaks.values()) == 2, peaks  # the cap binds, and holds
    assert peak_total > 4  # several tenants ran side by side, on several daemons
    for proc in procs:
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in procs] == [0, 0, 0]


@pytest.mark.timing
async def test_rate_limit_holds_across_three_daemons(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    procs = [
        daemons("--concurrency", "8", "--rate-limit", "webhooks=20/s", *FAST) for _ in range(3)
    ]
    for proc in procs:
        await proc.wait_for_event("daemon_ready")
    await importd.enqueue_many(
        conn, [importd.NewJob("record", {}, queue="webhooks") for _ in range(100)]
    )
    await wait_until(
        lambda: _eq(conn, "status = 'completed'", 100), timeout=60, what="100 completions"
    )
    starts = [
        r["t"]
        for r in await conn.fetch(
            "SELECT extract(epoch FROM started_at)::float8 AS t FROM test_runs ORDER BY 1"
        )
    ]
    assert len(starts) == 100
    span = starts[-1] - starts[0]
    # 100 starts at 20/s: the first at 0, the last at 4.95 (4.9 with the burst's one),
    # as the tokens are granted; the handlers start a commit and a task's start after
    # their token, which on a loaded machine differs from job to job by tens of ms (CI
    # once saw 4.886 s). A limit 5 % too loose would make it 4.7 s.
    assert span >= 4.8
    assert span < 6.0  # and no job waited much longer than the limit requires
    # the README's tolerance: at most rate x W + burst starts in any window of W seconds
    worst = max(sum(1 for t in starts[i : i + 30] if t - s < 1.0) for i, s in enumerate(starts))
    assert worst <= 21, worst
    assert await conn.fetchval("SELECT count(DISTINCT worker) FROM test_runs") >= 2
    for proc in procs:
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in procs] == [0, 0, 0]


async def test_a_full_queue_does_not_delay_another(conn: Conn, daemons: StartDaemon) -> None:
    proc = daemons("--queue", "imports=2", "--queue", "webhooks=1", *FAST)
    await proc.wait_for_event("daemon_ready")
    await importd.enqueue_many(
        conn, [importd.NewJob("sleep", {"seconds": 30}, queue="imports") for _ in range(6)]
    )
    await wait_until(
        lambda: _eq(conn, "queue = 'imports' AND status = 'running'", 2), what="imports full"
    )
    began = time.monotonic()
    await importd.enqueue(conn, "noop", {}, queue="webhooks")
    await wait_until(
        lambda: _eq(conn, "queue = 'webhooks' AND status = 'completed'", 1),
        timeout=10,
        what="the webhook",
    )
    assert time.monotonic() - began < 2
    # and imports never took more than its own two slots
    assert await count_jobs(conn, "queue = 'imports' AND status = 'running'") == 2
    proc.signal(signal.SIGTERM)
    await proc.wait_for_event("shutdown_requested")
    proc.signal(signal.SIGTERM)  # skip the grace: the sleeps go back to pending
    assert await proc.wait_exit() == 0
    assert await count_jobs(conn, "status = 'pending'") == 6


async def test_a_burst_of_single_row_transactions(
    conn: Conn, dsn: str, daemons: StartDaemon
) -> None:
    procs = [daemons("--concurrency", "8", *FAST) for _ in range(2)]
    for proc in procs:
        await proc.wait_for_event("daemon_ready")

    async def producer(n: int) -> None:
        c = await db.connect(dsn)
        try:
            for _ in range(n):
                await c.execute("INSERT INTO import_jobs (kind, payload) VALUES ('noop', '{}')")
        finally:
            await c.close()

    await asyncio.gather(*(producer(2500) for _ in range(4)))
    await wait_until(
        lambda: _eq(conn, "status = 'completed'", 10_000), timeout=120, what="10,000 completions"
    )
    for proc in procs:
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in procs] == [0, 0]
    stopped = [next(e for e in p.events() if e.get("event") == "daemon_stopped") for p in procs]
    claims = sum(e["claim_statements"] for e in stopped)
    notes = sum(e["notifications"] for e in stopped)
    # Each daemon hears of every job: a claim per notification would be 20,000 claims.
    assert notes == 20_000
    # The README's bound: at most one claim statement per job over all daemons (a daemon
    # claiming once per notification would make one per job per daemon).
    assert claims <= 10_000, claims
    assert sum(e["completed"] for e in stopped) == 10_000


async def test_the_notify_switch_silences_the_trigger_and_doctor_says_so(
    conn: Conn, dsn: str
) -> None:
    from tests.helpers import Notifications, run_importd  # noqa: PLC0415

    heard = await Notifications().start(dsn)
    try:
        await importd.enqueue(conn, "noop", {}, queue="loud")
        await conn.execute("SET importd.notify = off")
        await importd.enqueue(conn, "noop", {}, queue="quiet")
        await conn.execute("RESET importd.notify")
        assert await heard.settle() == ["loud"]
    finally:
        await heard.close()
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'ALTER DATABASE "{database}" SET importd.notify = off')
    done = run_importd("doctor", "--dsn", dsn)
    line = next(x for x in done.stdout.splitlines() if x.split()[1] == "trigger")
    assert line.startswith("WARNING") and "importd.notify is off" in line
    await conn.execute(f'ALTER DATABASE "{database}" RESET importd.notify')


async def test_drain_with_queue_slots_shares_max_jobs(conn: Conn, dsn: str) -> None:
    from tests.helpers import run_importd  # noqa: PLC0415

    await importd.enqueue_many(
        conn, [importd.NewJob("noop", {}, queue=q) for q in ("a", "b", "c") for _ in range(5)]
    )
    done = await asyncio.to_thread(
        run_importd, "drain", "--dsn", dsn, "--queue", "a=2", "--queue", "b=3", "--max-jobs", "7"
    )
    assert done.returncode == 0, done.stderr
    assert await count_jobs(conn, "status = 'completed'") == 7
    assert await count_jobs(conn, "queue = 'c' AND status = 'pending'") == 5
