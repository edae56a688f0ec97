"""CSV and NDJSON imports: options, row errors, atomicity, resumption, and bad input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain, wait_until
from tests.httpserver import Reply, Server


@pytest.fixture
async def people(conn: Conn) -> Any:
    await conn.execute("""
        CREATE TABLE people (
            id int PRIMARY KEY,
            name text NOT NULL,
            age int CHECK (age >= 0),
            joined timestamptz,
            score numeric(6, 2),
            meta jsonb,
            created_at timestamptz NOT NULL DEFAULT now()
        )""")
    return conn


@pytest.fixture
def load(drain: Drain, root: Path) -> Any:
    """Drain with the import roots and the table allowlist set for these tests."""

    async def run(**overrides: Any) -> int:
        settings = {
            "import_roots": (str(root),),
            "tables": ("public.people", "public.plain"),
            "copy_chunk_rows": 1000,
            **overrides,
        }
        return await drain(**settings)

    return run


async def job_row(conn: Conn, job_id: int) -> Any:
    return await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)


async def errors(conn: Conn, job_id: int) -> list[tuple[int, str, str]]:
    rows = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors "
        "WHERE job_id = $1 ORDER BY line_number",
        job_id,
    )
    return [(r["line_number"], r["message"], r["raw_record"]) for r in rows]


def write(root: Path, name: str, data: bytes | str) -> str:
    path = root / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return f"file://{path}"


async def test_csv_loads_every_type_with_quoted_newlines(
    people: Conn, load: Drain, root: Path
) -> None:
    conn = people
    source = write(
        root,
        "p.csv",
        "id,name,age,joined,score,meta\n"
        '1,"Smith, Ann",30,2024-01-02T03:04:05Z,12.5,"{""a"": [1, 2]}"\n'
        '2,"two\nlines",,2024-02-01,,\n'
        "3,Bob,41,,-3.25,null\n",
    )
    job_id = await importd.enqueue(conn, "csv", {"source": source, "table": "people"})
    assert await load() == 0
    row = await job_row(conn, job_id)
    assert row["status"] == "completed", row["last_error"]
    assert row["result"]["rows_loaded"] == 3 and row["result"]["rows_rejected"] == 0
    assert row["rows_done"] == 3 and row["rows_total"] == 3
    assert row["bytes_read"] == os.path.getsize(root / "p.csv")
    people_rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM people")}
    assert people_rows[1]["name"] == "Smith, Ann" and people_rows[1]["meta"] == {"a": [1, 2]}
    assert people_rows[2]["name"] == "two\nlines" and people_rows[2]["age"] is None
    assert str(people_rows[3]["score"]) == "-3.25"
    assert people_rows[3]["created_at"] is not None  # unmapped columns keep their defaults


async def test_csv_options(people: Conn, load: Drain, root: Path) -> None:
    conn = people
    latin = write(
        root, "latin.csv", "ID;Full Name;Years\n1;'Zoë; the \\'first\\'';NULL\n".encode("latin-1")
    )
    headerless = write(root, "noheader.csv", "7,Grace\n8,Linus\n")
    a = await importd.enqueue(
        conn,
        "csv",
        {
            "source": latin,
            "table": "public.people",
            "delimiter": ";",
            "quote": "'",
            "escape": "\\",
            "encoding": "latin-1",
            "null": "NULL",
            "columns": {"ID": "id", "Full Name": "name", "Years": "age"},
        },
    )
    b = await importd.enqueue(
        conn,
        "csv",
        {"source": headerless, "table": "people", "header": False, "columns": ["id", "name"]},
    )
    assert await load() == 0
    rows = {r["id"]: r for r in await conn.fetch("SELECT id, name, age FROM people")}
    assert rows[1]["name"] == "Zoë; the 'first'" and rows[1]["age"] is None
    assert rows[7]["name"] == "Grace" and rows[8]["name"] == "Linus"
    assert (await job_row(conn, a))["status"] == (await job_row(conn, b))["status"] == "completed"


async def test_ndjson_nested_values_go_to_jsonb(people: Conn, load: Drain, root: Path) -> None:
    conn = people
    source = write(
        root,
        "p.ndjson",
        '{"id": 1, "name": "Ann", "meta": {"tags": ["x"], "n": null}, "age": null}\n'
        "\n"
        '{"id": 2, "name": "Bo\\nb", "age": 3}\n'
        '{"identifier": 3, "who": "Cy"}\n',
    )
    job_id = await importd.enqueue(
        conn, "ndjson", {"source": source, "table": "people", "max_errors": 1}
    )
    mapped = write(root, "m.ndjson", '{"identifier": 3, "who": "Cy"}\n')
    mapped_id = await importd.enqueue(
        conn,
        "ndjson",
        {"source": mapped, "table": "people", "columns": {"identifier": "id", "who": "name"}},
    )
    assert await load() == 0
    rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM people")}
    assert rows[1]["meta"] == {"tags": ["x"], "n": None}
    assert rows[2]["name"] == "Bo\nb" and rows[2]["age"] == 3
    assert rows[3]["name"] == "Cy" and rows[3]["created_at"] is not None
    assert await errors(conn, job_id) == [
        (
            4,
            "field 'identifier' is not among the import's columns (id, name, meta, age)",
            '{"identifier": 3, "who": "Cy"}',
        )
    ]
    assert (await job_row(conn, mapped_id))["status"] == "completed"


@pytest.mark.parametrize("atomic", [True, False])
async def test_bad_rows_first_middle_last_are_reported_by_line(
    people: Conn, load: Drain, root: Path, atomic: bool
) -> None:
    conn = people
    lines = ["id,name,age"] + [f"{i},n{i},{i}" for i in range(1, 3001)]
    lines[1] = "1,first,not-a-number"  # line 2: the first record
    lines[1500] = "1500,middle,-5"  # line 1501: CHECK, caught by PostgreSQL
    lines[2000] = '2000,"ragged",1,extra'  # line 2001: too many fields
    lines[3000] = "3000,,7"  # line 3001: NOT NULL (empty string is NULL)
    source = write(root, "bad.csv", "\n".join(lines) + "\n")
    job_id = await importd.enqueue(
        conn, "csv", {"source": source, "table": "people", "max_errors": 4, "atomic": atomic}
    )
    assert await load() == 0
    row = await job_row(conn, job_id)
    assert row["status"] == "completed", row["last_error"]
    assert row["result"]["rows_loaded"] == 2996 and row["result"]["rows_rejected"] == 4
    assert row["rows_failed"] == 4
    assert await conn.fetchval("SELECT count(*) FROM people") == 2996
    found = await errors(conn, job_id)
    assert [line for line, _, _ in found] == [2, 1501, 2001, 3001]
    assert "invalid input syntax for type integer" in found[0][1]
    assert "check constraint" in found[1][1]
    assert "extra data after last expected column" in found[2][1]
    assert "not-null" in found[3][1]
    assert found[0][2] == "1,first,not-a-number"


@pytest.mark.parametrize("atomic", [True, False])
async def test_more_errors_than_max_errors_fails_the_job(
    people: Conn, load: Drain, root: Path, atomic: bool
) -> None:
    conn = people
    lines = ["id,name"] + [f"{i},n{i}" for i in range(1, 5001)]
    for i in (4200, 4300, 4400):
        lines[i] = f"{i},"  # NOT NULL
    source = write(root, "many.csv", "\n".join(lines) + "\n")
    job_id = await importd.enqueue(
        conn, "csv", {"source": source, "table": "people", "max_errors": 2, "atomic": atomic}
    )
    assert await load() == 10
    row = await job_row(conn, job_id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "TooManyErrors: 3 rows rejected, more than max_errors=2" in row["last_error"]
    assert len(await errors(conn, job_id)) == 3
    loaded = await conn.fetchval("SELECT count(*) FROM people")
    # The row's counters say what the failure left: the rows kept, the errors recorded.
    assert (row["rows_done"], row["rows_failed"]) == (loaded, 3)
    if atomic:
        assert loaded == 0
        assert "nothing was loaded" in row["last_error"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'importd_staging'"
            )
            == 0
        )
    else:
        assert loaded == 4000  # the chunks committed before the failing one stay


async def test_conflict_rules(people: Conn, load: Drain, root: Path) -> None:
    conn = people
    await conn.execute("INSERT INTO people (id, name, age) VALUES (1, 'old', 1), (2, 'old', 2)")
    source = write(root, "c.csv", "id,name,age\n1,new,10\n3,new,30\n")
    ignore = await importd.enqueue(
        conn, "csv", {"source": source, "table": "people", "on_conflict": "ignore"}
    )
    assert await load() == 0
    assert (await job_row(conn, ignore))["result"]["rows_skipped"] == 1
    assert await conn.fetchval("SELECT name FROM people WHERE id = 1") == "old"
    update = await importd.enqueue(
        conn,
        "csv",
        {
            "source": source,
            "table": "people",
            "on_conflict": "update",
            "conflict_columns": ["id"],
            "atomic": False,
        },
    )
    assert await load() == 0
    assert (await job_row(conn, update))["status"] == "completed"
    rows = {r["id"]: (r["name"], r["age"]) for r in await conn.fetch("SELECT * FROM people")}
    assert rows == {1: ("new", 10), 2: ("old", 2), 3: ("new", 30)}


@pytest.mark.parametrize(
    ("payload", "files", "expected"),
    [
        (
            {"source": "file://{root}/missing.csv"},
            {},
            "SourceMissing: file://{root}/missing.csv does not exist",
        ),
        ({"source": "file://{root}/../etc/passwd"}, {}, "'..' and NUL bytes are not allowed"),
        ({"source": "file:///etc/passwd"}, {}, "is outside the import roots"),
        (
            {"source": "file://{root}/link.csv"},
            {"link.csv": "->/etc/hostname"},
            "link.csv (a symlink to /etc/hostname) is outside the import roots",
        ),
        (
            {"source": "file://{root}/ok.csv", "table": "secrets"},
            {"ok.csv": "id\n1\n"},
            "public.secrets is not in importd's table allowlist",
        ),
        (
            {"source": "file://{root}/ok.csv", "table": "people; DROP TABLE people"},
            {"ok.csv": "id\n1\n"},
            "is not a table name",
        ),
        (
            {"source": "file://{root}/inj.csv"},
            {"inj.csv": 'id,"name"" text); DROP TABLE people; --"\n1,x\n'},
            "HeaderMismatch: header field 'name\" text); DROP TABLE people; --' is not a column",
        ),
        (
            {"source": "file://{root}/ok.csv", "table": "plain"},
            {"ok.csv": "id\n1\n"},
            "TableNotFound: public.plain does not exist",
        ),
        (
            {"source": "file://{root}/h.csv"},
            {"h.csv": "id,nme\n1,x\n"},
            "HeaderMismatch: header field 'nme' is not a column of public.people",
        ),
        (
            {"source": "file://{root}/empty.csv"},
            {"empty.csv": ""},
            "EmptySource: file://{root}/empty.csv is empty",
        ),
        (
            {"source": "file://{root}/ok.csv", "delimeter": ";"},
            {"ok.csv": "id\n1\n"},
            "payload.delimeter: unknown field",
        ),
        (
            {"source": "ftp://example.com/x.csv"},
            {},
            "payload.source: 'ftp://example.com/x.csv' is neither a file:///path (under import_roots) nor an https:// URL",
        ),
        (
            {"source": "file://{root}/ok.csv", "max_errors": -1},
            {"ok.csv": "id\n1\n"},
            "payload.max_errors: must be 0 or more",
        ),
        (
            {"source": "file://{root}/ok.csv", "encoding": "utf-16"},
            {"ok.csv": "id\n1\n"},
            "payload.encoding: 'utf-16' is not supported",
        ),
    ],
    ids=[
        "missing",
        "traversal",
        "outside-root",
        "symlink-out",
        "table-not-allowed",
        "table-injection",
        "column-injection",
        "no-such-table",
        "header-mismatch",
        "empty",
        "unknown-field",
        "bad-scheme",
        "negative-max-errors",
        "bad-encoding",
    ],
)
async def test_bad_input_fails_at_once_with_a_clear_message(
    people: Conn,
    load: Drain,
    root: Path,
    payload: dict[str, Any],
    files: dict[str, str],
    expected: str,
) -> None:
    conn = people
    for name, content in files.items():
        if content.startswith("->"):
            (root / name).symlink_to(content[2:])
        else:
            write(root, name, content)
    payload = {
        "table": "people",
        **{
            k: v.replace("{root}", str(root)) if isinstance(v, str) else v
            for k, v in payload.items()
        },
    }
    job_id = await importd.enqueue(conn, "csv", payload)
    canary = await importd.enqueue(conn, "noop", {})
    assert await load() == 10
    row = await job_row(conn, job_id)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert expected.replace("{root}", str(root)) in row["last_error"], row["last_error"]
    assert await conn.fetchval("SELECT to_regclass('people') IS NOT NULL")
    assert (await job_row(conn, canary))["status"] == "completed"  # the daemon went on


async def test_non_utf8_bytes_and_ragged_rows_are_row_errors(
    people: Conn, load: Drain, root: Path
) -> None:
    conn = people
    source = write(root, "enc.csv", b"id,name\n1,caf\xe9\n2,fine\n3\n4,ok,extra\n")
    job_id = await importd.enqueue(
        conn, "csv", {"source": source, "table": "people", "max_errors": 5}
    )
    assert await load() == 0
    found = await errors(conn, job_id)
    assert [line for line, _, _ in found] == [2, 4, 5]
    assert "invalid byte sequence" in found[0][1]
    assert "missing data for column" in found[1][1]
    assert sorted(r["id"] for r in await conn.fetch("SELECT id FROM people")) == [2]


async def test_header_only_file_completes_with_no_rows(
    people: Conn, load: Drain, root: Path
) -> None:
    job_id = await importd.enqueue(
        people, "csv", {"source": write(root, "h.csv", "id,name\n"), "table": "people"}
    )
    assert await load() == 0
    assert (await job_row(people, job_id))["result"]["rows_loaded"] == 0


# -- https sources ----------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


async def test_https_source_and_its_errors(people: Conn, load: Drain, server: Server) -> None:
    conn = people
    good = server.route("/good.csv", Reply(200, b"id,name\n1,web\n"))
    missing = server.route("/missing.csv", Reply(404, b"no such object"))
    flaky = server.route("/flaky.csv", Reply(500, b"try later"), Reply(200, b"id,name\n2,again\n"))
    empty = server.route("/empty.csv", Reply(200, b""))
    slow = server.route("/slow.csv", Reply(200, b"id,name\n3,late\n", delay=3))
    jobs = {}
    for name, url, extra in [
        ("good", good, {}),
        ("missing", missing, {}),
        ("flaky", flaky, {}),
        ("empty", empty, {}),
        ("slow", slow, {"timeout": 1, "max_attempts": 1}),
    ]:
        jobs[name] = await importd.enqueue(
            conn,
            "csv",
            {"source": url, "table": "people"},
            timeout=extra.get("timeout", 300),
            max_attempts=extra.get("max_attempts", 5),
        )
    outside = await importd.enqueue(
        conn, "csv", {"source": "https://elsewhere.example/x.csv", "table": "people"}
    )
    await load(url_prefixes=(server.url + "/",), backoff_base=0.2, backoff_jitter=0)
    # flaky was retried 0.2 s later (drain picks it up while others run, or leaves it)
    if (await job_row(conn, jobs["flaky"]))["status"] == "pending":
        await wait_until(
            lambda: conn.fetchval(
                "SELECT run_at <= now() FROM import_jobs WHERE id = $1", jobs["flaky"]
            ),
            what="the retry to come due",
        )
        await load(url_prefixes=(server.url + "/",))
    rows = {name: await job_row(conn, job_id) for name, job_id in jobs.items()}
    assert rows["good"]["status"] == "completed"
    assert rows["missing"]["status"] == "failed"
    assert "SourceMissing: HTTP 404" in rows["missing"]["last_error"]
    assert "no such object" in rows["missing"]["last_error"]
    assert rows["flaky"]["status"] == "completed" and rows["flaky"]["attempts"] == 2
    assert rows["empty"]["status"] == "failed" and "EmptySource" in rows["empty"]["last_error"]
    assert rows["slow"]["status"] == "failed" and "JobTimeout" in rows["slow"]["last_error"]
    out = await job_row(conn, outside)
    assert out["status"] == "failed" and "not under an allowed prefix" in out["last_error"]
    assert sorted(r["name"] for r in await conn.fetch("SELECT name FROM people")) == [
        "again",
        "web",
    ]
