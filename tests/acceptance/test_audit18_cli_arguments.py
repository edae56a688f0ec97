"""audit18: operators' commands given arguments out of range must say so and exit 2
(README, "Exit codes": a bad argument is 2; 1 is a database error, which systemd
restarts for): a job id beyond bigint was a "database error" with exit 1, ``prune
--batch-size 0`` looped forever, ``--batch-size -1`` was a database error, ``drain
--timeout nan`` ran without a timeout, and ``importd enqueue`` took values the table
refuses (a NUL in the payload, a kind or queue over its length limit, a timeout of 0)
as database errors (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, importd_env, run_importd

HUGE = str(2**63)  # one beyond bigint


@pytest.mark.parametrize(
    "args",
    [
        ("show", HUGE),
        ("retry", HUGE),
        ("cancel", HUGE),
        ("prune", "--batch-size", "0"),
        ("prune", "--batch-size", "-1"),
        ("drain", "--timeout", "nan"),
        ("drain", "--max-jobs", "-1"),
        ("status", "--watch", "0"),
        ("status", "--watch", "-1"),
        ("status", "--watch", "nan"),
    ],
)
async def test_an_argument_out_of_range_is_exit_2(
    conn: Conn, dsn: str, args: tuple[str, ...]
) -> None:
    await importd.enqueue(conn, "noop", {})
    done = run_importd(*args, env=importd_env(IMPORTD_DSN=dsn), timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert "database error" not in done.stderr
    # Nothing was done: the job is still pending.
    assert await conn.fetchval("SELECT status FROM import_jobs") == "pending"


@pytest.mark.parametrize(
    "args",
    [
        ("noop", "--payload", '{"a": "\\u0000"}'),
        ("noop", "--payload", '{"a": "\\ud800"}'),
        ("k" * 101, "--payload", "{}"),
        ("noop", "--queue", "q" * 64, "--payload", "{}"),
        ("noop", "--timeout", "0", "--payload", "{}"),
        ("noop", "--timeout", "nan", "--payload", "{}"),
        ("noop", "--priority", "99999", "--payload", "{}"),
        ("noop", "--max-attempts", "0", "--payload", "{}"),
        ("noop", "--tenant", "", "--payload", "{}"),
        ("noop", "--payload", "[" * 3000 + "]" * 3000),
    ],
)
async def test_enqueue_refuses_a_value_the_table_cannot_hold_with_exit_2(
    conn: Conn, dsn: str, args: tuple[str, ...]
) -> None:
    done = run_importd("enqueue", *args, env=importd_env(IMPORTD_DSN=dsn), timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert "Traceback" not in done.stderr
    assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 0


async def test_enqueue_payloads_names_the_lines_of_a_batch_the_table_refuses(
    conn: Conn, dsn: str, tmp_path: Path
) -> None:
    # 1,500 payloads: the first batch (lines 1-1,000) is stored; line 1,200 holds a NUL,
    # which only the database refuses, so the second batch (lines 1,001-1,500) is not.
    lines = [f'{{"n": {n}}}' if n != 1200 else '{"n": "\\u0000"}' for n in range(1, 1501)]
    path = tmp_path / "jobs.ndjson"
    path.write_text("\n".join(lines) + "\n")
    done = run_importd(
        "enqueue", "noop", "--payloads", str(path), env=importd_env(IMPORTD_DSN=dsn), timeout=60
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert "Traceback" not in done.stderr
    assert f"{path}: lines 1001-1500: the jobs cannot be stored: " in done.stderr, done.stderr
    assert "the 1000 job(s) before them were enqueued" in done.stderr
    assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 1000
