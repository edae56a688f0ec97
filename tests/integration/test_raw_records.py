"""`importd show ID --errors` gives every rejected row's record as it is in the source:
rows the target refuses when staged rows are moved (NOT NULL, CHECK, unique, foreign
key) as well as
rows COPY refuses (a type error), in CSV (multi-line quoted fields included) and NDJSON,
with atomic true and false; a source that cannot be read again is said so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import importd
from importd import ops
from importd.handlers.imports.strategies import UNREAD_MARK
from tests.helpers import Conn, Drain
from tests.httpserver import Reply, Server

CSV = (
    "id,email,n,c,note\r\n"
    "1,a@x,1,1,ok\r\n"
    '2,b@x,,1,"null n\r\nacross ""two"" lines"\r\n'  # NOT NULL, lines 3-4
    "3,c@x,1,-5,check\r\n"  # CHECK, line 5
    '4,a@x,1,1,"dup\nemail"\r\n'  # unique (email), lines 6-7
    "5,d@x,NOTINT,1,type\r\n"  # type error, line 8
    '6,e@x,1,1,"fine\r\nrow"\r\n'
    "7,f@x,2,2,last\r\n"
    "8,g@x,1,50,fk\r\n"  # foreign key, line 12
)
CSV_BAD = {
    3: '2,b@x,,1,"null n\r\nacross ""two"" lines"',
    5: "3,c@x,1,-5,check",
    6: '4,a@x,1,1,"dup\nemail"',
    8: "5,d@x,NOTINT,1,type",
    12: "8,g@x,1,50,fk",
}
NDJSON_RECORDS = [
    '{"id": 1, "email": "a@x", "n": 1, "c": 1, "note": "ok"}',
    '{"id":2,"email":"b@x","n":null,"c":1,"note":"null n"}',
    '{"id": 3, "email": "c@x", "n": 1, "c": -5,   "note": "check"}',
    '{"email": "a@x", "id": 4, "n": 1, "c": 1, "note": "dup"}',
    '{"id": 5, "email": "d@x", "n": "NOTINT", "c": 1, "note": "type"}',
    '{"id": 6, "email": "e@x", "n": 1, "c": 1, "note": "fine"}',
    '{"id": 7, "email": "g@x", "n": 1, "c": 50, "note": "fk"}',
]
NDJSON = "\n".join(NDJSON_RECORDS) + "\n"
NDJSON_BAD = {line: NDJSON_RECORDS[line - 1] for line in (2, 3, 4, 5, 7)}
KINDS: dict[
    str, dict[str, Any]
] = {  # the three strategies: atomic, per chunk (moves with a conflict rule), direct
    "atomic": {"atomic": True},
    "per_chunk": {"atomic": False, "on_conflict": "update", "conflict_columns": ["id"]},
    "direct": {"atomic": False},
}
MESSAGES = ("not-null", "check constraint", "duplicate key", "invalid input syntax", "foreign key")


async def make_tables(conn: Any) -> list[str]:
    names = []
    await conn.execute("CREATE TABLE parent (v int PRIMARY KEY)")
    await conn.execute("INSERT INTO parent VALUES (1), (2)")
    for name in [f"t_{fmt}_{kind}" for fmt in ("csv", "ndjson") for kind in KINDS] + [
        "t_over",
        "t_web_ok",
        "t_web_gone",
        "t_web_changed",
    ]:
        await conn.execute(
            f"CREATE TABLE {name} (id int PRIMARY KEY, email text UNIQUE, "
            "n int NOT NULL, c int CHECK (c > 0) REFERENCES parent, note text)"
        )
        names.append(f"public.{name}")
    return names


async def rejected(conn: Any, job_id: int) -> dict[int, tuple[str, str]]:
    rows = json.loads(await ops.errors(conn, job_id, as_json=True))
    return {r["line_number"]: (r["message"], r["raw_record"]) for r in rows}


def assert_sources(found: dict[int, tuple[str, str]], bad: dict[int, str]) -> None:
    assert {line: raw for line, (_, raw) in found.items()} == bad
    messages = " ".join(message for message, _ in found.values())
    for expected in MESSAGES:
        assert expected in messages, (expected, messages)


async def test_every_rejected_row_carries_its_source_record(
    conn: Conn, drain: Drain, root: Path
) -> None:
    names = await make_tables(conn)
    (root / "r.csv").write_bytes(CSV.encode())
    (root / "r.ndjson").write_bytes(NDJSON.encode())
    server = Server().start()
    try:
        body = CSV.encode()
        again = server.route("/again.csv", Reply(200, body, {"ETag": '"v1"'}))
        gone = server.route(
            "/gone.csv", Reply(200, body, {"ETag": '"v1"'}), Reply(404, b"no such object")
        )
        changed = server.route(
            "/changed.csv", Reply(200, body, {"ETag": '"v1"'}), Reply(200, body, {"ETag": '"v2"'})
        )
        jobs: dict[tuple[str, str], int] = {}
        for kind, options in KINDS.items():
            for fmt, source in (
                ("csv", f"file://{root}/r.csv"),
                ("ndjson", f"file://{root}/r.ndjson"),
            ):
                jobs[fmt, kind] = await importd.enqueue(
                    conn,
                    fmt,
                    {"source": source, "table": f"t_{fmt}_{kind}", "max_errors": 10, **options},
                )
        web_ok = await importd.enqueue(
            conn, "csv", {"source": again, "table": "t_web_ok", "max_errors": 10, "atomic": True}
        )
        web_gone = await importd.enqueue(
            conn, "csv", {"source": gone, "table": "t_web_gone", "max_errors": 10, "atomic": True}
        )
        web_changed = await importd.enqueue(
            conn,
            "csv",
            {"source": changed, "table": "t_web_changed", "max_errors": 10, "atomic": True},
        )
        over = await importd.enqueue(
            conn,
            "csv",
            {  # past max_errors in the move
                "source": f"file://{root}/r.csv",
                "table": "t_over",
                "max_errors": 1,
                "atomic": True,
            },
        )
        assert (
            await drain(
                import_roots=(str(root),), tables=tuple(names), url_prefixes=(server.url + "/",)
            )
            == 10
        )  # (one failed)
        assert len(server.hits("/again.csv")) == 2  # read, then read again once
    finally:
        server.stop()

    for (fmt, kind), job_id in jobs.items():
        found = await rejected(conn, job_id)
        assert_sources(found, CSV_BAD if fmt == "csv" else NDJSON_BAD)
        table = f"t_{fmt}_{kind}"
        ids = sorted(r["id"] for r in await conn.fetch(f"SELECT id FROM {table}"))
        assert ids == ([1, 6, 7] if fmt == "csv" else [1, 6]), (fmt, kind)

    # An https source is fetched again for the rows the move rejected, checked by ETag.
    assert_sources(await rejected(conn, web_ok), CSV_BAD)
    # One that is gone or changed by then: the staged values as JSON, marked, never passed off as
    # the source text; the type error (rejected by COPY) keeps its record.
    for job_id, reason in ((web_gone, "404"), (web_changed, "SourceChanged")):
        found = await rejected(conn, job_id)
        assert found[8][1] == CSV_BAD[8]
        for line in (3, 5, 6):
            raw = found[line][1]
            assert raw.startswith(UNREAD_MARK) and reason in raw, raw
            assert json.loads(raw[raw.index("] ") + 2 :])["id"] == int(CSV_BAD[line][0])

    # Past max_errors, the move's rejected rows recorded are source text too.
    assert (await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", over)) == "failed"
    found = await rejected(conn, over)
    assert 3 in found and len(found) >= 2
    assert {line: raw for line, (_, raw) in found.items()} == {
        line: CSV_BAD[line] for line in found
    }

    # `importd show ID --errors` (CSV out) gives the multi-line record whole.
    out = await ops.errors(conn, jobs["csv", "atomic"])
    assert '"2,b@x,,1,""null n\r\nacross """"two"""" lines"""' in out
