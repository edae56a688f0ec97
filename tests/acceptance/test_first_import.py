"""The quick start's first import: flags for the allowlist and the roots, refusals that say
how to set them, doctor's warnings, and payloads checked at enqueue time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import importd
from importd import repository
from tests.helpers import run_importd, run_importd_batch


async def _job(conn: Any, job_id: int) -> Any:
    return await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id = $1", job_id)


async def test_first_import_from_the_quick_start(
    conn: Any, dsn: str, drain: Any, tmp_path: Path
) -> None:
    await conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "c.csv").write_text("id,name\n1,Ada\n2,Grace\n")
    job_id = await importd.enqueue(
        conn, "csv", {"source": f"file://{uploads}/c.csv", "table": "customers"}
    )

    # What a new user runs first: no allowlist. The refusal says how to give one.
    assert await drain() == 10
    error = (await _job(conn, job_id))["last_error"]
    for way in (
        "the 'tables' setting",
        "--table public.customers",
        "IMPORTD_TABLES=public.customers",
        'tables = ["public.customers"]',
    ):
        assert way in error, error
    # With the table but no roots: the refusal names the roots' flag, variable and key.
    assert await repository.retry_jobs(conn, [job_id]) == (1, 0)
    assert await drain(tables=("customers",)) == 10
    error = (await _job(conn, job_id))["last_error"]
    for way in (
        "the 'import_roots' setting",
        f"--import-root {uploads}",
        f"IMPORTD_IMPORT_ROOTS={uploads}",
        f'import_roots = ["{uploads}"]',
    ):
        assert way in error, error

    # The flags on the command line, as the README's quick start says.
    assert await repository.retry_jobs(conn, [job_id]) == (1, 0)
    done = await asyncio.to_thread(
        run_importd, "drain", "--dsn", dsn, "--table", "customers", "--import-root", str(uploads)
    )
    assert done.returncode == 0, done.stderr
    assert (await _job(conn, job_id))["status"] == "completed"
    assert await conn.fetchval("SELECT string_agg(name, ',' ORDER BY id) FROM customers") == (
        "Ada,Grace"
    )


async def test_doctor_warns_when_nothing_can_be_imported(dsn: str, tmp_path: Path) -> None:
    bare, ready = await asyncio.to_thread(
        run_importd_batch,
        [
            ["doctor", "--dsn", dsn],
            ["doctor", "--dsn", dsn, "--table", "public.customers", "--import-root", str(tmp_path)],
        ],
    )
    (line,) = [x for x in bare.stdout.splitlines() if x.split()[1] == "imports"]
    assert line.startswith("WARNING") and "no tables allowed" in line
    assert "--table public.customers" in line and "IMPORTD_IMPORT_ROOTS=/srv/uploads" in line
    (line,) = [x for x in ready.stdout.splitlines() if x.split()[1] == "imports"]
    assert line.startswith("OK") and f"files under {tmp_path}" in line, ready.stdout
    assert not [x for x in ready.stdout.splitlines() if x.split()[1] == "http"]  # no token


async def test_doctor_says_where_the_http_token_may_be_sent(dsn: str) -> None:
    token = {"IMPORTD_HTTP_TOKEN": "tok-abcdef-123456"}
    nowhere, home = await asyncio.to_thread(
        run_importd_batch,
        [
            (["doctor", "--dsn", dsn], token),
            (["doctor", "--dsn", dsn], {**token, "IMPORTD_HTTP_URL": "https://Fn.example/v1/x"}),
        ],
    )
    (line,) = [x for x in nowhere.stdout.splitlines() if x.split()[1] == "http"]
    assert line.startswith("WARNING") and "neither http_url nor http_token_prefixes" in line
    assert "tok-abcdef-123456" not in nowhere.stdout
    (line,) = [x for x in home.stdout.splitlines() if x.split()[1] == "http"]
    assert line.startswith("OK") and "http_url's origin, https://fn.example/" in line, line


async def test_enqueue_checks_payloads_against_the_handlers_rules(
    conn: Any, dsn: str, tmp_path: Path
) -> None:
    cases = [
        ("csv", {"source": "file:///srv/u.csv"}, "payload.table: required"),
        (
            "csv",
            {"source": "file:///srv/u.csv", "table": "t", "delimter": ";"},
            "payload.delimter: unknown field",
        ),
        ("csv", {"source": "/srv/u.csv", "table": "t"}, "did you mean file:///srv/u.csv?"),
        (
            "ndjson",
            {"source": "file:///srv/u.ndjson", "table": "t", "header": False},
            "payload.header: a CSV option, not for NDJSON",
        ),
        ("http", {"url": "ftp://example.com/hook"}, "payload.url: expected an https:// URL"),
    ]
    calls: list[tuple[list[str], dict[str, str]]] = [
        (["enqueue", kind, "--payload", json.dumps(payload), "--dsn", dsn], {})
        for kind, payload, _ in cases
    ]
    lines = tmp_path / "jobs.ndjson"
    lines.write_text('{"source": "file:///srv/a.csv", "table": "t"}\n{"source": "file:///x"}\n')
    calls.append((["enqueue", "csv", "--payloads", str(lines), "--dsn", dsn], {}))
    calls.append(
        (
            [
                "enqueue",
                "csv",
                "--payload",
                json.dumps({"source": "file:///a.csv", "table": "other"}),
                "--dsn",
                dsn,
            ],
            {"IMPORTD_TABLES": "public.customers"},
        )
    )
    calls.append(
        (["enqueue", "csv", "--no-validate", "--payload", '{"anything": 1}', "--dsn", dsn], {})
    )
    # Without url_prefixes for enqueue, a well-formed URL passes (the daemon's prefixes
    # decide), from the payload or from http_url.
    url = json.dumps({"url": "https://example.com/x"})
    calls.append((["enqueue", "http", "--payload", url, "--dsn", dsn], {}))
    calls.append(
        (
            ["enqueue", "http", "--payload", "{}", "--dsn", dsn],
            {"IMPORTD_HTTP_URL": "https://example.com/fn"},
        )
    )
    *refused, from_file, not_allowed, forced, by_url, by_setting = await asyncio.to_thread(
        run_importd_batch, calls
    )
    for (kind, _, reason), done in zip(cases, refused, strict=True):
        assert done.returncode == 2, (kind, done.stderr)
        assert reason in done.stderr and "--no-validate" in done.stderr, (kind, done.stderr)
    assert from_file.returncode == 2
    assert f"{lines}:2: payload.table: required" in from_file.stderr
    # enqueue has no --table flag: the refusal names the variable and the file key.
    assert (
        not_allowed.returncode == 2
        and "IMPORTD_TABLES=public.customers,public.other" in not_allowed.stderr
    )
    assert 'tables = ["public.customers", "public.other"]' in not_allowed.stderr
    assert "--table" not in not_allowed.stderr
    for done in (forced, by_url, by_setting):
        assert done.returncode == 0 and done.stderr == "", done.stderr
    assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 3
    await importd.enqueue(conn, "noop", {})  # the Python API checks nothing: its caller's job
