"""Audit 23: NDJSON imports against an independent reference, record by record.

The reference decides each line on its own: the line's bytes without the line end,
decoded as UTF-8 (strictly: NDJSON is UTF-8) and parsed by Python's ``json`` (NaN and
Infinity refused) must be an object whose keys are all the import's columns; blank
lines (JSON whitespace only) are no records; a line longer than ``max_record_bytes`` is
a row error. The values of a good record then go through PostgreSQL's own casts, per
column type, from each key's last value as the file writes it:

- ``text``, ``int``, ``numeric``, ``bool``: ``(raw::json #>> '{}')::type`` (a string's
  decoded text, a number or ``true``/``false`` as written), as ``json_populate_record``
  does; a nested value into such a column is a row error (importd's documented choice,
  where ``json_populate_record`` would store the JSON text);
- ``jsonb``: ``raw::jsonb``; ``json``: ``raw::json`` (the file's text, spacing kept);
- JSON ``null`` or a missing key: SQL NULL (not the column's default).

The table must hold exactly the reference's good rows, ``import_job_errors`` exactly its
bad lines, and the job's counters must agree, in both atomic modes with chunks of 10
records."""

from __future__ import annotations

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
# Each example is two imports and a reference pass (0.3 - 0.5 s on a loaded machine).
EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=SLOW)
LIMIT = 400  # max_record_bytes of these imports
DDL = "(a text NOT NULL, b int, n numeric, j jsonb, js json, t bool)"
SCALAR = {"a": "text", "b": "int", "n": "numeric", "t": "bool"}
SELECT = "a, b, n::text, j::text, js::text, t"


@pytest.fixture
def run(drain: Drain, root: Path, conn: Conn) -> Any:
    async def load(data: bytes, columns: list[str]) -> dict[bool, Any]:
        """Load ``data`` in both atomic modes: per mode, (job row, sorted rows, errors)."""
        path = root / "f.ndjson"
        path.write_bytes(data)
        jobs = {}
        for atomic in (True, False):
            table = f"nd_{'t' if atomic else 'f'}"
            await conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} {DDL}")
            jobs[atomic] = await importd.enqueue(
                conn,
                "ndjson",
                {
                    "source": f"file://{path}",
                    "table": table,
                    "atomic": atomic,
                    "max_errors": 10_000,
                    "chunk_rows": 10,
                    "columns": {c: c for c in columns},
                },
            )
        assert (
            await drain(import_roots=(str(root),), tables=("public.*",), max_record_bytes=LIMIT)
            == 0
        )
        out = {}
        for atomic, job_id in jobs.items():
            job = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
            table = f"nd_{'t' if atomic else 'f'}"
            rows = sorted(
                (tuple(r) for r in await conn.fetch(f"SELECT {SELECT} FROM {table}")), key=repr
            )
            errors = [
                (r["line_number"], r["message"])
                for r in await conn.fetch(
                    "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 "
                    "ORDER BY line_number",
                    job_id,
                )
            ]
            out[atomic] = (job, rows, errors)
        return out

    return load


def _last_raw(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Each key's last value, as its JSON text."""
    return dict(pairs)


async def reference(
    conn: Conn, lines: list[tuple[bytes, list[tuple[str, str]] | None]], columns: list[str]
) -> tuple[list[Any], list[int]]:
    """The reference's good rows (sorted) and bad line numbers. ``lines``: each physical
    line's bytes (no line end) and, for a generated object, its (key, raw value) pairs."""
    await conn.execute(f"DROP TABLE IF EXISTS ref; CREATE TABLE ref {DDL}")
    bad = []
    for number, (data, pairs) in enumerate(lines, 1):
        if not data.strip(b" \t\r\n"):
            continue  # a blank line: no record
        if len(data) > LIMIT:
            bad.append(number)
            continue
        try:
            obj = json.loads(data.decode("utf-8"), parse_constant=_refuse)
        except ValueError:
            bad.append(number)
            continue
        if not isinstance(obj, dict) or set(obj) - set(columns):
            bad.append(number)
            continue
        # (A junk line that is an object after all: {}, or one after the file's BOM.)
        raw = _last_raw(pairs or [(key, json.dumps(value)) for key, value in obj.items()])
        params = []
        for column in ("a", "b", "n", "j", "js", "t"):
            value = raw.get(column, "null")
            if column in SCALAR and value[0] in "[{":
                break  # nested into a scalar column: refused
            params.append(None if value == "null" else value)
        else:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO ref VALUES (($1::text::json #>> '{}')::text, "
                        "($2::text::json #>> '{}')::int, ($3::text::json #>> '{}')::numeric, "
                        "$4::text::jsonb, $5::text::json, ($6::text::json #>> '{}')::bool)",
                        *params,
                    )
            except asyncpg.PostgresError:  # any refusal of PostgreSQL's: a bad row
                bad.append(number)
            continue
        bad.append(number)
    rows = sorted((tuple(r) for r in await conn.fetch(f"SELECT {SELECT} FROM ref")), key=repr)
    return rows, bad


def _refuse(name: str) -> Any:
    raise ValueError(name)


# -- generators ---------------------------------------------------------------------------

CHARS = st.sampled_from(
    ["x", "é", "😀", "/", '"', "\\", "\t", "\n", "\x00", "\ud800", "\udc00", "\u2028", "\x7f"]
)


@st.composite
def strings(draw: Any) -> str:
    text = draw(st.text(CHARS, max_size=5))
    lone = any("\ud800" <= c <= "\udfff" for c in text)
    out = json.dumps(text, ensure_ascii=lone or draw(st.booleans()))
    if draw(st.booleans()):
        out = out.replace("/", "\\/")
    return out


NUMBERS = st.one_of(
    st.sampled_from(
        [
            "-0",
            "0",
            "1E5",
            "1e+2",
            "-1.5e-7",
            "1e400",
            "1e-400",
            "2147483648",
            "-2147483648",
            "3.14159265358979323846",
            "0.10000000000000000000000001",
            "1.0",
            "12",
        ]
    ),
    st.integers(-(10**20), 10**20).map(str),
)
SCALARS = st.one_of(strings(), NUMBERS, st.sampled_from(["true", "false", "null", '"t"', '"yes"']))
SPACE = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def nested(draw: Any) -> str:
    items = draw(st.lists(SCALARS, max_size=3))
    sp = draw(SPACE)
    if draw(st.booleans()):
        return "[" + f",{sp}".join(items) + "]"
    keys = draw(
        st.lists(
            st.sampled_from(['"k"', '"é"', '"k"', '"x y"']),
            min_size=len(items),
            max_size=len(items),
        )
    )
    return "{" + f",{sp}".join(f"{k}{sp}:{v}" for k, v in zip(keys, items, strict=True)) + "}"


VALUES = st.one_of(SCALARS, SCALARS, nested())


@st.composite
def record(draw: Any, keys: list[str]) -> tuple[bytes, list[tuple[str, str]] | None]:
    """A generated line: an object (keys in any order, some missing, maybe repeated or
    extra), or junk, a blank line or a long line."""
    kind = draw(st.sampled_from(["object"] * 6 + ["junk", "blank", "long"]))
    if kind == "junk":
        junk = draw(
            st.sampled_from(
                [
                    b'{"a": ',
                    b"[1]",
                    b'"x"',
                    b"null",
                    b'{"a":NaN}',
                    b'{"a":01}',
                    b'{"a":"1"} x',
                    b'{"a":"1",}',
                    b"{'a':1}",
                    b'{"a":"\xff"}',
                    b'{"a":"\xed\xa0\x80"}',
                    b'\x0c{"a":"1"}',
                    b'{"a":Infinity}',
                    b"\xef\xbb\xbf" + b'{"a":"bom"}',
                    '{"a":"u16"}'.encode("utf-16-le"),
                    b"{}",
                ]
            )
        )
        return junk, None
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t "])), None
    chosen = draw(st.lists(st.sampled_from([*keys, "zz"]), max_size=7))
    if kind == "long":
        chosen = ["a"]
    pairs = [(key, draw(VALUES)) for key in chosen]
    if kind == "long":
        pairs = [("a", json.dumps("L" * (LIMIT + 50)))]
    sp = draw(SPACE)
    text = "{" + f",{sp}".join(f"{json.dumps(k)}:{sp}{v}" for k, v in pairs) + "}"
    return text.encode("utf-8", "surrogatepass"), pairs


@st.composite
def files(draw: Any) -> tuple[list[str], list[tuple[bytes, Any]], bytes]:
    columns = ["a", "b", "n", "j", "t"] + (["js"] if draw(st.booleans()) else [])
    lines = draw(st.lists(record(columns), min_size=1, max_size=35))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    last = newline if draw(st.booleans()) else b""
    data = bom + newline.join(data for data, _ in lines) + last
    return columns, lines, data


@EXAMPLES
@given(case=files())
async def test_ndjson_loads_exactly_what_the_reference_does(
    run: Any, conn: Conn, case: Any
) -> None:
    columns, lines, data = case
    if not any(line.strip(b" \t") for line, _ in lines):
        return  # a file of blank lines fails EmptySource, checked elsewhere
    got = await run(data, columns)
    # The reference's lines: the file's, after one byte order mark at its start (a BOM
    # that starts any other line is in the record), without their line ends.
    split = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    split = [line.removesuffix(b"\r") for line in split]
    assert len(split) in (len(lines), len(lines) + 1)
    lines = [(line, pairs) for line, (_, pairs) in zip(split, lines, strict=False)]
    good, bad = await reference(conn, lines, columns)
    for atomic in (True, False):
        job, rows, errors = got[atomic]
        assert job["status"] == "completed", (atomic, job["last_error"])
        assert [line for line, _ in errors] == bad, (atomic, errors)
        assert rows == good, atomic
        result = job["result"]
        assert (result["rows_loaded"], result["rows_rejected"]) == (len(good), len(bad))
        assert (job["rows_done"], job["rows_failed"]) == (len(good), len(bad))
        for _, message in errors:
            assert "importd_" not in message and " c1" not in message, message


@pytest.mark.parametrize("walked", [False, True], ids=["decoded", "walked"])
async def test_a_line_that_is_not_utf8_json_is_a_row_error(
    run: Any, conn: Conn, walked: bool
) -> None:
    """NDJSON is UTF-8: a line in UTF-16, or one starting with a byte order mark (only
    the file's start may hold one), is no JSON text, though ``json.loads`` of the bytes
    guesses their encoding and takes both. (An import with a ``json`` column walks every
    record, a path of its own.)"""
    data = b"\n".join(
        [
            b'{"a": "one"}',
            '{"a": "utf16"}'.encode("utf-16-le"),
            b'\xef\xbb\xbf{"a": "bom"}',
            b'{"a": "four"}',
            b'{"a": "surrogate \xed\xa0\x80"}',
            b"",
        ]
    )
    got = await run(data, ["a", "js"] if walked else ["a"])
    for atomic in (True, False):
        job, rows, errors = got[atomic]
        assert [row[0] for row in rows] == ["four", "one"], atomic
        assert [line for line, _ in errors] == [2, 3, 5], (atomic, errors)
        assert "BOM" in errors[1][1], errors
        assert "not UTF-8" in errors[2][1], errors
        assert (job["result"]["rows_loaded"], job["result"]["rows_rejected"]) == (2, 3)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
async def test_a_crlf_line_end_is_not_part_of_the_record_s_size(
    drain: Drain, root: Path, conn: Conn, fmt: str
) -> None:
    """A record of exactly ``max_record_bytes`` loads whatever its line end: the CR of a
    CRLF file is the line end's, not the record's (it counted, and the same records
    loaded from an LF file were RecordTooLong from a CRLF one)."""
    limit = 50
    if fmt == "ndjson":
        head, record = b"", ('{"a":"' + "x" * (limit - 8) + '"}').encode()
        longer = ('{"a":"' + "x" * (limit - 7) + '"}').encode()
    else:
        head, record, longer = b"a\r\n", b"x" * limit, b"y" * (limit + 1)
    assert (len(record), len(longer)) == (limit, limit + 1)
    await conn.execute("CREATE TABLE lim_t (a text); CREATE TABLE lim_f (a text)")
    jobs = {}
    for atomic in (True, False):
        path = root / f"lim_{atomic}.{fmt}"
        path.write_bytes(head + b"\r\n".join([record, record, longer, record]) + b"\r\n")
        jobs[atomic] = await importd.enqueue(
            conn,
            fmt,
            {
                "source": f"file://{path}",
                "table": f"lim_{'t' if atomic else 'f'}",
                "atomic": atomic,
                "max_errors": 10,
            },
        )
    assert await drain(import_roots=(str(root),), tables=("public.*",), max_record_bytes=limit) == 0
    for atomic, job_id in jobs.items():
        loaded = await conn.fetchval(f"SELECT count(*) FROM lim_{'t' if atomic else 'f'}")
        errors = await conn.fetch(
            "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 ORDER BY 1",
            job_id,
        )
        first = 1 + (fmt == "csv")  # (the CSV header is line 1)
        assert [(r["line_number"], r["message"][:37]) for r in errors] == [
            (first + 2, f"RecordTooLong: the record is {limit + 1} bytes")
        ], atomic
        assert loaded == 3, atomic


@pytest.mark.parametrize("walked", [False, True], ids=["decoded", "walked"])
async def test_a_nul_character_in_a_string_is_a_row_error_that_says_so(
    run: Any, conn: Conn, walked: bool
) -> None:
    """A JSON string may hold ``\\u0000``, which no PostgreSQL text value can: the row is
    refused naming the field and the character, not with PostgreSQL's "invalid byte
    sequence for encoding UTF8: 0x00" about a byte the file does not hold."""
    data = b'{"a": "one"}\n{"a": "nul \\u0000 here"}\n{"a": "three"}\n'
    got = await run(data, ["a", "js"] if walked else ["a"])
    for atomic in (True, False):
        job, rows, errors = got[atomic]
        assert [row[0] for row in rows] == ["one", "three"], atomic
        assert [line for line, _ in errors] == [2], (atomic, errors)
        assert (job["result"]["rows_loaded"], job["result"]["rows_rejected"]) == (2, 1)
        assert "field 'a'" in errors[0][1] and "\\u0000" in errors[0][1], errors
        assert "0x00" not in errors[0][1], errors
