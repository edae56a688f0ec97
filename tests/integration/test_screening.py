"""The screen of bad-row chunks (importd/handlers/imports/screening.py): whatever record it
calls good, PostgreSQL's own COPY accepts (checked against the real server, in CSV and in
the text format NDJSON is sent in); and imports of files whose good, doubtful and bad
values are mixed in every chunk load exactly what PostgreSQL, COPYing each record alone
in file order, accepts: the same rows, in the same order, the same rejected lines."""

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
from importd import tables
from importd.handlers.imports.batches import Batch
from importd.handlers.imports.copying import Copier
from importd.handlers.imports.screening import ANY, Labels, Screen, shape, value_type
from importd.tables import CopyFormat
from tests.helpers import Conn, Drain

SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# Every type the screen knows, and a column of it.
COLUMNS = {
    "i2": "smallint",
    "i4": "integer",
    "i8": "bigint",
    "n": "numeric",
    "n73": "numeric(7,3)",
    "n50": "numeric(5,0)",
    "r": "real",
    "f": "double precision",
    "b": "boolean",
    "d": "date",
    "ts": "timestamp without time zone",
    "tz": "timestamp with time zone",
    "tz0": "timestamp(0) with time zone",
    "u": "uuid",
    "t": "text",
    "vc": "character varying",
    "v5": "character varying(5)",
    "c3": "character(3)",
}
NAMES = list(COLUMNS)
TYPES = list(COLUMNS.values())

# Text PostgreSQL can hold (no NUL, no lone surrogate); no line may start with "\." (in
# PostgreSQL 15 that ends CSV data even inside quotes, whatever the screen says).
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=12,
).filter(lambda t: "\n\\." not in t and "\r\\." not in t)
# Near misses: what a type's shape almost allows, and values a wrong shape would take.
NEAR = st.one_of(
    st.text(alphabet="0123456789-+.:eETZ /ntrufalsyo", max_size=25),
    st.sampled_from(
        [
            "2147483648",
            "32768",
            "9223372036854775808",
            "-",
            "+",
            ".",
            "1.",
            ".5",
            "1e400",
            "NaN",
            "2024-02-29",
            "2023-02-29",
            "0000-01-01",
            "2024-00-10",
            "2024-04-31",
            "2024-01-01 24:00",
            "2024-01-01T23:59:60",
            "2024-01-01 10:00+15:00",
            "tru",
            "o",
            "00000000-0000-0000-0000-00000000000g",
            "123456",
            "99999.9995",
        ]
    ),
)


def values(type_name: str) -> st.SearchStrategy[str | None]:
    """Values for a column of ``type_name``: its shape's, near misses, text, NULL."""
    pattern = shape(type_name)
    own = (
        st.from_regex(pattern.decode(), fullmatch=True)
        if pattern not in (None, ANY)
        else TEXT.map(lambda t: t[:7])
    )
    return st.one_of(own, own, NEAR, TEXT, st.none())


RECORDS = st.lists(st.tuples(*map(values, TYPES)), min_size=1, max_size=25)


def csv_body(record: tuple[str | None, ...], quote_all: bool) -> bytes:
    """One CSV record as COPY reads it: NULL unquoted and empty, "" an empty string."""
    out = []
    for value in record:
        if value is None:
            out.append("")
        elif quote_all or value == "" or any(c in value for c in ',"\r\n'):
            out.append('"' + value.replace('"', '""') + '"')
        else:
            out.append(value)
    return ",".join(out).encode()


def text_body(record: tuple[str | None, ...]) -> bytes:
    """One record in COPY's text format, as importd writes NDJSON records."""
    return "\t".join(
        "\\N"
        if value is None
        else value.replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        for value in record
    ).encode()


async def assert_copied(
    conn: Conn, table: str, columns: list[str], good: list[bytes], options: dict[str, Any]
) -> None:
    """COPY into ``table`` (emptied first) the records the screen called ``good``, one
    statement for them all; fail, naming them, if PostgreSQL refuses any."""
    await conn.execute(f"TRUNCATE {table}")
    try:
        await conn.copy_to_table(
            table, source=io.BytesIO(b"\n".join(good) + b"\n"), columns=columns, **options
        )
    except asyncpg.PostgresError as exc:
        pytest.fail(f"the screen called good a record PostgreSQL refused: {exc} ({good})")
    assert await conn.fetchval(f"SELECT count(*) FROM {table}") == len(good)


async def create_more(conn: Conn, table: str) -> None:
    """The json, enum, domain and array types, and ``table`` with a column of each."""
    await conn.execute(MORE_TYPES)
    columns = ", ".join(f"{name} {type_name}" for name, type_name in MORE.items())
    await conn.execute(f"CREATE TABLE {table} ({columns})")


async def enqueue_both_modes(conn: Conn, path: Path, prefix: str) -> dict[bool, int]:
    """An import of ``path`` in each atomic mode, into ``<prefix>_t`` (atomic) and
    ``<prefix>_f``; the job ids by mode."""
    return {
        atomic: await importd.enqueue(
            conn,
            "csv",
            {
                "source": f"file://{path}",
                "table": f"{prefix}_t" if atomic else f"{prefix}_f",
                "atomic": atomic,
                "max_errors": 100,
                "chunk_rows": 10,
            },
        )
        for atomic in (True, False)
    }


@pytest.fixture
async def screened(conn: Conn) -> Any:
    columns = ", ".join(f"{name} {type_name}" for name, type_name in COLUMNS.items())
    await conn.execute(f"CREATE TABLE screened ({columns})")
    return conn


@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(records=RECORDS, fmt=st.sampled_from(["csv", "text"]), quote_all=st.booleans())
async def test_whatever_the_screen_calls_good_postgresql_copies(
    screened: Conn, records: list[tuple[str | None, ...]], fmt: str, quote_all: bool
) -> None:
    conn = screened
    screen = Screen.build(TYPES, fmt, ",", '"', '"', "")
    assert screen is not None
    bodies = [csv_body(r, quote_all) if fmt == "csv" else text_body(r) for r in records]
    good = [body for body in bodies if screen.good(body)]
    if not good:
        return
    options: dict[str, Any] = {"format": fmt}
    if fmt == "csv":
        options.update(delimiter=",", quote='"', null="")
    await assert_copied(conn, "screened", NAMES, good, options)


# -- json, jsonb, enums, domains and arrays -----------------------------------------------

MORE = {
    "j": "json",
    "jb": "jsonb",
    "e": "mood",
    "dm": "plain_int",
    "ai": "integer[]",
    "an": "numeric(5,2)[]",
    "aw": "text[]",
    "ab": "boolean[]",
}
MORE_TYPES = """
CREATE TYPE mood AS ENUM ('happy', 'so so', 'a,b', 'say "hi"', 'Zoë');
CREATE DOMAIN plain_int AS integer;
"""
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


def json_text(value: Any, ascii_only: bool, spaced: bool) -> str:
    """``value`` as Python's json module writes it (an independent JSON writer)."""
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(value, ensure_ascii=ascii_only, separators=separators)


JSON_NEAR = st.sampled_from(
    [
        "{0.5",
        "[1,]",
        '{"a":1,}',
        "[1 2]",
        '"\\u0000"',
        '"\\ud800"',
        '"\\uDC00x"',
        "1e400",
        "1e99",
        "1E-99",
        "NaN",
        "Infinity",
        "01",
        "1.",
        ".5",
        "-",
        '"a',
        "tru",
        "[[[[[[1]]]]]]",
        '"\\/"',
        '"\\q"',
        ' {"a": 1}',
        '{"a"\t: 1}',
        "\t1",
    ]
)
JSON_FIELD = st.one_of(
    st.builds(json_text, JSON_VALUE, st.booleans(), st.booleans()), JSON_NEAR, TEXT, st.none()
)
ENUM_FIELD = st.one_of(
    st.sampled_from(["happy", "so so", "a,b", 'say "hi"', "Zoë"]),
    st.sampled_from(["Happy", "happy ", "sad", ""]),
    TEXT,
    st.none(),
)


def array_text(items: list[str | None]) -> str:
    return "{" + ",".join("NULL" if item is None else item for item in items) + "}"


def array_field(item: st.SearchStrategy[str], near: list[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.lists(st.one_of(item, st.none()), max_size=4).map(array_text),
        st.sampled_from(["{1, 2}", "{{1}}", "{1,}", "{", "{}", "{a b}", "{NULL}", *near]),
        TEXT,
        st.none(),
    )


MORE_FIELDS = {
    "j": JSON_FIELD,
    "jb": JSON_FIELD,
    "e": ENUM_FIELD,
    "dm": st.one_of(st.integers(-(2**31), 2**31).map(str), NEAR, st.none()),
    "ai": array_field(st.integers(-(2**31), 2**31).map(str), ["{1.5}", "{+7}", "{0x1}"]),
    "an": array_field(
        st.decimals(-1000, 1000, places=2, allow_nan=False).map(str), ["{1e2}", "{-999.995}"]
    ),
    "aw": array_field(
        st.text(alphabet='ab ,"{}\\Nl\u00eb', min_size=1, max_size=4), ['{"a b"}', "{a\\,b}"]
    ),
    "ab": array_field(st.sampled_from(["t", "f", "true", "NO", "maybe", "1"]), ["{tr}"]),
}


@pytest.fixture
async def screened_more(conn: Conn) -> Any:
    await create_more(conn, "screened_more")
    return conn


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(st.tuples(*MORE_FIELDS.values()), min_size=1, max_size=25),
    fmt=st.sampled_from(["csv", "text"]),
    quote_all=st.booleans(),
)
async def test_json_enums_domains_and_arrays_the_screen_calls_good_postgresql_copies(
    screened_more: Conn, records: list[tuple[str | None, ...]], fmt: str, quote_all: bool
) -> None:
    """The types are read from the catalog as an import reads them (``tables.describe``:
    the enum's labels, the domain's base type)."""
    conn = screened_more
    target = await tables.describe(conn, "public", "screened_more")
    assert target is not None
    kinds = [value_type(column) for column in target.columns]
    assert kinds[2] == Labels(("happy", "so so", "a,b", 'say "hi"', "Zoë"))
    assert kinds[3] == "integer"
    screen = Screen.build(kinds, fmt, ",", '"', '"', "")
    assert screen is not None
    bodies = [csv_body(r, quote_all) if fmt == "csv" else text_body(r) for r in records]
    good = [body for body in bodies if screen.good(body)]
    if not good:
        return
    options: dict[str, Any] = {"format": fmt}
    if fmt == "csv":
        options.update(delimiter=",", quote='"', null="")
    await assert_copied(conn, "screened_more", list(MORE), good, options)


async def test_bad_values_in_json_enum_and_array_columns_load_exactly(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    """Bad values in a jsonb, an enum and an array column, spread through many chunks
    (each column turns bad in its turn, so the screen starts watching it mid-file), in
    both atomic modes: the table and the rejected lines are PostgreSQL's own, each record
    COPYed alone in file order."""
    await conn.execute(MORE_TYPES)
    columns = (
        "k int, jb jsonb, e mood, ai integer[], note text, seq bigint GENERATED ALWAYS AS IDENTITY"
    )
    for name in ("more_t", "more_f", "more_ref"):
        await conn.execute(f"CREATE TABLE {name} ({columns})")
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["k", "jb", "e", "ai", "note"])
    starts = []
    for i in range(1, 301):
        jb = json.dumps({"n": i, "tags": ["a", "b"], "ok": i % 2 == 0})
        e = ["happy", "so so", "a,b"][i % 3]
        ai = f"{{{i},{-i}}}"
        if i > 40 and i % 9 == 0:
            jb = "{" + str(i)  # not JSON
        if i > 120 and i % 11 == 0:
            e = "sad"
        if i > 200 and i % 7 == 0:
            ai = f"{{{i},x}}"
        if i % 50 == 0:
            jb = json.dumps({"deep": [[[[[i]]]]]})  # good, but past the screen's depth
        before = out.tell()
        writer.writerow([str(i), jb, e, ai, f"row {i}\nline two" if i % 13 == 0 else f"row {i}"])
        text = out.getvalue()[before:]
        starts.append((i, text))
    path = tmp_path / "more.csv"
    path.write_text(out.getvalue())
    header = ["k", "jb", "e", "ai", "note"]
    rejected, line = [], 2
    for _, record_text in starts:
        try:
            await conn.copy_to_table(
                "more_ref", source=io.BytesIO(record_text.encode()), columns=header, format="csv"
            )
        except asyncpg.DataError:
            rejected.append(line)
        line += record_text.count("\n")
    assert len(rejected) > 30
    query = "SELECT k, jb, e::text, ai, note FROM {} ORDER BY seq"
    expected = [tuple(r) for r in await conn.fetch(query.format("more_ref"))]
    jobs = await enqueue_both_modes(conn, path, "more")
    await drain(import_roots=(str(tmp_path),), tables=("public.more_t", "public.more_f"))
    for atomic, job_id in jobs.items():
        row = await conn.fetchrow(
            "SELECT status, last_error FROM import_jobs WHERE id = $1", job_id
        )
        assert row["status"] == "completed", row["last_error"]
        table = "more_t" if atomic else "more_f"
        assert [tuple(r) for r in await conn.fetch(query.format(table))] == expected, atomic
        lines = await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id = $1 ORDER BY line_number",
            job_id,
        )
        assert [r["line_number"] for r in lines] == rejected, atomic


# -- imports through the screen, against PostgreSQL COPYing each record alone -----------

MIXED = "k int UNIQUE, n numeric(6,2), d date, at timestamptz, ok boolean, note text"
HEADER = ["k", "n", "d", "at", "ok", "note"]
FIELD = {
    # good for the screen / doubtful for it but good / bad (for PostgreSQL)
    "k": st.one_of(
        st.integers(0, 40).map(str),
        st.sampled_from(["+7", "0000000012", "2147483647", " 5"]),
        st.sampled_from(["x", "2147483648", "1.5", ""]),
    ),
    "n": st.one_of(
        st.sampled_from(["12.34", "-9999.99", "0"]),
        st.sampled_from(["1234.567", "1e2", "00012.5"]),
        st.sampled_from(["99999.99", "9999.999", "abc"]),
    ),
    "d": st.one_of(
        st.sampled_from(["2024-01-31", "1999-12-30"]),
        st.sampled_from(["2024-02-29", "20240131", "Jan 5 2024"]),
        st.sampled_from(["2023-02-29", "2024-13-01", "soon"]),
    ),
    "at": st.one_of(
        st.sampled_from(["2024-01-31T10:00:00+02:00", "2024-01-31 10:00:00.5"]),
        st.sampled_from(["2024-01-31 10:00:00.1234567", "2024-01-31 10:00 UTC"]),
        st.sampled_from(["2024-01-31 25:00", "yesterday-ish"]),
    ),
    "ok": st.one_of(
        st.sampled_from(["t", "false", "YES"]),
        st.sampled_from([" t", "tr", "of"]),
        st.sampled_from(["maybe", "2"]),
    ),
    "note": st.one_of(st.none(), st.text(alphabet='ab ,"\n', max_size=6)),
}
MIXED_RECORD = st.one_of(
    st.tuples(*(st.one_of(st.none(), FIELD[c]) if c != "note" else FIELD[c] for c in HEADER)),
    st.tuples(FIELD["k"], FIELD["n"]),  # too few fields
)


def write_csv(records: list[tuple[str | None, ...]]) -> tuple[str, list[tuple[int, str]]]:
    """The file's text, and each record's start line and own text (with its newline)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    line = 2
    starts = []
    for record in records:
        before = out.tell()
        writer.writerow(["" if v is None else v for v in record])
        text = out.getvalue()[before:]
        starts.append((line, text))
        line += text.count("\n")
    return out.getvalue(), starts


@pytest.fixture
async def mixed(conn: Conn) -> Any:
    for name in ("mixed_t", "mixed_f", "mixed_ref"):
        await conn.execute(
            f"CREATE TABLE {name} ({MIXED}, seq bigint GENERATED ALWAYS AS IDENTITY)"
        )
    return conn


@settings(max_examples=12, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(MIXED_RECORD, min_size=1, max_size=45),
    chunk_rows=st.sampled_from([10, 17, 1000]),
)
async def test_imports_load_what_postgresql_copies_record_by_record(
    mixed: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[tuple[str | None, ...]],
    chunk_rows: int,
) -> None:
    conn = mixed
    text, starts = write_csv(records)
    path = tmp_path / "mixed.csv"
    path.write_text(text)
    await conn.execute("TRUNCATE mixed_t, mixed_f, mixed_ref, import_job_errors RESTART IDENTITY")
    # The reference: each record COPYed alone, in file order (a record with a NULL in
    # ``k`` writes "" for it, as the file does: unquoted and empty is NULL).
    rejected = []
    for line, record_text in starts:
        try:
            await conn.copy_to_table(
                "mixed_ref", source=io.BytesIO(record_text.encode()), columns=HEADER, format="csv"
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            rejected.append(line)
    query = "SELECT k, n::text, d::text, at::text, ok, note FROM {} ORDER BY seq"
    expected = [tuple(r) for r in await conn.fetch(query.format("mixed_ref"))]
    jobs = {
        atomic: await importd.enqueue(
            conn,
            "csv",
            {
                "source": f"file://{path}",
                "table": "mixed_t" if atomic else "mixed_f",
                "atomic": atomic,
                "max_errors": 10_000,
                "chunk_rows": chunk_rows,
            },
        )
        for atomic in (True, False)
    }
    await drain(import_roots=(str(tmp_path),), tables=("public.mixed_t", "public.mixed_f"))
    for atomic, job_id in jobs.items():
        row = await conn.fetchrow(
            "SELECT status, last_error FROM import_jobs WHERE id = $1", job_id
        )
        assert row["status"] == "completed", row["last_error"]
        table = "mixed_t" if atomic else "mixed_f"
        got = [tuple(r) for r in await conn.fetch(query.format(table))]
        assert got == expected, atomic  # the same rows, in file order
        lines = await conn.fetch(
            "SELECT line_number, raw_record FROM import_job_errors WHERE job_id = $1 "
            "ORDER BY line_number",
            job_id,
        )
        assert [r["line_number"] for r in lines] == rejected, atomic
        raw = dict(starts)
        assert all(r["raw_record"] == raw[r["line_number"]].rstrip("\n") for r in lines)


async def test_a_column_that_turns_bad_late_is_still_exact(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    """Once bad rows appeared the screen checks only the columns that held them; a bad
    value in another column later makes that chunk's COPY fail, and the chunk is still
    loaded exactly (and the column checked from then on)."""
    for name in ("late_t", "late_f"):
        await conn.execute(f"CREATE TABLE {name} (k int, d date, note text)")
    rows, bad = ["k,d,note"], {}
    for i in range(1, 91):
        line = i + 1
        k, d = str(i), "2024-01-31"
        if i <= 40 and i % 3 == 0:
            k, bad[line] = f"k{i}", "column k: "
        if i > 40 and i % 4 == 0:
            d, bad[line] = "2023-02-29", "column d: "
        rows.append(f"{k},{d},row {i}")
    path = tmp_path / "late.csv"
    path.write_text("\n".join(rows) + "\n")
    jobs = await enqueue_both_modes(conn, path, "late")
    await drain(import_roots=(str(tmp_path),), tables=("public.late_t", "public.late_f"))
    for atomic, job_id in jobs.items():
        table = "late_t" if atomic else "late_f"
        loaded = await conn.fetch(f"SELECT note FROM {table} ORDER BY ctid")
        good = [f"row {i}" for i in range(1, 91) if i + 1 not in bad]
        assert [r["note"] for r in loaded] == good, atomic
        errors = await conn.fetch(
            "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 "
            "ORDER BY line_number",
            job_id,
        )
        assert [r["line_number"] for r in errors] == sorted(bad), atomic
        assert all(r["message"].startswith(bad[r["line_number"]]) for r in errors), atomic


async def test_ndjson_records_are_screened_exactly(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    """NDJSON goes to COPY in the text format; its chunks are screened the same way."""
    for name in ("nd_t", "nd_f"):
        await conn.execute(f"CREATE TABLE {name} (a text, b int, n numeric(6,2))")
    lines, bad = [], []
    for i in range(1, 61):
        b: object = i
        if i % 4 == 0:
            b = f"b{i}"  # a string in an int column: the row is bad
            bad.append(i)
        elif i % 7 == 0:
            b = 2147483647  # ten digits: a suspect, and good
        lines.append(json.dumps({"a": f"x\t{i}\\", "b": b, "n": None if i % 5 else "1.5"}))
    path = tmp_path / "f.ndjson"
    path.write_text("\n".join(lines) + "\n")
    jobs = {
        atomic: await importd.enqueue(
            conn,
            "ndjson",
            {
                "source": f"file://{path}",
                "table": "nd_t" if atomic else "nd_f",
                "atomic": atomic,
                "max_errors": 100,
                "chunk_rows": 10,
            },
        )
        for atomic in (True, False)
    }
    await drain(import_roots=(str(tmp_path),), tables=("public.nd_t", "public.nd_f"))
    for atomic, job_id in jobs.items():
        table = "nd_t" if atomic else "nd_f"
        got = [
            tuple(r) for r in await conn.fetch(f"SELECT a, b, n::text FROM {table} ORDER BY ctid")
        ]
        expected = [
            (f"x\t{i}\\", 2147483647 if i % 7 == 0 else i, None if i % 5 else "1.50")
            for i in range(1, 61)
            if i not in bad
        ]
        assert got == expected, atomic
        errors = await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id = $1 ORDER BY 1", job_id
        )
        assert [r["line_number"] for r in errors] == bad, atomic


async def test_columns_named_like_the_checks_own_names_are_checked_exactly(
    conn: Conn, drain: Drain, tmp_path: Path
) -> None:
    """The row-by-row check (sql/queries/build_check.sql) declares variables and names
    of its own; columns named like them are checked like any others."""
    names = ["r", "e", "line", "message", "importd_column", "importd_lines", "v1"]
    columns = ", ".join(f"{name} {'text' if name == 'message' else 'int'}" for name in names)
    for table in ("own_t", "own_f"):
        await conn.execute(f"CREATE TABLE {table} ({columns})")
    rows, bad = [",".join(names)], {}
    for i in range(1, 61):
        values = [str(i)] * len(names)
        values[3] = f"m{i}"
        if i % 5 == 0:
            column = (i // 5) % len(names)
            column = column if column != 3 else 0
            values[column], bad[i + 1] = f"x{i}", names[column]
        rows.append(",".join(values))
    path = tmp_path / "own.csv"
    path.write_text("\n".join(rows) + "\n")
    jobs = await enqueue_both_modes(conn, path, "own")
    await drain(import_roots=(str(tmp_path),), tables=("public.own_t", "public.own_f"))
    for atomic, job_id in jobs.items():
        table = "own_t" if atomic else "own_f"
        got = [r["message"] for r in await conn.fetch(f"SELECT message FROM {table} ORDER BY r")]
        assert got == [f"m{i}" for i in range(1, 61) if i + 1 not in bad], atomic
        errors = await conn.fetch(
            "SELECT line_number, message FROM import_job_errors WHERE job_id = $1 "
            "ORDER BY line_number",
            job_id,
        )
        assert [r["line_number"] for r in errors] == sorted(bad), atomic
        assert all(r["message"].startswith(f"column {bad[r['line_number']]}: ") for r in errors), (
            atomic
        )


# Mostly good records, a few bad or doubtful ones: after the first bad chunk a direct
# import screens each chunk from its bytes (its suspects under a quarter of its lines).
GOOD_RECORD = st.tuples(
    st.integers(0, 20_000).map(str),  # (a duplicate now and then: UNIQUE refuses it)
    st.sampled_from(["12.34", "-9999.99", ""]),
    st.sampled_from(["2024-01-31", ""]),
    st.sampled_from(["2024-01-31T10:00:00+02:00", ""]),
    st.sampled_from(["t", "false", ""]),
    # (no blank line, even quoted: such a chunk is split into records instead)
    st.one_of(st.none(), st.text(alphabet='ab ,"\n', max_size=6)).filter(
        lambda t: t is None or "\n\n" not in t
    ),
)
# One record in eight or so from MIXED_RECORD (of those, about half bad).
SPARSE_RECORD = st.integers(0, 7).flatmap(lambda n: MIXED_RECORD if n == 0 else GOOD_RECORD)


@settings(max_examples=15, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(SPARSE_RECORD, min_size=60, max_size=200),
    chunk_rows=st.sampled_from([20, 30, 40]),
)
async def test_direct_imports_screening_chunks_from_their_bytes_load_what_postgresql_copies(
    mixed: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[tuple[str | None, ...]],
    chunk_rows: int,
) -> None:
    """A direct CSV import screens the chunks after a bad one from their bytes
    (``Screen.spans``) and COPYs them without their bad rows; a duplicate key the screen
    cannot see makes that COPY fail and the chunk take the failing chunk's path. The
    table and the rejected lines are PostgreSQL's own, each record COPYed alone in file
    order."""
    conn = mixed
    text, starts = write_csv(records)
    path = tmp_path / "sparse.csv"
    path.write_text(text)
    await conn.execute("TRUNCATE mixed_f, mixed_ref, import_job_errors RESTART IDENTITY")
    rejected = []
    for line, record_text in starts:
        try:
            await conn.copy_to_table(
                "mixed_ref", source=io.BytesIO(record_text.encode()), columns=HEADER, format="csv"
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            rejected.append(line)
    query = "SELECT k, n::text, d::text, at::text, ok, note FROM {} ORDER BY seq"
    job_id = await importd.enqueue(
        conn,
        "csv",
        {
            "source": f"file://{path}",
            "table": "mixed_f",
            "atomic": False,
            "max_errors": 10_000,
            "chunk_rows": chunk_rows,
        },
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.mixed_f",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id = $1", job_id)
    assert row["status"] == "completed", row["last_error"]
    got = [tuple(r) for r in await conn.fetch(query.format("mixed_f"))]
    assert got == [tuple(r) for r in await conn.fetch(query.format("mixed_ref"))]
    lines = await conn.fetch(
        "SELECT line_number, raw_record FROM import_job_errors WHERE job_id = $1 "
        "ORDER BY line_number",
        job_id,
    )
    assert [r["line_number"] for r in lines] == rejected
    raw = dict(starts)
    assert all(r["raw_record"] == raw[r["line_number"]].rstrip("\n") for r in lines)


async def test_a_check_ahead_on_a_slow_server_never_fails_the_import(conn: Conn, dsn: str) -> None:
    """The suspects of the next chunk are checked on a connection taken without waiting
    (a 50 ms acquire); giving it back resets its session, which on a loaded server takes
    longer. That is the release's own business: the verdicts stand, nothing is raised
    (asyncpg's default gave the release the acquire's 50 ms, and a TimeoutError out of it
    failed the whole import)."""
    await conn.execute("CREATE TABLE ahead (k int, note text)")

    async def slow_reset(_conn: Any) -> None:
        await _conn.execute("SELECT pg_sleep(0.2)")  # a loaded server's reset

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, reset=slow_reset)
    try:
        copier = Copier(CopyFormat("csv"), "utf_8", ",", '"', False, None, 1 << 20, print)
        copier.names, copier.types = ["k", "note"], ["integer", "text"]
        bodies = [b"1,a", b"x,b", b"3,c", b"4,d", b"5,e", b"6,f", b"7,g", b"8,h"]
        lines = list(range(2, 2 + len(bodies)))
        batch = Batch(lines, bodies, bodies, b"\n".join(bodies) + b"\n", b"", suspects=[1])
        await copier.check_ahead(pool, batch)
        assert batch.verdicts == {3: 'column k: invalid input syntax for type integer: "x"'}
        # The connection went back to the pool, usable.
        async with pool.acquire(timeout=5) as again:
            assert await again.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
