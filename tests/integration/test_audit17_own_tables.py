"""Audit 17: ways to reach importd's own tables that the view check missed.

- ``find_own_table.sql`` compared names with an unqualified ``lower(c.relname)``: a
  ``lower(name)`` in any schema on the daemon's search_path (``public``, writable by every
  role before PostgreSQL 15) is an exact match for a ``name`` argument and wins over
  ``pg_catalog.lower(text)``, so whoever may create a function there turns the check off
  and a view on ``import_jobs`` becomes a target (forged jobs).
- A table that inherits from ``import_jobs`` shows its rows as the queue's (a scan of
  ``import_jobs`` reads its children): loading it forges jobs as surely as the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import importd

FORGED = "kind,status,payload,dedup_key\nnoop,pending,{},forged\n"


async def _refused(conn: Any, job_id: int) -> None:
    row = await conn.fetchrow(
        "SELECT status, attempts, last_error FROM import_jobs WHERE id = $1", job_id
    )
    assert row["status"] == "failed" and row["attempts"] == 1, row
    assert "importd's own table" in row["last_error"], row["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE dedup_key = 'forged'") == 0


async def test_a_lower_function_on_the_search_path_does_not_turn_the_view_check_off(
    conn: Any, drain: Any, tmp_path: Path
) -> None:
    # Anyone with CREATE on public (every role before PostgreSQL 15): an exact match for
    # lower(name), preferred to pg_catalog.lower(text) whatever the search_path order.
    await conn.execute(
        "CREATE FUNCTION public.lower(name) RETURNS text LANGUAGE sql IMMUTABLE "
        "AS $$ SELECT 'nothing to see'::text $$"
    )
    await conn.execute(
        "CREATE VIEW job_feed AS SELECT kind, status, payload, dedup_key FROM import_jobs"
    )
    source = tmp_path / "forged.csv"
    source.write_text(FORGED)
    # (on_conflict: the rows go in by INSERT, which an updatable view takes, not COPY.)
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": f"file://{source}", "table": "job_feed", "on_conflict": "ignore"},
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.*",))
    await _refused(conn, job_id)


async def test_a_table_that_inherits_from_import_jobs_is_refused(
    conn: Any, drain: Any, tmp_path: Path
) -> None:
    # Say, an archive the owner of import_jobs made a child of it: its rows are the queue's.
    await conn.execute("CREATE TABLE job_archive () INHERITS (import_jobs)")
    source = tmp_path / "forged.csv"
    # (The identity of import_jobs.id is not inherited: the row brings its id.)
    source.write_text("id," + FORGED.replace("\n", "\n1000,", 1))
    job_id = await importd.enqueue(
        conn, "csv", {"source": f"file://{source}", "table": "job_archive"}
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.*",))
    await _refused(conn, job_id)
