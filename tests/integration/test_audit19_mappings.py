"""Audit 19: ``payload.columns`` mappings.

- NDJSON: two fields mapped to one column (``{"A": "a", "B": "a"}``) were taken silently,
  and a record holding both loaded only the last one's value: the other was lost with
  no error. The same mapping for a CSV file is refused (``names column 'a' twice``);
  for NDJSON too, before any row is read.
- A mapping to a name that is no column (``{"B": "zz"}``) was reported as ``header field
  'zz' is not a column … map it with payload.columns``: the file has no field ``zz``, and
  the field was mapped. The message names the field and what it was mapped to.
- NDJSON under a mapping: a record's field the mapping does not name was reported as
  ``field 'a' is not among the import's columns (a)``, which reads as a contradiction
  when the field has a column's name; the message says the mapping leaves it out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import importd
from tests.helpers import Conn, Drain


async def _import(
    conn: Conn, drain: Drain, root: Path, kind: str, data: bytes, **payload: Any
) -> Any:
    """Import ``data`` as a ``kind`` file into a new table ``people (name, age)``; the
    job's row once drained."""
    await conn.execute("CREATE TABLE people (name text, age int)")
    source = root / f"data.{kind}"
    source.write_bytes(data)
    job_id = await importd.enqueue(
        conn, kind, {"source": f"file://{source}", "table": "people", **payload}
    )
    await drain(import_roots=(str(root),), tables=("public.people",))
    return await conn.fetchrow(
        "SELECT id, status, attempts, last_error FROM import_jobs WHERE id = $1", job_id
    )


async def test_ndjson_fields_mapped_to_one_column_are_refused(
    conn: Conn, drain: Drain, root: Path
) -> None:
    job = await _import(
        conn,
        drain,
        root,
        "ndjson",
        b'{"Name": "Ann", "Nickname": "Annie", "Age": 30}\n',
        columns={"Name": "name", "Nickname": "name", "Age": "age"},
    )
    assert (job["status"], job["attempts"]) == ("failed", 1), job
    assert job["last_error"].startswith("HeaderMismatch: "), job["last_error"]
    assert "'name' twice" in job["last_error"], job["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM people") == 0


async def test_a_field_mapped_to_no_column_is_named_with_its_mapping(
    conn: Conn, drain: Drain, root: Path
) -> None:
    job = await _import(
        conn,
        drain,
        root,
        "csv",
        b"Name,Years\nAnn,30\n",
        columns={"Name": "name", "Years": "agee"},
    )
    assert (job["status"], job["attempts"]) == ("failed", 1), job
    assert job["last_error"] == (
        "HeaderMismatch: header field 'Years' is mapped by payload.columns to 'agee', "
        "which is not a column of public.people (columns: name, age)"
    ), job["last_error"]


async def test_an_ndjson_field_a_mapping_leaves_out_is_told_so(
    conn: Conn, drain: Drain, root: Path
) -> None:
    job = await _import(
        conn,
        drain,
        root,
        "ndjson",
        b'{"Name": "Ann", "age": 30}\n{"Name": "Bob"}\n',
        columns={"Name": "name"},
        max_errors=1,
    )
    assert job["status"] == "completed", job
    (message,) = await conn.fetch(
        "SELECT message FROM import_job_errors WHERE job_id = $1", job["id"]
    )
    assert message["message"] == (
        "field 'age' is not among the fields payload.columns maps (Name)"
    ), message["message"]
