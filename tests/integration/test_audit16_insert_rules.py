"""Audit 16: a target with a conditional ``ON INSERT … DO INSTEAD`` rule.

COPY ignores rules (PostgreSQL's documentation of COPY FROM: rules are not invoked), and
a direct import loads by COPY: a clean chunk's rows all land in the table. But once the
target refuses a row of a chunk, the fallbacks load by ``INSERT`` (the row-by-row insert
of the refused rows, then ``INSERT … SELECT`` of the chunk), which the rule rewrites: a
refused row the rule matches is not refused (the rule swallows it), the COPY's count of
rows left out and the inserts' count disagree, and the chunk goes through ``INSERT …
SELECT``, where the rule swallows every row it matches. Those records are then neither
loaded nor rejected: ``rows_loaded + rows_rejected`` falls short of the file's records,
and which records land depends on where the chunks are cut.

Expected: the rows load as COPY loads them (the rule ignored, as for every clean chunk of
the same job), the refused ones are row errors, and every record is accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, Drain


@pytest.mark.parametrize("atomic", [False, True])
async def test_every_record_is_loaded_or_rejected_whatever_the_rules_say(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    await conn.execute(
        "CREATE TABLE t (k int, v int CHECK (v > 0)); "
        "CREATE RULE r AS ON INSERT TO t WHERE NEW.k > 30 DO INSTEAD NOTHING"
    )
    # A refused row (v = -1) in each chunk of ten: k = 3, 13, 23, 33.
    records = [(k, -1 if k % 10 == 3 else k) for k in range(1, 41)]
    path = tmp_path / "t.csv"
    path.write_text("k,v\n" + "".join(f"{k},{v}\n" for k, v in records))
    job = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{path}",
            "table": "t",
            "atomic": atomic,
            "chunk_rows": 10,
            "max_errors": 10,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.t",))
    row = await conn.fetchrow("SELECT status, last_error, result FROM import_jobs WHERE id=$1", job)
    assert (row["status"], row["last_error"]) == ("completed", None)
    result = row["result"]
    assert result["rows_loaded"] + result["rows_rejected"] == len(records), result
    lines = [
        r["line_number"]
        for r in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
    ]
    assert lines == [4, 14, 24, 34]
    keys = [r["k"] for r in await conn.fetch("SELECT k FROM t ORDER BY k")]
    assert keys == [k for k, v in records if v > 0]
    assert result["rows_loaded"] == len(keys)
