"""Where the COPY that leaves out what a NOT NULL or a CHECK refuses (``CheckTable.filtered``)
must step aside for the exact path, and no row may be lost or loaded twice: a role that may
INSERT into the target but not SELECT from it (a COPY with a WHERE clause reads the
columns it names), a CHECK that calls a volatile function (the COPY's test and the
insert's may judge a row differently), and a duplicate key in a chunk after chunks with
refused rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import importd
from tests.helpers import Conn, Drain, daemon_role


async def _load(conn: Conn, drain: Drain, tmp_path: Path, table: str, text: str, **kw: str) -> Any:
    path = tmp_path / f"{table}.csv"
    path.write_text(text)
    job = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{path}",
            "table": table,
            "atomic": False,
            "max_errors": 10_000,
            "chunk_rows": 10,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=(f"public.{table}",), **kw)
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    errors = await conn.fetch(
        "SELECT line_number, message FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
    )
    return [(e["line_number"], e["message"]) for e in errors]


def _rows(count: int, bad: set[int], bad_value: str) -> str:
    return "k,v\n" + "".join(f"{i},{bad_value if i in bad else i}\n" for i in range(1, count + 1))


async def test_a_role_that_may_insert_but_not_select_still_gets_every_row_right(
    conn: Conn, drain: Drain, tmp_path: Path, dsn: str
) -> None:
    await conn.execute("CREATE TABLE ins (k int, v int NOT NULL CHECK (v > 0))")
    async with daemon_role(conn, dsn, "importd_ins", "ins-password-1") as weak:
        await conn.execute("REVOKE SELECT ON ins FROM importd_ins")
        bad = {3, 14, 15, 27, 40}
        errors = await _load(conn, drain, tmp_path, "ins", _rows(45, bad, "-1"), dsn=weak)
    assert [line for line, _ in errors] == sorted(i + 1 for i in bad)
    assert all('violates check constraint "ins_v_check"' in m for _, m in errors), errors
    kept = [r["k"] for r in await conn.fetch("SELECT k FROM ins ORDER BY k")]
    assert kept == [i for i in range(1, 46) if i not in bad]


async def test_a_check_that_calls_a_volatile_function_loses_no_row(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    # A CHECK that holds half the time, judged anew each time it is evaluated: whatever
    # the COPY's test, the flag and the insert say, each row is loaded once or rejected.
    await conn.execute("CREATE TABLE vol (k int, v int CHECK (random() < 0.5 OR v > 0))")
    errors = await _load(conn, drain, tmp_path, "vol", _rows(200, set(range(1, 201, 3)), "-1"))
    kept = [r["k"] for r in await conn.fetch("SELECT k FROM vol ORDER BY k")]
    rejected = [line - 1 for line, _ in errors]
    assert sorted(kept + rejected) == list(range(1, 201))
    assert not set(kept) & set(rejected)
    assert all(k % 3 == 1 for k in rejected), rejected  # (only the rows with v = -1)


async def test_a_duplicate_key_after_refused_rows_takes_the_exact_path(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    await conn.execute("CREATE TABLE dup (k int UNIQUE, v int CHECK (v > 0))")
    text = _rows(60, {2, 12, 22}, "-1") + "5,5\n61,61\n"  # line 62: k = 5 again
    errors = await _load(conn, drain, tmp_path, "dup", text)
    assert [line for line, _ in errors] == [3, 13, 23, 62], errors
    assert errors[-1][1].startswith(
        'duplicate key value violates unique constraint "dup_k_key" (Key (k)=(5) already exists.)'
    ), errors
    kept = [r["k"] for r in await conn.fetch("SELECT k FROM dup ORDER BY k")]
    assert kept == [i for i in range(1, 62) if i not in {2, 12, 22}]
