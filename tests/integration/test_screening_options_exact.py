"""Imports into jsonb, enum, array and domain columns with unusual COPY
options (quote "'", delimiter ';' / '|', null 'NA') load exactly what PostgreSQL, COPYing
each record alone with the same options, loads; the same rejected lines; both modes."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import asyncpg
import pytest

import importd
from tests.helpers import Conn, Drain

TYPES = """
CREATE TYPE mood AS ENUM ('happy', 'so so', 'a;b', 'it''s', 'NA');
CREATE DOMAIN plain_int AS integer;
"""
COLUMNS = "k int, jb jsonb, e mood, ai integer[], aw text[], dm plain_int, note text"
HEADER = ["k", "jb", "e", "ai", "aw", "dm", "note"]


def record(i: int, rng: random.Random) -> list[str | None]:
    jb = json.dumps({"n": i, "s": "it's; |x", "l": [1, 2.5, None]})
    e = rng.choice(["happy", "so so", "a;b", "it's", "NA", None])
    ai = f"{{{i},{-i}}}"
    aw = rng.choice(["{a,b}", "{x}", "{}", "{NULL,q}", '{"a b",c}'])
    dm = str(i)
    note = rng.choice([f"row {i}", f"row {i}\nline two", "NA", "", None, "it's"])
    spoil = rng.random()
    if spoil < 0.06:
        jb = "{" + str(i)
    elif spoil < 0.12:
        e = "sad"
    elif spoil < 0.18:
        ai = f"{{{i},x}}"
    elif spoil < 0.22:
        aw = "{a,"
    elif spoil < 0.26:
        dm = "12345678901"
    elif spoil < 0.28:
        return [str(i), jb]  # too few fields
    return [str(i), jb, e, ai, aw, dm, note]


@pytest.mark.parametrize(
    ("quote", "delimiter", "null"), [("'", ";", "NA"), ('"', "|", "NA"), ("'", "|", "")]
)
async def test_unusual_copy_options_load_exactly(
    conn: Conn, drain: Drain, tmp_path: Path, quote: str, delimiter: str, null: str
) -> None:
    await conn.execute(TYPES)
    for name in ("o_t", "o_f", "o_ref"):
        await conn.execute(
            f"CREATE TABLE {name} ({COLUMNS}, seq bigint GENERATED ALWAYS AS IDENTITY)"
        )
    rng = random.Random(12)
    out = io.StringIO(newline="")
    writer = csv.writer(
        out, delimiter=delimiter, quotechar=quote, lineterminator="\n", doublequote=True
    )
    writer.writerow(HEADER)
    pieces = []
    for i in range(1, 401):
        fields = record(i, rng)
        before = out.tell()
        # NULL unquoted as the null marker; a value equal to it quoted
        row = []
        for v in fields:
            if v is None:
                row.append(null)
            elif v == null or v == "" or any(c in v for c in (quote, delimiter, "\n", "\r")):
                row.append(quote + v.replace(quote, quote * 2) + quote)
            else:
                row.append(v)
        out.write(delimiter.join(row) + "\n")
        pieces.append(out.getvalue()[before:])
    path = tmp_path / "o.csv"
    path.write_text(out.getvalue())
    options = {
        "format": "csv",
        "delimiter": delimiter,
        "quote": quote,
        "escape": quote,
        "null": null,
    }
    rejected, line = [], 2
    for text in pieces:
        try:
            await conn.copy_to_table(
                "o_ref", source=io.BytesIO(text.encode()), columns=HEADER, **options
            )
        except asyncpg.PostgresError:
            rejected.append(line)
        line += text.count("\n")
    assert len(rejected) > 40
    jobs = {
        atomic: await importd.enqueue(
            conn,
            "csv",
            {
                "source": f"file://{path}",
                "table": "o_t" if atomic else "o_f",
                "atomic": atomic,
                "max_errors": 1000,
                "chunk_rows": 20,
                "quote": quote,
                "delimiter": delimiter,
                "null": null,
            },
        )
        for atomic in (True, False)
    }
    await drain(import_roots=(str(tmp_path),), tables=("public.o_t", "public.o_f"))
    query = "SELECT k, jb, e::text, ai, aw, dm, note FROM {} ORDER BY seq"
    expected = [tuple(r) for r in await conn.fetch(query.format("o_ref"))]
    for atomic, job in jobs.items():
        row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
        assert row["status"] == "completed", row["last_error"]
        table = "o_t" if atomic else "o_f"
        assert [tuple(r) for r in await conn.fetch(query.format(table))] == expected, atomic
        lines = await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
        assert [r["line_number"] for r in lines] == rejected, atomic
