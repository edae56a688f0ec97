"""A target whose columns are named like importd's own helper columns (``importd_line``,
``importd_error``, and names the generated SQL uses: ``r``, ``e``, ``c1``, ``v1``,
``line``, ``t``) imports exactly like any other, in every strategy: the good rows load,
the bad ones are rejected at their source lines with messages that name the user's
column, never an internal one (issue 12). Staging tables an older release left behind
(the user's column names) are never read as this release's: the import starts over."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import importd
from importd.handlers.imports.common import describe
from tests.helpers import Conn, Drain
from tests.httpserver import Reply, Server

HEADER = "c2,importd_line,importd_error,r,e,c1,v1,line,t"
TABLE = """
CREATE TABLE hostile (
    c2 int, importd_line int, importd_error text, r int CHECK (r >= 0), e date,
    c1 numeric(5,2), v1 text, line bigint, t boolean
)
"""
COLUMNS = HEADER.split(",")
# Bad records (by record number) and what their message must name: a column of the
# user's (the one that holds the bad value), a constraint, or None (no name at all).
BAD: dict[int, tuple[str, str | None]] = {
    3: ("{i},{i},err,x,2020-01-02,1.5,v,{i},t", "column r"),
    7: ("{i},{i},err,{i},2020-13-45,1.5,v,{i},t", "column e"),
    8: ("{i},{i},err,{i},2020-01-02,12345.67,v,{i},t", "column c1"),
    9: ("{i},oops,err,{i},2020-01-02,1.5,v,{i},t", "column importd_line"),
    14: ("bad,{i},err,{i},2020-01-02,1.5,v,{i},t", "column c2"),
    15: ("{i},{i},err,{i},2020-01-02,1.5,v,1e99,t", "column line"),
    16: ("{i},{i},err", "column r"),  # short: the first column missing is the user's r
    17: ("{i},{i},err,{i},2020-01-02,1.5,v,{i},maybe", "column t"),
    22: ("{i},{i},err,-1,2020-01-02,1.5,v,{i},t", "constraint hostile_r_check"),
    23: ("{i},{i},err,{i},2020-01-02,1.5,v,{i},t,extra", None),
    31: ("{i},{i},err,{i},2020-01-02,1.5,v,{i},truth", "column t"),
    32: ('{i},{i},"two\nlines",{i},2020-01-02,1.5,v,{i},x', "column t"),
    75: ("{i},{i},err,{i},2020-01-02,-999.999,v,{i},f", "column c1"),
}
RECORDS = 80
# Internal names that must never reach a message: the helper tables' positional columns
# beyond the user's own c1 and c2, the helper tables themselves.
INTERNAL = re.compile(r"\bc(?:[3-9]|\d\d)\b|importd_check|importd_staging|job_\d")


def good(i: int) -> str:
    v1 = f'"multi\nline {i}"' if i % 5 == 0 else f"v{i}"
    return f"{i},{i * 10},e{i},{i},2020-01-{i % 28 + 1:02d},{i % 100}.25,{v1},{i * 7},{'tf'[i % 2]}"


def source() -> tuple[bytes, list[tuple[int, str | None]], list[tuple[Any, ...]]]:
    """The CSV, the lines of its bad records with what their message names, and the rows
    its good records make (as the table holds them)."""
    lines = [HEADER]
    bad: list[tuple[int, str | None]] = []
    rows: list[tuple[Any, ...]] = []
    for i in range(1, RECORDS + 1):
        line = len("\n".join(lines).split("\n")) + 1
        if i in BAD:
            text, named = BAD[i]
            lines.append(text.format(i=i))
            bad.append((line, named))
        else:
            lines.append(good(i))
            v1 = f"multi\nline {i}" if i % 5 == 0 else f"v{i}"
            rows.append(
                (
                    i,
                    i * 10,
                    f"e{i}",
                    i,
                    f"2020-01-{i % 28 + 1:02d}",
                    f"{i % 100}.25",
                    v1,
                    i * 7,
                    i % 2 == 0,
                )
            )
    return ("\n".join(lines) + "\n").encode(), bad, rows


def named(message: str) -> str | None:
    """What a rejected row's message names: ``column X`` or ``constraint X``, or None."""
    for pattern, kind in (
        (r"^column (.+?): ", "column"),
        (r'missing data for column "([^"]+)"', "column"),
        (r'check constraint "([^"]+)"', "constraint"),
    ):
        if match := re.search(pattern, message):
            return f"{kind} {match.group(1)}"
    return None


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


STRATEGIES: dict[str, dict[str, Any]] = {
    "direct": {"atomic": False},
    "atomic-file": {"atomic": True},
    "per-chunk": {"atomic": False, "on_conflict": "ignore"},
    "atomic-url": {"atomic": True},
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("chunk_rows", [10, 1000])
async def test_columns_named_like_importds_own(
    conn: Conn, drain: Drain, tmp_path: Path, server: Server, strategy: str, chunk_rows: int
) -> None:
    await conn.execute(TABLE)
    data, bad, rows = source()
    if strategy == "atomic-url":
        url = server.route("/h.csv", Reply(200, data, ranges=True))
    else:
        (tmp_path / "h.csv").write_bytes(data)
        url = f"file://{tmp_path / 'h.csv'}"
    payload = {"source": url, "table": "hostile", "max_errors": 100, "chunk_rows": chunk_rows}
    job_id = await importd.enqueue(conn, "csv", {**payload, **STRATEGIES[strategy]}, max_attempts=1)
    await drain(
        import_roots=(str(tmp_path),), url_prefixes=(server.url + "/",), tables=("public.hostile",)
    )
    job = await conn.fetchrow(
        "SELECT status, last_error, result FROM import_jobs WHERE id = $1", job_id
    )
    assert job["status"] == "completed", job["last_error"]
    got = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM hostile ORDER BY c2"  # (names from the test)
    )
    assert [
        (
            r["c2"],
            r["importd_line"],
            r["importd_error"],
            r["r"],
            str(r["e"]),
            str(r["c1"]),
            r["v1"],
            r["line"],
            r["t"],
        )
        for r in got
    ] == rows
    errors = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id = $1 "
        "ORDER BY line_number",
        job_id,
    )
    assert [(e["line_number"], named(e["message"])) for e in errors] == bad, [
        tuple(e) for e in errors
    ]
    for e in errors:
        assert not INTERNAL.search(e["message"]), e["message"]
        assert e["raw_record"] and not INTERNAL.search(e["raw_record"]), e["raw_record"]
    assert job["result"]["rows_loaded"] == len(rows)
    assert job["result"]["rows_rejected"] == len(bad)
    if STRATEGIES[strategy]["atomic"]:  # (per-chunk's table goes with the rescuer's sweep)
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'importd_staging'"
        )


@pytest.mark.parametrize("strategy", ["atomic-url", "per-chunk"])
async def test_staging_tables_of_an_older_release_are_never_resumed(
    conn: Conn, drain: Drain, tmp_path: Path, server: Server, strategy: str
) -> None:
    """An attempt of an older release left its staging table (named after the user's
    columns, the line last) and a checkpoint after its first chunk: this release never
    reads that table as one of its own. The target's columns are named c2, c1 (the old
    table's names are this release's positional names, in another order and types).
    Atomic: the staged rows are not trusted, the import starts over and loads exactly the
    file. Per chunk (the table is emptied at each chunk's commit): it is made again, and
    the import resumes after its first chunk."""
    await conn.execute("CREATE TABLE swapped (c2 int, c1 text)")
    data = ("c2,c1\n" + "".join(f"{i},a{i}\n" for i in range(1, 31))).encode()
    if strategy == "atomic-url":
        url = server.route("/s.csv", Reply(200, data, ranges=True))
        extra: dict[str, Any] = {"atomic": True}
        staging = "job_{id}_0"
    else:
        (tmp_path / "s.csv").write_bytes(data)
        url = f"file://{tmp_path / 's.csv'}"
        extra = {"atomic": False, "on_conflict": "ignore"}
        staging = "job_{id}"
    job_id = await importd.enqueue(
        conn, "csv", {"source": url, "table": "swapped", "chunk_rows": 10, **extra}
    )
    name = staging.format(id=job_id)
    first = b"".join(data.splitlines(keepends=True)[:11])  # the header and 10 records
    checkpoint = {
        "version": 1,
        "source": url,
        "offset": len(first),
        "line": 12,
        "columns": ["c2", "c1"],
        "loaded": 10,
        "failed": 0,
        "fingerprint": {},
        "parts": 1 if strategy == "atomic-url" else 0,
        "newline": "\n",
    }
    await conn.execute(
        "UPDATE import_jobs SET checkpoint = $2::text::jsonb WHERE id = $1",
        job_id,
        json.dumps(checkpoint),
    )
    # The older release's shape: the user's names, in the file's order, the line last.
    await conn.execute(
        f"CREATE UNLOGGED TABLE importd_staging.{name} (c2 int, c1 text, importd_line bigint)"
    )
    if strategy == "atomic-url":  # staged rows (not the file's: a resume would show them)
        await conn.execute(
            f"INSERT INTO importd_staging.{name} "
            "SELECT 1000 + i, 'stale' || i, i + 1 FROM generate_series(1, 10) AS i"
        )
    else:  # the first chunk, loaded and committed with the checkpoint
        await conn.execute(
            "INSERT INTO swapped SELECT i, 'a' || i FROM generate_series(1, 10) AS i"
        )
    settings = {"import_roots": (str(tmp_path),), "url_prefixes": (server.url + "/",)}
    assert await drain(**settings, tables=("public.swapped",)) == 0
    job = await conn.fetchrow(
        "SELECT status, last_error, result FROM import_jobs WHERE id = $1", job_id
    )
    assert job["status"] == "completed", job["last_error"]
    assert not await conn.fetchval("SELECT count(*) FROM import_job_errors")
    got = sorted(tuple(r) for r in await conn.fetch("SELECT c2, c1 FROM swapped"))
    assert got == [(i, f"a{i}") for i in range(1, 31)]
    assert job["result"]["rows_loaded"] == 30


NO_TEMP_TABLES = """
CREATE FUNCTION no_temp_tables() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE schema_name LIKE 'pg_temp%') THEN
        RAISE EXCEPTION 'no temporary tables here' USING ERRCODE = '42P10';
    END IF;
END $$;
CREATE EVENT TRIGGER no_temp_tables ON ddl_command_end EXECUTE FUNCTION no_temp_tables();
"""


@pytest.mark.parametrize("strategy", ["direct", "per-chunk"])
async def test_an_sql_error_of_the_check_is_told_as_what_it_is(
    conn: Conn, drain: Drain, tmp_path: Path, strategy: str
) -> None:
    """A statement of the set-based check fails with an SQL error of its own (here an
    event trigger refuses its temporary table, with the SQLSTATE of a bad ON CONFLICT
    clause): the job fails at once saying the check failed and why, never blaming the
    payload's conflict_columns."""
    await conn.execute("CREATE TABLE plain (a int, b text)")
    await conn.execute(NO_TEMP_TABLES)
    try:
        path = tmp_path / "p.csv"
        path.write_text("a,b\n" + "".join(f"{'x' if i == 5 else i},b{i}\n" for i in range(20)))
        payload: dict[str, Any] = {"source": f"file://{path}", "table": "plain"}
        if strategy == "per-chunk":
            payload["on_conflict"] = "ignore"
        job_id = await importd.enqueue(conn, "csv", payload)
        assert await drain(import_roots=(str(tmp_path),), tables=("public.plain",)) == 10
    finally:
        await conn.execute("DROP EVENT TRIGGER no_temp_tables")
    job = await conn.fetchrow(
        "SELECT status, attempts, last_error FROM import_jobs WHERE id = $1", job_id
    )
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["last_error"].startswith("CheckFailed: "), job["last_error"]
    assert (
        "InvalidColumnReferenceError (SQLSTATE 42P10): no temporary tables here"
        in job["last_error"]
    )
    assert "conflict_columns" not in job["last_error"]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_a_column_whose_name_holds_a_colon_is_named_whole(
    conn: Conn, drain: Drain, tmp_path: Path, server: Server, strategy: str
) -> None:
    """PostgreSQL writes ``column <name>: "<value>"``; a name with ``: "`` in it (or a
    value with it) is still told whole, the name by the table's own columns."""
    await conn.execute('CREATE TABLE colon (k int, "note: x" int, "a: ""b" int)')
    data = b'k,"note: x","a: ""b"\n1,2,3\n2,"x: ""y",3\n3,4,nope\n4,5,6\n'
    if strategy == "atomic-url":
        url = server.route("/c.csv", Reply(200, data, ranges=True))
    else:
        (tmp_path / "c.csv").write_bytes(data)
        url = f"file://{tmp_path / 'c.csv'}"
    payload = {"source": url, "table": "colon", "max_errors": 10, **STRATEGIES[strategy]}
    job_id = await importd.enqueue(conn, "csv", payload, max_attempts=1)
    await drain(
        import_roots=(str(tmp_path),), url_prefixes=(server.url + "/",), tables=("public.colon",)
    )
    status = await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", job_id)
    assert status == "completed"
    assert [tuple(r) for r in await conn.fetch("SELECT k FROM colon ORDER BY k")] == [(1,), (4,)]
    errors = await conn.fetch(
        "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 ORDER BY 1", job_id
    )
    assert [(e["line_number"], e["message"]) for e in errors] == [
        (3, 'column note: x: invalid input syntax for type integer: "x: "y"'),
        (4, 'column a: "b: invalid input syntax for type integer: "nope"'),
    ]


async def test_a_copy_error_names_a_column_with_a_colon_whole(conn: Conn) -> None:
    """The path that reads PostgreSQL's own COPY error (isolating bad rows COPY by COPY,
    when the set-based check cannot run): the column is told by the COPY's names."""
    await conn.execute('CREATE TABLE colon2 (k int, "a: ""b" int)')
    columns = ["k", 'a: "b']
    with pytest.raises(asyncpg.DataError) as caught:
        await conn.copy_to_table(
            "colon2", source=io.BytesIO(b'1,2\n2,"x: ""y"\n'), columns=columns, format="csv"
        )
    assert describe(caught.value, None, columns) == (
        2,
        'column a: "b: invalid input syntax for type integer: "x: "y"',
    )
    # Through a helper table of positional columns, told under the user's names.
    await conn.execute("CREATE TABLE helper (c1 int, c2 int)")
    with pytest.raises(asyncpg.DataError) as caught:
        await conn.copy_to_table(
            "helper", source=io.BytesIO(b'1,"x: ""y"\n'), columns=["c1", "c2"], format="csv"
        )
    assert describe(caught.value, columns, ["c1", "c2"])[1] == (
        'column a: "b: invalid input syntax for type integer: "x: "y"'
    )
