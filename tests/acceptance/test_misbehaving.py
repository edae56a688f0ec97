"""What users' handlers do that they should not, run through real importd processes:
a job still runs at most once at a time, and at least once until it completes, fails for
good or is cancelled, and the daemon goes on."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import importd
from tests.helpers import Conn, DaemonProcess, NotifySocket, StartDaemon, importd_env, wait_until

# Short leases and a sensitive loop monitor, so that each scene plays in seconds.
QUICK = (
    "--poll-interval",
    "0.5",
    "--heartbeat-interval",
    "0.3",
    "--lease-margin",
    "1.5",
    "--rescue-interval",
    "0.5",
    "--loop-block-warn",
    "0.5",
    "--backoff-base",
    "0.05",
    "--backoff-max",
    "0.2",
    "--handlers",
    "tests.badjobs",
)


async def job_row(conn: Conn, job_id: int) -> Any:
    return await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)


async def ended(conn: Conn, job_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT status IN ('completed', 'failed', 'cancelled') FROM import_jobs WHERE id = $1",
            job_id,
        )
    )


def stamps(path: Path) -> dict[tuple[int, int, int], list[float]]:
    """(job, attempt, pid) → the wall times a handler stamped."""
    out: dict[tuple[int, int, int], list[float]] = {}
    for line in path.read_text().splitlines():
        job, attempt, pid, _what, at = line.split()
        out.setdefault((int(job), int(attempt), int(pid)), []).append(float(at))
    return out


def event_time(proc: DaemonProcess, event: str) -> float:
    """When ``proc`` first logged ``event`` (a failed test when it never did)."""
    for e in proc.events():
        if e.get("event") == event:
            return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
    raise AssertionError(f"{event} was never logged")


def port_of(proc: DaemonProcess) -> int:
    address = next(e for e in proc.events() if e["event"] == "metrics_listening")["address"]
    return int(address.rsplit(":", 1)[1])


async def test_a_handler_that_blocks_the_loop_never_runs_twice_at_once(
    runs_table: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    conn = runs_table
    log = tmp_path / "stamps.txt"
    log.touch()
    sockets = [NotifySocket(tmp_path / f"notify-{n}.sock") for n in range(2)]
    try:
        procs = [
            daemons(
                *QUICK,
                "--metrics-address",
                "127.0.0.1:0",
                env=importd_env(NOTIFY_SOCKET=str(s.path), WATCHDOG_USEC="1000000"),
            )
            for s in sockets
        ]
        for proc in procs:
            await proc.wait_for_event("daemon_ready")
        blocker = await importd.enqueue(
            conn, "block", {"seconds": 30, "log": str(log)}, timeout=1, max_attempts=2
        )
        innocents = [
            await importd.enqueue(conn, "sleep", {"seconds": 0.5}, timeout=30) for _ in range(3)
        ]

        # Whichever daemon runs the blocker first says so, and so does its /healthz.
        async def blocked() -> DaemonProcess | None:
            return next((p for p in procs if p.saw("loop_blocked")), None)

        first = await wait_until(blocked, timeout=20, what="loop_blocked")
        line = next(e for e in first.events() if e["event"] == "loop_blocked")
        assert line["job_id"] == blocker and line["kind"] == "block"
        assert {"job_id": blocker, "kind": "block"} in line["running"]
        assert "time.sleep" in line["stack"] and "badjobs.py" in line["stack"]
        health = await asyncio.to_thread(
            httpx.get, f"http://127.0.0.1:{port_of(first)}/healthz", timeout=5
        )
        assert health.status_code == 503 and "event loop blocked" in health.text
        metrics = await asyncio.to_thread(
            httpx.get, f"http://127.0.0.1:{port_of(first)}/metrics", timeout=5
        )
        assert "importd_loop_blocked_total 1.0" in metrics.text

        # Past its timeout plus the margin, each daemon that ran it hands its jobs back
        # and exits; the second run is the last attempt.
        codes = [await p.wait_exit(timeout=30) for p in procs]
        # The watchdog pinged until the stall, then stopped: systemd would restart it.
        for notify in sockets:
            messages = [m for _, m in notify.messages]
            stalled = next(
                n for n, m in enumerate(messages) if m.startswith("STATUS=event loop blocked")
            )
            assert "WATCHDOG=1" in messages[:stalled]
            assert "WATCHDOG=1" not in messages[stalled:]
    finally:
        for notify in sockets:
            notify.close()
    assert codes == [1, 1]
    row = await job_row(conn, blocker)
    assert row["status"] == "failed" and row["attempts"] == 2
    assert row["last_error"].startswith("LoopBlocked: the daemon's event loop was blocked")
    assert all(p.saw("loop_blocked_exit", job_id=blocker) for p in procs)

    # No two runs of any job overlapped: each run ends at its last stamp, or at the
    # latest when its daemon logged that it exits.
    exits = {p.proc.pid: event_time(p, "loop_blocked_exit") for p in procs}
    workers = {
        next(e["worker_id"] for e in p.events() if e["event"] == "daemon_starting"): p.proc.pid
        for p in procs
    }
    runs: dict[int, list[tuple[float, float]]] = {}
    for (job, _attempt, pid), times in stamps(log).items():
        runs.setdefault(job, []).append((times[0], exits.get(pid, times[-1])))
    later = daemons(*QUICK)  # finishes the innocents the two handed back
    await wait_until(lambda: all_ended(conn, innocents), timeout=20, what="the innocents")
    for r in await conn.fetch("SELECT * FROM test_runs"):
        end = r["ended_at"].timestamp() if r["ended_at"] else exits[workers[r["worker"]]]
        runs.setdefault(r["job_id"], []).append((r["started_at"].timestamp(), end))
    assert len(runs[blocker]) == 2
    overlaps = [
        (job, a, b)
        for job, spans in runs.items()
        for a, b in itertools.combinations(sorted(spans), 2)
        if b[0] < a[1]
    ]
    assert overlaps == []
    # The innocents of the frozen daemons were handed back without losing an attempt.
    rows = await conn.fetch(
        "SELECT status, attempts FROM import_jobs WHERE id = ANY($1)", innocents
    )
    assert [(r["status"], r["attempts"]) for r in rows] == [("completed", 1)] * 3
    await later.wait_for_event("daemon_ready")
    later.signal(signal.SIGTERM)
    assert await later.wait_exit() == 0


async def all_ended(conn: Conn, ids: list[int]) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT bool_and(status = 'completed') FROM import_jobs WHERE id = ANY($1)", ids
        )
    )


async def test_an_escaped_cancelled_error_is_a_failed_attempt(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    job = await importd.enqueue(conn, "escape_cancel", {}, max_attempts=3)
    proc = daemons(*QUICK)
    await wait_until(lambda: ended(conn, job), timeout=20, what="the job to end")
    row = await job_row(conn, job)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert row["last_error"].startswith("HandlerCancelled: the handler raised CancelledError")
    assert row["last_error"].endswith("(attempt 3/3)")
    assert await conn.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", job) == 3
    assert not proc.saw("job_released")
    assert proc.proc.poll() is None


async def test_outcomes_postgresql_cannot_store_fail_at_once(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    ids = {
        kind: await importd.enqueue(conn, kind, {}, max_attempts=3)
        for kind in ("nan_result", "nul_result", "nul_error", "huge_number")
    }
    for kind in ("bad_progress", "sys_exit"):
        ids[kind] = await importd.enqueue(conn, kind, {}, max_attempts=1)
    ids["ignore_cancel"] = await importd.enqueue(
        conn, "ignore_cancel", {"seconds": 2}, timeout=1, max_attempts=1
    )
    proc = daemons(*QUICK)
    for job in ids.values():
        await wait_until(functools.partial(ended, conn, job), timeout=20, what=f"job {job}")
    errors = {}
    for kind, job in ids.items():
        row = await job_row(conn, job)
        assert row["status"] == "failed", (kind, dict(row))
        assert row["attempts"] == 1, (kind, dict(row))
        errors[kind] = row["last_error"]
    assert errors["nan_result"] == (
        "ResultNotJSON: the handler's result cannot be stored: "
        "nan at $['ratio'] is not a JSON number"
    )
    assert errors["nul_result"] == (
        "ResultNotJSON: the handler's result cannot be stored: "
        "the string at $['body'] holds a NUL character (\\u0000)"
    )
    assert errors["nul_error"].startswith("PermanentError: badbyte xxx")
    assert len(errors["nul_error"]) <= 2000 and errors["nul_error"].endswith("…")
    assert errors["huge_number"].startswith(
        "OutcomeRefused: PostgreSQL refused to store this run's outcome (completed): "
        "NumericValueOutOfRangeError"
    )
    assert errors["bad_progress"] == (
        "ValueError: ctx.progress: done must be between 0 and 2**63-1, not -1 (attempt 1/1)"
    )
    assert errors["sys_exit"] == "HandlerExited: the handler called sys.exit(3) (attempt 1/1)"
    assert errors["ignore_cancel"].startswith(
        "JobTimeout: the job exceeded its timeout of 1 s; its handler ignored the "
        "cancellation and returned "
    )
    await proc.wait_for_event(
        "job_timeout_overrun", timeout=10, job_id=ids["ignore_cancel"], handler="async"
    )
    runs = await conn.fetch("SELECT job_id, count(*) AS n FROM test_runs GROUP BY job_id")
    assert {r["job_id"]: r["n"] for r in runs} == {
        job: 1 for kind, job in ids.items() if kind != "ignore_cancel"
    }
    # The daemon is still up and runs the next job.
    assert proc.proc.poll() is None and not proc.saw("service_crashed")
    after = await importd.enqueue(conn, "record", {})
    await wait_until(lambda: ended(conn, after), timeout=10, what="the next job")
    assert (await job_row(conn, after))["status"] == "completed"
    refused = next(e for e in proc.events() if e["event"] == "job_outcome_refused")
    assert refused["job_id"] == ids["huge_number"] and "Traceback" in refused["exception"]


async def test_a_sync_handler_runs_in_a_thread_and_holds_its_slot(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    log = tmp_path / "stamps.txt"
    log.touch()
    slow = await importd.enqueue(
        conn, "sync_sleep", {"seconds": 2.5, "log": str(log)}, timeout=1, max_attempts=1
    )
    quick = await importd.enqueue(conn, "sync_sleep", {"seconds": 0, "log": str(log)})
    proc = daemons(*QUICK, "--concurrency", "1")
    await wait_until(lambda: ended(conn, quick), timeout=20, what="the second job")
    row = await job_row(conn, slow)
    assert row["status"] == "failed"
    assert row["last_error"].startswith(
        "JobTimeout: the job exceeded its timeout of 1 s; its synchronous handler cannot be "
        "interrupted and returned "
    )
    late = float(row["last_error"].split("returned ")[1].split(" s later")[0])
    assert 1.0 <= late < 5
    await proc.wait_for_event("job_timeout_overrun", timeout=10, job_id=slow)
    result = (await job_row(conn, quick))["result"]
    result = json.loads(result) if isinstance(result, str) else result
    assert result["thread"].startswith("importd-handler") and result["main"] is False
    # Its one slot was held until the overrunning thread really ended.
    times = stamps(log)
    slow_end = max(times[(slow, 1, proc.proc.pid)])
    assert min(times[(quick, 1, proc.proc.pid)]) >= slow_end
    assert not proc.saw("loop_blocked")  # the loop never waited on the thread


async def test_a_crashed_daemon_does_not_refund_the_running_job(
    runs_table: Conn, daemons: StartDaemon
) -> None:
    conn = runs_table
    job = await importd.enqueue(conn, "sleep", {"seconds": 30}, max_attempts=3)
    proc = daemons(*QUICK, "--rate-limit", "default=100/s", "--concurrency", "2")
    await wait_until(
        lambda: conn.fetchval("SELECT count(*) = 1 FROM test_runs"),
        timeout=20,
        what="the job to start",
    )
    # The next claim fails for good: the worker service dies.
    await conn.execute("DROP TABLE importd_rate_limits CASCADE")
    assert await proc.wait_exit(timeout=20) == 1
    row = await job_row(conn, job)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert (
        row["last_error"]
        == "Interrupted: the daemon stopped on an internal error while the job ran"
    )
    crashed = [e for e in proc.events() if e["event"] == "service_crashed"]
    assert len(crashed) == 1 and crashed[0]["service"] == "worker"
    assert crashed[0]["error"].startswith("UndefinedTableError: ")
    assert "Traceback" in crashed[0]["exception"] and "importd_rate_limits" in crashed[0]["error"]
    assert "ExceptionGroup" not in proc.text()


async def test_a_lease_that_cannot_be_renewed_ends_the_process_before_it_expires(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    """A synchronous handler cannot be stopped: when its lease can no longer be renewed
    (here its row is locked, so the heartbeat waits), the process ends before the lease
    expires, and the job runs again elsewhere only after that."""
    log = tmp_path / "stamps.txt"
    log.touch()
    job = await importd.enqueue(
        conn, "sync_sleep", {"seconds": 30, "first_only": True, "log": str(log)}, timeout=1
    )
    first = daemons(*QUICK)
    await wait_until(lambda: asyncio.sleep(0, log.read_text()), timeout=20, what="the start")
    tx = conn.transaction()
    await tx.start()
    await conn.execute("SELECT 1 FROM import_jobs WHERE id = $1 FOR UPDATE", job)
    try:
        assert await first.wait_exit(timeout=20) == 1
    finally:
        await tx.rollback()
    assert first.saw("lease_expiring", action="exit")
    died = event_time(first, "lease_expiring")
    locked_until = await conn.fetchval(
        "SELECT extract(epoch FROM locked_until) FROM import_jobs WHERE id = $1", job
    )
    assert died < float(locked_until)  # gone before its lease ran out
    second = daemons(*QUICK)
    await wait_until(lambda: ended(conn, job), timeout=20, what="the rerun")
    row = await job_row(conn, job)
    assert row["status"] == "completed" and row["attempts"] == 2
    runs = stamps(log)
    assert min(runs[(job, 2, second.proc.pid)]) > died
