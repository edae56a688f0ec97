"""Outcomes are checked before they are written: ``result_problem`` against PostgreSQL
itself, the judge of what a jsonb column accepts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

import importd
from importd import sql
from importd.context import result_problem
from importd.models import Outcome
from importd.repository import Repository, finish_runs
from tests.helpers import Conn, Drain
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


async def test_a_batch_of_completions_leaves_the_rows_the_general_write_leaves(
    conn: Conn,
) -> None:
    """A batch that only completes jobs goes by its own, smaller statement: the rows it
    leaves are those the statement for every outcome leaves, fence included (a row whose
    lease another daemon holds now, or whose attempt moved on, stays as it was)."""
    repo = Repository(conn)
    await conn.execute("UPDATE import_jobs SET status = 'completed' WHERE status = 'pending'")
    results: list[Any] = [None, {"rows": 3}, None, "text", None]
    rows = {}
    for way in ("general", "completed"):
        for n in range(len(results)):
            await importd.enqueue(conn, "noop", {"n": n, "way": way})
        await conn.execute(
            "UPDATE import_jobs SET last_error = 'Boom: earlier attempt' "
            "WHERE payload->>'way' = $1",
            way,
        )
        jobs = sorted(
            await repo.claim(len(results), "A", queues=None, kinds=None, lease_margin=30.0),
            key=lambda job: job.payload["n"],
        )
        # The fourth job is another daemon's now, the fifth on a later attempt.
        await conn.execute("UPDATE import_jobs SET locked_by = 'B' WHERE id = $1", jobs[3].id)
        await conn.execute("UPDATE import_jobs SET attempts = 2 WHERE id = $1", jobs[4].id)
        runs = [(job, Outcome.completed(r)) for job, r in zip(jobs, results, strict=True)]
        if way == "completed":
            written = await finish_runs(conn, "A", runs)
        else:
            # The statement for every outcome, as a batch with a retry in it would send.
            written = {
                row["id"]
                for row in await conn.fetch(
                    sql.query("finish_jobs"),
                    "A",
                    [job.id for job, _ in runs],
                    [job.attempt for job, _ in runs],
                    ["completed"] * len(runs),
                    [json.dumps(r) if r is not None else None for r in results],
                    [None] * len(runs),
                    [0.0] * len(runs),
                    [0] * len(runs),
                    *([[None] * len(runs)] * 4),  # no progress to write
                )
            }
        assert written == {job.id for job in jobs[:3]}
        rows[way] = [
            dict(r)
            for r in await conn.fetch(
                "SELECT status, result, last_error, attempts, locked_by, "
                "locked_until IS NULL AS unlocked, finished_at IS NOT NULL AS finished, "
                "run_at = created_at AS run_at_kept "
                "FROM import_jobs WHERE payload->>'way' = $1 ORDER BY (payload->>'n')::int",
                way,
            )
        ]
    assert rows["completed"] == rows["general"]
    assert [r["status"] for r in rows["completed"]] == ["completed"] * 3 + ["running"] * 2


async def test_progress_of_a_run_shorter_than_a_heartbeat_reaches_the_row(
    conn: Conn, drain: Drain
) -> None:
    """A handler that reports progress and ends before any heartbeat ran: the run's last
    write carries it (completed or failed alike); a run that reports none keeps the
    batched write of plain completions."""
    done = await importd.enqueue(conn, "quick_progress", {})
    failed = await importd.enqueue(conn, "quick_progress", {"fail": True})
    silent = await importd.enqueue(conn, "noop", {})
    assert await drain(heartbeat_interval=30.0) == 10  # (one job failed for good)
    rows = {
        r["id"]: (r["status"], r["rows_done"], r["rows_total"], r["bytes_read"])
        for r in await conn.fetch(
            "SELECT id, status, rows_done, rows_total, bytes_read FROM import_jobs"
        )
    }
    assert rows[done] == ("completed", 1, 3, 42)
    assert rows[failed] == ("failed", 1, 3, 42)
    assert rows[silent][0] == "completed" and rows[silent][2] is None
