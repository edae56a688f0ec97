"""URLs are normalised and compared with ``url_prefixes`` by parts: the issue's
reproductions against real local HTTP(S) servers, and property tests against an
independent reference built on urllib.parse and RFC 3986's own dot-segment algorithm."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd import config, urls
from tests.url_reference import reference_accepts

# -- an independent reference -------------------------------------------------------------


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
