"""The http handler (the pg_net replacement) against a real local HTTP server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain
from tests.httpserver import Reply, Server

TOKEN = "tok-" + "s3cr3t" * 4


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


@pytest.fixture
def call(drain: Drain, server: Server) -> Drain:
    async def run(**overrides: Any) -> int:
        return await drain(
            url_prefixes=(server.url + "/",),
            http_token=TOKEN,
            http_token_prefixes=(server.url + "/",),
            backoff_base=0.1,
            backoff_jitter=0,
            **overrides,
        )

    return run


async def row(conn: Conn, job_id: int) -> Any:
    return await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)


async def test_success_posts_the_job_with_the_bearer_token(
    conn: Conn, server: Server, call: Drain, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.route(
        "/fn", Reply(200, b'{"ok": true, "n": 3}', {"Content-Type": "application/json"})
    )
    job_id = await importd.enqueue(conn, "http", {"url": url, "file": "u.csv"}, queue="hooks")
    assert await call() == 0
    done = await row(conn, job_id)
    assert done["status"] == "completed"
    assert done["result"] == {"status": 200, "body": {"ok": True, "n": 3}}
    (hit,) = server.hits("/fn")
    assert hit.method == "POST"
    assert json.loads(hit.body) == {
        "id": job_id,
        "kind": "http",
        "queue": "hooks",
        "attempt": 1,
        "payload": {"url": url, "file": "u.csv"},
    }
    assert hit.headers["Authorization"] == f"Bearer {TOKEN}"
    # The token is nowhere but on the wire.
    assert TOKEN not in json.dumps({k: str(v) for k, v in dict(done).items()})
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err


async def test_server_error_then_success_is_retried(
    conn: Conn, server: Server, call: Drain
) -> None:
    url = server.route("/fn", Reply(500, b"database is down"), Reply(200, b"fine"))
    job_id = await importd.enqueue(conn, "http", {"url": url})
    assert await call() in (0, 11)
    first = await row(conn, job_id)
    if first["status"] == "pending":  # the retry was not yet due when the drain ended
        assert "HTTP 500 from the endpoint: database is down" in first["last_error"]
        await conn.execute("UPDATE import_jobs SET run_at = now() WHERE id = $1", job_id)
        assert await call() == 0
    done = await row(conn, job_id)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert done["result"] == {"status": 200, "body": "fine"}


async def test_429_retry_after_sets_the_next_run(conn: Conn, server: Server, call: Drain) -> None:
    url = server.route("/fn", Reply(429, b"slow down", {"Retry-After": "30"}))
    job_id = await importd.enqueue(conn, "http", {"url": url})
    before = datetime.now(UTC)
    assert await call() == 11
    pending = await row(conn, job_id)
    assert pending["status"] == "pending" and pending["attempts"] == 1
    assert 28 <= (pending["run_at"] - before).total_seconds() <= 32
    assert "HTTP 429" in pending["last_error"]


async def test_404_fails_at_once_with_status_and_body(
    conn: Conn, server: Server, call: Drain
) -> None:
    url = server.route("/fn", Reply(404, b"function not found: import-users"))
    job_id = await importd.enqueue(conn, "http", {"url": url})
    assert await call() == 10
    failed = await row(conn, job_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "HTTP 404" in failed["last_error"]
    assert "function not found: import-users" in failed["last_error"]


async def test_an_answer_nested_too_deep_for_python_is_kept_as_text_and_not_posted_again(
    conn: Conn, server: Server, call: Drain
) -> None:
    depths = (900, 950, 5000)
    jobs = {}
    for depth in depths:
        answer = b"[" * depth + b"]" * depth
        url = server.route(
            f"/deep{depth}", Reply(200, answer, {"Content-Type": "application/json"})
        )
        jobs[depth] = await importd.enqueue(conn, "http", {"url": url})
    assert await call() == 0
    for depth, job_id in jobs.items():
        done = await row(conn, job_id)
        assert done["status"] == "completed" and done["attempts"] == 1, done["last_error"]
        assert len(server.hits(f"/deep{depth}")) == 1
        body = done["result"]["body"]
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        assert text == "[" * depth + "]" * depth


async def test_an_endpoint_that_never_answers_times_out(
    conn: Conn, server: Server, call: Drain
) -> None:
    url = server.route("/fn", Reply(200, b"too late", delay=5))
    job_id = await importd.enqueue(conn, "http", {"url": url}, timeout=1, max_attempts=1)
    assert await call() == 10
    failed = await row(conn, job_id)
    assert failed["status"] == "failed"
    assert (
        "did not answer within 1 s" in failed["last_error"] or "JobTimeout" in failed["last_error"]
    )


async def test_urls_outside_the_prefixes_and_missing_urls_are_refused(
    conn: Conn, server: Server, call: Drain
) -> None:
    outside = await importd.enqueue(conn, "http", {"url": "https://evil.example/steal"})
    missing = await importd.enqueue(conn, "http", {})
    assert await call() == 10
    assert "not under an allowed prefix" in (await row(conn, outside))["last_error"]
    assert "payload.url: required" in (await row(conn, missing))["last_error"]
    assert server.seen == []


async def test_the_token_goes_only_where_it_may_be_sent(
    conn: Conn, drain: Drain, server: Server
) -> None:
    # Two endpoints jobs may call (url_prefixes), one of them the token's (http_url's
    # origin): a job that names the other one (a host that also serves import sources,
    # say) fails before any request, instead of handing it the token.
    other = Server().start()
    try:
        home = server.route("/functions/v1/process", Reply(200, b"ok"))
        sibling = server.route("/functions/v1/other", Reply(200, b"ok"))
        elsewhere = other.route("/hook", Reply(200, b"ok"))
        by_default = await importd.enqueue(conn, "http", {"file": "u.csv"})
        same_origin = await importd.enqueue(conn, "http", {"url": sibling})
        foreign = await importd.enqueue(conn, "http", {"url": elsewhere})
        settings = {
            "url_prefixes": (server.url + "/", other.url + "/"),
            "http_token": TOKEN,
            "backoff_base": 0.1,
        }
        assert await drain(http_url=home, **settings) == 10
        assert (await row(conn, by_default))["status"] == "completed"
        assert (await row(conn, same_origin))["status"] == "completed"
        refused = await row(conn, foreign)
        assert (refused["status"], refused["attempts"]) == ("failed", 1)
        assert refused["last_error"].startswith(
            f"InvalidURL: payload.url: {elsewhere} is not where http_token may be sent "
            f"(http_url's origin: {server.url}/)"
        ), refused["last_error"]
        assert other.hits("/hook") == []
        for path in ("/functions/v1/process", "/functions/v1/other"):
            (hit,) = server.hits(path)
            assert hit.headers["Authorization"] == f"Bearer {TOKEN}"

        # http_token_prefixes, when set, say where instead: here the other server only.
        retried = await importd.enqueue(conn, "http", {"url": elsewhere})
        home_again = await importd.enqueue(conn, "http", {"url": home})
        assert await drain(http_token_prefixes=(other.url + "/",), **settings) == 10
        assert (await row(conn, retried))["status"] == "completed"
        assert other.hits("/hook")[0].headers["Authorization"] == f"Bearer {TOKEN}"
        failed = await row(conn, home_again)
        assert "(http_token_prefixes: " in failed["last_error"], failed["last_error"]
        assert len(server.hits("/functions/v1/process")) == 1

        # Neither: the token goes nowhere, and the job says what to set.
        lost = await importd.enqueue(conn, "http", {"url": home})
        assert await drain(**settings) == 10
        error = (await row(conn, lost))["last_error"]
        assert error.startswith("HttpToken: http_token is set, but it may be sent nowhere"), error
        assert "http_url" in error and "http_token_prefixes" in error
        assert len(server.hits("/functions/v1/process")) == 1
    finally:
        other.stop()
