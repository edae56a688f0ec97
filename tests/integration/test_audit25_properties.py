"""Audit 25: random mixes of NULLs the target refuses against PostgreSQL itself.

Once the target refused a row for a NULL, the screen makes a NULL in that column a
suspect (``Screen.build``'s ``refuse_null``) and the check of the suspects finds the
refusal (``CheckTable.convert``'s ``refusals``). Whatever the file holds (the NULL
marker bare or quoted, empty strings quoted, rows a field short or long and NULL too,
values that do not convert beside a NULL, fields over several lines, a CHECK beside the
NOT NULLs, enums, bounded text), with any NULL marker and delimiter, small chunks, both
atomic modes and two COPY streams, an import must load and reject exactly what COPY of
each record alone does (``test_audit25_harness``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Conn, Drain
from tests.integration.test_audit25_harness import (
    assert_exact,
    create_twins,
    reference_csv,
    run_import,
)

SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
COLUMNS = ["k", "v", "w", "e", "x"]
SELECT = "k, v, w, e::text, x"
DDL = (
    "CREATE TABLE {schema}.t (k int, v int NOT NULL CHECK (v <> 7), w text NOT NULL, "
    "e public.mood NOT NULL, x varchar(3))"
)

# A field as a kind: ("null",) the NULL marker bare; ("quoted", s) s inside quotes;
# ("plain", s) s as it is (never the marker, a delimiter, a quote or a line end).
Field = tuple[str, ...]
V = st.sampled_from(
    [
        ("null",),
        ("null",),
        ("quoted-null",),
        ("quoted", ""),
        ("plain", "7"),
        ("plain", "x"),
        ("plain", "12"),
        ("quoted", "13"),
        ("plain", "99999999999"),
    ]
)
W = st.sampled_from(
    [
        ("null",),
        ("null",),
        ("quoted-null",),
        ("quoted", ""),
        ("plain", "a"),
        ("quoted", "two\nlines"),
        ("quoted", 'say "hi"; ok, fine'),
        ("plain", "NAB"),
        ("quoted", "\\N"),
    ]
)
E = st.sampled_from(
    [("null",), ("plain", "ok"), ("plain", "meh"), ("quoted", "sad"), ("quoted", "")]
)
X = st.sampled_from([("null",), ("plain", "ab"), ("plain", "abcd"), ("quoted", "a\nb")])
SHAPE = st.sampled_from(["whole"] * 8 + ["short1", "short2", "extra"])
RECORDS = st.lists(st.tuples(V, W, E, X, SHAPE), min_size=1, max_size=60)


def _field(field: Field, null: str, quote: str) -> str:
    if field[0] == "null":
        return null
    if field[0] == "quoted-null":
        return quote + null.replace(quote, quote * 2) + quote
    text = field[1]
    if field[0] == "quoted":
        return quote + text.replace(quote, quote * 2) + quote
    return text


def _record(i: int, fields: tuple[Any, ...], null: str, delimiter: str, quote: str) -> str:
    *values, shape = fields
    parts = [str(i), *(_field(f, null, quote) for f in values)]
    if shape == "short1":
        parts = parts[:-1]
    elif shape == "short2":
        parts = parts[:-2]
    elif shape == "extra":
        parts.append("9")
    return delimiter.join(parts)


@pytest.fixture
async def twins(conn: Conn) -> Conn:
    await conn.execute("CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy')")
    await create_twins(conn, DDL)
    return conn


async def _check(
    conn: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[str],
    *,
    null: str,
    delimiter: str,
    quote: str,
    atomic: bool,
    chunk_rows: int,
    streams: int = 1,
) -> None:
    await conn.execute("TRUNCATE public.t, ref.t, import_job_errors")
    ref = await reference_csv(
        conn, "t", COLUMNS, records, null=null, delimiter=delimiter, quote=quote, select=SELECT
    )
    header = delimiter.join(COLUMNS)
    got = await run_import(
        conn,
        drain,
        tmp_path,
        "t",
        header + "\n" + "\n".join(records) + "\n",
        select=SELECT,
        atomic=atomic,
        chunk_rows=chunk_rows,
        null=null,
        delimiter=delimiter,
        quote=quote,
        escape=quote,
        drain_options={"copy_streams": streams},
    )
    assert_exact(got, ref, records)


@settings(max_examples=25, deadline=None, suppress_health_check=SLOW)
@given(
    records=RECORDS,
    null=st.sampled_from(["", "NA", "\\N"]),
    delimiter=st.sampled_from([",", ";", "\t"]),
    quote=st.sampled_from(['"', "'"]),
    atomic=st.booleans(),
    chunk_rows=st.integers(10, 20),
)
async def test_any_mix_of_refused_nulls_loads_as_copy_of_each_record_alone(
    twins: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[tuple[Any, ...]],
    null: str,
    delimiter: str,
    quote: str,
    atomic: bool,
    chunk_rows: int,
) -> None:
    # A first chunk that teaches the screen (a NULL refused in v and in w), then the mix.
    lines = [
        _record(
            1,
            (("null",), ("plain", "a"), ("plain", "ok"), ("null",), "whole"),
            null,
            delimiter,
            quote,
        ),
        _record(
            2,
            (("plain", "1"), ("null",), ("plain", "ok"), ("null",), "whole"),
            null,
            delimiter,
            quote,
        ),
    ]
    lines += [_record(i, r, null, delimiter, quote) for i, r in enumerate(records, 3)]
    await _check(
        twins,
        drain,
        tmp_path,
        lines,
        null=null,
        delimiter=delimiter,
        quote=quote,
        atomic=atomic,
        chunk_rows=chunk_rows,
    )


@settings(max_examples=15, deadline=None, suppress_health_check=SLOW)
@given(records=RECORDS, chunk_rows=st.integers(10, 12))
async def test_two_copy_streams_load_refused_nulls_exactly(
    twins: Conn, drain: Drain, tmp_path: Path, records: list[tuple[Any, ...]], chunk_rows: int
) -> None:
    lines = [_record(i, r, "", ",", '"') for i, r in enumerate(records, 1)]
    await _check(
        twins,
        drain,
        tmp_path,
        lines,
        null="",
        delimiter=",",
        quote='"',
        atomic=False,
        chunk_rows=chunk_rows,
        streams=2,
    )
