"""Audit 25: NDJSON imports whose NOT NULL columns get JSON ``null`` or a missing key (SQL
NULL), once the screen makes such NULLs suspects (``refuse_null``, in COPY's text format
as NDJSON is sent). Against PostgreSQL itself: each record's fields COPYed alone in the
text format into a twin table (``test_audit25_harness.reference_ndjson``); the import must
load and reject exactly those rows, at their lines, with PostgreSQL's message for a row
the target refuses, in both atomic modes and with two COPY streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Conn, Drain
from tests.integration.test_audit25_harness import (
    assert_exact,
    create_twins,
    reference_ndjson,
    run_import,
)

SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
DDL = (
    "CREATE TABLE {schema}.t (k int, v int NOT NULL CHECK (v <> 7), w text NOT NULL, "
    "j jsonb NOT NULL, s varchar(3) NOT NULL)"
)
COLUMNS = ["k", "v", "w", "j", "s"]
SELECT = "k, v, w, j::text, s"
# The order of the COPY's columns: ``payload.columns`` as the job row keeps it, a jsonb
# object, whose keys come shortest first, then in byte order (the reference converts
# the fields in that order too, so that it names the same bad value of a record first).
ORDER = sorted(COLUMNS, key=lambda c: (len(c.encode()), c.encode()))
MISSING = object()  # a key left out of the record

V = st.sampled_from([None, MISSING, 1, 7, "x", "12", 2**40])
W = st.sampled_from([None, MISSING, "", "a", "two\nlines", "\\N", "tab\there"])
J = st.sampled_from([None, MISSING, {"a": 1}, [1, None], "null", 0])
S = st.sampled_from([None, MISSING, "ab", "abcd", ""])


def _record(k: int, values: tuple[Any, ...]) -> dict[str, Any]:
    record: dict[str, Any] = {"k": k}
    for name, value in zip(COLUMNS[1:], values, strict=True):
        if value is not MISSING:
            record[name] = value
    return record


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record's values as the reference COPYs them: JSON text for the jsonb column."""
    out = dict(record)
    if out.get("j") is not None:
        out["j"] = json.dumps(out["j"])
    return out


async def _check(
    conn: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[dict[str, Any]],
    *,
    atomic: bool,
    chunk_rows: int = 10,
    streams: int = 1,
) -> None:
    await conn.execute("TRUNCATE public.t, ref.t, import_job_errors")
    ref = await reference_ndjson(conn, "t", ORDER, [_fields(r) for r in records], SELECT)
    lines = [json.dumps(r) for r in records]
    got = await run_import(
        conn,
        drain,
        tmp_path,
        "t",
        "\n".join(lines) + "\n",
        kind="ndjson",
        select=SELECT,
        atomic=atomic,
        chunk_rows=chunk_rows,
        columns={c: c for c in COLUMNS},
        drain_options={"copy_streams": streams},
    )
    assert_exact(got, ref, lines, first_line=1)


@pytest.fixture
async def twins(conn: Conn) -> Conn:
    await create_twins(conn, DDL)
    return conn


@pytest.mark.parametrize("atomic", [False, True])
async def test_null_and_missing_keys_in_every_chunk(
    twins: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    records = []
    for i in range(1, 201):
        v: Any = None if i % 7 == 0 else ("x" if i % 13 == 0 else (7 if i % 17 == 0 else i))
        w: Any = MISSING if i % 11 == 0 else ("two\nlines" if i % 5 == 0 else f"w{i}")
        j: Any = None if i % 19 == 0 else {"i": i}
        s: Any = MISSING if i % 23 == 0 else "ab"
        records.append(_record(i, (v, w, j, s)))
    await _check(twins, drain, tmp_path, records, atomic=atomic)


@settings(max_examples=20, deadline=None, suppress_health_check=SLOW)
@given(
    values=st.lists(st.tuples(V, W, J, S), min_size=1, max_size=60),
    atomic=st.booleans(),
    chunk_rows=st.integers(10, 15),
    streams=st.sampled_from([1, 2]),
)
async def test_any_mix_of_null_and_missing_keys_loads_as_copy_of_each_record_alone(
    twins: Conn,
    drain: Drain,
    tmp_path: Path,
    values: list[tuple[Any, ...]],
    atomic: bool,
    chunk_rows: int,
    streams: int,
) -> None:
    # A first chunk that teaches the screen: NULLs refused in v, w, j and s.
    teach: list[tuple[Any, ...]] = [
        (None, "a", {}, "ab"),
        (1, MISSING, {}, "ab"),
        (1, "a", None, "ab"),
        (1, "a", {}, None),
    ]
    records = [_record(k, r) for k, r in enumerate([*teach, *values], 1)]
    await _check(
        twins,
        drain,
        tmp_path,
        records,
        atomic=atomic,
        chunk_rows=chunk_rows,
        streams=1 if atomic else streams,
    )
