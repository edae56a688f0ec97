"""The screen of json/jsonb, enum, array and domain columns under
unusual COPY options (quote "'", delimiter ';' / '|' / '.', null 'NA'): whatever record
it calls good, PostgreSQL's own COPY with the same options must accept."""

from __future__ import annotations

import io
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd import tables
from importd.handlers.imports.screening import Screen, value_type
from tests.helpers import Conn
from tests.integration.test_screening import MORE, MORE_FIELDS, SLOW, create_more

OPTIONS = st.sampled_from(
    [
        ("'", ";", "NA"),
        ("'", "|", ""),
        ('"', "|", "NA"),
        ('"', ";", "\\N"),
        ("'", ",", "NA"),
        ('"', ".", ""),
    ]
)


def body(
    record: tuple[str | None, ...], quote: str, delimiter: str, null: str, all_: bool
) -> bytes:
    out = []
    for value in record:
        if value is None:
            out.append(null)
        elif (
            all_
            or value == ""
            or value == null
            or any(c in value for c in (quote, delimiter, "\r", "\n"))
        ):
            out.append(quote + value.replace(quote, quote + quote) + quote)
        else:
            out.append(value)
    return delimiter.join(out).encode()


@pytest.fixture
async def screened_opts(conn: Conn) -> Any:
    await create_more(conn, "screened_opts")
    return conn


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(
    records=st.lists(st.tuples(*MORE_FIELDS.values()), min_size=1, max_size=20),
    options=OPTIONS,
    quote_all=st.booleans(),
)
async def test_screen_good_is_copyable_under_unusual_copy_options(
    screened_opts: Conn,
    records: list[tuple[str | None, ...]],
    options: tuple[str, str, str],
    quote_all: bool,
) -> None:
    conn = screened_opts
    quote, delimiter, null = options
    target = await tables.describe(conn, "public", "screened_opts")
    assert target is not None
    kinds = [value_type(column) for column in target.columns]
    screen = Screen.build(kinds, "csv", delimiter, quote, quote, null)
    assert screen is not None
    bodies = [body(r, quote, delimiter, null, quote_all) for r in records]
    good = [b for b in bodies if screen.good(b)]
    if not good:
        return
    await conn.execute("TRUNCATE screened_opts")
    for one in good:
        try:
            await conn.copy_to_table(
                "screened_opts",
                source=io.BytesIO(one + b"\n"),
                columns=list(MORE),
                format="csv",
                delimiter=delimiter,
                quote=quote,
                escape=quote,
                null=null,
            )
        except asyncpg.PostgresError as exc:
            pytest.fail(f"screen called good what COPY refused: {exc}: {one!r} {options}")
