"""Audit 16: a target whose foreign key or unique constraint is ``DEFERRABLE INITIALLY
DEFERRED``.

A deferred constraint is checked at COMMIT, not when the row goes in: the chunk's COPY,
the set-based check and the row-by-row inserts (each in its own exception block) all
succeed, and the violation surfaces only when importd commits the chunk (or, atomic,
completes the job). The commit fails with ``ForeignKeyViolationError`` /
``UniqueViolationError``, which importd takes for a passing error: the job goes back to
``pending``, meets the same violation on every attempt, and never loads the good rows
nor names the bad one.

Expected, as for the same constraint declared immediate (and as PostgreSQL says when
each record is inserted alone): the record that violates it is a row error at its source
line, the others load, the job completes."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, Drain

TABLES = {
    "foreign key": (
        "CREATE TABLE parent (p int PRIMARY KEY); "
        "INSERT INTO parent SELECT generate_series(1, 5); "
        "CREATE TABLE t (k int, p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
    ),
    "unique": "CREATE TABLE t (k int, p int, UNIQUE (p) DEFERRABLE INITIALLY DEFERRED)",
}


@pytest.mark.parametrize("constraint", list(TABLES))
@pytest.mark.parametrize("atomic", [False, True])
async def test_a_row_violating_a_deferred_constraint_is_a_row_error(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, constraint: str
) -> None:
    await conn.execute(TABLES[constraint])
    if constraint == "foreign key":  # k = 13 names a parent that does not exist
        rows = [(k, 9 if k == 13 else k % 5 + 1) for k in range(1, 31)]
    else:  # k = 13 repeats the key of k = 2
        rows = [(k, 2 if k == 13 else k) for k in range(1, 31)]
    path = tmp_path / "t.csv"
    path.write_text("k,p\n" + "".join(f"{k},{p}\n" for k, p in rows))
    job = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{path}",
            "table": "t",
            "atomic": atomic,
            "chunk_rows": 10,
            "max_errors": 5,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.t",))
    row = await conn.fetchrow(
        "SELECT status, last_error, attempts FROM import_jobs WHERE id=$1", job
    )
    assert (row["status"], row["last_error"], row["attempts"]) == ("completed", None, 1)
    errors = await conn.fetch(
        "SELECT line_number, raw_record FROM import_job_errors WHERE job_id=$1", job
    )
    assert [(e["line_number"], e["raw_record"]) for e in errors] == [(14, f"13,{dict(rows)[13]}")]
    assert await conn.fetchval("SELECT count(*) FROM t") == 29
    assert await conn.fetchval("SELECT count(*) FROM t WHERE k = 13") == 0
