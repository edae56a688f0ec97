"""Outcomes are checked before they are written: ``result_problem`` against PostgreSQL
itself, the judge of what a jsonb column accepts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from importd.context import result_problem
from tests.helpers import Conn
from tests.unit.test_outcomes import _chars, _has_surrogate

# Text with what PostgreSQL refuses mixed in: NUL and halves of surrogate pairs.
_text = st.text(_chars, max_size=8)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),  # NaN and ±Infinity included
    _text,
    st.builds(object),  # not JSON at all
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_text, inner, max_size=4),
    ),
    max_leaves=12,
)


async def test_result_problem_agrees_with_postgresql(conn: Conn) -> None:
    loop = asyncio.get_running_loop()

    async def accepts(text: str) -> bool:
        try:
            await conn.fetchval("SELECT $1::text::jsonb IS NOT NULL", text)
        except asyncpg.PostgresError:
            return False
        return True

    @settings(max_examples=300, deadline=None)
    @given(_values)
    def agree(value: Any) -> None:
        problem = result_problem(value)
        try:
            sent = json.dumps(value)  # what the result write would send unchecked
        except (TypeError, ValueError):
            sent = None
        ok = sent is not None and asyncio.run_coroutine_threadsafe(accepts(sent), loop).result()
        if problem is None:
            assert ok, f"passed as storable but PostgreSQL refuses {sent!r}"
        elif ok:
            # Stricter than PostgreSQL only for surrogate pairs split over two code
            # points, which jsonb would glue into a character the handler never returned.
            assert _has_surrogate(value), (value, problem)

    await asyncio.to_thread(agree)
