"""Rows a CHECK on one numeric column refuses, once the target refused one: the screen
makes a value out of the CHECK's bound a suspect (``bounds``, ``Screen.build``'s
``bounds``), the check of the suspects finds the refusal with PostgreSQL's own message,
and the chunk's COPY goes without those rows, instead of a second COPY of every chunk
to find them (``CheckTable.find_refused``). Checked against PostgreSQL itself: the
CHECKs as it deparses them, whatever value a bound takes its CHECK admits, and an
import loads and rejects exactly what the same records INSERTed one by one do."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import importd
from importd import tables
from importd.handlers.imports import bounds
from importd.handlers.imports.screening import Screen
from tests.helpers import Conn, Drain
from tests.integration.test_refused_nulls_screened import _import, import_mix
from tests.integration.test_screening import SLOW

# Columns of each numeric type under the CHECKs users write, as DDL.
CHECKED = {
    "a": "int CHECK (a > 0)",
    "b": "bigint CHECK (b >= -5 AND b < 100)",
    "c": "numeric(12,2) CHECK (c > 0)",
    "d": "double precision CHECK (d <= 1.5)",
    "e": "smallint CHECK (e BETWEEN 1 AND 10)",
    "f": "numeric CHECK (f > -0.5) CHECK (f < 1e6)",
    "g": "real CHECK (g >= 0.1)",
    "h": "int CHECK (h <> 0)",
    "i": "numeric(5,1) CHECK (i < 99.5 OR i > 500)",
    "j": "int CHECK (0 < j) CHECK (j < 3000000000)",
    "p": "double precision CHECK (p > 0 AND p < 1)",
    "q": "real CHECK (q >= 0 AND q < 1)",
    "r": "numeric(6,4) CHECK (r > 0 AND r < 1)",
    "s": "double precision CHECK (s BETWEEN -90 AND 90)",
    "t": "numeric CHECK (t >= -1)",
    "u": "double precision CHECK (u >= 123456789::real)",  # (the constant is 123456792)
    "w": "double precision CHECK (w <= 16777217::real OR w > 2e8)",  # (16777216 or more)
}


@pytest.fixture
async def checked(conn: Conn) -> dict[str, bounds.Bound]:
    """Table ``ck`` of ``CHECKED``, and each column's bound as importd reads it."""
    columns = ", ".join(f"{name} {ddl}" for name, ddl in CHECKED.items())
    await conn.execute(f"CREATE TABLE ck ({columns})")
    table = await tables.describe(conn, "public", "ck")
    assert table is not None
    found = {c.name: bounds.of_column(c.type, c.checks) for c in table.columns}
    assert all(found.values()), found  # every one of those CHECKs is read
    return {name: b for name, b in found.items() if b is not None}


NUMERALS = st.one_of(
    st.integers(-20, 120).map(str),
    st.integers(-(10**10), 10**10).map(str),
    st.decimals(-20, 600, places=2, allow_nan=False, allow_infinity=False).map(str),
    st.builds(lambda i, n: f"{i}.{'9' * n}", st.integers(-10, 110), st.integers(1, 22)),
    st.sampled_from(["+5", "-0", "007", "0.05", "-0.5", "1e3", "99.5", "99.45", "1.5"]),
    st.sampled_from(["123456789", "123456792", "16777217", "16777216", "0.9999999"]),
    st.builds(lambda n: "0." + "9" * n, st.integers(5, 18)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW)
@given(numerals=st.lists(NUMERALS, min_size=1, max_size=40))
async def test_whatever_a_bound_takes_its_checks_admit(
    conn: Conn, checked: dict[str, bounds.Bound], numerals: list[str]
) -> None:
    for name, bound in checked.items():
        screen = Screen.build(["text"], "csv", ",", '"', '"', "", bounds={0: bound.pattern})
        assert screen is not None
        good = [n.encode() for n in numerals if screen.good(n.encode())]
        if not good:
            continue
        await conn.execute("TRUNCATE ck")
        try:
            await conn.copy_to_table(
                "ck", source=io.BytesIO(b"\n".join(good) + b"\n"), columns=[name], format="csv"
            )
        except asyncpg.PostgresError as exc:
            pytest.fail(f"{name} ({CHECKED[name]}): a bound took what PostgreSQL refused: {exc}")


async def test_every_integer_a_check_admits_is_taken(
    conn: Conn, checked: dict[str, bounds.Bound]
) -> None:
    """For integer columns the bound is exact: PostgreSQL's verdict on each integer
    near the CHECKs' constants is the bound's."""
    for name in ("a", "b", "e", "h", "j", "t", "s"):
        pattern = re.compile(checked[name].pattern)
        for value in range(-12, 120):
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO ck ({name}) VALUES ($1)", value)
                admitted = True
            except asyncpg.CheckViolationError:
                admitted = False
            assert (pattern.fullmatch(str(value).encode()) is not None) == admitted, (name, value)


async def test_checks_not_read_as_bounds(conn: Conn) -> None:
    """A CHECK of another form (a cast of the column, a function, NOT, IN, two
    columns) gives no bound: it is left to COPY, as before."""
    await conn.execute(
        "CREATE TABLE other (x int CHECK (x::numeric > 5.5), y int CHECK (y IN (1, 2)), "
        "z int CHECK (NOT (z < 0)), t text CHECK (length(t) > 1), "
        "p int, q int, CHECK (p < q), "
        # A constant cast so that it rounds, or fails on every row (a helper's audit).
        "a int CHECK (a < 2.4::integer), b bigint CHECK (b > 99.5::smallint), "
        "c int CHECK (c <> 40000::smallint))"
    )
    table = await tables.describe(conn, "public", "other")
    assert table is not None
    for column in table.columns:
        assert bounds.of_column(column.type, column.checks) is None, column


DDL = "CREATE TABLE {schema}.nn (k int, v int CHECK (v > 0) CHECK (v < 100000), note text)"


@pytest.fixture
async def pair(conn: Conn) -> Conn:
    await conn.execute("CREATE SCHEMA ref")
    for schema in ("public", "ref"):
        await conn.execute(DDL.format(schema=schema))
    return conn


@pytest.mark.parametrize("atomic", [False, True])
async def test_check_refusals_in_every_chunk_are_found_by_the_screen_not_a_second_copy(
    pair: Conn, drain: Drain, tmp_path: Path, ahead_finds: list[int], atomic: bool
) -> None:
    # A negative ``v`` every 7th row, one too big every 11th, a ``v`` that does not
    # convert every 13th, quoted notes over two lines now and then: 30 chunks.
    records: list[tuple[str | None, ...]] = []
    for i in range(1, 601):
        v = f"-{i}" if i % 7 == 0 else ("x" if i % 13 == 0 else str(i))
        v = "100000" if i % 11 == 0 else v
        note = None if i % 17 == 0 else ("two\nlines" if i % 5 == 0 else f"n{i}")
        records.append((str(i), v, note))
    await _import(pair, drain, tmp_path, records, atomic)
    # The first chunks teach the screen; after them no chunk is COPYed twice.
    assert len(ahead_finds) <= 3, ahead_finds


@settings(max_examples=20, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(
        st.tuples(
            st.just(""),
            st.sampled_from(["1", "-5", None, "x", "", "0", "99999", "100000", "+7", "007"]),
            st.sampled_from([None, "", "a", "l1\nl2", 'q "q"', "x,y"]),
        ),
        min_size=1,
        max_size=120,
    ),
    atomic=st.booleans(),
)
async def test_any_mix_of_check_refusals_and_bad_values_loads_as_postgresql_inserts(
    pair: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[tuple[str | None, ...]],
    atomic: bool,
) -> None:
    await import_mix(pair, drain, tmp_path, records, atomic)


@pytest.mark.parametrize("atomic", [False, True])
async def test_ndjson_check_refusals_are_found_by_the_screen(
    pair: Conn, drain: Drain, tmp_path: Path, filtered_calls: list[int | None], atomic: bool
) -> None:
    """NDJSON records (prepared, not screened as bytes) take the same bound: after the
    first chunks no chunk goes through the COPYs that find refused rows."""
    records = []
    for i in range(1, 601):
        v: Any = -i if i % 7 == 0 else (100000 + i if i % 11 == 0 else i)
        records.append({"k": i, "v": "x" if i % 13 == 0 else v, "note": f"n{i}"})
    path = tmp_path / "nn.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    refused = []
    for line, r in enumerate(records, 1):
        try:
            async with pair.transaction():
                await pair.execute(
                    "INSERT INTO ref.nn VALUES ($1, $2::text::int, $3)",
                    r["k"],
                    str(r["v"]),
                    r["note"],
                )
        except (asyncpg.DataError, asyncpg.CheckViolationError):
            refused.append(line)
    payload = {
        "source": f"file://{path}",
        "table": "nn",
        "atomic": atomic,
        "max_errors": 10_000,
        "chunk_rows": 20,
    }
    job = await importd.enqueue(pair, "ndjson", payload)
    await drain(import_roots=(str(tmp_path),), tables=("public.nn",))
    row = await pair.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    lines = await pair.fetch(
        "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
    )
    assert [r["line_number"] for r in lines] == refused
    expected = await pair.fetch("SELECT * FROM ref.nn ORDER BY k")
    assert await pair.fetch("SELECT * FROM public.nn ORDER BY k") == expected
    # The first chunk teaches the screen; the few the producer prepared before it was
    # loaded (it runs ahead of the loader) and the first screened one go through those
    # COPYs; none of the other 25 chunks.
    assert len(filtered_calls) <= 5, filtered_calls
