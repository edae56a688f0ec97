"""Bad rows of every shape through the screen (importd/handlers/imports/screening.py): a
field too few, a field too many, bytes that are not UTF-8, a wrong value in a column the
screen knows and in one it does not (jsonb), at random places in files of small chunks.
Each import must hold exactly what PostgreSQL, COPYing each record alone in file order,
gives: the same rows in the same order, the same rejected lines, the same messages. And
the screen's own verdict on bytes that are not UTF-8 is PostgreSQL's, byte for byte."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importd
from importd.handlers.imports.screening import bad_utf8
from tests.helpers import Conn, Drain
from tests.httpserver import Reply, Server

SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
COLUMNS = "k int, j jsonb, note text, n numeric(6,2)"
HEADER = ["k", "j", "note", "n"]

GOOD = {
    "k": st.integers(-50, 50).map(str),
    "j": st.sampled_from(['"{""a"": 1}"', "[1]", "2", '"""s"""', ""]),
    "note": st.text(alphabet='ab ,é"\n', max_size=6).map(
        lambda t: '"' + t.replace('"', '""') + '"' if any(c in t for c in ',"\n') else t
    ),
    "n": st.sampled_from(["1.25", "-3", "", "9999.99"]),
}
BAD = {
    "k": st.sampled_from(["x", "2147483648", "1.5"]),
    "j": st.sampled_from(["{", "nope", "[1"]),
    "note": st.sampled_from(
        ["x\\xff", "\\xc3", "a\\xe2\\x82", "\\xed\\xa0\\x80z", "\\xf8", '"a\n\\xffb"', "\\x00"]
    ),
    "n": st.sampled_from(["99999.99", "abc"]),
}


@st.composite
def record(draw: st.DrawFn) -> bytes:
    """One CSV record's bytes (without its line end): good, or bad in one or two ways."""
    fields = [draw(GOOD[c]) for c in HEADER]
    for _ in range(draw(st.integers(0, 2))):
        column = draw(st.sampled_from(HEADER))
        fields[HEADER.index(column)] = draw(BAD[column])
    shape = draw(st.sampled_from(["same", "same", "same", "short", "shorter", "extra"]))
    if shape == "short":
        fields = fields[:-1]
    elif shape == "shorter":
        fields = fields[: draw(st.integers(1, 2))]
    elif shape == "extra":
        fields = [*fields, draw(st.sampled_from(["x", "", '"y,z"']))]
    # (BAD's note values spell their bytes: \xff is the byte 0xff.)
    return b",".join(f.encode().decode("unicode_escape").encode("latin-1") for f in fields)


_COPY_LINE = re.compile(r"\bCOPY [^,]+, line \d+(?:, column ([^:]+))?")


def message(exc: asyncpg.PostgresError) -> tuple[str, str]:
    """What importd stores for a COPY error, from the error's parts: with its detail (as
    a COPY by COPY isolation tells it), and without (as the set-based check does)."""
    found = _COPY_LINE.search(getattr(exc, "context", None) or "")
    text = f"column {found.group(1)}: {exc.message}" if found and found.group(1) else exc.message
    return text + (f" ({exc.detail})" if exc.detail else ""), text


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


# The tables each import loads: a file, atomic and not (the direct path); a URL, atomic
# (staged: each row with its source line, moved at the end).
TARGETS = {"shapes_t": True, "shapes_f": False, "shapes_u": True}


@pytest.fixture
async def shapes(conn: Conn) -> Any:
    for name in (*TARGETS, "shapes_ref"):
        await conn.execute(
            f"CREATE TABLE {name} ({COLUMNS}, seq bigint GENERATED ALWAYS AS IDENTITY)"
        )
    return conn


@settings(max_examples=30, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(record(), min_size=1, max_size=60),
    chunk_rows=st.sampled_from([10, 16, 1000]),
    final_newline=st.booleans(),
)
async def test_bad_shapes_load_what_postgresql_copies_record_by_record(
    shapes: Conn,
    drain: Drain,
    server: Server,
    tmp_path: Path,
    records: list[bytes],
    chunk_rows: int,
    final_newline: bool,
) -> None:
    conn = shapes
    data = b",".join(h.encode() for h in HEADER) + b"\n"
    starts = []
    line = 2
    for body in records:
        starts.append((line, body))
        line += body.count(b"\n") + 1
    data += b"\n".join(records) + (b"\n" if final_newline else b"")
    path = tmp_path / "shapes.csv"
    path.write_bytes(data)
    await conn.execute("TRUNCATE shapes_t, shapes_f, shapes_u, shapes_ref, import_job_errors")
    url = server.route("/shapes.csv", Reply(200, data))
    expected_errors = []
    for start, body in starts:
        try:
            await conn.copy_to_table(
                "shapes_ref", source=io.BytesIO(body + b"\n"), columns=HEADER, format="csv"
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            expected_errors.append((start, *message(exc)))
    query = "SELECT k, j::text, note, n::text FROM {} ORDER BY seq"
    expected = [tuple(r) for r in await conn.fetch(query.format("shapes_ref"))]
    jobs = {
        table: await importd.enqueue(
            conn,
            "csv",
            {
                "source": url if table == "shapes_u" else f"file://{path}",
                "table": table,
                "atomic": atomic,
                "max_errors": 10_000,
                "chunk_rows": chunk_rows,
            },
        )
        for table, atomic in TARGETS.items()
    }
    await drain(
        import_roots=(str(tmp_path),),
        tables=tuple(f"public.{t}" for t in TARGETS),
        url_prefixes=(server.url + "/",),
    )
    for table, job_id in jobs.items():
        row = await conn.fetchrow(
            "SELECT status, last_error FROM import_jobs WHERE id = $1", job_id
        )
        assert row["status"] == "completed", row["last_error"]
        got = [tuple(r) for r in await conn.fetch(query.format(table))]
        assert got == expected, table  # the same rows, in file order
        errors = await conn.fetch(
            "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 "
            "ORDER BY line_number",
            job_id,
        )
        assert [r["line_number"] for r in errors] == [e[0] for e in expected_errors], table
        for r, (_, full, short) in zip(errors, expected_errors, strict=True):
            assert r["message"] in (full, short), (table, r["line_number"])


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(
    body=st.lists(
        st.one_of(
            st.binary(max_size=3),
            st.sampled_from([b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0", b"\xc0\x80"]),
            st.sampled_from(["é", "€", "😀", "a"]).map(str.encode),
        ),
        max_size=6,
    ).map(b"".join),
    line_end=st.booleans(),
)
async def test_the_screen_says_what_postgresql_says_of_bytes_that_are_not_utf8(
    conn: Conn, body: bytes, line_end: bool
) -> None:
    # One text column, quoted: every byte is the value's (no delimiter, no line end).
    record = b'"' + body.replace(b'"', b'""').replace(b"\r", b"").replace(b"\n", b"") + b'"'
    record += b"\n" if line_end else b""
    await conn.execute("CREATE TABLE IF NOT EXISTS utf (v text)")
    try:
        await conn.copy_to_table("utf", source=io.BytesIO(record), format="csv")
        expected = None
    except asyncpg.PostgresError as exc:
        expected = exc.message
    assert bad_utf8(record) == expected
