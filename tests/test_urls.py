"""URLs are normalised and compared with ``url_prefixes`` by parts: the issue's
reproductions against real local HTTP(S) servers, and property tests against an
independent reference built on urllib.parse and RFC 3986's own dot-segment algorithm."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importd
from importd import config, urls
from importd.handlers import sources

from .httpserver import Reply, Server, self_signed

TOKEN = "tok:Tail-" + "x9" * 12

# -- an independent reference -------------------------------------------------------------

_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, step by step, as the RFC writes it."""
    buffer, output = path, ""
    while buffer:
        if buffer.startswith("../"):
            buffer = buffer[3:]
        elif buffer.startswith("./"):
            buffer = buffer[2:]
        elif buffer.startswith("/./"):
            buffer = "/" + buffer[3:]
        elif buffer == "/.":
            buffer = "/"
        elif buffer.startswith("/../"):
            buffer = "/" + buffer[4:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif buffer == "/..":
            buffer = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif buffer in (".", ".."):
            buffer = ""
        else:
            start = 1 if buffer.startswith("/") else 0
            end = buffer.find("/", start)
            end = len(buffer) if end < 0 else end
            output += buffer[:end]
            buffer = buffer[end:]
    return output


def _climbs_above_root(path: str) -> bool:
    depth = 0
    for segment in path.split("/")[1:]:
        if segment == "..":
            if depth == 0:
                return True
            depth -= 1
        elif segment != ".":
            depth += 1
    return False


def reference_parts(url: str) -> tuple[str, str, int, list[str]] | None:
    """(scheme, host, port, path segments) by urllib, or None when the URL must be
    refused. Only for the URLs the strategies below generate."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        return None
    if "@" in parts.netloc:
        return None
    host = (parts.hostname or "").removesuffix(".")
    if not host:
        return None
    host = host.encode("idna").decode("ascii")  # the standard library's IDNA (2003)
    try:
        port = parts.port or {"https": 443, "http": 80}[parts.scheme]
    except ValueError:
        return None
    path = re.sub(
        "%([0-9A-Fa-f]{2})",
        lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in _UNRESERVED else m[0].upper(),
        parts.path or "/",
    )
    if _climbs_above_root(path):
        return None
    return parts.scheme, host, port, _remove_dot_segments(path).split("/")[1:]


def reference_accepts(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` lies under one of ``prefixes``, by the by-parts rule: same scheme,
    host and effective port, and the prefix's path segments begin the URL's."""
    mine = reference_parts(url)
    if mine is None:
        return False
    for prefix in prefixes:
        theirs = reference_parts(prefix)
        assert theirs is not None, prefix
        if mine[:3] != theirs[:3]:
            continue
        want, got = theirs[3], mine[3]
        if want[-1] == "":  # "/api/": a segment must follow "api" (possibly empty)
            if got[: len(want) - 1] == want[:-1] and len(got) >= len(want):
                return True
        elif got[: len(want)] == want:
            return True
    return False


# -- strategies ----------------------------------------------------------------------------

HOSTS = [
    "api.example.com",
    "API.Example.COM",
    "api.example.com.",
    "api.example.com.evil.net",
    "evil.net",
    "bücher.example",
    "xn--bcher-kva.example",
    "127.0.0.1",
    "127.0.0.10",
]
PORTS = ["", ":443", ":80", ":6443", ":64430", ":8443", ":0443"]
SEGMENTS = [
    "api",
    "API",
    "data",
    "x.csv",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ".%2e",
    "private.csv",
    "a%20b",
    "apix",
    "",
    "%41pi",
    "é",
    "%7Eme",
]
CONTROL = ["\t", "\r", "\n", "\x00", " ", "\x7f", "\x1b"]


@st.composite
def candidate_urls(draw: Any) -> str:
    scheme = draw(st.sampled_from(["https", "HTTPS", "http", "Https", "ftp"]))
    userinfo = draw(st.sampled_from(["", "", "", "", "user@", "u:p@"]))
    host = draw(st.sampled_from(HOSTS))
    port = draw(st.sampled_from(PORTS))
    path = "".join("/" + s for s in draw(st.lists(st.sampled_from(SEGMENTS), max_size=5)))
    query = draw(st.sampled_from(["", "", "?a=1", "?q=%2e%2e/x"]))
    url = f"{scheme}://{userinfo}{host}{port}{path}{query}"
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(url)))
        url = url[:at] + draw(st.sampled_from(CONTROL)) + url[at:]
    return url


prefix_strategy = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["https", "http"]),
    st.sampled_from(["api.example.com", "bücher.example", "127.0.0.1"]),
    st.sampled_from(["", ":443", ":6443"]),
    st.sampled_from(["", "/", "/api", "/api/", "/API/data/"]),
)


@settings(max_examples=300, deadline=None)
@given(url=candidate_urls(), prefixes=st.lists(prefix_strategy, min_size=1, max_size=2))
def test_the_check_accepts_exactly_what_the_reference_accepts(
    url: str, prefixes: list[str]
) -> None:
    expected = reference_accepts(url, prefixes)
    try:
        fetched = urls.allowed(url, tuple(prefixes), "payload.url")
    except urls.InvalidURL:
        assert not expected, f"{url!r} refused under {prefixes}"
        return
    assert expected, f"{url!r} accepted under {prefixes} as {fetched}"
    # What is fetched is itself under a prefix, by the reference, and already normal.
    assert reference_accepts(str(fetched), prefixes)
    assert str(urls.allowed(str(fetched), tuple(prefixes), "payload.url")) == str(fetched)
    assert fetched.raw_path.decode().split("?")[0] == urls.normalise(url).path


@settings(max_examples=150, deadline=None)
@given(
    prefix=prefix_strategy,
    inside=st.lists(st.sampled_from(["a", "b.csv", "%41", "c%20d", "x~y"]), max_size=3),
    escape=st.sampled_from(["host", "port", "sibling", "climb", "climb-encoded", "scheme"]),
)
def test_urls_built_inside_a_prefix_pass_and_built_outside_fail(
    prefix: str, inside: list[str], escape: str
) -> None:
    parts = urlsplit(prefix)
    base = prefix if parts.path.endswith("/") else prefix + "/"
    url = base + "/".join(inside)
    assert urls.allowed(url, (prefix,), "f")
    netloc_end = len(parts.scheme) + 3 + len(parts.netloc)
    host_end = netloc_end - len(f":{parts.port}" if parts.port else "")
    depth = len([s for s in parts.path.split("/") if s])
    if escape == "host":
        outside = prefix[:host_end] + ".evil.net" + prefix[host_end:]
    elif escape == "port":
        port = parts.port or {"https": 443, "http": 80}[parts.scheme]
        outside = f"{parts.scheme}://{parts.hostname}:{port}0{parts.path}"
    elif escape == "sibling":
        if depth == 0:
            return
        outside = prefix.rstrip("/") + "x/" + "/".join(inside)
    elif escape in ("climb", "climb-encoded"):
        dots = ".." if escape == "climb" else "%2e%2E"
        # One level above the prefix's path, or above the root when it is "/".
        outside = base + "/".join([dots] * max(depth, 1) + ["private.csv"])
    else:
        other = "http" if parts.scheme == "https" else "https"
        outside = other + prefix[len(parts.scheme) :]
    with pytest.raises(urls.InvalidURL):
        urls.allowed(outside, (prefix,), "f")


@pytest.mark.parametrize(
    ("url", "prefix", "fragment"),
    [
        ("https://127.0.0.1:64430/hook", "https://127.0.0.1:6443", "not under an allowed prefix"),
        ("https://api.example.com.evil.net/", "https://api.example.com", "not under an allowed"),
        ("https://host/api/../private.csv", "https://host/api/", "not under an allowed prefix"),
        ("https://host/api/%2e%2E/private.csv", "https://host/api/", "not under an allowed"),
        ("https://host/api\t/x.csv", "https://host/api/", "control character or whitespace"),
        ("https://host/api/x.csv\r\nX-Evil: 1", "https://host/api/", "control character"),
        ("https://host/api/x y.csv", "https://host/api/", "whitespace ' '"),
        ("https://host/apix/data.csv", "https://host/api", "not under an allowed prefix"),
        ("https://user:pw@host/api/x.csv", "https://host/api/", "credentials"),
        ("http://host/api/x.csv", "https://host/api/", "plain http:// is refused"),
        ("https://host/api/x%2F..%2F..%2Fprivate.csv", "https://host/api/", "%2F in the path"),
        ("https://host/api/..;/private.csv", "https://host/api/", "dot segment with parameters"),
        ("https://host/../../x", "https://host/", "climbs above the root"),
        ("https://0x7f.0.0.1/x", "https://127.0.0.1/", "four decimal numbers"),
        ("https://127.1/x", "https://127.0.0.1/", "four decimal numbers"),
        ("https://host\\@evil.net/x", "https://host/", "backslash"),
        ("ftp://host/x.csv", "https://host/", "expected an https:// URL, not ftp://"),
    ],
)
def test_the_issues_reproductions_are_refused(url: str, prefix: str, fragment: str) -> None:
    with pytest.raises(urls.InvalidURL) as caught:
        urls.allowed(url, (prefix,), "payload.source")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("InvalidURL: payload.source: ")
    assert "the url_prefixes setting" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "fetched"),
    [
        (
            "HTTPS://API.Example.COM.:443/api/./v1/../x.csv#frag",
            "https://api.example.com/api/x.csv",
        ),
        ("https://api.example.com/api/%7e%61%2e%2fb", None),
        (
            "https://api.example.com/api/%41%62c?q=%2e%2e/é",
            "https://api.example.com/api/Abc?q=../%C3%A9",
        ),
        ("https://bücher.example/api/x", "https://xn--bcher-kva.example/api/x"),
        ("https://api.example.com:0443/api", "https://api.example.com/api"),
    ],
)
def test_accepted_urls_are_fetched_in_their_normal_form(url: str, fetched: str | None) -> None:
    prefixes = ("https://api.example.com/api", "https://xn--bcher-kva.example/")
    if fetched is None:
        with pytest.raises(urls.InvalidURL):
            urls.allowed(url, prefixes, "f")
        return
    result = urls.allowed(url, prefixes, "f")
    assert str(result) == fetched
    assert str(httpx.URL(str(result))) == fetched  # httpx has nothing left to change


def test_bad_prefixes_are_a_configuration_error() -> None:
    for bad in ["https://host/api?x=1", "https://user@host/", "ftp://host/", "https://host:99999/"]:
        with pytest.raises(config.ConfigError, match=r"(?i)url.prefix"):
            config.load({"url_prefixes": bad}, environ={})
    assert config.load({"url_prefixes": "https://Host/api/"}, environ={}).url_prefixes


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
    code = await drain(url_prefixes=prefixes, http_token=TOKEN)
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
