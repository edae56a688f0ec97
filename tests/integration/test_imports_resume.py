"""Imports survive crashes, timeouts and lost leases: resumed, exactly once; a source that
changed between attempts is caught."""

from __future__ import annotations

from pathlib import Path

import importd
from tests.helpers import Conn, Drain, wait_until
from tests.httpserver import Reply, Server

SLOW_TABLE = """
CREATE TABLE plain (id int, name text);
CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({delay}); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON plain FOR EACH ROW EXECUTE FUNCTION slow_row();
"""


async def retry_due(conn: Conn, job_id: int) -> None:
    """Wait until the job's retry comes due."""
    await wait_until(
        lambda: conn.fetchval("SELECT run_at <= now() FROM import_jobs WHERE id = $1", job_id),
        what="the retry to come due",
    )


def csv_file(path: Path, rows: int, bad: tuple[int, ...] = ()) -> str:
    lines = ["id,name"] + [
        f"{i},name-{i}" if i not in bad else f"x{i},bad" for i in range(1, rows + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return f"file://{path}"


async def test_timeout_resumes_from_the_last_chunk(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    await conn.execute(SLOW_TABLE.format(delay=0.0003))
    source = csv_file(tmp_path / "t.csv", 3000)
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "atomic": False, "chunk_rows": 500},
        timeout=1,
        max_attempts=20,
    )
    settings = {
        "import_roots": (str(tmp_path),),
        "tables": ("plain",),
        "backoff_base": 0.05,
        "backoff_max": 0.1,
        "backoff_jitter": 0,
    }
    offsets = []
    for _ in range(20):
        code = await drain(**settings)
        row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
        if row["status"] == "completed":
            break
        assert code == 11 and "JobTimeout" in row["last_error"]
        # On a loaded machine an attempt may time out before its first chunk commits.
        offsets.append((row["checkpoint"] or {}).get("offset", 0))
        assert await conn.fetchval("SELECT count(*) FROM plain") == row["rows_done"]
        await retry_due(conn, job_id)
    assert row["status"] == "completed", row["last_error"]
    # A checkpoint never moves back, and a later attempt went on from one (no start over).
    assert offsets and offsets == sorted(offsets) and offsets[-1] > 0
    counts = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS d FROM plain")
    assert counts["n"] == counts["d"] == 3000
    assert row["result"]["rows_loaded"] == 3000


async def test_a_file_that_changed_between_attempts_is_reported(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    await conn.execute(SLOW_TABLE.format(delay=0.0005))
    path = tmp_path / "c.csv"
    source = csv_file(path, 5000)
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "atomic": False, "chunk_rows": 500},
        timeout=1,
    )
    settings = {
        "import_roots": (str(tmp_path),),
        "tables": ("plain",),
        "backoff_base": 0.05,
        "backoff_max": 0.05,
    }
    assert await drain(**settings) == 11
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["status"] == "pending" and row["checkpoint"]["offset"] > 0
    before = await conn.fetchval("SELECT count(*) FROM plain")
    with path.open("a") as fh:
        fh.write("5001,late\n")
    await retry_due(conn, job_id)
    assert await drain(**settings) == 10
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["status"] == "failed"
    assert "SourceChanged" in row["last_error"] and "size was" in row["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM plain") == before  # nothing mixed in


async def test_a_url_that_changed_between_attempts_fails_an_atomic_import(
    conn: Conn, drain: Drain
) -> None:
    await conn.execute(SLOW_TABLE.format(delay=0))
    body = ("id,name\n" + "".join(f"{i},name-{i:060d}\n" for i in range(1, 20_001))).encode()
    server = Server().start()
    try:
        url = server.route("/c.csv", Reply(200, body, ranges=True, trickle=0.15))
        job_id = await importd.enqueue(
            conn, "csv", {"source": url, "table": "plain", "chunk_rows": 1000}, timeout=1.5
        )
        settings = {
            "url_prefixes": (server.url + "/",),
            "tables": ("plain",),
            "backoff_base": 0.05,
            "backoff_max": 0.05,
        }
        assert await drain(**settings) == 11
        assert (await conn.fetchval("SELECT checkpoint FROM import_jobs WHERE id = $1", job_id))[
            "loaded"
        ] > 0
        server.route("/c.csv", Reply(200, body + b"20001,new\n", {"ETag": '"v2"'}, ranges=True))
        await retry_due(conn, job_id)
        assert await drain(**settings) == 10
    finally:
        server.stop()
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["status"] == "failed" and "SourceChanged" in row["last_error"]
    assert "etag was" in row["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM plain") == 0  # atomic: nothing landed
    assert (
        await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'importd_staging'")
        == 0
    )


async def test_https_atomic_import_resumes_with_range_requests(conn: Conn, drain: Drain) -> None:
    await conn.execute(SLOW_TABLE.format(delay=0))
    body = ("id,name\n" + "".join(f"{i},name-{i:060d}\n" for i in range(1, 20_001))).encode()
    server = Server().start()
    try:
        url = server.route("/big.csv", Reply(200, body, ranges=True, trickle=0.15))
        job_id = await importd.enqueue(
            conn,
            "csv",
            {"source": url, "table": "plain", "chunk_rows": 1000},
            timeout=1.5,
            max_attempts=30,
        )
        settings = {
            "url_prefixes": (server.url + "/",),
            "tables": ("plain",),
            "backoff_base": 0.05,
            "backoff_max": 0.1,
            "backoff_jitter": 0,
        }
        for _ in range(30):
            await drain(**settings)
            status = await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", job_id)
            if status != "pending":
                break
            assert await conn.fetchval("SELECT count(*) FROM plain") == 0
            await retry_due(conn, job_id)
        row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
        assert row["status"] == "completed", row["last_error"]
        assert row["attempts"] >= 2
        ranges = [h.headers.get("Range") for h in server.hits("/big.csv")]
        starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges if r]
        assert starts and starts == sorted(starts) and starts[0] > 0
        assert all(
            h.headers.get("If-Range") == '"v1"'
            for h in server.hits("/big.csv")
            if h.headers.get("Range")
        )
    finally:
        server.stop()
    counts = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS d FROM plain")
    assert counts["n"] == counts["d"] == 20_000


async def test_an_atomic_import_that_times_out_says_what_to_change(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    """An atomic import of a file keeps nothing of a run that timed out: its error says
    so, how far the run got, and what to change."""
    await conn.execute(SLOW_TABLE.format(delay=0.002))
    source = csv_file(tmp_path / "slow.csv", 3000)
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "chunk_rows": 100},
        timeout=1.5,
        max_attempts=1,
    )
    assert await drain(import_roots=(str(tmp_path),), tables=("plain",)) == 10
    error = await conn.fetchval("SELECT last_error FROM import_jobs WHERE id = $1", job_id)
    assert error.startswith("JobTimeout: the job exceeded its timeout of 1.5 s; an atomic")
    assert "keeps nothing of a run that stops" in error and "atomic: false" in error
    loaded = int(error.split(" rows were loaded")[0].rsplit("(", 1)[1].replace(",", ""))
    assert 0 < loaded < 3000  # how far it got
    assert await conn.fetchval("SELECT count(*) FROM plain") == 0  # and nothing was kept
