"""Audit 25: ``max_errors`` passed at a row a NOT NULL refuses, once the screen makes such
NULLs suspects (``refuse_null``). The job fails with ``TooManyErrors`` counting the rows
rejected up to the one past the limit and naming the file's first bad row; with
``atomic: true`` nothing is loaded, with ``atomic: false`` exactly the chunks before the
one that passed the limit stay loaded (chunks of 10 lines). Every rejected row recorded
is one PostgreSQL refuses (COPY of its record alone), at its line, with its message and
record; none is recorded twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Conn, Drain
from tests.integration.test_audit25_harness import create_twins, reference_csv, run_import, starts

DDL = "CREATE TABLE {schema}.t (k int, v int NOT NULL CHECK (v <> 7), w text NOT NULL)"
CHUNK = 10


def _records(check_at: set[int]) -> list[str]:
    """60 single-line records: a NULL v at 3, 15, 18, 25, 27, 41; a NULL w at 16;
    v = 7 (the CHECK) at ``check_at``."""
    out = []
    for i in range(1, 61):
        v = "" if i in (3, 15, 18, 25, 27, 41) else ("7" if i in check_at else str(i))
        w = "" if i == 16 else f"w{i}"
        out.append(f"{i},{v},{w}")
    return out


@pytest.mark.parametrize("check_at", [set(), {22}])
@pytest.mark.parametrize("limit", [3, 4, 5])
@pytest.mark.parametrize("atomic", [False, True])
async def test_max_errors_passed_at_a_refused_null(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, limit: int, check_at: set[int]
) -> None:
    await create_twins(conn, DDL)
    records = _records(check_at)
    ref = await reference_csv(conn, "t", ["k", "v", "w"], records)
    lines = starts(records)
    bad = [i for i, _ in ref.errors]
    messages = dict(ref.errors)
    assert len(bad) > limit + 1
    past = bad[limit]  # the record whose refusal passes the limit, in file order
    chunk = past // CHUNK  # (single-line records: the chunk of 10 lines that holds it)
    got = await run_import(
        conn,
        drain,
        tmp_path,
        "t",
        "k,v,w\n" + "\n".join(records) + "\n",
        atomic=atomic,
        max_errors=limit,
    )
    assert got.status == "failed"
    assert got.last_error is not None
    first = bad[0]
    assert got.last_error.startswith(
        f"TooManyErrors: {limit + 1} rows rejected, more than max_errors={limit}; "
        f"first: line {lines[first]}: {messages[first]}"
    ), got.last_error
    # The rows loaded: none, or every good row of the chunks before the one past the limit.
    kept = {int(r.split(",", 1)[0]) for i, r in enumerate(records) if i < chunk * CHUNK}
    expected = [] if atomic else [r for r in ref.rows if r[0] in kept]
    assert got.rows == expected
    if atomic:
        assert got.last_error.endswith("; nothing was loaded"), got.last_error
    else:
        assert got.last_error.endswith(f"; {len(expected)} rows of earlier chunks stay loaded")
    # Every row recorded is a row PostgreSQL refuses, at its line, with its message.
    want = {lines[i]: (messages[i], records[i]) for i in bad}
    recorded = [e[0] for e in got.errors]
    assert len(recorded) == len(set(recorded)), got.errors
    for line, message, raw in got.errors:
        assert line in want, (line, message)
        assert (message, raw) == want[line]
    # The rows of the chunks before the one past the limit are all recorded.
    assert {lines[i] for i in bad if i < chunk * CHUNK} <= set(recorded)
    assert len(recorded) == limit + 1
