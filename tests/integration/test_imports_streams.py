"""Parallel COPY streams (``copy_streams``): two connections load exactly what one does —
the same rows, the same rejected rows at the same lines, the same rows left loaded when
max_errors is passed — they do COPY at once, and an import killed mid-way resumes exactly
once (tests/acceptance/test_imports_streams.py). Streams serve direct imports and staged
atomic ones (from a URL); an atomic import of a file loads in one transaction, so one
connection."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain, wait_until
from tests.httpserver import Reply, Server

SLOW = """
CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({delay}); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION slow_row();
"""


def mixed_csv(path: Path, rows: int, bad: set[int]) -> str:
    """A CSV with quoted fields over two lines every 13th record, a blank line, and bad
    records (a word in the int column) at the record numbers in ``bad``."""
    out = ["a,b,c"]
    for i in range(1, rows + 1):
        c = f'"two\nlines {i}"' if i % 13 == 0 else f'"x, ""{i}"""' if i % 7 == 0 else "z"
        out.append(f"r{i},{'NOTINT' if i in bad else i},{c}")
        if i == rows // 2:
            out.append("")
    path.write_text("\n".join(out) + "\n")
    return f"file://{path}"


def serve(server: Server, path: Path) -> str:
    """The URL at which ``server`` serves the file at ``path`` (with Range requests)."""
    return server.route("/" + path.name, Reply(200, path.read_bytes(), ranges=True))


async def outcome(conn: Conn, job_id: int, table: str) -> tuple[Any, ...]:
    job = await conn.fetchrow(
        "SELECT status, last_error, result FROM import_jobs WHERE id = $1", job_id
    )
    rows = await conn.fetch(f"SELECT a, b, c FROM {table} ORDER BY b, a")
    errors = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id = $1 "
        "ORDER BY line_number",
        job_id,
    )
    result = dict(job["result"] or {})
    result.pop("duration_s", None)
    result.pop("table", None)
    # (Which rejected row a TooManyErrors message names first depends on how chunks
    # shared transactions; the counts must agree.)
    last_error = re.sub(r"; first: line \d+: [^;]*", "", (job["last_error"] or "").split("\n")[0])
    return job["status"], last_error, result, [tuple(r) for r in rows], [tuple(e) for e in errors]


@pytest.mark.parametrize("how", ["direct", "atomic-url", "atomic-file"])
@pytest.mark.parametrize("max_errors", [100, 4])
async def test_two_streams_load_exactly_what_one_does(
    conn: Conn, drain: Drain, tmp_path: Path, how: str, max_errors: int
) -> None:
    bad = {5, 260, 261, 777, 1301, 1850, 1999}
    source = mixed_csv(tmp_path / "m.csv", 2000, bad)
    atomic = how != "direct"
    server = Server().start()
    if how == "atomic-url":
        source = serve(server, tmp_path / "m.csv")
    got: dict[int, tuple[Any, ...]] = {}
    for streams in (1, 2):
        table = f"t{streams}"
        await conn.execute(f"CREATE TABLE {table} (a text, b int, c text)")
        job_id = await importd.enqueue(
            conn,
            "csv",
            {
                "source": source,
                "table": table,
                "atomic": atomic,
                "max_errors": max_errors,
                "chunk_rows": 100,
            },
            max_attempts=1,
        )
        await drain(
            import_roots=(str(tmp_path),),
            url_prefixes=(server.url + "/",),
            tables=("public.*",),
            copy_streams=streams,
        )
        got[streams] = await outcome(conn, job_id, table)
    server.stop()
    assert got[2] == got[1]
    status, last_error, result, rows, errors = got[1]
    if max_errors == 100:
        assert status == "completed"
        assert result["rows_loaded"] == len(rows) == 2000 - len(bad)
        assert [e[0] for e in errors] == sorted(  # the source line of each bad record
            1 + i + (i - 1) // 13 + (i > 1000) for i in bad
        )
    else:
        assert status == "failed" and "TooManyErrors: 5 rows rejected" in last_error
        # atomic: nothing loaded; direct: the good rows of the chunks (100 lines each)
        # before the one that holds the fifth bad row (record 1301)
        loaded = [r[1] for r in rows]
        if atomic:
            assert loaded == []
        else:
            assert 1200 < len(loaded) + 4 < 1301
            assert loaded == [i for i in range(1, len(loaded) + 5) if i not in bad]


@pytest.mark.parametrize("how", ["direct", "atomic-url"])
async def test_two_streams_copy_at_once(conn: Conn, drain: Drain, tmp_path: Path, how: str) -> None:
    # A slow column type: COPY checks it, into the target or into a staging table.
    await conn.execute("""
        CREATE FUNCTION slow_ok(v text) RETURNS bool LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.0005); RETURN true; END $$;
        CREATE DOMAIN slow_text AS text CHECK (slow_ok(VALUE));
        CREATE TABLE plain (a text, b int, c slow_text)""")
    source = mixed_csv(tmp_path / "s.csv", 2000, set())
    server = Server().start()
    if how == "atomic-url":
        source = serve(server, tmp_path / "s.csv")
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": source, "table": "plain", "atomic": how != "direct", "chunk_rows": 100},
    )
    drained = asyncio.create_task(
        drain(
            import_roots=(str(tmp_path),),
            url_prefixes=(server.url + "/",),
            tables=("public.*",),
            copy_streams=2,
        )
    )
    await wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) >= 2 FROM pg_stat_activity "
            "WHERE state = 'active' AND query LIKE 'COPY %'"
        ),
        interval=0.005,
        what="two COPYs at once",
    )
    assert await drained == 0
    server.stop()
    row = await conn.fetchrow("SELECT status, result FROM import_jobs WHERE id = $1", job_id)
    assert row["status"] == "completed" and row["result"]["rows_loaded"] == len(
        await conn.fetch("SELECT DISTINCT b FROM plain")
    )
