"""Targets that refuse rows their own way: a row no partition takes and a row a trigger
refuses (RAISE EXCEPTION) are row errors, in every strategy, and the others load (a
trigger's refusal retried the whole import before); a missing table or column fails at
once saying what to change (found by an audit of issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain

DDL = """
CREATE TABLE part (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE part_low PARTITION OF part FOR VALUES FROM (0) TO (100);
CREATE TABLE trig (k int, v text);
CREATE FUNCTION no_sevens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.k = 7 THEN RAISE EXCEPTION 'seven is not allowed'; END IF; RETURN NEW; END $$;
CREATE TRIGGER no_sevens BEFORE INSERT ON trig FOR EACH ROW EXECUTE FUNCTION no_sevens();
"""


@pytest.mark.parametrize("on_conflict", ["error", "ignore"])
@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.parametrize("table", ["part", "trig"])
async def test_rows_a_partition_or_trigger_refuses_are_row_errors(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, table: str, on_conflict: str
) -> None:
    await conn.execute(DDL)
    path = tmp_path / "p.csv"
    path.write_text("k,v\n1,a\n7,b\n500,c\n9,d\n")
    job = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{path}",
            "table": table,
            "atomic": atomic,
            "max_errors": 5,
            "on_conflict": on_conflict,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=(f"public.{table}",))
    row = await conn.fetchrow(
        "SELECT status, attempts, last_error FROM import_jobs WHERE id=$1", job
    )
    errs = await conn.fetch(
        "SELECT line_number, message FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
    )
    assert row["status"] == "completed", (row["last_error"], [tuple(e) for e in errs])
    bad = {"part": 4, "trig": 3}[table]
    assert [e["line_number"] for e in errs] == [bad], [tuple(e) for e in errs]
    assert "importd" not in errs[0]["message"]
    if table == "trig":
        assert errs[0]["message"] == "seven is not allowed"
    kept = sorted(r["k"] for r in await conn.fetch(f"SELECT k FROM {table}"))
    assert kept == sorted({1, 7, 500, 9} - {7 if table == "trig" else 500})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"table": "nosuch"}, "public.nosuch does not exist"),
        ({"table": "trig", "columns": {"k": "k", "v": "nosuch"}}, "nosuch"),
    ],
)
async def test_a_missing_table_or_column_fails_at_once(
    conn: Conn, drain: Drain, tmp_path: Path, payload: dict[str, Any], expected: str
) -> None:
    await conn.execute(DDL)
    path = tmp_path / "p.csv"
    path.write_text("k,v\n1,a\n")
    job = await importd.enqueue(conn, "csv", {"source": f"file://{path}", **payload})
    await drain(import_roots=(str(tmp_path),), tables=("public.*",))
    row = await conn.fetchrow(
        "SELECT status, attempts, last_error FROM import_jobs WHERE id=$1", job
    )
    assert row["status"] == "failed" and row["attempts"] == 1, row["last_error"]
    assert expected in row["last_error"]
    assert "importd_" not in row["last_error"]
