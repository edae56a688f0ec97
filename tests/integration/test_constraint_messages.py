"""No internal name (importd_*, a staging table, a helper column) in a
row error or job error, for constraint violations in every mode (found
whole by an audit of issue 12; kept as the constraint path changes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain

DDL = """
CREATE TABLE parent (id int PRIMARY KEY);
INSERT INTO parent VALUES (1);
CREATE TABLE {t} (
    k int UNIQUE,
    nn text NOT NULL,
    pos int CHECK (pos > 0),
    p int REFERENCES parent(id),
    v varchar(3)
);
"""


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.parametrize("atomic", [True, False])
async def test_constraint_messages_name_no_internal_relation_or_column(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, fmt: str
) -> None:
    await conn.execute(DDL.format(t="target"))
    rows = [
        (1, "a", 1, 1, "ok"),
        (2, None, 1, 1, "ok"),  # NOT NULL
        (3, "a", -1, 1, "ok"),  # CHECK
        (4, "a", 1, 9, "ok"),  # FK
        (1, "a", 1, 1, "ok"),  # UNIQUE, duplicate of line 2
        (6, "a", 1, 1, "toolong"),  # varchar(3)
        (7, "a", 1, 1, "ok"),
    ]
    if fmt == "csv":
        text = "k,nn,pos,p,v\n" + "".join(
            ",".join("" if v is None else str(v) for v in r) + "\n" for r in rows
        )
    else:
        text = "".join(
            json.dumps(dict(zip(["k", "nn", "pos", "p", "v"], r, strict=True))) + "\n" for r in rows
        )
    path = tmp_path / f"c.{fmt}"
    path.write_text(text)
    job = await importd.enqueue(
        conn,
        fmt,
        {"source": f"file://{path}", "table": "target", "atomic": atomic, "max_errors": 10},
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.target",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    errs = await conn.fetch(
        "SELECT line_number, message FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
    )
    shown: list[Any] = [row["last_error"], *[tuple(e) for e in errs]]
    assert row["status"] == "completed", shown
    first = 2 if fmt == "csv" else 1
    assert [e["line_number"] for e in errs] == [first + i for i in (1, 2, 3, 4, 5)], shown
    for _, message in errs:
        assert "importd" not in message.lower(), shown
        assert "staging" not in message.lower(), shown
    assert sorted(r["k"] for r in await conn.fetch("SELECT k FROM target")) == [1, 7]


@pytest.mark.parametrize("atomic", [True, False])
async def test_a_column_named_like_a_secret_keeps_its_reason_readable(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    """A new user's table with password, token and api_key columns: every row error read
    "column token: ***" (the redaction took the name for a key before a secret)."""
    await conn.execute("CREATE TABLE accounts (id int, password text, token int, api_key int)")
    path = tmp_path / "a.csv"
    path.write_text("id,password,token,api_key\n1,pw1,1,1\n2,pw2,abc,2\n3,pw3,3,abcd\n")
    job = await importd.enqueue(
        conn,
        "csv",
        {"source": f"file://{path}", "table": "accounts", "atomic": atomic, "max_errors": 10},
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.accounts",))
    errors = await conn.fetch(
        "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 ORDER BY 1", job
    )
    assert [(e["line_number"], e["message"]) for e in errors] == [
        (3, 'column token: invalid input syntax for type integer: "abc"'),
        (4, 'column api_key: invalid input syntax for type integer: "abcd"'),
    ]
    # And as a reader gets them: `importd show --errors` (CSV and JSON, the dashboard's
    # download too), which redacted them again whole.
    from importd import ops  # noqa: PLC0415

    shown = await ops.errors(conn, job)
    assert 'column token: invalid input syntax for type integer: ""abc""' in shown, shown
    as_json = json.loads(await ops.errors(conn, job, as_json=True))
    assert as_json[1]["message"] == 'column api_key: invalid input syntax for type integer: "abcd"'
    assert "column token: invalid input syntax" in await ops.show(conn, job)
