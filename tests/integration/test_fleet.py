"""Fleets and rows: daemons claim only the kinds they serve and register themselves; no
row (infinite or unreadable timestamps) stops a daemon; the times that end a run are the
moment of the write; a listener is back within seconds of an outage."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

import importd
from importd import db, migrate, sql
from importd.lanes import Lane, RateLimit
from importd.repository import Repository
from tests.helpers import Conn, count_jobs


async def test_every_claim_path_takes_only_the_kinds_given(dsn: str, conn: Conn) -> None:
    # Jobs of a kind nobody here serves come first in every order a claim knows.
    await importd.enqueue_many(
        conn,
        [importd.NewJob("thumbnail", {}, priority=-1, tenant_id=f"t{i % 3}") for i in range(9)],
    )
    await importd.enqueue_many(
        conn, [importd.NewJob("noop", {}, tenant_id=f"t{i % 3}") for i in range(6)]
    )
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    repo = Repository(pool)
    served = ("noop", "csv")
    paths: dict[str, tuple[Lane, dict[str, Any]]] = {
        "plain": (Lane(None, served), {}),
        "fair, every queue": (Lane(None, served), {"fair": True}),
        "fair, one queue": (Lane(("default",), served), {"fair": True}),
        "fair, general": (Lane(None, served, skip_queues=("webhooks",)), {"fair": True}),
        "tenant cap": (Lane(None, served), {"fair": True, "tenant_cap": 1}),
        "plain, rate limited": (
            Lane(None, served, rate=RateLimit("queue", "default", 100.0, burst=50)),
            {},
        ),
        "fair, rate limited": (
            Lane(None, served, rate=RateLimit("kind", "noop", 100.0, burst=50)),
            {"fair": True},
        ),
    }
    await repo.ensure_rate_limits(["queue:default", "kind:noop"])
    try:
        for name, (lane, options) in paths.items():
            for _ in range(3):  # several claims: the fair function's cached plans too
                jobs, _ = await repo.claim_lane(lane, 20, "w", lease_margin=5.0, **options)
                assert {j.kind for j in jobs} <= {"noop"}, name
                await conn.execute(
                    "UPDATE import_jobs SET status = 'pending', attempts = 0, "
                    "locked_by = NULL, locked_until = NULL"
                )
            assert jobs, name
        # What drain and the wake-up timer count: served kinds only.
        assert await repo.count_runnable(None, served) == 6
        assert await repo.next_due_in(queues=None, kinds=["csv"]) is None
        assert await repo.count_unserved(None, None, served) == {"thumbnail": 9}
    finally:
        await pool.close()
    assert await count_jobs(conn, "kind = 'thumbnail' AND status = 'pending' AND attempts = 0") == 9


@pytest.mark.parametrize(
    "column", ["run_at", "created_at", "updated_at", "started_at", "finished_at", "locked_until"]
)
async def test_infinite_timestamps_are_refused(conn: Conn, column: str) -> None:
    for value in ("infinity", "-infinity"):
        with pytest.raises(asyncpg.CheckViolationError, match="import_jobs_"):
            await conn.execute(
                f"INSERT INTO import_jobs (kind, {column}) VALUES ('noop', '{value}')"
            )
    with pytest.raises(asyncpg.CheckViolationError, match="importd_rate_limits_tat_check"):
        await conn.execute("INSERT INTO importd_rate_limits VALUES ('queue:x', 'infinity')")


async def test_migration_mends_infinite_rows_of_an_older_schema(empty_dsn: str) -> None:
    conn = await db.connect(empty_dsn)
    try:
        await conn.execute(sql.query("create_migrations_table"))
        for version, name, text in sql.migrations():
            if version < 4:
                await conn.execute(text)
                await conn.execute(
                    "INSERT INTO importd_migrations VALUES ($1, $2, $3)",
                    version,
                    name,
                    migrate._checksum(text),
                )
        early = await conn.fetchval(
            "INSERT INTO import_jobs (kind, run_at, created_at) VALUES "
            "('noop', '-infinity', '2026-01-01') RETURNING id"
        )
        never = await conn.fetchval(
            "INSERT INTO import_jobs (kind, run_at) VALUES ('noop', 'infinity') RETURNING id"
        )
        held = await conn.fetchval(
            "INSERT INTO import_jobs (kind, status, attempts, locked_by, locked_until, "
            "started_at) VALUES ('noop', 'running', 1, 'x', 'infinity', '-infinity') "
            "RETURNING id"
        )
        await conn.execute("INSERT INTO importd_rate_limits VALUES ('queue:q', 'infinity')")
        assert "0004_fleet" in await migrate.apply(conn)
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, run_at = created_at AS at_creation, "
                "run_at = '9999-12-31 23:59:59+00' AS last_moment, "
                "locked_until <= now() AS expired, started_at FROM import_jobs"
            )
        }
        assert rows[early]["at_creation"] and rows[never]["last_moment"]
        assert rows[held]["expired"] and rows[held]["started_at"] is None  # rescued soon
        assert await conn.fetchval(
            "SELECT tat = '-infinity' FROM importd_rate_limits WHERE key = 'queue:q'"
        )
    finally:
        await conn.close()
