"""Every line of the README's exit-code table, for every command it applies to."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

import importd
from importd import sql
from tests.helpers import importd_env, run_importd, run_importd_batch

COMMANDS_WITH_A_DATABASE = [
    ["status"],
    ["show", "1"],
    ["retry", "1"],
    ["cancel", "1"],
    ["prune"],
    ["doctor"],
    ["enqueue", "noop"],
    ["migrate"],
    ["run"],
    ["drain"],
    ["web", "--listen", "127.0.0.1:1"],  # (it exits before it listens)
]


DAEMONS = ("run", "drain")  # they log through loggers cached per process: one each


async def _run_all(argvs: list[list[str]], env: dict[str, str] | None = None) -> list[Any]:
    """Every command of ``argvs``; those that need no process of their own in one child."""
    batched = [a for a in argvs if a[0] not in DAEMONS]
    alone = [a for a in argvs if a[0] in DAEMONS]
    results: list[Any] = list(
        await asyncio.gather(
            asyncio.to_thread(run_importd_batch, batched, env),
            *(asyncio.to_thread(run_importd, *argv, env=env) for argv in alone),
        )
    )
    together, apart = results[0], results[1:]
    by_argv: dict[tuple[str, ...], Any] = dict(zip(map(tuple, batched), together, strict=True))
    by_argv.update(zip(map(tuple, alone), apart, strict=True))
    return [by_argv[tuple(argv)] for argv in argvs]


async def test_bad_arguments_exit_2_with_a_reason(conn: Any, dsn: str) -> None:
    completed = await importd.enqueue(conn, "noop", {})
    await conn.execute(
        "UPDATE import_jobs SET status = 'completed', finished_at = now() WHERE id = $1", completed
    )
    cases = {
        ("status", "--jsn"): "unrecognized arguments: --jsn; did you mean --json?",
        ("stauts",): "invalid choice: 'stauts'",
        ("retry", "99999"): "retry: no job 99999",
        ("cancel", "99999"): "cancel: no job 99999",
        (
            "retry",
            str(completed),
        ): f"job {completed} is completed: only failed or cancelled jobs are retried",
        ("cancel", str(completed)): f"job {completed} is completed: too late to cancel",
        ("show", "99999"): "no job 99999",
        (
            "enqueue",
            "csv",
            "--payloads",
            "/nonexistent.ndjson",
        ): "--payloads: cannot read /nonexistent.ndjson: No such file or directory",
        ("enqueue", "noop", "--payload", "[1]"): "--payload must be a JSON object",
        ("prune", "--older-than", "soon"): "'soon' is not a duration",
    }
    results = await _run_all([[*argv, "--dsn", dsn] for argv in cases])
    for (argv, reason), done in zip(cases.items(), results, strict=True):
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], (argv, done.stderr)
        assert "database" not in lines[0], (argv, done.stderr)
    assert "did you mean status?" in results[1].stderr
    # What could be done was done; the unknown id is the reason for the 2.
    failed = await importd.enqueue(conn, "noop", {})
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', finished_at = now() WHERE id = $1", failed
    )
    mixed = await asyncio.to_thread(run_importd, "retry", str(failed), "99998", "--dsn", dsn)
    assert mixed.returncode == 2 and "1 job(s) back to pending" in mixed.stdout
    assert "no job 99998" in mixed.stderr


def test_version_comes_from_the_package_metadata() -> None:
    done = run_importd("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"importd {metadata.version('importd')}"
    assert importd.__version__ == metadata.version("importd")


async def test_no_database_given_exits_3_for_every_command() -> None:
    # No DSN stops every command before it logs: all of them in one child.
    results = await asyncio.to_thread(run_importd_batch, COMMANDS_WITH_A_DATABASE, importd_env())
    for argv, done in zip(COMMANDS_WITH_A_DATABASE, results, strict=True):
        assert done.returncode == 3, (argv, done.stdout, done.stderr)
        assert "no database given: pass --dsn, or set IMPORTD_DSN" in done.stderr, argv


async def test_an_unmigrated_database_exits_4_for_every_command(empty_dsn: str) -> None:
    argvs = [a for a in COMMANDS_WITH_A_DATABASE if a != ["migrate"]]
    results = await _run_all([[*argv, "--dsn", empty_dsn] for argv in argvs])
    for argv, done in zip(argvs, results, strict=True):
        assert done.returncode == 4, (argv, done.stdout, done.stderr)
        assert "run 'importd migrate'" in done.stdout + done.stderr, argv
        assert "UndefinedTable" not in done.stdout + done.stderr, argv


async def test_a_schema_newer_than_importd_exits_4_for_every_command_that_writes(
    conn: Any, dsn: str
) -> None:
    """An older importd against a migrated-ahead database (a rolling upgrade that ran the
    new migrate first): every command that writes or runs jobs refuses, with 4, since it
    could write rows the newer daemons misread; status and show read on with a warning."""
    newer = max(version for version, _, _ in sql.migrations()) + 1
    failed = await importd.enqueue(conn, "noop", {})
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', finished_at = now() WHERE id = $1", failed
    )
    pending = await importd.enqueue(conn, "noop", {})
    await conn.execute(
        "INSERT INTO importd_migrations (version, name, checksum) VALUES ($1, $2, 'x')",
        newer,
        f"{newer:04d}_from_the_future",
    )
    refused = [
        ["enqueue", "noop"],
        ["retry", str(failed)],
        ["cancel", str(pending)],
        ["prune", "--older-than", "0s"],
        ["migrate"],
        ["migrate", "--check"],
        ["doctor"],
        ["run"],
        ["drain"],
        ["web", "--listen", "127.0.0.1:1"],  # (with a token: its retry and cancel write)
    ]
    reading = [["status"], ["show", str(pending)]]
    env = importd_env(IMPORTD_WEB_TOKEN="t" * 16)
    results = await _run_all([[*argv, "--dsn", dsn] for argv in refused + reading], env)
    for argv, done in zip(refused, results[: len(refused)], strict=True):
        assert done.returncode == 4, (argv, done.stdout, done.stderr)
        assert f"unknown migrations [{newer}]" in done.stdout + done.stderr, argv
        assert "upgrade importd" in done.stdout + done.stderr, argv
    for argv, done in zip(reading, results[len(refused) :], strict=True):
        assert done.returncode == 0, (argv, done.stderr)
        assert done.stdout, argv
        assert done.stderr.startswith("importd: warning: the database schema is newer"), argv
    # Nothing was written: the failed job is still failed, the pending one pending, both
    # still there, and no job was added.
    rows = await conn.fetch("SELECT id, status FROM import_jobs ORDER BY id")
    assert [(r["id"], r["status"]) for r in rows] == [(failed, "failed"), (pending, "pending")]


async def test_a_handlers_module_that_cannot_be_imported_exits_3(dsn: str) -> None:
    # The README: --handlers needs the module importable by the daemon's Python.
    results = await _run_all(
        [[command, "--dsn", dsn, "--handlers", "myapp_not_installed.jobs"] for command in DAEMONS]
    )
    for done in results:
        assert done.returncode == 3, done.stderr
        assert "startup_failed" in done.stderr and "myapp_not_installed" in done.stderr


async def test_a_database_that_cannot_be_reached_exits_5(dsn: str) -> None:
    refused = "postgresql://postgres@127.0.0.1:1/x"
    no_role = dsn.replace("postgres@", "no_such_role@")
    no_db = dsn.rpartition("/")[0] + "/no_such_database"
    argvs = [
        [*argv, "--dsn", refused]
        for argv in COMMANDS_WITH_A_DATABASE
        if argv[0] not in ("run", "drain")
    ]  # those retry first (60 s / 10 s)
    argvs += [
        [*argv, "--dsn", no_role]
        for argv in COMMANDS_WITH_A_DATABASE
        if argv[0] in ("migrate", "run", "drain", "status")
    ]
    argvs += [[*argv, "--dsn", no_db] for argv in (["migrate"], ["run"], ["enqueue", "noop"])]
    results = await _run_all(argvs)
    for argv, done in zip(argvs, results, strict=True):
        assert done.returncode == 5, (argv, done.stdout, done.stderr)
        text = done.stdout + done.stderr
        assert "cannot connect to the database" in text or "ERROR    connection" in text, argv


async def test_a_dsn_the_driver_cannot_read_exits_3_and_shows_no_password(dsn: str) -> None:
    """A password with "#" or "/" not percent-encoded ends the URL's authority early: the
    driver read the password as a port and raised, password and all, in a traceback
    (exit 1; ``doctor`` and ``run`` printed it in their error). A DSN option it refuses
    (``sslmode=bogus``) was retried for 60 s by ``run`` as if the server were down."""
    base = dsn.partition("://")[2].rpartition("@")[2]  # host:port/db
    bad = {
        f"postgresql://postgres:hunter2#x@{base}": "percent-encoded",
        f"postgresql://postgres:hun/ter2@{base}": "percent-encoded",
        "notadsn": "not a postgresql:// URL",
        "mysql://u@h/d": "not a postgresql:// URL",
        f"{dsn}?sslmode=bogus": "sslmode",
    }
    argvs = [
        [*argv, "--dsn", given]
        for given in bad
        for argv in (["status"], ["run"], ["drain"], ["doctor"], ["enqueue", "noop"])
    ]
    # The same for the LISTEN connection's DSN, given apart.
    argvs += [
        [*argv, "--dsn", dsn, "--listen-dsn", f"postgresql://postgres:hunter2#x@{base}"]
        for argv in (["run"], ["doctor"], ["web"])
    ]
    # A DSN given to a command that takes none is echoed without its password (exit 2).
    argvs.append(["drain", "--dsn", dsn, "--listen-dsn", f"postgresql://u:hunter2#x@{base}"])
    bad[dsn] = "the listen_dsn setting cannot be read"
    started = time.monotonic()
    results = await _run_all(argvs)
    assert time.monotonic() - started < 60  # no retries
    for argv, done in zip(argvs, results, strict=True):
        text = done.stdout + done.stderr
        # (doctor reports an option the driver refuses as its connection check's error.)
        expected = 5 if argv[0] == "doctor" and "sslmode" in argv[-1] else 3
        if argv[0] == "doctor" and "--listen-dsn" in argv:
            expected = 1  # doctor: the LISTEN connection's check fails, the others run
        if argv[0] == "drain" and "--listen-dsn" in argv:
            assert done.returncode == 2 and "unrecognized arguments" in text, (argv, text)
        else:
            assert done.returncode == expected, (argv, text)
            assert bad[argv[argv.index("--dsn") + 1]] in text, (argv, text)
        assert "hunter2" not in text and "'hun'" not in text and "Traceback" not in text, text


async def test_a_database_error_exits_1(conn: Any, dsn: str) -> None:
    await conn.execute("CREATE ROLE importd_weak LOGIN")
    weak = dsn.replace("postgres@", "importd_weak@")
    await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    done = await asyncio.to_thread(run_importd, "status", "--dsn", weak)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("importd: database error: InsufficientPrivilegeError")
    await conn.execute("DROP OWNED BY importd_weak")
    await conn.execute("DROP ROLE importd_weak")


async def test_drain_stopped_by_its_timeout_exits_12_and_logs_it(conn: Any, dsn: str) -> None:
    await importd.enqueue(conn, "noop", {"sleep": 30})
    done = await asyncio.to_thread(
        run_importd, "drain", "--dsn", dsn, "--timeout", "1", "--log-format", "json"
    )
    assert done.returncode == 12, done.stderr
    stopped = [json.loads(line) for line in done.stderr.splitlines() if '"daemon_stopped"' in line]
    assert [e["exit_code"] for e in stopped] == [12]
    assert await conn.fetchval("SELECT status FROM import_jobs") == "pending"


def _with_reader_gone(*args: str) -> subprocess.CompletedProcess[str]:
    """``importd ARGS | head -0``, without the race: the pipe's reading end is closed
    before importd writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "importd", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=importd_env(),
        )
    finally:
        os.close(write_end)


async def test_a_reader_that_went_away_ends_the_command_quietly_with_141(dsn: str) -> None:
    # Like grep or git killed by SIGPIPE: no "lost the database connection", no traceback.
    for argv in (["config"], ["config", "--json"], ["status", "--dsn", dsn]):
        done = await asyncio.to_thread(_with_reader_gone, *argv)
        assert (done.returncode, done.stderr) == (141, ""), argv
    # The same commands, read to the end, still exit 0 with their output.
    done = await asyncio.to_thread(run_importd, "status", "--dsn", dsn)
    assert done.returncode == 0 and done.stdout, done.stderr
