"""The daemon end to end: real importd processes, real signals, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import importd
from importd import db
from importd.models import Outcome
from importd.repository import Repository
from tests.helpers import Conn, PgServer, StartDaemon, importd_env, run_importd, wait_until

FAST = ("--poll-interval", "60", "--rescue-interval", "0.5", "--heartbeat-interval", "0.2")


async def statuses(conn: Conn) -> Counter[str]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM import_jobs GROUP BY status")
    return Counter({r["status"]: r["n"] for r in rows})


async def all_done(conn: Conn, total: int, status: str = "completed") -> bool:
    return (await statuses(conn))[status] == total


async def test_three_daemons_share_five_thousand_jobs_exactly_once(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    await importd.enqueue_many(conn, [importd.NewJob("record", {}) for _ in range(5000)])
    procs = [daemons("--concurrency", "8", *FAST) for _ in range(3)]
    await wait_until(lambda: all_done(conn, 5000), timeout=90, what="5,000 completions")
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE attempts <> 1") == 0
    runs = await conn.fetch("SELECT job_id, count(*) AS n FROM test_runs GROUP BY job_id")
    assert len(runs) == 5000 and {r["n"] for r in runs} == {1}
    workers = await conn.fetchval("SELECT count(DISTINCT worker) FROM test_runs")
    assert workers == 3  # the work was shared
    for proc in procs:
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in procs] == [0, 0, 0]


async def test_plain_sql_insert_starts_without_waiting_for_the_poll(
    conn: Conn, daemons: StartDaemon
) -> None:
    proc = daemons(*FAST)
    await proc.wait_for_event("daemon_ready")
    started = time.monotonic()
    await conn.execute("INSERT INTO import_jobs (kind, payload) VALUES ('noop', '{}')")
    await wait_until(lambda: all_done(conn, 1), timeout=5, what="the job to complete")
    assert time.monotonic() - started < 3


async def test_listener_reconnects_after_its_backend_is_terminated(
    conn: Conn, daemons: StartDaemon
) -> None:
    proc = daemons(*FAST, "--probe-interval", "0.5")
    await proc.wait_for_event("daemon_ready")
    killed = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'importd-listener' "
        "AND datname = current_database()"
    )
    assert killed == 1
    await proc.wait_for_event("listener_reconnected", timeout=10)
    started = time.monotonic()
    await conn.execute("INSERT INTO import_jobs (kind) VALUES ('noop')")
    await wait_until(lambda: all_done(conn, 1), timeout=5, what="the job to complete")
    assert time.monotonic() - started < 3
    assert proc.proc.poll() is None


async def test_survives_postgresql_stop_and_start(
    pg_server: PgServer, dsn: str, runs_table: Conn, daemons: StartDaemon
) -> None:
    if pg_server.cluster is None:
        pytest.skip(
            f"the server ({pg_server.how}) is not the suite's to stop and start; "
            "this runs with the throwaway cluster"
        )
    conn = runs_table
    await importd.enqueue_many(
        conn, [importd.NewJob("sleep", {"seconds": 0.02}) for _ in range(400)]
    )
    proc = daemons("--concurrency", "8", "--probe-interval", "0.5", *FAST)
    await wait_until(
        lambda: conn.fetchval("SELECT count(*) > 50 FROM test_runs"), what="jobs to flow"
    )
    await conn.close()
    cluster = pg_server.cluster
    await asyncio.to_thread(cluster.stop, "fast")
    # an outage the daemon has run into: its claims fail and its listener is lost
    await proc.wait_for_event("claim_failed", timeout=30)
    await proc.wait_for_event("listener_lost", timeout=30)
    await asyncio.to_thread(cluster.start)
    conn = await db.connect(dsn)
    try:
        await wait_until(lambda: all_done(conn, 400), timeout=60, what="every job to complete")
        assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'running'") == 0
        assert proc.proc.poll() is None, "the daemon must ride out the outage"
        completions = Counter(e["job_id"] for e in proc.events() if e["event"] == "job_completed")
        assert len(completions) == 400 and set(completions.values()) == {1}
        await proc.wait_for_event("listener_reconnected", timeout=40)
    finally:
        await conn.close()


async def test_sigkilled_daemon_job_is_rescued_and_its_late_write_fenced(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    job_id = await importd.enqueue(conn, "sleep", {"seconds": 30}, timeout=2)
    first = daemons(*FAST, "--lease-margin", "1")
    await wait_until(lambda: conn.fetchval("SELECT count(*) FROM test_runs"), what="the run")
    dead = await conn.fetchrow("SELECT locked_by, attempts FROM import_jobs WHERE id = $1", job_id)
    first.proc.kill()
    await conn.execute(
        "UPDATE import_jobs SET payload = '{\"seconds\": 0.1}' WHERE id = $1", job_id
    )
    second = daemons(*FAST, "--lease-margin", "1")
    await wait_until(lambda: all_done(conn, 1), timeout=20, what="the rescued job to complete")
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["attempts"] == 2 and row["result"] == {"slept": 0.1}
    await second.wait_for_event("job_rescued", timeout=10, job_id=job_id)
    # The dead daemon's write arrives late: the fence drops it.
    repo = Repository(conn)
    job = importd.Job(
        id=job_id,
        kind="sleep",
        queue="default",
        tenant_id=None,
        payload={},
        priority=0,
        run_at=row["run_at"],
        attempt=dead["attempts"],
        max_attempts=5,
        timeout=2,
        created_at=row["created_at"],
    )
    assert await repo.finish(dead["locked_by"], [(job, Outcome.failed("late"))]) == set()
    after = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id = $1", job_id)
    assert after["status"] == "completed" and after["last_error"] != "late"


async def test_sigterm_interrupts_after_the_grace_and_hands_jobs_back(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    ids = await importd.enqueue_many(
        conn, [importd.NewJob("sleep", {"seconds": 60}) for _ in range(3)]
    )
    quick = await importd.enqueue(conn, "sleep", {"seconds": 0.5}, priority=-1)
    proc = daemons(*FAST, "--shutdown-grace", "2")
    await wait_until(lambda: conn.fetchval("SELECT count(*) = 4 FROM test_runs"), what="4 runs")
    began = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit(15) == 0
    assert time.monotonic() - began < 5
    rows = await conn.fetch("SELECT * FROM import_jobs WHERE id = ANY($1)", ids)
    for row in rows:
        assert row["status"] == "pending" and row["attempts"] == 0, dict(row)
        assert row["locked_by"] is None and "shut down" in row["last_error"]
    # The short job finished within the grace.
    assert await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", quick) == "completed"


async def test_second_signal_skips_the_grace(runs_table: Conn, daemons: StartDaemon) -> None:
    conn = runs_table
    await importd.enqueue(conn, "sleep", {"seconds": 60})
    proc = daemons(*FAST, "--shutdown-grace", "60")
    await wait_until(lambda: conn.fetchval("SELECT count(*) FROM test_runs"), what="the run")
    began = time.monotonic()
    proc.signal(signal.SIGTERM)
    await proc.wait_for_event("shutdown_waiting")
    proc.signal(signal.SIGINT)
    assert await proc.wait_exit(10) == 0
    assert time.monotonic() - began < 5
    assert await statuses(conn) == Counter({"pending": 1})


async def test_a_run_whose_handler_returned_gets_its_write_at_shutdown(
    runs_table: Conn, daemons: StartDaemon, dsn: str
) -> None:
    """A stop with no grace interrupts the handlers still running, not the runs that only
    wait for their result write: those are written as they ended and counted so."""
    conn = runs_table
    job_id = await importd.enqueue(conn, "sleep", {"seconds": 0.3})
    proc = daemons(*FAST, "--shutdown-grace", "0")
    await wait_until(lambda: conn.fetchval("SELECT count(*) FROM test_runs"), what="the run")
    # Hold the job's row so that its result write waits, then let the handler return.
    blocker = await db.connect(dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM import_jobs WHERE id = $1 FOR UPDATE", job_id)
            # The handler has returned once its result write waits on the held row.
            await wait_until(
                lambda: conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '-- End a batch of runs%'"
                ),
                what="the result write to wait on the held row",
            )
            proc.signal(signal.SIGTERM)
            await proc.wait_for_event("shutdown_interrupting")
    finally:
        await blocker.close()
    assert await proc.wait_exit(15) == 0
    line = next(e for e in proc.events() if e["event"] == "shutdown_interrupting")
    assert (line["running"], line["writing"]) == (0, 1)
    stopped = next(e for e in proc.events() if e["event"] == "daemon_stopped")
    assert (stopped["completed"], stopped["interrupted"], stopped["released"]) == (1, 0, 0)
    row = await conn.fetchrow("SELECT status, attempts FROM import_jobs WHERE id = $1", job_id)
    assert (row["status"], row["attempts"]) == ("completed", 1)


@pytest.mark.timing
async def test_timeouts_retry_with_growing_delays_then_fail(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    job_id = await importd.enqueue(conn, "sleep", {"seconds": 30}, timeout=0.3, max_attempts=3)
    daemons(*FAST, "--backoff-base", "0.5", "--backoff-jitter", "0")
    await wait_until(lambda: all_done(conn, 1, "failed"), timeout=20, what="the job to fail")
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["attempts"] == 3
    assert "JobTimeout" in row["last_error"] and "0.3 s" in row["last_error"]
    starts = [
        r["started_at"]
        for r in await conn.fetch(
            "SELECT started_at FROM test_runs WHERE job_id = $1 ORDER BY attempt", job_id
        )
    ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    # Each gap is the 0.3 s timeout plus a backoff of 0.5 s, then 1 s. The handler stamps
    # started_at a moment after its attempt's clock starts (later still on a loaded
    # machine), so a gap may measure a little short of its lower bound.
    assert 0.75 <= gaps[0] < 1.5 and 1.25 <= gaps[1] < 2.0 and gaps[1] > gaps[0], gaps


async def test_handler_errors_are_recorded_and_the_daemon_keeps_going(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    flaky = await importd.enqueue(conn, "fail", {"message": "disk on fire", "succeed_on": 2})
    doomed = await importd.enqueue(conn, "fail", {"message": "always"}, max_attempts=2)
    permanent = await importd.enqueue(conn, "permanent", {"message": "bad header"})
    unknown = await importd.enqueue(conn, "no-such-kind", {})
    fine = await importd.enqueue(conn, "noop", {})
    proc = daemons(*FAST, "--backoff-base", "0.1")
    await wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) = 4 FROM import_jobs WHERE status IN ('completed', 'failed')"
        ),
        what="the four jobs it serves to finish",
    )
    rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM import_jobs")}
    assert rows[flaky]["status"] == "completed" and rows[flaky]["attempts"] == 2
    assert rows[flaky]["last_error"] is None  # attempt 1's error went with its success
    assert rows[doomed]["status"] == "failed" and rows[doomed]["attempts"] == 2
    assert rows[doomed]["last_error"] == "RuntimeError: always (attempt 2/2)"
    assert rows[permanent]["status"] == "failed" and rows[permanent]["attempts"] == 1
    assert rows[permanent]["last_error"] == "PermanentError: bad header"
    # No handler here: never claimed, left for a daemon that serves the kind.
    assert rows[unknown]["status"] == "pending" and rows[unknown]["attempts"] == 0
    assert rows[unknown]["last_error"] is None
    assert rows[fine]["status"] == "completed"
    assert proc.proc.poll() is None
    # (A log line follows the write the test saw: waited for, not read at once.)
    await proc.wait_for_event("job_retry_scheduled", timeout=10, job_id=flaky)
    await proc.wait_for_event("job_failed", timeout=10, job_id=permanent)


async def test_future_run_at_starts_on_time_not_at_the_next_poll(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    proc = daemons(*FAST)
    await proc.wait_for_event("daemon_ready")
    due = datetime.now(UTC) + timedelta(seconds=2)
    job_id = await importd.enqueue(conn, "record", {}, run_at=due)
    await wait_until(lambda: all_done(conn, 1), timeout=10, what="the scheduled job")
    started = await conn.fetchval("SELECT started_at FROM test_runs WHERE job_id = $1", job_id)
    assert timedelta(0) <= started - due < timedelta(seconds=1)


@pytest.mark.parametrize(
    ("jobs", "code"),
    [
        ([], 0),
        ([("noop", {}, 5)], 0),
        ([("noop", {}, 5), ("permanent", {}, 5)], 10),
        ([("noop", {}, 5), ("fail", {}, 5)], 11),
        ([("fail", {}, 1), ("fail", {}, 5)], 10),
    ],
    ids=["empty", "all-completed", "some-failed", "left-for-retry", "failed-beats-retry"],
)
async def test_drain_exit_codes(
    conn: Conn, dsn: str, jobs: list[tuple[str, dict[str, Any], int]], code: int
) -> None:
    for kind, payload, attempts in jobs:
        await importd.enqueue(conn, kind, payload, max_attempts=attempts)
    done = await asyncio.to_thread(
        run_importd, "drain", "--dsn", dsn, "--handlers", "tests.jobs", "--backoff-base", "30"
    )
    assert done.returncode == code, done.stderr
    # Off a TTY: JSON lines, a summary that logs the exit code it exits with, and no line
    # per completed job (those come at --log-level debug).
    events = [json.loads(line) for line in done.stderr.splitlines()]
    (stopped,) = [e for e in events if e["event"] == "daemon_stopped"]
    assert stopped["exit_code"] == code
    assert stopped["completed"] == sum(1 for kind, *_ in jobs if kind == "noop")
    assert not [e for e in events if e["event"] == "job_completed"]
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'running'") == 0


def _drain_on_a_terminal(dsn: str) -> str:
    """``importd drain`` with a terminal for its stdout and stderr; what it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "importd", "drain", "--dsn", dsn, "--handlers", "tests.jobs"],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=importd_env(TERM="dumb"),
    )
    os.close(follower)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed with the process (EIO)
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.wait(60) == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


async def test_drain_on_a_terminal_draws_its_bar_and_no_line_per_job(conn: Conn, dsn: str) -> None:
    """One line per completed job broke the bar on a terminal (300 jobs, 300 lines), and
    the summary was written on the bar's own line."""
    await importd.enqueue_many(conn, [importd.NewJob("noop", {}) for _ in range(300)])
    shown = await asyncio.to_thread(_drain_on_a_terminal, dsn)
    lines = shown.replace("\r\n", "\n").split("\n")
    assert "job_completed" not in shown
    assert any("drain [" in line and "300/300" in line for line in lines), shown
    (stopped,) = [line for line in lines if "daemon_stopped" in line]
    assert "drain [" not in stopped, stopped  # the summary on a line of its own
    assert "ExitCode" not in shown  # the exit code as a number, on the bar too


async def test_drain_filters_and_max_jobs(conn: Conn, dsn: str) -> None:
    await importd.enqueue_many(
        conn,
        [importd.NewJob("noop", {}, queue="a") for _ in range(5)]
        + [importd.NewJob("noop", {}, queue="b") for _ in range(5)],
    )
    done = await asyncio.to_thread(
        run_importd, "drain", "--dsn", dsn, "--queue", "a", "--max-jobs", "3"
    )
    assert done.returncode == 0, done.stderr
    counts = await conn.fetch(
        "SELECT queue, status, count(*) AS n FROM import_jobs GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [tuple(r) for r in counts] == [
        ("a", "completed", 3),
        ("a", "pending", 2),
        ("b", "pending", 5),
    ]
    done = await asyncio.to_thread(run_importd, "drain", "--dsn", dsn, "--kind", "noop")
    assert done.returncode == 0
    assert await all_done(conn, 10)


async def test_concurrency_bounds_the_handlers_running_at_once(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    await importd.enqueue_many(conn, [importd.NewJob("sleep", {"seconds": 0.3}) for _ in range(12)])
    daemons("--concurrency", "3", *FAST)
    await wait_until(lambda: all_done(conn, 12), timeout=30, what="12 completions")
    runs = await conn.fetch("SELECT started_at, ended_at FROM test_runs")
    events = sorted(
        [(r["started_at"], 1) for r in runs] + [(r["ended_at"], -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 3  # used every slot, never more


async def _backends(conn: Conn, application: str) -> set[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = $1",
        application,
    )
    return {r["pid"] for r in rows}


async def test_the_daemon_opens_its_connections_before_work_and_keeps_them(
    conn: Conn, daemons: StartDaemon
) -> None:
    """The engine's connections are all open once the daemon is ready, the lease keeper's
    too (its first claim waits for it), and a burst of work opens none: a connection
    opened in the middle of a drain (a backend forked, its set-up queries run) stalls the
    claims behind it."""
    from importd.daemon import ENGINE_POOL_SIZE  # noqa: PLC0415

    proc = daemons(*FAST, "--concurrency", "16")
    await proc.wait_for_event("daemon_ready")
    engine = await _backends(conn, "importd-engine")
    assert len(engine) == ENGINE_POOL_SIZE
    keeper = await _backends(conn, "importd-leases")
    assert len(keeper) == 1
    listener = await _backends(conn, "importd-listener")
    assert len(listener) == 1
    for _ in range(4):
        await importd.enqueue_many(conn, [importd.NewJob("noop", {}) for _ in range(1000)])
    await wait_until(lambda: all_done(conn, 4000), timeout=60, what="4,000 completions")
    assert await _backends(conn, "importd-engine") == engine
    assert await _backends(conn, "importd-leases") == keeper
    assert await _backends(conn, "importd-listener") == listener
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
