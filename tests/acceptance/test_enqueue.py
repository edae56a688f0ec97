"""The producer API and `importd enqueue`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests.helpers import Conn, run_importd


async def test_cli_enqueue_prints_the_id(conn: Conn, dsn: str) -> None:
    payload = {"source": "file:///srv/uploads/u.csv", "table": "users"}
    done = run_importd(
        "enqueue",
        "csv",
        "--dsn",
        dsn,
        "--payload",
        json.dumps(payload),
        "--queue",
        "imports",
        "--priority",
        "5",
        "--max-attempts",
        "2",
        "--timeout",
        "60",
        "--run-at",
        "2030-01-01T00:00:00+00:00",
        "--tenant",
        "t1",
        "--dedup-key",
        "u1",
    )
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip())
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["payload"] == payload and row["queue"] == "imports"
    assert row["priority"] == 5 and row["max_attempts"] == 2 and row["tenant_id"] == "t1"
    assert row["run_at"] == datetime(2030, 1, 1, tzinfo=UTC)


def test_cli_enqueue_bad_payload_is_a_clear_error(dsn: str) -> None:
    done = run_importd("enqueue", "csv", "--dsn", dsn, "--payload", "{not json")
    assert done.returncode == 2
    assert "--payload is not valid JSON" in done.stderr


async def test_cli_enqueue_payloads_file_in_order(conn: Conn, dsn: str, tmp_path: Path) -> None:
    lines = [f'{{"n": {i}, "s": "line {i}"}}' for i in range(2500)]
    source = tmp_path / "jobs.ndjson"
    source.write_text("\n".join(lines[:1200]) + "\n\n" + "\n".join(lines[1200:]) + "\n")
    done = run_importd(
        "enqueue",
        "noop",
        "--dsn",
        dsn,
        "--payloads",
        str(source),
        "--queue",
        "bulk",
        "--tenant",
        "t9",
    )
    assert done.returncode == 0, done.stderr
    assert "enqueued 2500 job(s)" in done.stdout
    rows = await conn.fetch("SELECT payload, queue, tenant_id FROM import_jobs ORDER BY id")
    assert [r["payload"]["n"] for r in rows] == list(range(2500))
    assert {(r["queue"], r["tenant_id"]) for r in rows} == {("bulk", "t9")}


async def test_cli_enqueue_payloads_bad_line_keeps_the_batches_before_it(
    conn: Conn, dsn: str, tmp_path: Path
) -> None:
    # The batch sent while the next is read still lands when a later line is refused;
    # the refused line's own batch does not.
    lines = [json.dumps({"n": i}) for i in range(2600)]
    lines[2499] = "[1, 2]"
    source = tmp_path / "jobs.ndjson"
    source.write_text("\n".join(lines) + "\n")
    done = run_importd("enqueue", "noop", "--dsn", dsn, "--payloads", str(source))
    assert done.returncode == 2
    assert f"{source}:2500: a payload must be a JSON object" in done.stderr
    rows = await conn.fetch("SELECT payload FROM import_jobs ORDER BY id")
    assert [r["payload"]["n"] for r in rows] == list(range(2000))
