"""A delimiter that is a "%": the rows of staging tables and of the check's table carry
their source line first, written by a format string with the delimiter in it; a "%" there
made that format fail ("incomplete format"), so every import with bad rows, and every
staged import, failed with a ValueError. Both atomic modes, direct and staged, with bad
rows and rows the target refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, Drain


@pytest.mark.parametrize("on_conflict", ["error", "ignore"])
@pytest.mark.parametrize("atomic", [False, True])
async def test_a_percent_sign_delimiter_loads_and_rejects_the_right_rows(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, on_conflict: str
) -> None:
    await conn.execute("CREATE TABLE pct (k int UNIQUE, v int CHECK (v > 0), note text)")
    rows = [f"{i}%{-1 if i % 7 == 0 else i}%n{i}" for i in range(1, 41)]
    rows[10] = "11%eleven%n11"  # not an int
    path = tmp_path / "p.csv"
    path.write_text("k%v%note\n" + "\n".join(rows) + "\n")
    payload = {
        "table": "pct",
        "delimiter": "%",
        "atomic": atomic,
        "on_conflict": on_conflict,
        "max_errors": 100,
        "chunk_rows": 10,
    }
    job = await importd.enqueue(conn, "csv", {"source": f"file://{path}", **payload})
    await drain(import_roots=(str(tmp_path),), tables=("public.pct",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    lines = [
        r["line_number"]
        for r in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
    ]
    bad = sorted({i for i in range(1, 41) if i % 7 == 0} | {11})
    assert lines == [i + 1 for i in bad]
    kept = [r["k"] for r in await conn.fetch("SELECT k FROM pct ORDER BY k")]
    assert kept == [i for i in range(1, 41) if i not in bad]
