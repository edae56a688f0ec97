"""Rows a NOT NULL refuses, once the target refused one: the screen makes a NULL in that
column a suspect (``Screen.build``'s ``refuse_null``), the check of the suspects finds the
refusal with PostgreSQL's own message (``CheckTable.convert``'s ``refusals``), and the
chunk's COPY goes without them, instead of a second COPY of every chunk to find them
(``CheckTable.find_refused``). Checked against PostgreSQL itself: whatever record the
screen calls good, a NOT NULL column takes; and an import loads and rejects exactly what
the same records INSERTed one by one do, with the same messages and lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import importd
from importd.handlers.imports.screening import Screen
from tests.helpers import Conn, Drain, while_a_lock_queues
from tests.integration.test_screening import (
    NAMES,
    RECORDS,
    SLOW,
    TYPES,
    assert_copied,
    csv_body,
    text_body,
)


@pytest.fixture
async def not_null(conn: Conn) -> Conn:
    """A table of every screened type, each column NOT NULL."""
    columns = ", ".join(f"{n} {t} NOT NULL" for n, t in zip(NAMES, TYPES, strict=True))
    await conn.execute(f"CREATE TABLE not_null ({columns})")
    return conn


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(records=RECORDS, fmt=st.sampled_from(["csv", "text"]), quote_all=st.booleans())
async def test_whatever_the_screen_calls_good_a_not_null_column_takes(
    not_null: Conn, records: list[tuple[str | None, ...]], fmt: str, quote_all: bool
) -> None:
    screen = Screen.build(TYPES, fmt, ",", '"', '"', "", refuse_null=range(len(TYPES)))
    assert screen is not None
    bodies = [csv_body(r, quote_all) if fmt == "csv" else text_body(r) for r in records]
    good = [body for body in bodies if screen.good(body)]
    # (and no record with a NULL is called good, which the COPY below would refuse)
    if good:
        options: dict[str, Any] = {"format": fmt}
        if fmt == "csv":
            options.update(delimiter=",", quote='"', null="")
        await assert_copied(not_null, "not_null", NAMES, good, options)


@pytest.mark.parametrize(
    ("null", "body", "good"),
    [
        ("", b"1,,x", False),  # NULL: an unquoted empty field
        ("", b'1,"",x', True),  # an empty string, quoted: not NULL
        ("", b"1,2,x", True),
        ("NA", b"1,NA,x", False),
        ("NA", b"1,NAB,x", True),  # (NA only as the whole field)
        ("NA", b'1,"NA",x', True),  # quoted: the string NA
        ("NA", b"1,,x", True),
    ],
)
def test_only_the_null_marker_alone_in_its_field_is_a_suspect(
    null: str, body: bytes, good: bool
) -> None:
    screen = Screen.build(
        ["integer", "text", "text"], "csv", ",", '"', '"', null, {0}, refuse_null={1}
    )
    assert screen is not None
    assert screen.good(body) is good
    spans = screen.spans(b"1,ok,x\n" + body + b"\n")
    assert spans == ([] if good else [(7, 8 + len(body))])


def test_without_refuse_null_a_null_stays_good() -> None:
    screen = Screen.build(["integer", "text"], "csv", ",", '"', '"', "")
    assert screen is not None and screen.good(b"1,")
    text = Screen.build(["integer", "text"], "text", "\t", '"', '"', "", refuse_null={1})
    assert text is not None
    assert not text.good(b"1\t\\N") and text.good(b"1\tN") and text.good(b"1\t")


DDL = "CREATE TABLE {schema}.nn (k int, v int NOT NULL, note text NOT NULL)"


@pytest.fixture
async def pair(conn: Conn) -> Conn:
    await conn.execute("CREATE SCHEMA ref")
    for schema in ("public", "ref"):
        await conn.execute(DDL.format(schema=schema))
    return conn


def _line(record: tuple[str | None, ...]) -> str:
    """One record and its line end: NULL unquoted and empty, "" an empty string."""
    return csv_body(record, False).decode() + "\n"


def _write(
    tmp_path: Path, records: list[tuple[str | None, ...]]
) -> tuple[Path, list[str], list[int]]:
    """``nn.csv`` of ``records`` after a header; each record's text and source line."""
    texts = [_line(r) for r in records]
    starts, line = [], 2
    for text in texts:
        starts.append(line)
        line += text.count("\n")
    path = tmp_path / "nn.csv"
    path.write_text("k,v,note\n" + "".join(texts))
    return path, texts, starts


async def _reference(conn: Conn, records: list[tuple[str | None, ...]]) -> Any:
    refused: list[tuple[int, str | None]] = []
    for i, (k, v, note) in enumerate(records):
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ref.nn VALUES ($1::text::int, $2::text::int, $3)", k, v, note
                )
        except asyncpg.DataError:
            refused.append((i, None))
        except asyncpg.IntegrityConstraintViolationError as exc:
            refused.append((i, f"{exc.message} ({exc.detail})"))
    return [tuple(r) for r in await conn.fetch("SELECT * FROM ref.nn ORDER BY k")], refused


async def _import(
    conn: Conn, drain: Drain, tmp_path: Path, records: list[tuple[str | None, ...]], atomic: bool
) -> None:
    path, texts, starts = _write(tmp_path, records)
    expected, refused = await _reference(conn, records)
    payload = {
        "source": f"file://{path}",
        "table": "nn",
        "atomic": atomic,
        "max_errors": 10_000,
        "chunk_rows": 20,
    }
    job = await importd.enqueue(conn, "csv", payload)
    await drain(import_roots=(str(tmp_path),), tables=("public.nn",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    errors = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id=$1 ORDER BY 1",
        job,
    )
    assert [tuple(r) for r in await conn.fetch("SELECT * FROM public.nn ORDER BY k")] == expected
    assert [e["line_number"] for e in errors] == [starts[i] for i, _ in refused]
    assert [e["raw_record"] for e in errors] == [texts[i].rstrip("\n") for i, _ in refused]
    for (_, message), error in zip(refused, errors, strict=True):
        if message is not None:
            assert error["message"] == message


async def import_mix(
    conn: Conn, drain: Drain, tmp_path: Path, records: list[tuple[str | None, ...]], atomic: bool
) -> None:
    """``_import`` of generated ``records`` (numbered 1, 2, … in their first field) into
    tables emptied first: one hypothesis example."""
    await conn.execute("TRUNCATE public.nn, ref.nn, import_job_errors")
    records = [(str(i), v, note) for i, (_, v, note) in enumerate(records, 1)]
    await _import(conn, drain, tmp_path, records, atomic)


@pytest.mark.parametrize("atomic", [False, True])
async def test_null_refusals_in_every_chunk_are_found_by_the_screen_not_a_second_copy(
    pair: Conn, drain: Drain, tmp_path: Path, ahead_finds: list[int], atomic: bool
) -> None:
    # A NULL ``v`` every 7th row, an empty ``note`` (NULL) every 11th, a ``v`` that does
    # not convert every 13th, quoted notes over two lines now and then: 30 chunks.
    records: list[tuple[str | None, ...]] = []
    for i in range(1, 601):
        v = None if i % 7 == 0 else ("x" if i % 13 == 0 else str(i))
        note = None if i % 11 == 0 else ("two\nlines" if i % 5 == 0 else f"n{i}")
        records.append((str(i), v, note))
    await _import(pair, drain, tmp_path, records, atomic)
    # The first chunks teach the screen; after them no chunk is COPYed twice.
    assert len(ahead_finds) <= 3, ahead_finds


@settings(max_examples=25, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(
        st.tuples(
            st.integers(1, 10**6).map(str),
            st.sampled_from(["1", "-5", None, "x", "", "0"]),
            st.sampled_from([None, "", "a", "l1\nl2", 'q "q"', "x,y"]),
        ),
        min_size=1,
        max_size=120,
    ),
    atomic=st.booleans(),
)
async def test_any_mix_of_nulls_refused_and_bad_values_loads_as_postgresql_inserts(
    pair: Conn,
    drain: Drain,
    tmp_path: Path,
    records: list[tuple[str | None, ...]],
    atomic: bool,
) -> None:
    await import_mix(pair, drain, tmp_path, records, atomic)


async def test_the_check_ahead_of_null_suspects_steps_aside_for_a_queued_lock(
    pair: Conn, drain: Drain, tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check of the suspects, ahead, tries the refused ones into the target: it must
    not wait behind an ACCESS EXCLUSIVE lock queued behind the loader's (a deadlock
    PostgreSQL cannot see), nor log that as a failure."""
    records: list[tuple[str | None, ...]] = [
        (str(i), None if i % 10 == 3 else str(i), f"n{i}") for i in range(1, 401)
    ]
    path, _, starts = _write(tmp_path, records)
    expected, refused = await _reference(pair, records)
    payload = {
        "source": f"file://{path}",
        "table": "nn",
        "atomic": True,
        "max_errors": 1000,
        "chunk_rows": 10,
    }
    job = await importd.enqueue(pair, "csv", payload, timeout=60)
    await while_a_lock_queues(
        pair, dsn, "public.nn", drain(import_roots=(str(tmp_path),), tables=("public.nn",))
    )
    row = await pair.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert row["status"] == "completed", row["last_error"]
    lines = await pair.fetch(
        "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
    )
    assert [r["line_number"] for r in lines] == [starts[i] for i, _ in refused]
    assert [tuple(r) for r in await pair.fetch("SELECT * FROM public.nn ORDER BY k")] == expected
    logged = [line for line in capsys.readouterr().out.splitlines() if "check_ahead_failed" in line]
    assert not logged, logged[:2]
