"""The helper tables' positional columns (``c1``..``cN``) never reach a message: a COPY
error into a staging table is told under the user's column names, whatever they are
(``describe``, property-based against a reference built from the names)."""

from __future__ import annotations

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from importd import tables
from importd.handlers.imports.common import describe

# Column names as a table may have them: anything PostgreSQL accepts (no NUL, at most 63
# bytes), the helper tables' own names and the positional ones above all.
NAMES = st.one_of(
    st.sampled_from(["importd_line", "importd_error", "c1", "c2", "c10", "r", "e", "v1"]),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1).filter(
        lambda s: len(s.encode()) <= 63
    ),
)


def error(message: str, context: str) -> asyncpg.PostgresError:
    return asyncpg.PostgresError.new({"C": "22P02", "M": message, "W": context})


@given(st.lists(NAMES, min_size=1, max_size=12, unique=True), st.data())
def test_a_staged_copy_error_names_the_users_column(names: list[str], data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(names)))
    helper = tables.positional(len(names))[k - 1]
    assert helper == f"c{k}"
    bad = error(
        'invalid input syntax for type integer: "x"', f'COPY job_1_0, line 3, column {helper}: "x"'
    )
    assert describe(bad, names) == (
        3,
        f'column {names[k - 1]}: invalid input syntax for type integer: "x"',
    )
    short = error(f'missing data for column "{helper}"', 'COPY job_1, line 7: "1,2"')
    assert describe(short, names) == (7, f'missing data for column "{names[k - 1]}"')
    # A COPY into the target (no helper columns) is told as PostgreSQL tells it.
    assert describe(short, None) == (7, f'missing data for column "{helper}"')


def test_helper_columns_are_positional() -> None:
    assert tables.positional(3) == ["c1", "c2", "c3"]
    assert tables.LINE not in tables.positional(100)
