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
from importd.lanes import Lane, QueueSlots, RateLimit, plan_lanes
from importd.repository import Repository

from .helpers import Conn, Drain, StartDaemon, wait_until

FAST = ("--poll-interval", "60", "--rescue-interval", "0.5", "--heartbeat-interval", "0.2")


async def count(conn: Conn, where: str = "TRUE") -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM import_jobs WHERE {where}"))


# -- the settings' grammar ----------------------------------------------------------------


def test_queue_and_rate_limit_specs_parse_or_say_why() -> None:
    assert QueueSlots.parse("imports=6") == QueueSlots("imports", 6)
    assert QueueSlots.parse("webhooks") == QueueSlots("webhooks", None)
    assert RateLimit.parse("webhooks=10/s") == RateLimit("queue", "webhooks", 10.0, 1)
    assert RateLimit.parse("kind:http=600/min:5") == RateLimit("kind", "http", 10.0, 5)
    assert RateLimit.parse("x=36/h").interval == pytest.approx(100.0)
    for bad in ("imports=0", "imp orts=2", "imports=two"):
        with pytest.raises(ValueError, match="queue"):
            QueueSlots.parse(bad)
    for bad in ("webhooks=10", "webhooks=0/s", "webhooks=10/fortnight", "=10/s"):
        with pytest.raises(ValueError):
            RateLimit.parse(bad)


def test_a_job_is_governed_by_its_queue_limit_else_its_kind_limit() -> None:
    limits = [RateLimit.parse("webhooks=10/s"), RateLimit.parse("kind:http=5/s")]
    main, queue_lane, kind_lane = plan_lanes(None, None, limits)
    assert (main.queues, main.skip_queues, main.skip_kinds) == (None, ("webhooks",), ("http",))
    assert (queue_lane.queues, queue_lane.kinds, queue_lane.rate) == (
        ("webhooks",),
        None,
        limits[0],
    )
    assert (kind_lane.kinds, kind_lane.skip_queues, kind_lane.rate) == (
        ("http",),
        ("webhooks",),
        limits[1],
    )
    # a worker serving only the limited queue has no main lane
    (only,) = plan_lanes(["webhooks"], None, limits)
    assert only.rate == limits[0] and only.queues == ("webhooks",)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    from .helpers import run_importd  # noqa: PLC0415

    done = run_importd(
        "run", "--dsn", "postgresql://x@127.0.0.1:1/x", "--rate-limit", "webhooks=lots"
    )
    assert done.returncode == 3
    assert "--rate-limit:" in done.stderr and "not a rate limit" in done.stderr
    done = run_importd(
        "run", "--dsn", "postgresql://x@127.0.0.1:1/x", "--queue", "a=1", "--queue", "a=2"
    )
    assert done.returncode == 3 and "named twice" in done.stderr


# -- the claim itself ---------------------------------------------------------------------


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
            (job,) = (await repo.claim_lane(lane, 1, "w", lease_margin=1, fair=True))[0]
            order.append((job.tenant_id or "-", job.payload["n"]))
        assert (await repo.claim_lane(lane, 1, "w", lease_margin=1, fair=True))[0] == []
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
        assert await count(conn, "status = 'pending'") == 5  # held back, not parked
    finally:
        await pool.close()


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
        conn, [importd.NewJob("sleep", {"seconds": 0.05}, tenant_id="A") for _ in range(1000)]
    )
    await wait_until(lambda: count(conn, "status <> 'pending'"), what="A under way")
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
        assert a_meanwhile > 500, a_meanwhile  # FIFO: B and C wait for nearly all of A
    for proc in procs:
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in procs] == [0, 0]


async def _eq(conn: Conn, where: str, n: int) -> bool:
    return await count(conn, where) == n


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
    while await count(conn, "status IN ('pending', 'running')"):
        rows = await conn.fetch(
            "SELECT tenant_id, count(*) AS n FROM import_jobs "
            "WHERE status = 'running' GROUP BY tenant_id"
        )
        for r in rows:
            peaks[r["tenant_id"]] = max(peaks.get(r["tenant_id"], 0), r["n"])
        peak_total = max(peak_total, sum(r["n"] for r in rows))
        await asyncio.sleep(0.01)
    assert await count(conn, "status = 'completed'") == 60
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
        daemons("--concurrency", "8", "--rate-limit", "webhooks=10/s", *FAST) for _ in range(3)
    ]
    for proc in procs:
        await proc.wait_for_event("daemon_ready")
    await importd.enqueue_many(
        conn, [importd.NewJob("record", {}, queue="webhooks") for _ in range(200)]
    )
    await wait_until(
        lambda: _eq(conn, "status = 'completed'", 200), timeout=60, what="200 completions"
    )
    starts = [
        r["t"]
        for r in await conn.fetch(
            "SELECT extract(epoch FROM started_at)::float8 AS t FROM test_runs ORDER BY 1"
        )
    ]
    assert len(starts) == 200
    span = starts[-1] - starts[0]
    assert span >= 19.0  # 200 starts at 10/s: the first at 0, the last at 19.9
    assert span < 21.0  # and no job waited much longer than the limit requires
    # the README's tolerance: at most rate x W + burst starts in any window of W seconds
    worst = max(sum(1 for t in starts[i : i + 20] if t - s < 1.0) for i, s in enumerate(starts))
    assert worst <= 11, worst
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
    assert await count(conn, "queue = 'imports' AND status = 'running'") == 2
    proc.signal(signal.SIGTERM)
    await proc.wait_for_event("shutdown_requested")
    proc.signal(signal.SIGTERM)  # skip the grace: the sleeps go back to pending
    assert await proc.wait_exit() == 0
    assert await count(conn, "status = 'pending'") == 6


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
    from .helpers import Notifications, run_importd  # noqa: PLC0415

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
    from .helpers import run_importd  # noqa: PLC0415

    await importd.enqueue_many(
        conn, [importd.NewJob("noop", {}, queue=q) for q in ("a", "b", "c") for _ in range(5)]
    )
    done = await asyncio.to_thread(
        run_importd, "drain", "--dsn", dsn, "--queue", "a=2", "--queue", "b=3", "--max-jobs", "7"
    )
    assert done.returncode == 0, done.stderr
    assert await count(conn, "status = 'completed'") == 7
    assert await count(conn, "queue = 'c' AND status = 'pending'") == 5


def test_sharing_settings_from_the_config_file_and_environment(tmp_path: Path) -> None:
    from importd import config  # noqa: PLC0415

    path = tmp_path / "importd.toml"
    path.write_text(
        'queues = ["imports=6", "webhooks=2"]\nfair = false\n'
        'tenant_concurrency = 3\nrate_limits = ["webhooks=10/s", '
        '"kind:http=600/min:5"]\n'
    )
    settings = config.load({}, environ={}, config_path=path)
    assert settings.queue_slots == (QueueSlots("imports", 6), QueueSlots("webhooks", 2))
    assert settings.total_slots == 8 and settings.effective_pool_size == 18
    assert settings.fair is False and settings.tenant_concurrency == 3
    assert [r.key for r in settings.parsed_rate_limits] == ["queue:webhooks", "kind:http"]
    env = {"IMPORTD_QUEUES": "a,b=3", "IMPORTD_CONCURRENCY": "4", "IMPORTD_RATE_LIMITS": "a=1/s"}
    settings = config.load({}, environ=env, config_path=path)
    assert settings.queue_slots == (QueueSlots("a"), QueueSlots("b", 3))
    assert settings.total_slots == 7  # a takes --concurrency
    with pytest.raises(config.ConfigError, match="IMPORTD_TENANT_CONCURRENCY"):
        config.load({}, environ={"IMPORTD_TENANT_CONCURRENCY": "-1"})


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
