"""Atomic imports through a real importd process: the job completes in the handler's own
transaction, and the daemon's log and counters say so, with no false alarm."""

from __future__ import annotations

from pathlib import Path

import importd
from tests.helpers import Conn, StartDaemon, importd_env
from tests.integration.test_imports_resume import csv_file

# The target's rows are checked at COMMIT by a deferred constraint trigger that takes
# 0.3 s: the commit that makes the rows visible and completes the job stays open over
# several heartbeats, which wait on the job's row until it commits.
SLOW_COMMIT = """
CREATE TABLE plain (id int, name text);
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON plain DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.id = 1) EXECUTE FUNCTION slow_commit();
"""


async def test_an_atomic_import_completes_without_a_lost_lease_alarm(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    await conn.execute(SLOW_COMMIT)
    jobs = []
    for n in range(3):
        source = csv_file(tmp_path / f"a{n}.csv", 2000)
        jobs.append(
            await importd.enqueue(
                conn, "csv", {"source": source, "table": "plain", "atomic": True}, timeout=30
            )
        )
    env = importd_env(IMPORTD_IMPORT_ROOTS=str(tmp_path), IMPORTD_TABLES="public.plain")
    proc = daemons("--heartbeat-interval", "0.05", "--poll-interval", "0.2", env=env)
    for job_id in jobs:
        await proc.wait_for_event("job_completed", job_id=job_id, timeout=60)
    proc.signal()
    assert await proc.wait_exit(15) == 0
    lost = proc.events_named("job_lease_lost")
    assert lost == [], lost
    rows = await conn.fetch("SELECT status, attempts FROM import_jobs ORDER BY id")
    assert [(r["status"], r["attempts"]) for r in rows] == [("completed", 1)] * 3
    assert await conn.fetchval("SELECT count(*) FROM plain") == 3 * 2000
    (stopped,) = proc.events_named("daemon_stopped")
    assert (stopped["completed"], stopped["failed"], stopped["lease_lost"]) == (3, 0, 0)


async def test_an_atomic_import_whose_commit_fails_is_not_called_completed(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    """The completion was written in the handler's transaction, then its COMMIT failed (a
    deferred constraint): nothing was loaded and the job did not complete; the run fails
    with PostgreSQL's message, at once, instead of being logged and counted as completed."""
    await conn.execute("""
        CREATE TABLE plain (id int, name text);
        CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'row % refused at commit', NEW.id; END $$;
        CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON plain DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.id = 7) EXECUTE FUNCTION refuse_at_commit();
    """)
    source = csv_file(tmp_path / "r.csv", 100)
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "atomic": True},
        timeout=30,
        max_attempts=1,
    )
    env = importd_env(IMPORTD_IMPORT_ROOTS=str(tmp_path), IMPORTD_TABLES="public.plain")
    proc = daemons("--heartbeat-interval", "0.05", "--poll-interval", "0.2", env=env)
    failed = await proc.wait_for_event("job_failed", job_id=job_id, timeout=30)
    assert "row 7 refused at commit" in failed["error"]
    proc.signal()
    assert await proc.wait_exit(15) == 0
    assert proc.events_named("job_completed") == []
    assert proc.events_named("job_lease_lost") == []
    row = await conn.fetchrow("SELECT status, attempts, last_error FROM import_jobs")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "row 7 refused at commit" in row["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM plain") == 0
    (stopped,) = proc.events_named("daemon_stopped")
    assert (stopped["completed"], stopped["failed"], stopped["lease_lost"]) == (0, 1, 0)
