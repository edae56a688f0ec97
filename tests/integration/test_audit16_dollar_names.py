"""Audit 16: a target whose name holds ``$importd$``.

The set-based check of a chunk's rows (``sql/queries/build_check.sql``) runs DO blocks
quoted as ``$importd$ … $importd$``; its row-by-row insert names the target inside such
a block. Column names and types holding a dollar sign are kept out of it
(``CheckTable.statements``), but the target's schema and table names were not: a table
``t$importd$x`` ended the block early, and the first chunk with a refused row failed the
job with ``PostgresSyntaxError: syntax error at or near "x"`` — a fault of importd told
as the payload's. Such a name is a legal PostgreSQL identifier; the rows must load as
into any other table (the exact path, COPY by COPY, where the check cannot be used)."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, Drain


@pytest.mark.parametrize(("schema", "table"), [("public", "t$importd$x"), ("s$importd$y", "t")])
@pytest.mark.parametrize("atomic", [False, True])
async def test_a_target_named_with_the_blocks_quote_still_loads_its_good_rows(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, schema: str, table: str
) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'CREATE TABLE "{schema}"."{table}" (k int, v int CHECK (v > 0))')
    # A refused row (v = -1) in each chunk of ten.
    text = "k,v\n" + "".join(f"{i},{-1 if i % 10 == 3 else i}\n" for i in range(1, 41))
    path = tmp_path / "t.csv"
    path.write_text(text)
    job = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{path}",
            "table": f"{schema}.{table}",
            "atomic": atomic,
            "chunk_rows": 10,
            "max_errors": 10,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=(f"{schema}.*",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert (row["status"], row["last_error"]) == ("completed", None)
    count = await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{table}"')
    assert count == 36
    lines = [
        r["line_number"]
        for r in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
    ]
    assert lines == [4, 14, 24, 34]
