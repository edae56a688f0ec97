"""Audit 25's reference: an import of CSV records checked against PostgreSQL itself, each
record COPYed alone (same format options, same columns) into a twin table in schema
``ref``, in a savepoint. The import must load exactly the twin's rows and reject exactly
the records the twin refused, each at the line where it starts, with its record as the
file has it and, for a row the target refuses (SQLSTATE class 23), PostgreSQL's own
message and detail; for a value that does not convert, COPY's message (importd prefixes
it with the column's name)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

import importd
from tests.helpers import Conn, Drain


@dataclass
class Reference:
    rows: list[tuple[Any, ...]]
    errors: list[tuple[int, str]]  # (record index, message as importd writes it)
    classes: dict[int, str] = field(default_factory=dict)  # record index -> SQLSTATE


def _told(exc: asyncpg.PostgresError) -> str:
    detail = getattr(exc, "detail", None)
    return f"{exc.message} ({detail})" if detail else str(exc.message)


async def create_twins(conn: Conn, ddl: str) -> None:
    """``ddl`` (statements with ``{schema}``) run for schemas public and ref."""
    await conn.execute("CREATE SCHEMA IF NOT EXISTS ref")
    for schema in ("public", "ref"):
        await conn.execute(ddl.format(schema=schema))


async def table_rows(conn: Conn, schema: str, table: str, select: str = "*") -> list[Any]:
    rows = await conn.fetch(f"SELECT {select} FROM {schema}.{table}")
    return sorted((tuple(r) for r in rows), key=repr)


async def reference_csv(
    conn: Conn,
    table: str,
    columns: list[str],
    records: list[str],
    *,
    null: str = "",
    delimiter: str = ",",
    quote: str = '"',
    select: str = "*",
) -> Reference:
    errors: list[tuple[int, str]] = []
    classes: dict[int, str] = {}
    for i, record in enumerate(records):
        try:
            async with conn.transaction():
                await conn.copy_to_table(
                    table,
                    schema_name="ref",
                    source=io.BytesIO((record + "\n").encode()),
                    columns=columns,
                    format="csv",
                    null=null,
                    delimiter=delimiter,
                    quote=quote,
                    escape=quote,
                    header=False,
                )
        except asyncpg.PostgresError as exc:
            errors.append((i, _told(exc)))
            classes[i] = exc.sqlstate
    return Reference(await table_rows(conn, "ref", table, select), errors, classes)


def _copy_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


async def reference_ndjson(
    conn: Conn, table: str, columns: list[str], records: list[dict[str, Any]], select: str = "*"
) -> Reference:
    """NDJSON records of strings, numbers and nulls (a missing key: NULL), each COPYed
    alone in the text format."""
    errors: list[tuple[int, str]] = []
    classes: dict[int, str] = {}
    for i, record in enumerate(records):
        fields = []
        for name in columns:
            value = record.get(name)
            fields.append("\\N" if value is None else _copy_text(str(value)))
        try:
            async with conn.transaction():
                await conn.copy_to_table(
                    table,
                    schema_name="ref",
                    source=io.BytesIO(("\t".join(fields) + "\n").encode()),
                    columns=columns,
                    format="text",
                )
        except asyncpg.PostgresError as exc:
            errors.append((i, _told(exc)))
            classes[i] = exc.sqlstate
    return Reference(await table_rows(conn, "ref", table, select), errors, classes)


@dataclass
class Outcome:
    status: str
    last_error: str | None
    rows: list[tuple[Any, ...]]
    errors: list[tuple[int, str, str]]  # (line, message, raw record)
    result: dict[str, Any]


async def run_import(
    conn: Conn,
    drain: Drain,
    tmp_path: Path,
    table: str,
    text: str,
    *,
    kind: str = "csv",
    select: str = "*",
    name: str | None = None,
    drain_options: dict[str, Any] | None = None,
    **payload: Any,
) -> Outcome:
    path = tmp_path / (name or f"{table}.{kind}")
    path.write_text(text)
    body = {
        "source": f"file://{path}",
        "table": table,
        "max_errors": 10_000,
        "chunk_rows": 10,
        **payload,
    }
    job = await importd.enqueue(conn, kind, body)
    await drain(import_roots=(str(tmp_path),), tables=(f"public.{table}",), **(drain_options or {}))
    row = await conn.fetchrow("SELECT status, last_error, result FROM import_jobs WHERE id=$1", job)
    errors = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id=$1 ORDER BY 1",
        job,
    )
    result = row["result"]
    if isinstance(result, str):
        result = json.loads(result)
    return Outcome(
        row["status"],
        row["last_error"],
        await table_rows(conn, "public", table, select),
        [(e["line_number"], e["message"], e["raw_record"]) for e in errors],
        dict(result or {}),
    )


def starts(records: list[str], first: int = 2) -> list[int]:
    """The line each record starts at, the first at ``first``."""
    out, line = [], first
    for record in records:
        out.append(line)
        line += record.count("\n") + 1
    return out


def assert_exact(got: Outcome, ref: Reference, records: list[str], first_line: int = 2) -> None:
    """The import did what the reference did, row for row and error for error."""
    assert got.status == "completed", got.last_error
    lines = starts(records, first_line)
    want = [(lines[i], message, records[i]) for i, message in ref.errors]
    assert [e[0] for e in got.errors] == [w[0] for w in want], (got.errors, want)
    assert [e[2] for e in got.errors] == [w[2] for w in want]
    for (line, message, _), (_, expected, _) in zip(got.errors, want, strict=True):
        if message != expected and not message.endswith(": " + expected):
            # (a conversion error: the check's message carries no detail)
            short = expected.split(" (", 1)[0]
            assert message.endswith(": " + short), (line, message, expected)
    assert got.rows == ref.rows
    assert got.result.get("rows_rejected") == len(ref.errors), got.result
    assert got.result.get("rows_loaded") == len(ref.rows), got.result
