"""The rows the target refuses, found by the loader and by the check ahead on pooled
connections that outlive an import: a session keeps its temporary tables, so the table of
refused rows (typed for one target's NOT NULL and CHECKs) must never serve another
target of the same columns; and the check ahead, whose transaction inserts into the
target, must not wait behind a lock another session queued behind the loader (the
loader waits for it: a deadlock PostgreSQL cannot see). The references are PostgreSQL's
own verdicts, row by row."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

import importd
from tests.helpers import Conn, Drain, while_a_lock_queues

# Same columns and types (so the same check table), other tests: ``a`` reads v, ``b`` k.
# (CHECKs through a function: no bound the screen reads (``bounds``), so their refused
# rows are found by the table of refused rows, the one sessions must not share.)
TARGETS = {
    "a": "CREATE TABLE a (k int, v int NOT NULL CHECK (sign(v) > 0), note text)",
    "b": "CREATE TABLE b (k int NOT NULL CHECK (sign(k) > 0), v int, note text)",
}


def _file(tmp_path: Path, name: str, rows: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text("k,v,note\n" + "".join(f"{k},{v},{n}\n" for k, v, n in rows))
    return path


def _rows(target: str, count: int) -> list[tuple[str, str, str]]:
    """Rows with one the target refuses in every ten (the column its test reads is -1)."""
    out = []
    for i in range(1, count + 1):
        bad = "-1" if i % 10 == 3 else str(i)
        out.append((bad, str(i), f"n{i}") if target == "b" else (str(i), bad, f"n{i}"))
    return out


async def _expected(conn: Conn, target: str, rows: list[tuple[str, str, str]]) -> list[int]:
    """The lines of the rows PostgreSQL refuses, each INSERTed alone into a copy."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS ref_{target} (LIKE {target} INCLUDING ALL)"
    )
    refused = []
    for line, (k, v, note) in enumerate(rows, start=2):
        try:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO ref_{target} VALUES ($1::int, $2::int, $3)", int(k), int(v), note
                )
        except asyncpg.IntegrityConstraintViolationError:
            refused.append(line)
    return refused


@pytest.mark.parametrize("through", ["pool", "pgbouncer"])
@pytest.mark.parametrize("atomic", [False, True])
async def test_targets_of_the_same_columns_and_other_checks_share_pooled_sessions(
    conn: Conn,
    drain: Drain,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
    dsn: str,
    atomic: bool,
    through: str,
) -> None:
    for ddl in TARGETS.values():
        await conn.execute(ddl)
    jobs = []
    for round_ in range(3):
        for target in TARGETS:
            rows = _rows(target, 120)
            path = _file(tmp_path, f"{target}{round_}", rows)
            payload = {
                "source": f"file://{path}",
                "table": target,
                "atomic": atomic,
                "max_errors": 1000,
                "chunk_rows": 10,
            }
            job = await importd.enqueue(conn, "csv", payload)
            jobs.append((job, target, await _expected(conn, target, rows)))
    # One job at a time on two connections: each session serves both targets in turn
    # (behind a transaction-mode pgbouncer, any of its server sessions, each transaction).
    pooled = {}
    if through == "pgbouncer":
        pooled = {
            "dsn": request.getfixturevalue("pooled_dsn"),
            "listen_dsn": dsn,
            "statement_cache_size": 0,
        }
    await drain(
        concurrency=1,
        pool_size=2,
        import_roots=(str(tmp_path),),
        tables=("public.a", "public.b"),
        **pooled,
    )
    for job, target, refused in jobs:
        row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
        assert row["status"] == "completed", (target, row["last_error"])
        lines = await conn.fetch(
            "SELECT line_number, message FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
        assert [r["line_number"] for r in lines] == refused, target
        assert all("check constraint" in r["message"] for r in lines), lines[:2]
    for target in TARGETS:
        count = await conn.fetchval(f"SELECT count(*) FROM {target}")
        assert count == 3 * (120 - 12), target
    logged = [line for line in capsys.readouterr().out.splitlines() if "check_ahead_failed" in line]
    assert not logged, logged[:2]


async def test_a_lock_queued_behind_the_loader_does_not_stall_the_check_ahead(
    conn: Conn, drain: Drain, tmp_path: Path, dsn: str
) -> None:
    await conn.execute(TARGETS["a"])
    rows = _rows("a", 400)
    refused = await _expected(conn, "a", rows)
    path = _file(tmp_path, "a", rows)
    payload = {
        "source": f"file://{path}",
        "table": "a",
        "atomic": True,
        "max_errors": 1000,
        "chunk_rows": 10,
    }
    job = await importd.enqueue(conn, "csv", payload, timeout=60)
    # (Without a bound on the check ahead's lock wait, the import waits for ever: the
    # job's own timeout ends it.)
    await while_a_lock_queues(
        conn, dsn, "public.a", drain(import_roots=(str(tmp_path),), tables=("public.a",))
    )
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    lines = await conn.fetch(
        "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
    )
    assert [r["line_number"] for r in lines] == refused
    assert await conn.fetchval("SELECT count(*) FROM a") == 400 - 40
