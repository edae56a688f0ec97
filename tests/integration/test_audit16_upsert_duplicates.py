"""Audit 16: ``on_conflict: update`` with a key that comes twice in the file.

One ``INSERT … ON CONFLICT DO UPDATE`` may not touch the same row twice: PostgreSQL
refuses the whole statement (``CardinalityViolationError``, SQLSTATE 21000, "ON CONFLICT
DO UPDATE command cannot affect row a second time") when two rows it proposes share a
key. importd moves a chunk's staged rows with one such statement, so a key written twice
within a chunk (an update feed that changes a row twice) failed the move; the error is no
row's in importd's eyes and no permanent one either, so the job was retried, met it again
on every attempt and never completed.

The reference is PostgreSQL itself, row by row: each record upserted alone, in file
order, the later one winning; a record the target refuses (here a CHECK) is a row error
at its line, as always."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import importd
from tests.helpers import Conn, Drain

DDL = "CREATE TABLE {schema}.t (k int PRIMARY KEY, v int CHECK (v > 0), note text)"

# (k, v, note): key 1 three times (twice in the first chunk of ten, once in the second),
# key 2 twice in a row, key 5 twice with a refused record between, one refused record.
RECORDS: list[tuple[int, int, str]] = [
    (1, 10, "a"),
    (2, 20, "b"),
    (1, 11, "c"),
    (2, 21, "d"),
    (2, 22, "e"),
    (5, 50, "f"),
    (5, -1, "g"),
    (5, 51, "h"),
    (6, 60, "i"),
    (7, 70, "j"),
    (8, 80, "k"),
    (1, 12, "l"),
    (9, 90, "m"),
]


async def _reference(conn: Conn) -> tuple[list[tuple[Any, ...]], list[int]]:
    """The rows PostgreSQL keeps upserting the records one by one, and the indexes of the
    records it refuses."""
    await conn.execute("CREATE SCHEMA ref; " + DDL.format(schema="ref"))
    refused = []
    for i, (k, v, note) in enumerate(RECORDS):
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ref.t VALUES ($1, $2, $3) "
                    "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note",
                    k,
                    v,
                    note,
                )
        except asyncpg.CheckViolationError:
            refused.append(i)
    rows = [tuple(r) for r in await conn.fetch("SELECT * FROM ref.t ORDER BY k")]
    return rows, refused


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.parametrize("atomic", [False, True])
async def test_a_key_twice_in_a_chunk_is_upserted_in_file_order(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, fmt: str
) -> None:
    expected, refused = await _reference(conn)
    await conn.execute(DDL.format(schema="public"))
    if fmt == "csv":
        text = "k,v,note\n" + "".join(f"{k},{v},{note}\n" for k, v, note in RECORDS)
        first = 2
    else:
        text = "".join(json.dumps({"k": k, "v": v, "note": n}) + "\n" for k, v, n in RECORDS)
        first = 1
    path = tmp_path / f"t.{fmt}"
    path.write_text(text)
    job = await importd.enqueue(
        conn,
        fmt,
        {
            "source": f"file://{path}",
            "table": "t",
            "on_conflict": "update",
            "conflict_columns": ["k"],
            "atomic": atomic,
            "chunk_rows": 10,
            "max_errors": 5,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.t",))
    row = await conn.fetchrow(
        "SELECT status, last_error, attempts, result FROM import_jobs WHERE id=$1", job
    )
    assert (row["status"], row["last_error"], row["attempts"]) == ("completed", None, 1)
    got = [tuple(r) for r in await conn.fetch("SELECT * FROM public.t ORDER BY k")]
    assert got == expected
    lines = [
        r["line_number"]
        for r in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
    ]
    assert lines == [first + i for i in refused]
    assert row["result"]["rows_rejected"] == len(refused)
    # Every record but the refused one was written (inserted or updated): none skipped.
    assert row["result"]["rows_loaded"] == len(RECORDS) - len(refused)
    assert row["result"]["rows_skipped"] == 0
