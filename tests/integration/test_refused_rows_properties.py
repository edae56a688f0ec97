"""Property-based: rows the target refuses (NOT NULL, CHECK, a duplicate key), mixed with
values that do not convert, at random places, in chunks of ten rows, CSV and NDJSON, both
atomic modes. The reference is PostgreSQL itself: the same rows INSERTed one by one into
a table of the same name and constraints in another schema, each in a savepoint. importd
must load exactly the rows the reference keeps, reject exactly the others by their
source line, and tell a refusal as PostgreSQL does (its message, then its detail).

This covers the COPY that leaves out what a NOT NULL or a CHECK refuses
(``CheckTable.filtered``), its fallbacks (a duplicate key, a value that does not convert), and the
chunks after a chunk with refused rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importd
from tests.helpers import Conn, Drain

SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=SLOW)
DDL = """
CREATE TABLE {schema}.{name} (
    k int{unique},
    b int NOT NULL CHECK (b > 0),
    c text CHECK (c <> 'no')
)"""
B = st.sampled_from(["1", "7", "42", "0", "-3", "", "x"])  # good, CHECK, NULL, no int
# "" is NULL in CSV: allowed; a value over two lines, and one with a quote (CSV quotes
# both): a refused row's source line and record then come from lines joined.
C = st.sampled_from(["a", "b c", "no", "", "two\nlines", 'a "q"'])
RECORD = st.tuples(st.integers(1, 12).map(str), B, C)


@pytest.fixture
async def schemas(conn: Conn) -> Conn:
    await conn.execute("CREATE SCHEMA ref")
    for schema in ("public", "ref"):
        for unique in (True, False):
            name = "r_u" if unique else "r_p"
            await conn.execute(
                DDL.format(schema=schema, name=name, unique=" UNIQUE" if unique else "")
            )
    return conn


async def reference(conn: Conn, table: str, records: list[tuple[str, str, str]]) -> Any:
    """The rows PostgreSQL keeps of ``records`` (one INSERT each, in file order) and the
    index and message of each it refuses (None for a value that does not convert)."""
    await conn.execute(f"TRUNCATE ref.{table}")
    refused: list[tuple[int, str | None]] = []
    async with conn.transaction():
        for i, (k, b, c) in enumerate(records):
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"INSERT INTO ref.{table} VALUES ($1::text::int, $2::text::int, $3)",
                        k,
                        b or None,
                        c or None,
                    )
            except asyncpg.DataError:
                refused.append((i, None))
            except asyncpg.IntegrityConstraintViolationError as exc:
                detail = f" ({exc.detail})" if exc.detail else ""
                refused.append((i, f"{exc.message}{detail}"))
    rows = [tuple(r) for r in await conn.fetch(f"SELECT k, b, c FROM ref.{table} ORDER BY 1, 2, 3")]
    return rows, refused


@EXAMPLES
@given(
    records=st.lists(RECORD, min_size=1, max_size=60),
    unique=st.booleans(),
    fmt=st.sampled_from(["csv", "ndjson"]),
)
async def test_the_rows_the_target_refuses_are_the_ones_postgresql_refuses(
    schemas: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[tuple[str, str, str]],
    unique: bool,
    fmt: str,
) -> None:
    conn = schemas
    table = "r_u" if unique else "r_p"
    if fmt == "csv":
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["k", "b", "c"])
        starts, written = [], []  # each record's source line, and its text as written
        line = 2
        for record in records:
            one = io.StringIO(newline="")
            csv.writer(one, lineterminator="\n").writerow(record)
            written.append(one.getvalue()[:-1])
            starts.append(line)
            line += written[-1].count("\n") + 1
            writer.writerow(record)
    else:
        out = io.StringIO()
        for k, b, c in records:
            value: Any = None if not b else (int(b) if b.lstrip("-").isdigit() else b)
            out.write(json.dumps({"k": int(k), "b": value, "c": c or None}) + "\n")
        starts, written = list(range(1, len(records) + 1)), []
    path = tmp_path / f"r.{fmt}"
    path.write_text(out.getvalue())
    expected_rows, refused = await reference(conn, table, records)
    await conn.execute(f"TRUNCATE public.{table}, import_job_errors")
    for atomic in (False, True):  # (one after the other: both write the same table)
        await conn.execute(f"TRUNCATE public.{table}")
        payload = {"table": table, "atomic": atomic, "max_errors": 1000, "chunk_rows": 10}
        job = await importd.enqueue(conn, fmt, {"source": f"file://{path}", **payload})
        await drain(import_roots=(str(tmp_path),), tables=(f"public.{table}",))
        row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
        errors = await conn.fetch(
            "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id=$1 "
            "ORDER BY 1",
            job,
        )
        shown = (atomic, row["last_error"], [tuple(e) for e in errors])
        assert row["status"] == "completed", shown
        got = [tuple(r) for r in await conn.fetch(f"SELECT k, b, c FROM {table} ORDER BY 1, 2, 3")]
        assert got == expected_rows, shown
        assert [e["line_number"] for e in errors] == [starts[i] for i, _ in refused], shown
        if written:  # (CSV: the record as the file has it, lines and quotes included)
            assert [e["raw_record"] for e in errors] == [written[i] for i, _ in refused], shown
        for (_, message), error in zip(refused, errors, strict=True):
            if message is not None:  # (a refusal; a conversion error is importd's own words)
                assert error["message"] == message, shown
