"""importd's own tables are never import targets, whatever the ``tables`` allowlist says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import importd


async def snapshot(conn: Any) -> list[Any]:
    return [
        await conn.fetch("SELECT * FROM import_jobs ORDER BY id"),
        await conn.fetch("SELECT * FROM importd_rate_limits ORDER BY 1"),
        await conn.fetch("SELECT * FROM import_job_errors ORDER BY 1"),
        await conn.fetch("SELECT * FROM importd_migrations ORDER BY 1"),
    ]


async def test_imports_into_importd_tables_fail_and_change_nothing(
    conn: Any, drain: Any, tmp_path: Path
) -> None:
    await conn.execute(
        "INSERT INTO importd_rate_limits (key, tat) "
        "VALUES ('queue:default', now() + interval '1 hour')"
    )
    forged = tmp_path / "forged.csv"
    # A completed job and a generous rate limit, as a CSV: what the issue loaded.
    forged.write_text(
        "kind,status,payload,dedup_key,finished_at\nnoop,completed,{},forged,2026-01-01T00:00:00Z\n"
    )
    limits = tmp_path / "limits.csv"
    limits.write_text("key,tat\nqueue:default,2000-01-01\n")
    targets = {
        "import_jobs": forged,
        "public.importd_rate_limits": limits,
        "import_job_errors": forged,
        "importd_migrations": forged,
        "importd_daemons": forged,
        "Import_Jobs": forged,
        "importd_staging.job_1": forged,
    }
    jobs = {}
    for table, path in targets.items():
        jobs[table] = await importd.enqueue(
            conn,
            "csv",
            {
                "source": f"file://{path}",
                "table": table,
                **(
                    {"on_conflict": "update", "conflict_columns": ["key"]}
                    if "rate" in table
                    else {}
                ),
            },
        )
    before = await snapshot(conn)
    assert (
        await drain(import_roots=(str(tmp_path),), tables=("public.*", "importd_staging.*")) == 10
    )
    for table, job_id in jobs.items():
        row = await conn.fetchrow(
            "SELECT status, attempts, last_error FROM import_jobs WHERE id = $1", job_id
        )
        assert row["status"] == "failed" and row["attempts"] == 1, table
        assert "is one of importd's own tables" in row["last_error"], row["last_error"]
        assert "whatever the 'tables' setting allows" in row["last_error"]
    after = await snapshot(conn)
    # Only the jobs' own status moved; no row was forged, no limit rewritten.
    assert [r["id"] for r in after[0]] == [r["id"] for r in before[0]]
    assert after[1:] == before[1:]
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE dedup_key = 'forged'") == 0


async def test_a_view_on_importds_tables_is_refused_too(
    conn: Any, drain: Any, tmp_path: Path
) -> None:
    await conn.execute(
        "CREATE VIEW job_feed AS SELECT kind, status, payload, dedup_key, "
        "finished_at FROM import_jobs"
    )
    await conn.execute("CREATE VIEW job_feed_2 AS SELECT * FROM job_feed")
    await conn.execute("CREATE TABLE people (id int, name text)")
    source = tmp_path / "forged.csv"
    source.write_text(
        "kind,status,payload,dedup_key,finished_at\nnoop,completed,{},forged,2026-01-01T00:00:00Z\n"
    )
    people = tmp_path / "people.csv"
    people.write_text("id,name\n1,Ann\n")
    jobs = [
        await importd.enqueue(conn, "csv", {"source": f"file://{path}", "table": table})
        for path, table in ((source, "job_feed"), (source, "job_feed_2"), (people, "people"))
    ]
    assert await drain(import_roots=(str(tmp_path),), tables=("public.*",)) == 10
    rows = await conn.fetch(
        "SELECT id, status, attempts, last_error FROM import_jobs WHERE id = ANY($1) ORDER BY id",
        jobs,
    )
    for refused in rows[:2]:
        assert refused["status"] == "failed" and refused["attempts"] == 1
        assert (
            "reads or writes importd's own table public.import_jobs (through a view"
            in refused["last_error"]
        )
    assert rows[2]["status"] == "completed"  # an ordinary table under public.* still loads
    assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE dedup_key = 'forged'") == 0
