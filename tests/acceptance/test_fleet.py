"""Fleets and rows: daemons claim only the kinds they serve and register themselves; no
row (infinite or unreadable timestamps) stops a daemon; the times that end a run are the
moment of the write; a listener is back within seconds of an outage."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import importd
from importd import db, fleet
from tests.helpers import Conn, PgServer, StartDaemon, count_jobs, run_importd, wait_until

FAST = ("--poll-interval", "60", "--rescue-interval", "0.5", "--heartbeat-interval", "0.2")
FLEET = ("--handlers", "tests.fleet_jobs")


async def test_mixed_fleet_runs_each_kind_on_the_daemon_that_serves_it(
    runs_table: Conn, dsn: str, daemons: StartDaemon
) -> None:
    conn = runs_table
    await importd.enqueue_many(
        conn,
        [importd.NewJob("thumbnail", {}) for _ in range(40)]
        + [importd.NewJob("noop", {}) for _ in range(10)],
    )
    plain = daemons("--no-fair", *FAST)  # no thumbnail handler, the plain claim
    await wait_until(
        lambda: count_jobs(conn, "kind = 'noop' AND status = 'completed'"), what="the noop jobs"
    )
    await wait_until(
        lambda: conn.fetchval("SELECT count(*) FROM importd_daemons"),
        what="the daemon's registration",
    )
    assert (
        await count_jobs(conn, "kind = 'thumbnail' AND status = 'pending' AND attempts = 0") == 40
    )
    status = await asyncio.to_thread(run_importd, "status", "--dsn", dsn)
    assert status.returncode == 0, status.stderr
    assert "thumbnail: 40 pending, no daemon serves it" in status.stdout
    assert "live daemons: 1" in status.stdout
    doctor = await asyncio.to_thread(run_importd, "doctor", "--dsn", dsn)
    line = next(x for x in doctor.stdout.splitlines() if " daemons " in x)
    assert line.startswith("WARNING") and "thumbnail: 40 pending, no daemon serves it" in line

    thumbs = daemons(*FLEET, *FAST)  # serves thumbnail; the fair claim (the default)
    await wait_until(lambda: _all_done(conn, 50), timeout=30, what="all 50 jobs")
    rows = await conn.fetch(
        "SELECT status, attempts, result, last_error FROM import_jobs WHERE kind = 'thumbnail'"
    )
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["attempts"] for r in rows} == {1}
    assert not [r for r in rows if r["last_error"]]  # no UnknownKind, no hand-back
    by = {r["result"]["by"] for r in rows}
    assert len(by) == 1 and by != {await _name_of(conn, plain.proc.pid)}
    assert by == {await _name_of(conn, thumbs.proc.pid)}
    assert not plain.saw("job_kind_not_served") and not thumbs.saw("job_kind_not_served")
    status = await asyncio.to_thread(run_importd, "status", "--dsn", dsn, "--json")
    report = json.loads(status.stdout)
    assert report["unserved"] == [] and len(report["daemons"]) == 2
    served = {d["pid"]: d["kinds"] for d in report["daemons"]}
    assert "thumbnail" in served[thumbs.proc.pid] and "thumbnail" not in served[plain.proc.pid]
    for proc in (plain, thumbs):
        proc.signal(signal.SIGTERM)
    assert [await p.wait_exit() for p in (plain, thumbs)] == [0, 0]
    assert await conn.fetchval("SELECT count(*) FROM importd_daemons") == 0  # both left


async def _all_done(conn: Any, total: int) -> bool:
    return await count_jobs(conn, "status = 'completed'") == total


async def _name_of(conn: Any, pid: int) -> str:
    return str(await conn.fetchval("SELECT name FROM importd_daemons WHERE pid = $1", pid))


async def test_drain_leaves_unserved_kinds_pending_and_says_so(conn: Conn, dsn: str) -> None:
    await importd.enqueue_many(
        conn,
        [importd.NewJob("thumbnail", {}) for _ in range(4)]
        + [importd.NewJob("noop", {}) for _ in range(3)],
    )
    done = await asyncio.to_thread(run_importd, "drain", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    # Off a terminal its last line, after the daemon_stopped and progress lines.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("drain: left 4 pending job(s) of kinds no handler here serves"), last
    assert "(thumbnail 4)" in last and '"daemon_stopped"' in done.stderr
    assert await count_jobs(conn, "kind = 'noop' AND status = 'completed'") == 3
    assert await count_jobs(conn, "kind = 'thumbnail' AND status = 'pending' AND attempts = 0") == 4
    served = await asyncio.to_thread(run_importd, "drain", "--dsn", dsn, *FLEET)
    assert served.returncode == 0, served.stderr
    assert "left" not in served.stderr
    assert await count_jobs(conn, "status = 'completed'") == 7


async def test_registry_rows_refresh_prune_and_leave(
    conn: Conn, dsn: str, daemons: StartDaemon
) -> None:
    await conn.execute(
        "INSERT INTO importd_daemons (name, host, pid, version, kinds, queues, last_seen) "
        "VALUES ('gone:1:abc', 'gone', 1, '0.0.1', '{noop}', NULL, now() - interval '1 hour')"
    )
    proc = daemons("--queue", "a", "--queue", "b=2", "--shutdown-grace", "0", *FAST)
    await proc.wait_for_event("daemon_ready")
    row = await conn.fetchrow("SELECT * FROM importd_daemons WHERE pid = $1", proc.proc.pid)
    assert row["name"].startswith(row["host"] + f":{proc.proc.pid}:")
    assert row["version"] == importd.__version__ and row["queues"] == ["a", "b"]
    assert {"noop", "sleep", "csv"} <= set(row["kinds"]) and "thumbnail" not in row["kinds"]
    await wait_until(
        lambda: conn.fetchval(
            "SELECT last_seen > $1 FROM importd_daemons WHERE pid = $2",
            row["last_seen"],
            proc.proc.pid,
        ),
        timeout=10,
        what="a refresh of last_seen",
    )
    await wait_until(
        lambda: conn.fetchval("SELECT count(*) = 0 FROM importd_daemons WHERE name = 'gone:1:abc'"),
        timeout=10,
        what="the stale row to be pruned",
    )
    # (The row is gone when the pruning commits; its log line follows it.)
    await proc.wait_for_event("daemon_pruned", timeout=10, name="gone:1:abc")
    # A job claimed by this daemon names it exactly as the registry does.
    job = await importd.enqueue(conn, "sleep", {"seconds": 30}, queue="a")
    await wait_until(
        lambda: conn.fetchval("SELECT locked_by FROM import_jobs WHERE id = $1", job),
        what="the claim",
    )
    assert (
        await conn.fetchval("SELECT locked_by FROM import_jobs WHERE id = $1", job) == row["name"]
    )
    status = await asyncio.to_thread(run_importd, "status", "--dsn", dsn)
    assert f"    host {row['host']}  pid {proc.proc.pid}  up " in status.stdout
    assert f"  {row['name']}  version {importd.__version__}  seen " in status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 80
    assert "queues: a, b" in " ".join(status.stdout.split()), status.stdout
    assert "gone" not in status.stdout
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit() == 0
    assert await conn.fetchval("SELECT count(*) FROM importd_daemons") == 0


async def test_rows_python_cannot_read_leave_daemons_running(
    dsn: str, conn: Conn, daemons: StartDaemon
) -> None:
    far = await conn.fetchval(
        "INSERT INTO import_jobs (kind, run_at) "
        "VALUES ('noop', '20000-01-01 00:00:00+00') RETURNING id"
    )
    ancient = await conn.fetchval(
        "INSERT INTO import_jobs (kind, run_at) VALUES ('noop', '0100-06-01 BC') RETURNING id"
    )
    future_born = await conn.fetchval(
        "INSERT INTO import_jobs (kind, created_at) VALUES ('noop', '20000-01-01') RETURNING id"
    )
    procs = [daemons(*FAST), daemons("--no-fair", *FAST)]
    await importd.enqueue_many(conn, [importd.NewJob("noop", {}) for _ in range(20)])
    await wait_until(
        lambda: count_jobs(conn, "status = 'completed'"), timeout=20, what="jobs to complete"
    )
    await wait_until(lambda: _all_done(conn, 22), timeout=20, what="22 completions")
    assert (
        await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", ancient) == "completed"
    )
    assert (
        await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", future_born)
        == "completed"
    )
    assert await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", far) == "pending"
    assert [p.proc.poll() for p in procs] == [None, None]
    shown = await asyncio.to_thread(run_importd, "show", str(far), "--dsn", dsn)
    assert shown.returncode == 0, shown.stderr
    assert "20000-01-01 00:00:00+00" in shown.stdout and "Traceback" not in shown.stderr
    as_json = await asyncio.to_thread(run_importd, "show", str(ancient), "--dsn", dsn, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["run_at"].endswith(" BC")
    status = await asyncio.to_thread(run_importd, "status", "--dsn", dsn)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert "noop" in status.stdout


async def test_finished_at_is_the_moment_of_the_write(conn: Conn, daemons: StartDaemon) -> None:
    job = await importd.enqueue(conn, "slow_tx", {"seconds": 1})
    daemons(*FLEET, *FAST)
    await wait_until(lambda: _all_done(conn, 1), timeout=20, what="the job")
    ran = await conn.fetchval(
        "SELECT extract(epoch FROM finished_at - started_at) FROM import_jobs WHERE id = $1", job
    )
    assert 1.0 <= ran < 3.0, ran


async def test_job_inserted_after_an_outage_starts_within_seconds(
    pg_server: PgServer, dsn: str, conn: Conn, daemons: StartDaemon
) -> None:
    assert pg_server.cluster is not None, "this test stops and starts the suite's own server"
    await conn.execute(
        "CREATE TABLE test_runs (job_id bigint, attempt int, worker text, "
        "started_at timestamptz, ended_at timestamptz)"
    )
    await conn.close()
    proc = daemons(*FAST, "--probe-interval", "0.5")
    await proc.wait_for_event("daemon_ready")
    cluster = pg_server.cluster
    await asyncio.to_thread(cluster.stop, "fast")
    # Five failed reconnects: an uncapped backoff (0.2 s, doubling) would now wait 3.2 s.
    await proc.wait_for_event("listener_connect_failed", timeout=30, count=5)
    await asyncio.to_thread(cluster.start)
    # The scenario, not a condition: the job comes a second after the server is back,
    # while a listener with a long backoff would still be waiting.
    await asyncio.sleep(1)
    fresh = await db.connect(dsn)
    try:
        inserted = await fresh.fetchval(
            "INSERT INTO import_jobs (kind) VALUES ('record') RETURNING clock_timestamp()"
        )
        started = await wait_until(
            lambda: fresh.fetchval("SELECT started_at FROM test_runs"),
            timeout=15,
            what="the job to start",
        )
        assert (started - inserted).total_seconds() < 3.0
        waits = [
            e["retry_in_s"] for e in proc.events() if e.get("event") == "listener_connect_failed"
        ]
        assert waits and max(waits) <= 2.0, waits
        assert proc.proc.poll() is None
    finally:
        await fresh.close()


def test_unserved_kinds_name_the_queues_nobody_serves() -> None:
    daemons: list[dict[str, Any]] = [
        {"kinds": ["noop", "thumbnail"], "queues": ["media"]},
        {"kinds": ["noop"], "queues": None},
    ]
    pending = [
        ("media", "thumbnail", 5),
        ("bulk", "thumbnail", 7),
        ("bulk", "noop", 3),
        ("default", "csv", 2),
        ("default", "http", 0),
    ]
    assert [u.text for u in fleet.unserved(pending, daemons)] == [
        "csv: 2 pending, no daemon serves it",
        "thumbnail: 7 pending in queue bulk, no daemon serves it",
    ]
    assert [u.text for u in fleet.unserved(pending, [])][-1] == (
        "thumbnail: 12 pending, no daemon serves it"
    )
