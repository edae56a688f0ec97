"""URLs are normalised and compared with ``url_prefixes`` by parts: the issue's
reproductions against real local HTTP(S) servers, and property tests against an
independent reference built on urllib.parse and RFC 3986's own dot-segment algorithm."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importd
from importd import urls
from importd.handlers import sources
from tests.httpserver import Reply, Server, self_signed
from tests.url_reference import reference_accepts

TOKEN = "tok:Tail-" + "x9" * 12

# -- an independent reference -------------------------------------------------------------


# -- against real servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(certificate: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate / "cert.pem"))
    srv = Server(tls=certificate).start()
    yield srv
    srv.stop()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


@pytest.fixture
def neighbour() -> Any:
    """A server on 127.0.0.10: "http://127.0.0.1" is a string prefix of its URL."""
    srv = Server(host="127.0.0.10").start()
    yield srv
    srv.stop()


async def row(conn: Any, job_id: int) -> Any:
    return await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)


async def test_lookalike_urls_never_reach_a_server_nor_get_the_token(
    conn: Any, drain: Any, tls_server: Server, server: Server, neighbour: Server
) -> None:
    reply = Reply(200, b'{"ok": true}', {"Content-Type": "application/json"})
    tls_server.route("/hook", reply)
    tls_server.route("/api/data.csv", reply)
    server.route("/private.csv", Reply(200, b"id,name\n1,secret\n"))
    server.route("/api/ok.csv", reply)
    neighbour.route("/hook", reply)
    server.route("/api/moved", Reply(302, b"", {"Location": f"{neighbour.url}/hook"}))
    # The prefix names port P // 10 (nothing listens there): port P starts with its digits.
    short_port = tls_server.port // 10
    assert str(tls_server.port).startswith(str(short_port))
    prefixes = (
        f"https://127.0.0.1:{short_port}",
        f"http://127.0.0.1:{server.port}/api/",
        "http://127.0.0.1",
        f"https://127.0.0.1:{tls_server.port}/api/",
    )
    bad = {
        "port": f"https://127.0.0.1:{tls_server.port}/hook",
        "host": f"http://127.0.0.10:{neighbour.port}/hook",
        "dots": f"http://127.0.0.1:{server.port}/api/../private.csv",
        "encoded-dots": f"http://127.0.0.1:{server.port}/api/%2e%2e/private.csv",
        "tab": f"http://127.0.0.1:{server.port}/api/\t../private.csv",
        "cr": f"http://127.0.0.1:{server.port}/api/ok.csv\r",
        "http-not-said": f"http://127.0.0.1:{tls_server.port}/api/data.csv",
    }
    jobs = {name: await importd.enqueue(conn, "http", {"url": url}) for name, url in bad.items()}
    good = await importd.enqueue(
        conn, "http", {"url": f"https://127.0.0.1:{tls_server.port}/api/data.csv"}
    )
    moved = await importd.enqueue(conn, "http", {"url": f"{server.url}/api/moved"})
    code = await drain(
        url_prefixes=prefixes,
        http_token=TOKEN,
        http_token_prefixes=(f"https://127.0.0.1:{tls_server.port}/api/", f"{server.url}/api/"),
    )
    assert code == 10
    for name, job_id in jobs.items():
        failed = await row(conn, job_id)
        assert failed["status"] == "failed" and failed["attempts"] == 1, name
        assert failed["last_error"].startswith("InvalidURL: payload.url: "), failed["last_error"]
        assert "the url_prefixes setting" in failed["last_error"], failed["last_error"]
    assert (await row(conn, good))["status"] == "completed"  # TLS itself works
    redirected = await row(conn, moved)  # a redirect is never followed
    assert redirected["status"] == "failed" and "HTTP 302" in redirected["last_error"]
    assert [hit.path for hit in tls_server.seen] == ["/api/data.csv"]
    assert tls_server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert [hit.path for hit in server.seen] == ["/api/moved"] and neighbour.seen == []


async def test_csv_sources_are_fetched_exactly_where_they_were_checked(
    conn: Any, drain: Any, server: Server
) -> None:
    await conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text)")
    server.route("/private.csv", Reply(200, b"id,name\n1,private\n"))
    server.route("/api/ok.csv", Reply(200, b"id,name\n2,public\n"))
    base = f"http://127.0.0.1:{server.port}"
    traversal = await importd.enqueue(
        conn, "csv", {"source": f"{base}/api/../private.csv", "table": "people"}
    )
    dotted = await importd.enqueue(
        conn, "csv", {"source": f"{base}/api/./v1/%2e%2e/ok.csv", "table": "people"}
    )
    assert await drain(url_prefixes=(f"{base}/api/",), tables=("public.people",)) == 10
    refused = await row(conn, traversal)
    assert refused["status"] == "failed" and refused["attempts"] == 1
    assert "not under an allowed prefix (the url_prefixes setting" in refused["last_error"]
    assert (await row(conn, dotted))["status"] == "completed"
    assert [hit.path for hit in server.seen] == ["/api/ok.csv"]
    assert [r["name"] for r in await conn.fetch("SELECT name FROM people")] == ["public"]


async def test_an_invalid_url_inside_a_handler_fails_at_once(conn: Any, drain: Any) -> None:
    job_id = await importd.enqueue(conn, "fetch", {"url": "http://[::1"})
    assert await drain() == 10
    failed = await row(conn, job_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["last_error"].startswith("InvalidURL: ")
    assert "url_prefixes" in failed["last_error"]


# The fetched URL, as the server saw it, always lies under the prefix.
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.lists(
        st.sampled_from(["api", "..", ".", "%2e%2e", "%2E", "x.csv", "%41", ""]), max_size=5
    )
)
def test_what_the_server_is_asked_for_lies_under_the_prefix(
    server: Server, path: list[str]
) -> None:
    server.route("/api/x.csv", Reply(200, b"id\n1\n"))
    prefix = f"{server.url}/api/"
    url = server.url + "".join("/" + s for s in path)
    before = len(server.seen)

    async def fetch() -> str | None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                opened = await sources.open_url(url, client, (prefix,), 0, None, 10)
            except urls.InvalidURL:
                return None
            except sources.SourceMissing:
                return "missing"
            await opened.close()
            return "opened"

    outcome = asyncio.run(fetch())
    seen = [hit.path for hit in server.seen[before:]]
    if outcome is None:
        assert seen == [] and not reference_accepts(url, [prefix])
        return
    assert reference_accepts(url, [prefix])
    (asked,) = seen
    assert asked == urls.normalise(url).path
    assert reference_accepts(server.url + asked, [prefix])
