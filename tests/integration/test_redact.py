"""Redaction is total and linear: registered secrets are masked wherever they appear
(JSON keys too, with ':' and '@' inside), DSN passwords and sensitive parameters are
masked, and every path to a job row, the log and the CLI goes through it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import importd
from importd import ops
from tests.httpserver import Reply, Server
from tests.unit.test_redact import TOKEN


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


async def test_secrets_echoed_by_an_endpoint_reach_no_row_no_log_and_no_show(
    conn: Any, drain: Any, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn_password = "Db@Pass:word9"
    echo = json.dumps(
        {
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            TOKEN: "as a key",
            "note": f"got {TOKEN} and postgresql://app:{dsn_password}@db/app",
        }
    )
    ok = server.route("/echo", Reply(200, echo.encode(), {"Content-Type": "application/json"}))
    text = server.route("/text", Reply(200, f"Authorization: Bearer {TOKEN}".encode()))
    denied = server.route("/denied", Reply(403, f"bad token {TOKEN}".encode()))
    # 100 KB of letters: redaction is linear, so the answer is stored within the timeout
    # (quadratic redaction held the event loop for ~26 s on this).
    letters = server.route("/letters", Reply(200, b"a" * 100_000))
    jobs = [
        await importd.enqueue(conn, "http", {"url": url}, timeout=20, max_attempts=1)
        for url in (ok, text, denied, letters)
    ]
    failing = await importd.enqueue(
        conn, "fail", {"message": f"cannot use {TOKEN} or {dsn_password}"}, max_attempts=1
    )
    assert (
        await drain(
            url_prefixes=(server.url + "/",),
            http_token=TOKEN,
            http_token_prefixes=(server.url + "/",),
            listen_dsn=f"postgresql://app:{dsn_password}@127.0.0.1:1/none",
        )
        == 10
    )
    rows = await conn.fetch(
        "SELECT * FROM import_jobs WHERE id = ANY($1) ORDER BY id", [*jobs, failing]
    )
    # (The producer put the secrets in the failing job's payload itself; everything
    # importd wrote is checked.)
    stored = json.dumps([{k: str(v) for k, v in dict(r).items() if k != "payload"} for r in rows])
    for part in (TOKEN, "Tail-", dsn_password, "Pass:word"):
        assert part not in stored
    by_id = {r["id"]: r for r in rows}
    echoed = (
        json.loads(by_id[jobs[0]]["result"])
        if isinstance(by_id[jobs[0]]["result"], str)
        else by_id[jobs[0]]["result"]
    )
    assert echoed["body"]["***"] == "as a key"
    assert echoed["body"]["headers"]["Authorization"] == "***"
    assert by_id[jobs[2]]["status"] == "failed" and "bad token ***" in by_id[jobs[2]]["last_error"]
    assert by_id[jobs[3]]["status"] == "completed"
    assert by_id[failing]["last_error"] == "RuntimeError: cannot use *** or *** (attempt 1/1)"
    for job_id in (*jobs, failing):
        shown = await ops.show(conn, job_id) + await ops.show(conn, job_id, as_json=True)
        assert TOKEN not in shown and dsn_password not in shown
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and dsn_password not in out.out + out.err
