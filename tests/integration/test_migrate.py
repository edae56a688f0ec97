"""Migrations: from empty, idempotent, concurrent, --check, and the seed design's queries."""

from __future__ import annotations

import asyncpg
import pytest

from importd import db, migrate, sql

VERIFY_TRIGGER = """
SELECT t.tgname, t.tgenabled, c.relname, p.proname
FROM pg_trigger t JOIN pg_class c ON t.tgrelid = c.oid JOIN pg_proc p ON t.tgfoid = p.oid
WHERE c.relname = 'import_jobs' AND t.tgname = 'trigger_process_import_jobs'
"""
VERIFY_FUNCTIONS = """
SELECT proname, prosecdef AS security_definer, provolatile, prokind
FROM pg_proc WHERE proname IN ('notify_process_import_jobs_async', 'trigger_import_job_processing')
"""


async def test_migrate_from_empty_then_noop(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        applied = await migrate.apply(conn)
        assert applied == [name for _, name, _ in sql.migrations()]
        assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 0
        assert await migrate.apply(conn) == []
        rows = await conn.fetch("SELECT version FROM importd_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _, _ in sql.migrations()]
    finally:
        await conn.close()


async def test_verification_queries_of_the_original_design(conn: asyncpg.Connection) -> None:
    trigger = await conn.fetch(VERIFY_TRIGGER)
    assert [tuple(r) for r in trigger] == [
        ("trigger_process_import_jobs", b"O", "import_jobs", "trigger_import_job_processing")
    ]
    functions = {r["proname"]: r for r in await conn.fetch(VERIFY_FUNCTIONS)}
    assert set(functions) == {"notify_process_import_jobs_async", "trigger_import_job_processing"}
    assert all(r["security_definer"] for r in functions.values())
    configs = await conn.fetch(
        "SELECT proname, proconfig FROM pg_proc WHERE proname = ANY($1)", list(functions)
    )
    for row in configs:
        assert any(c.startswith("search_path=") for c in row["proconfig"]), row


async def test_migrations_run_each_in_one_transaction(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = [
        (1, "0001_import_jobs", sql.migrations()[0][2]),
        (2, "0002_broken", "CREATE TABLE half_done (id int); SELECT 1/0;"),
    ]
    monkeypatch.setattr(sql, "migrations", lambda: broken)
    conn = await db.connect(empty_dsn)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate.apply(conn)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM importd_migrations") == 1
    finally:
        await conn.close()
