"""Imports survive crashes, timeouts and lost leases: resumed, exactly once; a source that
changed between attempts is caught."""

from __future__ import annotations

import signal
from pathlib import Path

import importd
from tests.helpers import Conn, StartDaemon, importd_env, wait_until
from tests.integration.test_imports_resume import SLOW_TABLE, csv_file


async def test_sigkill_mid_import_is_rescued_and_finishes_exactly_once(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    await conn.execute(SLOW_TABLE.format(delay=0.0003))
    source = csv_file(tmp_path / "big.csv", 8000, bad=(500, 5000, 7999))
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "atomic": False, "max_errors": 10, "chunk_rows": 500},
        timeout=3,
        max_attempts=25,
    )
    env = importd_env(IMPORTD_IMPORT_ROOTS=str(tmp_path), IMPORTD_TABLES="public.plain")
    flags = (
        "--lease-margin",
        "1",
        "--rescue-interval",
        "0.5",
        "--backoff-base",
        "0.1",
        "--poll-interval",
        "1",
    )
    first = daemons(*flags, env=env)
    await wait_until(
        lambda: conn.fetchval("SELECT rows_done >= 1000 FROM import_jobs WHERE id = $1", job_id),
        what="progress",
    )
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    second = daemons(*flags, env=env)
    try:
        await wait_until(
            lambda: conn.fetchval(
                "SELECT status = 'completed' FROM import_jobs WHERE id = $1", job_id
            ),
            timeout=120,
            what="the import to complete",
        )
    except AssertionError:
        row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
        raise AssertionError(f"{dict(row)}\n{second.text()[-4000:]}") from None
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["attempts"] >= 2
    assert row["result"]["rows_loaded"] == 7997 and row["result"]["rows_rejected"] == 3
    counts = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS d FROM plain")
    assert counts["n"] == counts["d"] == 7997  # every good row, none twice
    lines = [
        r["line_number"]
        for r in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id = $1 ORDER BY 1", job_id
        )
    ]
    assert lines == [501, 5001, 8000]  # each bad row reported once
    await second.wait_for_event("job_rescued", timeout=10, job_id=job_id)
    resumed = [e for e in second.events() if e["event"] == "import_resumed"]
    assert resumed and resumed[0]["rows_loaded"] >= 1000  # it did not start over


async def test_progress_is_visible_while_an_import_runs(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    await conn.execute(SLOW_TABLE.format(delay=0.0003))
    source = csv_file(tmp_path / "p.csv", 4000)
    # A 6 s timeout makes checkpoints come every 0.6 s (a tenth of the timeout).
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "atomic": False, "chunk_rows": 200},
        timeout=6,
        max_attempts=10,
    )
    env = importd_env(IMPORTD_IMPORT_ROOTS=str(tmp_path), IMPORTD_TABLES="public.plain")
    daemons("--poll-interval", "1", env=env)
    seen = set()

    async def completed_watching_progress() -> bool:
        row = await conn.fetchrow(
            "SELECT status, rows_done, bytes_read FROM import_jobs WHERE id = $1", job_id
        )
        if row["status"] == "running" and row["rows_done"]:
            seen.add((row["rows_done"], row["bytes_read"]))
            # what the row says is loaded is loaded: progress never runs ahead of the data
            assert await conn.fetchval("SELECT count(*) FROM plain") >= row["rows_done"]
        return bool(row["status"] == "completed")

    await wait_until(
        completed_watching_progress, timeout=60, interval=0.1, what="the import to complete"
    )
    assert len(seen) >= 2, seen  # it moved while running
    assert all(0 < done <= 4000 and read > 0 for done, read in seen)
    final = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert final["rows_done"] == final["rows_total"] == 4000
