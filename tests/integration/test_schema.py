"""The schema: notifications from the trigger, CHECK constraints, defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

import importd
from importd.models import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_QUEUE, DEFAULT_TIMEOUT_S
from tests.helpers import Conn, Notifications


@pytest.fixture
async def notes(dsn: str) -> AsyncIterator[Notifications]:
    listener = await Notifications().start(dsn)
    yield listener
    await listener.close()


async def test_one_notification_for_a_thousand_row_insert(conn: Conn, notes: Notifications) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO import_jobs (kind) SELECT 'noop' FROM generate_series(1, 1000)"
        )
        # Nothing is delivered before commit.
        assert await notes.settle(0.3) == []
    assert await notes.settle() == ["default"]


async def test_one_notification_per_queue(conn: Conn, notes: Notifications) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (kind, queue) "
        "SELECT 'noop', 'q' || (i % 3) FROM generate_series(1, 300) i"
    )
    assert sorted(await notes.settle()) == ["q0", "q1", "q2"]


async def test_no_notification_on_rollback(conn: Conn, notes: Notifications) -> None:
    tx = conn.transaction()
    await tx.start()
    await conn.execute("INSERT INTO import_jobs (kind) VALUES ('noop')")
    await tx.rollback()
    assert await notes.settle() == []


async def test_no_notification_for_rows_inserted_completed(
    conn: Conn, notes: Notifications
) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (kind, status, finished_at) VALUES ('noop', 'completed', now())"
    )
    assert await notes.settle() == []


async def test_failed_row_set_back_to_pending_notifies_once(
    conn: Conn, notes: Notifications
) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO import_jobs (kind, status, finished_at, attempts) "
        "VALUES ('noop', 'failed', now(), 5) RETURNING id"
    )
    assert await notes.settle() == []
    await conn.execute(
        "UPDATE import_jobs SET status = 'pending', finished_at = NULL, attempts = 0 WHERE id = $1",
        job_id,
    )
    assert await notes.settle() == ["default"]
    # Touching a pending row without rescheduling it is no news.
    await conn.execute("UPDATE import_jobs SET priority = 3 WHERE id = $1", job_id)
    assert await notes.settle() == ["default"]


async def test_plain_sql_defaults_match_the_producer_api(conn: Conn) -> None:
    plain = await conn.fetchrow("INSERT INTO import_jobs (kind) VALUES ('noop') RETURNING *")
    api_id = await importd.enqueue(conn, "noop", {})
    api = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", api_id)
    for column in ("queue", "priority", "max_attempts", "timeout", "status", "attempts", "payload"):
        assert plain[column] == api[column], column
    assert plain["queue"] == DEFAULT_QUEUE and plain["priority"] == DEFAULT_PRIORITY
    assert plain["max_attempts"] == DEFAULT_MAX_ATTEMPTS
    assert plain["timeout"].total_seconds() == DEFAULT_TIMEOUT_S == 300


@pytest.mark.parametrize(
    ("sql", "constraint"),
    [
        (
            "INSERT INTO import_jobs (kind, status) VALUES ('noop', 'done')",
            "import_jobs_status_check",
        ),
        (
            "INSERT INTO import_jobs (kind, timeout) VALUES ('noop', '0 s')",
            "import_jobs_timeout_check",
        ),
        (
            "INSERT INTO import_jobs (kind, timeout) VALUES ('noop', '-5 min')",
            "import_jobs_timeout_check",
        ),
        (
            "INSERT INTO import_jobs (kind, max_attempts) VALUES ('noop', 0)",
            "import_jobs_max_attempts_check",
        ),
        (
            "INSERT INTO import_jobs (kind, attempts) VALUES ('noop', -1)",
            "import_jobs_attempts_check",
        ),
        (
            "INSERT INTO import_jobs (kind, attempts, max_attempts) VALUES ('noop', 3, 3)",
            "import_jobs_pending_attempts_check",
        ),
        ("INSERT INTO import_jobs (kind) VALUES ('')", "import_jobs_kind_check"),
        (
            "INSERT INTO import_jobs (kind, queue) VALUES ('noop', 'a queue; drop')",
            "import_jobs_queue_check",
        ),
        (
            "INSERT INTO import_jobs (kind, payload) VALUES ('noop', '[1, 2]')",
            "import_jobs_payload_check",
        ),
        (
            "INSERT INTO import_jobs (kind, status) VALUES ('noop', 'running')",
            "import_jobs_lease_check",
        ),
        (
            "INSERT INTO import_jobs (kind, status) VALUES ('noop', 'completed')",
            "import_jobs_finished_check",
        ),
        (
            "INSERT INTO import_jobs (kind, rows_done) VALUES ('noop', -3)",
            "import_jobs_counters_check",
        ),
    ],
)
async def test_check_constraints_reject_bad_values(conn: Conn, sql: str, constraint: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await conn.execute(sql)
    assert caught.value.constraint_name == constraint


async def test_row_errors_cascade_with_their_job(conn: Conn) -> None:
    job_id = await importd.enqueue(conn, "csv", {})
    await conn.execute(
        "INSERT INTO import_job_errors (job_id, attempt, line_number, message) "
        "VALUES ($1, 1, 7, 'bad')",
        job_id,
    )
    await conn.execute("DELETE FROM import_jobs WHERE id = $1", job_id)
    assert await conn.fetchval("SELECT count(*) FROM import_job_errors") == 0


async def test_copy_into_the_table_notifies_once_per_queue(
    conn: Conn, notes: Notifications
) -> None:
    records = [("noop", "q1" if i % 2 else "q2") for i in range(500)]
    await conn.copy_records_to_table("import_jobs", records=records, columns=["kind", "queue"])
    assert sorted(await notes.settle()) == ["q1", "q2"]


async def test_kind_and_queue_checks_agree_with_the_original_expressions(conn: Conn) -> None:
    # Migration 0005 rewrote the two checks without bounded repetitions (slow in
    # PostgreSQL's regex engine); the original expressions of migration 0001 are the
    # reference.
    alphabet = ["a", "Z", "0", "_", ".", ":", "-", " ", ";", "é", "\n", "/"]
    names = [
        "",
        *alphabet,
        *(c + "x" for c in alphabet),
        *("x" + c for c in alphabet),
        "ok\n",
        "a" * 62,
        "a" * 63,
        "a" * 64,
        "a" * 99,
        "a" * 100,
        "a" * 101,
        "_" + "." * 62,
        "_" + "." * 63,
        "-" + "a" * 10,
        "a.b:c-d_e",
    ]
    rows = await conn.fetch(
        "SELECT n, n ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$' AS kind_ref, "
        "       n ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$' AS queue_ref "
        "FROM unnest($1::text[]) AS n",
        names,
    )
    for row in rows:
        for column, ref in (("kind", row["kind_ref"]), ("queue", row["queue_ref"])):
            values = {"kind": "noop", "queue": "default", column: row["n"]}
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO import_jobs (kind, queue) VALUES ($1, $2)",
                        values["kind"],
                        values["queue"],
                    )
                accepted = True
            except asyncpg.CheckViolationError as exc:
                assert exc.constraint_name == f"import_jobs_{column}_check"
                accepted = False
            assert accepted == ref, (column, row["n"])
