"""The operators' commands against a real database (and a real daemon where it matters)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import ROOT, Conn, StartDaemon, importd_env, run_importd, wait_until


async def failed_job(
    conn: Conn, kind: str = "csv", queue: str = "default", finished_ago: str = "0 s", **extra: Any
) -> int:
    job_id = await importd.enqueue(conn, kind, {}, queue=queue, **extra)
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', attempts = max_attempts, "
        "finished_at = now() - $2::text::interval, last_error = 'boom' WHERE id = $1",
        job_id,
        finished_ago,
    )
    return job_id


async def test_status_json_shape_and_text(conn: Conn, dsn: str) -> None:
    await importd.enqueue_many(conn, [importd.NewJob("csv", {}, queue="imports")] * 3)
    running = await importd.enqueue(conn, "http", {}, queue="hooks")
    await conn.execute(
        "UPDATE import_jobs SET status = 'running', attempts = 1, "
        "locked_by = 'host:1:abc', locked_until = now() + interval '1 min', "
        "started_at = now() - interval '90 s', rows_done = 50, rows_total = 200 "
        "WHERE id = $1",
        running,
    )
    await failed_job(conn, "csv", "imports")
    done = run_importd("status", "--json", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {
        "queues",
        "oldest_runnable_s",
        "estimated_rows",
        "rows",
        "running",
        "failed_last_hour",
        "tenants_running",
        "rate_limits_ahead_s",
        "at",
        "daemons",
        "unserved",
    }
    assert data["rows"] == 5  # counted exactly: the table is small (and never analyzed)
    imports = next(q for q in data["queues"] if q["queue"] == "imports" and q["kind"] == "csv")
    assert imports["pending"] == 3 and imports["failed_1h"] == 1
    assert data["failed_last_hour"] == 1 and data["oldest_runnable_s"] >= 0
    (run,) = data["running"]
    assert run["id"] == running and run["rows_done"] == 50 and run["locked_by"] == "host:1:abc"
    text = run_importd("status", "--dsn", dsn).stdout
    assert "imports" in text and "50/200 (25%)" in text and "failures in the last hour: 1" in text
    assert "jobs in table: 5" in text
    assert max(len(line) for line in text.splitlines()) <= 80


async def test_status_shows_tenants_running_and_rate_limits(conn: Conn, dsn: str) -> None:
    jobs = [importd.NewJob("csv", {}, tenant_id=t) for t in ("acme", "acme", "globex")]
    ids = await importd.enqueue_many(conn, jobs)
    await conn.execute(
        "UPDATE import_jobs SET status = 'running', attempts = 1, "
        "locked_by = 'host:1:abc', locked_until = now() + interval '1 min' "
        "WHERE id = ANY ($1)",
        ids,
    )
    await conn.execute(
        "INSERT INTO importd_rate_limits (key, tat) VALUES "
        "('queue:hooks', now() + interval '300 s'), ('kind:http', now()), "
        "('queue:once', now() - interval '2 hours')"
    )
    data = json.loads(run_importd("status", "--json", "--dsn", dsn).stdout)
    assert data["tenants_running"] == {"acme": 2, "globex": 1}
    # booked 300 s ahead at the insert; the CLI may take seconds to start on a loaded machine
    assert 240 < data["rate_limits_ahead_s"]["queue:hooks"] <= 300
    assert data["rate_limits_ahead_s"]["kind:http"] <= 0
    text = run_importd("status", "--dsn", dsn).stdout
    assert "tenants with the most running jobs: acme 2, globex 1" in text
    assert "queue:hooks booked" in text and "kind:http idle" in text
    assert "queue:once" not in text  # a limit not used for an hour leaves status


async def test_show_and_errors(conn: Conn, dsn: str) -> None:
    job_id = await failed_job(conn, tenant_id="acme")
    await conn.executemany(
        "INSERT INTO import_job_errors (job_id, attempt, line_number, message, raw_record) "
        "VALUES ($1, 1, $2, $3, $4)",
        [(job_id, n, f"bad value on line {n}", f'{n},x,"y"') for n in range(2, 12)],
    )
    shown = run_importd("show", str(job_id), "--dsn", dsn)
    assert shown.returncode == 0
    assert "tenant_id" in shown.stdout and "acme" in shown.stdout and "boom" in shown.stdout
    assert "10 rejected row(s); first 5" in shown.stdout
    as_json = json.loads(run_importd("show", str(job_id), "--json", "--dsn", dsn).stdout)
    assert as_json["id"] == job_id and as_json["error_count"] == 10
    assert len(as_json["errors"]) == 5
    rows = list(
        csv.reader(io.StringIO(run_importd("show", str(job_id), "--errors", "--dsn", dsn).stdout))
    )
    assert rows[0] == ["line", "message", "record"] and len(rows) == 11
    assert rows[1] == ["2", "bad value on line 2", '2,x,"y"']
    missing = run_importd("show", "999999", "--dsn", dsn)
    assert missing.returncode == 2 and missing.stderr.strip() == "importd: no job 999999"


async def test_retry_failed_with_filters_and_by_id(conn: Conn, dsn: str) -> None:
    a = await failed_job(conn, "csv", "imports")
    b = await failed_job(conn, "csv", "other")
    c = await failed_job(conn, "http", "imports")
    old = await failed_job(conn, "csv", "imports", finished_ago="3 hours")
    done = run_importd(
        "retry", "--failed", "--kind", "csv", "--queue", "imports", "--since", "1h", "--dsn", dsn
    )
    assert done.returncode == 0 and done.stdout.strip() == "1 job(s) back to pending"
    statuses = {
        r["id"]: (r["status"], r["attempts"])
        for r in await conn.fetch("SELECT id, status, attempts FROM import_jobs")
    }
    assert statuses[a] == ("pending", 0)
    assert statuses[b][0] == statuses[c][0] == statuses[old][0] == "failed"
    cancelled = await importd.enqueue(conn, "csv", {})
    run_importd("cancel", str(cancelled), "--dsn", dsn)
    done = run_importd("retry", str(b), str(cancelled), "--dsn", dsn)
    assert done.stdout.strip() == "2 job(s) back to pending"
    # A job whose dedup key an unfinished job now holds is skipped, not duplicated.
    d = await failed_job(conn, dedup_key="file-7")
    await importd.enqueue(conn, "csv", {}, dedup_key="file-7")
    done = run_importd("retry", str(d), "--dsn", dsn)
    assert "0 job(s) back to pending; 1 skipped" in done.stdout
    assert run_importd("retry", "--dsn", dsn).returncode == 2


async def test_cancel_pending_and_running_with_a_real_daemon(
    runs_table: Conn, dsn: str, daemons: StartDaemon
) -> None:
    conn = runs_table
    pending = await importd.enqueue(conn, "noop", {}, run_at=None, priority=5)
    await conn.execute(
        "UPDATE import_jobs SET run_at = now() + interval '1 hour' WHERE id = $1", pending
    )
    long = await importd.enqueue(conn, "sleep", {"seconds": 60})
    proc = daemons("--poll-interval", "1")
    await wait_until(lambda: conn.fetchval("SELECT count(*) FROM test_runs"), what="the run")
    began = time.monotonic()
    done = await asyncio.to_thread(run_importd, "cancel", str(pending), str(long), "--dsn", dsn)
    assert done.returncode == 0
    assert done.stdout.startswith("2 job(s) cancelled (1 running")
    await proc.wait_for_event("job_cancelled", job_id=long, timeout=10)
    assert time.monotonic() - began < 5
    rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM import_jobs")}
    assert rows[long]["status"] == rows[pending]["status"] == "cancelled"
    assert "while running" in rows[long]["last_error"]
    assert proc.proc.poll() is None and not proc.saw("job_failed")
    # the daemon goes on
    after = await importd.enqueue(conn, "noop", {})
    await wait_until(
        lambda: conn.fetchval("SELECT status = 'completed' FROM import_jobs WHERE id = $1", after)
    )


async def test_doctor_finds_a_disabled_trigger_and_a_stuck_job(conn: Conn, dsn: str) -> None:
    ok = run_importd("doctor", "--dsn", dsn)
    assert ok.returncode == 0, ok.stdout
    assert "OK       listen" in ok.stdout and "OK       trigger" in ok.stdout
    stuck = await importd.enqueue(conn, "csv", {})
    await conn.execute(
        "UPDATE import_jobs SET status = 'running', attempts = 1, "
        "locked_by = 'gone:1:x', locked_until = now() - interval '10 min' "
        "WHERE id = $1",
        stuck,
    )
    await conn.execute("ALTER TABLE import_jobs DISABLE TRIGGER trigger_process_import_jobs")
    bad = run_importd("doctor", "--dsn", dsn)
    assert bad.returncode == 1
    lines = {line.split()[1]: line for line in bad.stdout.splitlines()}
    assert lines["trigger"].startswith("ERROR") and "disabled" in lines["trigger"]
    assert lines["stuck"].startswith("WARNING") and "1 running job(s)" in lines["stuck"]
    gone = run_importd("doctor", "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert gone.returncode == 5 and gone.stdout.startswith("ERROR    connection")


async def test_prune_in_batches(conn: Conn, dsn: str) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (kind, status, finished_at) "
        "SELECT 'csv', 'completed', now() - interval '10 days' FROM generate_series(1, 2500)"
    )
    await conn.execute(
        "INSERT INTO import_jobs (kind, status, finished_at) "
        "SELECT 'csv', 'completed', now() - interval '1 hour' FROM generate_series(1, 7)"
    )
    failed = await failed_job(conn, finished_ago="40 days")
    await conn.execute(
        "INSERT INTO import_job_errors (job_id, attempt, message) VALUES ($1, 1, 'x')", failed
    )
    done = run_importd(
        "prune",
        "--older-than",
        "7d",
        "--failed-older-than",
        "30d",
        "--batch-size",
        "1000",
        "--dsn",
        dsn,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deleted 2501 job(s) in 4 batch(es)"
    assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 7
    assert await conn.fetchval("SELECT count(*) FROM import_job_errors") == 0


async def test_prune_alone_deletes_failed_jobs_after_its_older_than(conn: Conn, dsn: str) -> None:
    """What the README's command table says: --failed-older-than defaults to --older-than
    (7 days), not to the daemons' retention_failed (30 days)."""
    old = await failed_job(conn, finished_ago="8 days")
    recent = await failed_job(conn, finished_ago="6 days")
    done = run_importd("prune", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    left = {r["id"] for r in await conn.fetch("SELECT id FROM import_jobs")}
    assert old not in left and recent in left


async def test_bulk_enqueue_and_drain_report_progress(conn: Conn, dsn: str, tmp_path: Path) -> None:
    payloads = tmp_path / "jobs.ndjson"
    payloads.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(2500)))
    done = run_importd(
        "enqueue", "noop", "--payloads", str(payloads), "--queue", "bulk", "--dsn", dsn
    )
    assert done.returncode == 0 and done.stdout.strip() == "enqueued 2500 job(s)"
    assert "progress" in done.stderr  # not a TTY: log lines, not a bar
    finals = [line for line in done.stderr.splitlines() if '"done": 2500' in line]
    assert len(finals) == 1, done.stderr  # the last progress line, once
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE queue = 'bulk'") == 2500
    drained = run_importd("drain", "--dsn", dsn, "--log-format", "json")
    assert drained.returncode == 0
    last = [json.loads(line) for line in drained.stderr.splitlines() if '"progress"' in line][-1]
    assert last["task"] == "drain" and last["done"] == last["total"] == 2500
    small = tmp_path / "few.ndjson"
    small.write_text('{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    few = run_importd("enqueue", "noop", "--payloads", str(small), "--dsn", dsn)
    assert few.returncode == 0
    assert few.stderr.count('"done": 3') == 1, few.stderr  # printed twice before


@pytest.mark.db  # starts a PostgreSQL of its own
def test_make_demo_end_to_end() -> None:
    done = subprocess.run(
        ["make", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=importd_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "importd drain exited with 0" in out
    assert "1597 rows are in table people." in out
    assert "invalid input syntax for type date" in out and "people_score_check" in out
    assert "the throwaway PostgreSQL is gone" in out


@pytest.mark.db  # starts a PostgreSQL of its own
async def test_run_embedded_manages_its_own_postgresql() -> None:
    # Under /tmp itself: when the suite runs as root, the cluster runs as an unprivileged
    # user, who cannot enter pytest's private tmp_path.
    data = Path(tempfile.mkdtemp(prefix="importd-embedded-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "importd", "run", "--embedded", str(data), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        env=importd_env(),
    )
    try:
        dsn = None
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stderr.readline)
            if not line:
                break
            if "embedded PostgreSQL at" in line:
                dsn = line.split(" at ")[1].split(" ")[0]
            if '"daemon_ready"' in line:
                break
        assert dsn, "no DSN printed"
        done = await asyncio.to_thread(run_importd, "enqueue", "noop", "--dsn", dsn)
        job_id = int(done.stdout)

        async def shown_completed() -> bool:
            status = await asyncio.to_thread(
                run_importd, "show", str(job_id), "--json", "--dsn", dsn
            )
            return bool(json.loads(status.stdout)["status"] == "completed")

        await wait_until(shown_completed, timeout=30, what="`importd show` to say completed")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert (data / "data" / "PG_VERSION").exists()
        assert not (data / "data" / "postmaster.pid").exists()  # the server was stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def test_every_command_has_help_with_an_example_and_one_line_errors() -> None:
    commands = [
        "migrate",
        "run",
        "drain",
        "status",
        "show",
        "retry",
        "cancel",
        "prune",
        "doctor",
        "config",
        "enqueue",
    ]
    for command in commands:
        done = run_importd(command, "--help")
        assert done.returncode == 0 and "example" in done.stdout, command
    bad = run_importd("show", "not-a-number")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "importd: argument id: invalid int value: 'not-a-number' (see 'importd show --help')"
    ]


async def test_the_daemon_prunes_on_its_retention(conn: Conn, daemons: StartDaemon) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (kind, status, finished_at) "
        "SELECT 'csv', 'completed', now() - interval '2 hours' FROM generate_series(1, 1500)"
    )
    kept = await failed_job(conn, finished_ago="2 hours")
    proc = daemons(
        "--poll-interval",
        "1",
        env=importd_env(IMPORTD_RETENTION_COMPLETED="1h", IMPORTD_RETENTION_FAILED="1d"),
    )
    await proc.wait_for_event("jobs_pruned", timeout=20)
    assert await conn.fetchval("SELECT array_agg(id) FROM import_jobs") == [kept]
