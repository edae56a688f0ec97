"""Migrations: from empty, idempotent, concurrent, --check, and the seed design's queries."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from importd import migrate, sql
from tests.helpers import importd_env, run_importd


async def test_two_concurrent_migrate_processes(empty_dsn: str) -> None:
    argv = [sys.executable, "-m", "importd", "migrate", "--dsn", empty_dsn]
    procs = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=importd_env()
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    # Each migration takes the lock in its own transaction (so migrate works through a
    # transaction-mode pooler): the two runs may share the work, but between them every
    # migration is applied exactly once.
    applied: list[str] = []
    for out, _ in results:
        if "already current" in out:
            continue
        assert out.startswith("applied "), results
        applied += [name.strip() for name in out.split(":", 1)[1].split(",")]
    assert sorted(applied) == [name for _, name, _ in sql.migrations()], results
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM importd_migrations") == len(
            sql.migrations()
        )
    finally:
        await conn.close()


def test_check_before_and_after(empty_dsn: str) -> None:
    before = run_importd("migrate", "--check", "--dsn", empty_dsn)
    assert before.returncode == 1
    assert "pending: 0001_import_jobs" in before.stdout
    assert run_importd("migrate", "--dsn", empty_dsn).returncode == 0
    after = run_importd("migrate", "--check", "--dsn", empty_dsn)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "current" in after.stdout


async def test_daemon_refuses_a_schema_newer_than_it_knows(
    conn: asyncpg.Connection, dsn: str
) -> None:
    await conn.execute(
        "INSERT INTO importd_migrations (version, name, checksum) VALUES (9999, '9999_future', 'x')"
    )
    state = await migrate.inspect(conn)
    assert state.unknown == [9999] and not state.current
    done = run_importd("run", "--dsn", dsn, timeout=60)
    assert done.returncode == 4
    assert "newer than this importd" in done.stderr


def test_daemon_refuses_an_unmigrated_database(empty_dsn: str) -> None:
    done = run_importd("drain", "--dsn", empty_dsn, timeout=60)
    assert done.returncode == 4
    assert "run 'importd migrate'" in done.stderr


@pytest.mark.parametrize("env", [{}, {"DATABASE_URL": ""}])
def test_missing_dsn_is_a_one_line_error(env: dict[str, str]) -> None:
    done = run_importd("run", env=importd_env(**env))
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--dsn" in lines[0] and "IMPORTD_DSN" in lines[0] and "DATABASE_URL" in lines[0]


def test_password_never_shown_when_connection_fails() -> None:
    secret = "s3cr3t-Pa55"
    done = run_importd(
        "migrate", "--dsn", f"postgresql://someone:{secret}@127.0.0.1:1/nowhere", timeout=60
    )
    assert done.returncode != 0
    assert secret not in done.stdout + done.stderr
    assert "cannot connect" in done.stderr
