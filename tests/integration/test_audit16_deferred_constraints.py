"""A target whose foreign key or unique constraint is ``DEFERRABLE INITIALLY DEFERRED``.

Such a constraint is checked at COMMIT, not when the row goes in: the chunk's COPY and
every fallback succeed, and the violation surfaced only when importd committed, which it
took for a passing error: the job went back to ``pending``, met the same violation on
every attempt, and never loaded the good rows nor named the bad one.

Now an import that commits chunk by chunk (``atomic: false``) checks such constraints
with each chunk's statements: the record that breaks one is a row error at its source
line, as for an immediate constraint and as PostgreSQL says when each record goes in
alone. An atomic import keeps the deferral (its rows may refer to rows further on in the
file) and checks it before it completes: a violation fails the job at once, naming the
constraint and the key, with nothing loaded."""

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


def _rows(constraint: str) -> list[tuple[int, int]]:
    if constraint == "foreign key":  # k = 13 names a parent that does not exist
        return [(k, 9 if k == 13 else k % 5 + 1) for k in range(1, 31)]
    return [(k, 2 if k == 13 else k) for k in range(1, 31)]  # k = 13 repeats k = 2's key


async def _import(
    conn: Conn, drain: Drain, tmp_path: Path, text: str, atomic: bool, table: str = "t"
) -> int:
    path = tmp_path / f"{table}.csv"
    path.write_text(text)
    payload = {
        "source": f"file://{path}",
        "table": table,
        "atomic": atomic,
        "chunk_rows": 10,
        "max_errors": 5,
    }
    job = await importd.enqueue(conn, "csv", payload)
    await drain(import_roots=(str(tmp_path),), tables=(f"public.{table}",))
    return job


@pytest.mark.parametrize(
    ("constraint", "on_conflict"),  # (ignore: staged, then moved by INSERT)
    [("foreign key", "error"), ("unique", "error"), ("foreign key", "ignore")],
)
async def test_chunk_by_chunk_a_row_breaking_a_deferred_constraint_is_a_row_error(
    conn: Conn, drain: Drain, tmp_path: Path, constraint: str, on_conflict: str
) -> None:
    await conn.execute(TABLES[constraint])
    rows = _rows(constraint)
    path = tmp_path / "t.csv"
    path.write_text("k,p\n" + "".join(f"{k},{p}\n" for k, p in rows))
    payload = {
        "source": f"file://{path}",
        "table": "t",
        "atomic": False,
        "chunk_rows": 10,
        "max_errors": 5,
        "on_conflict": on_conflict,
    }
    job = await importd.enqueue(conn, "csv", payload)
    await drain(import_roots=(str(tmp_path),), tables=("public.t",))
    row = await conn.fetchrow(
        "SELECT status, last_error, attempts FROM import_jobs WHERE id=$1", job
    )
    assert (row["status"], row["last_error"], row["attempts"]) == ("completed", None, 1)
    errors = await conn.fetch(
        "SELECT line_number, raw_record, message FROM import_job_errors WHERE job_id=$1", job
    )
    assert [(e["line_number"], e["raw_record"]) for e in errors] == [(14, f"13,{dict(rows)[13]}")]
    assert "violates" in errors[0]["message"], errors[0]["message"]
    assert await conn.fetchval("SELECT count(*) FROM t") == 29
    assert await conn.fetchval("SELECT count(*) FROM t WHERE k = 13") == 0


@pytest.mark.parametrize("constraint", list(TABLES))
async def test_atomic_a_deferred_violation_fails_at_once_naming_it(
    conn: Conn, drain: Drain, tmp_path: Path, constraint: str
) -> None:
    await conn.execute(TABLES[constraint])
    rows = _rows(constraint)
    job = await _import(
        conn, drain, tmp_path, "k,p\n" + "".join(f"{k},{p}\n" for k, p in rows), True
    )
    row = await conn.fetchrow(
        "SELECT status, last_error, attempts FROM import_jobs WHERE id=$1", job
    )
    assert (row["status"], row["attempts"]) == ("failed", 1), row["last_error"]
    error = row["last_error"]
    assert error.startswith("DeferredConstraint: "), error
    assert "DEFERRABLE INITIALLY DEFERRED" in error and "atomic: false" in error
    assert ("(p)=(9)" if constraint == "foreign key" else "(p)=(2)") in error, error
    assert await conn.fetchval("SELECT count(*) FROM t") == 0


async def test_atomic_rows_may_refer_to_rows_further_on(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    # A tree whose children come before their parents, chunks apart: what a deferred
    # foreign key is for. The atomic import keeps the deferral and loads it whole.
    await conn.execute(
        "CREATE TABLE node (id int PRIMARY KEY, "
        "parent int REFERENCES node DEFERRABLE INITIALLY DEFERRED)"
    )
    lines = [f"{i},{i + 25}" for i in range(1, 26)] + [f"{i}," for i in range(26, 51)]
    job = await _import(
        conn, drain, tmp_path, "id,parent\n" + "\n".join(lines) + "\n", True, "node"
    )
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM node") == 50
