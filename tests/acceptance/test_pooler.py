"""importd behind a real pgbouncer in transaction mode: ``dsn`` through the pooler,
``listen_dsn`` direct (or poll only through the pooler alone)."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

import importd
from importd import db
from importd.cluster import free_port
from tests.helpers import importd_env, run_importd, run_importd_batch, wait_until


def _lines(stdout: str) -> dict[str, str]:
    return {line[9:].split("  ")[0].strip(): line for line in stdout.splitlines()}


async def _status(conn: Any, job_id: int) -> str:
    return str(await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", job_id))


async def test_doctor_tells_a_transaction_pooler_from_a_direct_connection(
    dsn: str, pooled_dsn: str
) -> None:
    direct, naive, right = await asyncio.to_thread(
        run_importd_batch,
        [
            (["doctor", "--dsn", dsn], {}),
            (["doctor", "--dsn", pooled_dsn], {}),
            (
                ["doctor", "--dsn", pooled_dsn, "--listen-dsn", dsn],
                {"IMPORTD_STATEMENT_CACHE_SIZE": "0"},
            ),
        ],
    )
    assert direct.returncode == 0, direct.stdout
    assert _lines(direct.stdout)["pooler"].startswith("OK") and "directly" in direct.stdout

    # Through the pooler with no listen_dsn: the heuristic of old said "OK" twice here.
    lines = _lines(naive.stdout)
    assert naive.returncode == 1, naive.stdout
    assert lines["pooler"].startswith("WARNING") and "transaction-mode pooler" in lines["pooler"]
    assert "listen_dsn" in lines["pooler"] and "statement_cache_size = 0" in lines["pooler"]
    assert lines["listen"].startswith("ERROR") and "through a pooler" in lines["listen"]

    lines = _lines(right.stdout)
    assert right.returncode == 0, right.stdout
    assert lines["pooler"].startswith("OK") and "transaction-mode pooler" in lines["pooler"]
    assert lines["listen"].startswith("OK") and "NOTIFY round trip in" in lines["listen"]
    assert "round trip in 0.0 ms" not in lines["listen"]  # timed from before the NOTIFY


async def test_dsn_through_pgbouncer_and_a_direct_listen_dsn(
    conn: Any, dsn: str, pooled_dsn: str, daemons: Any, tmp_path: Path
) -> None:
    # Migrate through the pooler (transaction-level locks only), twice.
    for _ in range(2):
        done = await asyncio.to_thread(run_importd, "migrate", "--dsn", pooled_dsn)
        assert done.returncode == 0 and "already current" in done.stdout, done.stderr
    # The daemon hears jobs only through LISTEN here (a minute between polls).
    await conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
    (tmp_path / "c.csv").write_text("id,name\n1,Ada\n2,Grace\n3,Edsger\n")
    proc = daemons(
        "--listen-dsn",
        dsn,
        "--poll-interval",
        "60",
        "--concurrency",
        "4",
        "--import-root",
        str(tmp_path),
        "--table",
        "customers",
        target=pooled_dsn,
    )
    await proc.wait_for_event("daemon_ready", timeout=30)
    assert proc.saw("pooler_detected", statement_cache_size=0)
    added = await asyncio.to_thread(run_importd, "enqueue", "noop", "--dsn", pooled_dsn)
    assert added.returncode == 0, added.stderr
    job_id = int(added.stdout)
    await wait_until(
        lambda: _equal(_status(conn, job_id), "completed"),
        20,
        what="the job enqueued through the pooler to complete",
    )
    batch = [importd.NewJob("noop", {}) for _ in range(200)]
    pooled = await db.connect(pooled_dsn, statement_cache_size=0)
    try:
        ids = await importd.enqueue_many(pooled, batch)
    finally:
        await pooled.close()
    await wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) = $2 FROM import_jobs WHERE id = ANY ($1) AND status = 'completed'",
            ids,
            len(ids),
        ),
        30,
        what="200 jobs to complete",
    )

    # An import (staging, COPY, the move in the completing transaction) through the pooler.
    for atomic in (True, False):
        await conn.execute("TRUNCATE customers")
        csv_job = await importd.enqueue(
            conn,
            "csv",
            {"source": f"file://{tmp_path}/c.csv", "table": "customers", "atomic": atomic},
        )
        await wait_until(
            functools.partial(_has_status, conn, csv_job, "completed"),
            20,
            what="the import through the pooler",
        )
        assert await conn.fetchval("SELECT count(*) FROM customers") == 3

    slow = await importd.enqueue(conn, "noop", {"sleep": 60})
    await wait_until(lambda: _equal(_status(conn, slow), "running"), 20, what="running")
    cancelled = await asyncio.to_thread(run_importd, "cancel", str(slow), "--dsn", pooled_dsn)
    assert cancelled.returncode == 0 and "1 job(s) cancelled" in cancelled.stdout
    await proc.wait_for_event("job_cancelled", timeout=20, job_id=slow)
    assert await _status(conn, slow) == "cancelled"

    status = await asyncio.to_thread(run_importd, "status", "--dsn", pooled_dsn)
    assert status.returncode == 0 and "noop" in status.stdout, status.stderr
    shown = await asyncio.to_thread(run_importd, "show", str(slow), "--dsn", pooled_dsn)
    assert shown.returncode == 0 and "cancelled" in shown.stdout
    proc.signal()
    assert await proc.wait_exit() == 0

    # drain through the pooler alone (it never listens).
    more = [importd.NewJob("noop", {}) for _ in range(50)]
    await importd.enqueue_many(conn, more)
    drained = await asyncio.to_thread(run_importd, "drain", "--dsn", pooled_dsn)
    assert drained.returncode == 0, drained.stderr
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'pending'") == 0


async def test_poll_only_through_the_pooler_alone(conn: Any, pooled_dsn: str, daemons: Any) -> None:
    proc = daemons(
        "--no-listen", "--poll-interval", "0.3", "--statement-cache-size", "0", target=pooled_dsn
    )
    await proc.wait_for_event("daemon_ready", timeout=30)
    ids = await importd.enqueue_many(conn, [importd.NewJob("noop", {}) for _ in range(30)])
    await wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) = 30 FROM import_jobs WHERE id = ANY ($1) AND status = 'completed'",
            ids,
        ),
        30,
        what="poll-only jobs to complete",
    )
    doctor = await asyncio.to_thread(
        run_importd,
        "doctor",
        "--no-listen",
        "--dsn",
        pooled_dsn,
        env=importd_env(IMPORTD_STATEMENT_CACHE_SIZE="0"),
    )
    assert doctor.returncode == 0, doctor.stdout
    assert "poll only" in _lines(doctor.stdout)["listen"]
    proc.signal()
    assert await proc.wait_exit() == 0


async def _has_status(conn: Any, job_id: int, status: str) -> bool:
    return await _status(conn, job_id) == status


async def _equal(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_importd_web_through_the_pooler(
    conn: Any, dsn: str, pooled_dsn: str, tmp_path: Path
) -> None:
    """The dashboard on a ``dsn`` through pgbouncer (transaction mode), ``listen_dsn``
    direct: it starts (no startup parameter pgbouncer refuses) and serves every page
    again and again (no named prepared statement that a pooler cannot keep)."""
    await importd.enqueue_many(conn, [importd.NewJob("noop", {}) for _ in range(3)])
    port = free_port()
    log_path = tmp_path / "web.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "importd", "web", "--dsn", pooled_dsn],
            env=importd_env(
                IMPORTD_LISTEN_DSN=dsn,
                IMPORTD_WEB_LISTEN=f"127.0.0.1:{port}",
                IMPORTD_LOG_FORMAT="json",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            async def answers() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"importd web exited:\n{log_path.read_text()}")
                try:
                    async with httpx.AsyncClient() as client:
                        await client.get(url + "/", timeout=2)
                    return True
                except httpx.TransportError:
                    return False

            await wait_until(answers, timeout=30, what="importd web to answer")
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                for _ in range(8):  # more than a statement cache would need to go wrong
                    for page in ("/", "/jobs", "/running", "/jobs?status=pending"):
                        answer = await client.get(page)
                        assert answer.status_code == 200, (page, log_path.read_text()[-2000:])
        finally:
            proc.terminate()
            proc.wait(10)
    assert "web_request_failed" not in log_path.read_text()
