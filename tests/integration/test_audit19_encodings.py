"""Audit 19: ``payload.encoding: "ascii"`` was given to COPY as ``ENCODING 'SQL_ASCII'``,
which PostgreSQL takes as "no conversion, no check": a byte above 0x7F went into a UTF8
database as it was. The job completed and the table then held text that is not UTF-8:
every later ``SELECT`` of the column failed (``invalid byte sequence for encoding
"UTF8": 0xe9``). Every value a job loads must be valid in the database's encoding; a
record that is not (it is not ASCII, and not UTF-8 either) is a row error at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, Drain


@pytest.mark.parametrize("atomic", [True, False])
async def test_an_ascii_file_with_a_byte_above_0x7f_never_stores_invalid_text(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    await conn.execute("CREATE TABLE words (w text, n int)")
    source = tmp_path / "words.csv"
    source.write_bytes(b"w,n\ncaf\xe9,1\nok,2\n")
    job_id = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{source}",
            "table": "words",
            "encoding": "ascii",
            "max_errors": 5,
            "atomic": atomic,
        },
    )
    assert await drain(import_roots=(str(tmp_path),), tables=("public.words",)) == 0
    # Every stored value reads back (a value not valid UTF-8 would make this fail).
    assert await conn.fetch("SELECT w, n FROM words ORDER BY n") == [("ok", 2)]
    (error,) = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id = $1",
        job_id,
    )
    assert error["line_number"] == 2
    assert "invalid byte sequence" in error["message"], error["message"]
    assert error["raw_record"].startswith("caf")
    result = await conn.fetchval("SELECT result FROM import_jobs WHERE id = $1", job_id)
    assert (result["rows_loaded"], result["rows_rejected"]) == (1, 1)
