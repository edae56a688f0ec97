"""importd web's sign-in: a session that ends, and a bound on the guesses one client makes.

Before, the session cookie was the same HMAC of the token for ever: the cookie's
``max-age`` asked the browser to drop it after 12 hours, but a copy kept elsewhere (a
proxy's log, a shared machine's profile) signed in until the token changed, and a
client could try tokens on the sign-in form or in bearer headers as fast as it liked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from importd.web import security

TOKEN = "a-web-token-of-sixteen-chars"
NOW = 1_800_000_000.0


def test_a_session_is_good_for_twelve_hours_and_not_a_second_more() -> None:
    issued = int(NOW)
    value = security.session_value(TOKEN, issued)
    assert security.session_valid(value, TOKEN, now=NOW)
    assert security.session_valid(value, TOKEN, now=NOW + security.SESSION_SECONDS - 1)
    assert not security.session_valid(value, TOKEN, now=NOW + security.SESSION_SECONDS)
    # Issued by a server whose clock runs a little ahead: accepted; far ahead: not.
    assert security.session_valid(value, TOKEN, now=NOW - 30)
    assert not security.session_valid(value, TOKEN, now=NOW - 3600)


def test_a_session_is_bound_to_its_token_and_its_time() -> None:
    issued = int(NOW)
    value = security.session_value(TOKEN, issued)
    assert not security.session_valid(value, TOKEN + "x", now=NOW)  # a new token: signed out
    # Moving the time on (to outlive the twelve hours) breaks the HMAC.
    later = f"{issued + 3600}.{value.partition('.')[2]}"
    assert not security.session_valid(later, TOKEN, now=NOW + 3600)
    # The value holds no token.
    assert TOKEN not in value


@given(st.text(max_size=120))
def test_no_other_value_passes(value: str) -> None:
    good = security.session_value(TOKEN, int(NOW))
    assert security.session_valid(value, TOKEN, now=NOW) == (value == good)


def test_the_cookie_before_sessions_ended_no_longer_signs_in() -> None:
    # The value every session had before: an HMAC of the token alone.
    old = hmac.new(TOKEN.encode(), b"importd-web-session", hashlib.sha256).hexdigest()
    assert not security.session_valid(old, TOKEN, now=NOW)


def test_a_cookie_is_not_an_hmac_under_the_token_itself() -> None:
    """Signed under scrypt of the token: a guess of the token costs an attacker one scrypt
    (a fraction of a second), not one hash, whether tried on a copied cookie offline or
    made into a cookie to try online (where the throttle counts it, below)."""
    issued = int(NOW)
    message = f"importd-web-session:{issued}".encode()
    by_hash = hmac.new(TOKEN.encode(), message, hashlib.sha256).hexdigest()
    assert not security.session_valid(f"{issued}.{by_hash}", TOKEN, now=NOW)
    assert security.session_check(f"{issued}.{by_hash}", TOKEN, now=NOW) == ("forged", None)
    assert security.session_check(f"{issued - 13 * 3600}.{by_hash}", TOKEN, now=NOW) == (
        "none",
        None,
    )
    key = hashlib.scrypt(TOKEN.encode(), salt=b"importd-web-session", n=2**14, r=8, p=1, dklen=32)
    by_key = hmac.new(key, message, hashlib.sha256).hexdigest()
    assert security.session_check(f"{issued}.{by_key}", TOKEN, now=NOW) == ("valid", issued)


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64: one client
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("x" * 15_000, "x" * 64),  # whatever a trusted proxy's X-Forwarded-For said
    ],
)
def test_the_throttle_counts_a_client_by_its_address(host: str, counted_as: str) -> None:
    request = Request({"type": "http", "client": (host, 1), "headers": []})
    assert security.client_address(request) == counted_as


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_refuses_a_client_after_ten_wrong_tokens_for_five_minutes() -> None:
    clock = _Clock()
    throttle = security.Throttle(clock)
    for _ in range(security.Throttle.LIMIT - 1):
        assert throttle.retry_after("192.0.2.1") is None
        assert not throttle.failed("192.0.2.1")
        clock.now += 1
    assert throttle.failed("192.0.2.1")  # the tenth: throttled from now
    wait = throttle.retry_after("192.0.2.1")
    assert wait is not None and abs(wait - (security.Throttle.WINDOW - 9)) < 1e-9
    assert throttle.retry_after("192.0.2.2") is None  # another client is not
    # Once the first failure is five minutes old, one more try is allowed ...
    clock.now = 1000.0 + security.Throttle.WINDOW
    assert throttle.retry_after("192.0.2.1") is None
    # ... and failing it throttles again until the second failure is that old.
    assert throttle.failed("192.0.2.1")
    wait = throttle.retry_after("192.0.2.1")
    assert wait is not None and abs(wait - 1.0) < 1e-9


def test_slow_guesses_are_never_throttled() -> None:
    clock = _Clock()
    throttle = security.Throttle(clock)
    for _ in range(100):
        assert not throttle.failed("192.0.2.1")
        assert throttle.retry_after("192.0.2.1") is None
        clock.now += security.Throttle.WINDOW / (security.Throttle.LIMIT - 1) + 0.01


def test_the_throttle_remembers_a_bounded_number_of_clients() -> None:
    clock = _Clock()
    throttle = security.Throttle(clock)
    throttle.CLIENTS = 50
    for _ in range(security.Throttle.LIMIT):
        throttle.failed("192.0.2.1")
    for n in range(49):
        throttle.failed(f"198.51.100.{n}")
    assert throttle.retry_after("192.0.2.1") is not None  # still remembered: 50 clients
    throttle.failed("203.0.113.1")  # the 51st: the longest quiet is forgotten
    assert throttle.retry_after("192.0.2.1") is None
    assert len(throttle._failures) == 50


async def _jobs(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("every job's payload")


async def test_wrong_bearer_tokens_are_throttled_right_one_included() -> None:
    app = security.Guard(Starlette(routes=[Route("/jobs", _jobs)]), TOKEN)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        right = {"authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/jobs", headers=right)).status_code == 200
        for n in range(security.Throttle.LIMIT):
            wrong = await client.get("/jobs", headers={"authorization": f"Bearer guess-{n}"})
            assert wrong.status_code == 401 and "payload" not in wrong.text
        refused = await client.get("/jobs", headers=right)
        assert refused.status_code == 429, refused.text
        assert "too many wrong tokens" in refused.text and "payload" not in refused.text
        assert 290 <= int(refused.headers["retry-after"]) <= 300
        # A browser's session cookie is not a guess, and is not throttled.
        cookie = {"cookie": f"{security.SESSION_COOKIE}={security.session_value(TOKEN)}"}
        assert (await client.get("/jobs", headers=cookie)).status_code == 200
        stale = {"cookie": f"{security.SESSION_COOKIE}=1.{'0' * 64}"}
        for _ in range(security.Throttle.LIMIT + 2):
            assert (await client.get("/jobs", headers=stale)).status_code == 401


async def test_an_expired_session_cookie_is_refused() -> None:
    app = security.Guard(Starlette(routes=[Route("/jobs", _jobs)]), TOKEN)
    transport = httpx.ASGITransport(app=app)
    old = security.session_value(TOKEN, int(time.time()) - security.SESSION_SECONDS - 5)
    fresh = security.session_value(TOKEN)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        expired = await client.get(
            "/jobs", headers={"cookie": f"{security.SESSION_COOKIE}={old}", "accept": "text/html"}
        )
        assert expired.status_code == 303 and expired.headers["location"] == "/login"
        kept = await client.get("/jobs", headers={"cookie": f"{security.SESSION_COOKIE}={fresh}"})
        assert kept.status_code == 200 and kept.text == "every job's payload"


async def test_cookies_made_from_guessed_tokens_are_throttled_and_dropped() -> None:
    """A session cookie of the last 12 hours whose HMAC is wrong is a guess (or a cookie
    of an earlier token): counted like a wrong token, and the answer drops it."""
    app = security.Guard(Starlette(routes=[Route("/jobs", _jobs)]), TOKEN)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 50000))
    now = int(time.time())
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        for n in range(security.Throttle.LIMIT):
            guess = security.session_value(f"guess-{n}-of-the-token", now)
            answer = await client.get(
                "/jobs", headers={"cookie": f"{security.SESSION_COOKIE}={guess}"}
            )
            assert answer.status_code == 401 and "payload" not in answer.text
            assert answer.headers["set-cookie"].startswith(f"{security.SESSION_COOKIE}=;")
            assert "max-age=0" in answer.headers["set-cookie"].lower()
        right = security.session_value(TOKEN, now)
        # Throttled now: another guess is not looked at, and neither is the right token
        # in a bearer header; a real session goes on (it is no guess).
        guess = security.session_value("one-more-guess-of-it", now)
        refused = await client.get(
            "/jobs", headers={"cookie": f"{security.SESSION_COOKIE}={guess}"}
        )
        assert refused.status_code == 429 and "retry-after" in refused.headers
        bearer = await client.get("/jobs", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 429
        kept = await client.get("/jobs", headers={"cookie": f"{security.SESSION_COOKIE}={right}"})
        assert kept.status_code == 200


def test_a_stream_ends_with_the_session_that_opened_it() -> None:
    issued = int(time.time()) - 60
    cookie = security.session_value(TOKEN, issued)
    by_cookie = Request(
        {"type": "http", "headers": [(b"cookie", f"importd_session={cookie}".encode())]}
    )
    assert security.session_ends(by_cookie, TOKEN) == issued + security.SESSION_SECONDS
    by_bearer = Request(
        {"type": "http", "headers": [(b"authorization", f"Bearer {TOKEN}".encode())]}
    )
    assert security.session_ends(by_bearer, TOKEN) is None
    assert security.session_ends(by_cookie, None) is None


def test_a_wrong_bearer_beside_a_session_does_not_make_its_stream_endless() -> None:
    # (Any bearer header made session_ends answer "no end"; the cookie let it in.)
    issued = int(time.time()) - 60
    cookie = security.session_value(TOKEN, issued)
    both = Request(
        {
            "type": "http",
            "headers": [
                (b"cookie", f"importd_session={cookie}".encode()),
                (b"authorization", b"Bearer junk"),
            ],
        }
    )
    assert security.session_ends(both, TOKEN) == issued + security.SESSION_SECONDS


def test_one_stale_cookie_counts_once_however_many_tabs_send_it() -> None:
    """After a new token, every tab of a browser sends the old cookie until one answer
    drops it: one guess, not one per tab. Cookies made from guesses differ: each counts."""
    clock = _Clock()
    throttle = security.Throttle(clock)
    for _ in range(30):
        assert not throttle.failed("192.0.2.1", "1800000000.aaaa")
    assert throttle.retry_after("192.0.2.1") is None
    for n in range(security.Throttle.LIMIT - 2):
        assert not throttle.failed("192.0.2.1", f"1800000000.{n:04x}")
    assert throttle.failed("192.0.2.1", "1800000000.ffff")  # the tenth different one
    assert throttle.retry_after("192.0.2.1") is not None


async def test_parallel_requests_with_a_cookie_of_an_earlier_token_leave_sign_in_open() -> None:
    app = security.Guard(Starlette(routes=[Route("/jobs", _jobs)]), TOKEN)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 50000))
    old = security.session_value("the-token-before-the-new-one", int(time.time()) - 60)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        answers = await asyncio.gather(
            *(
                client.get("/jobs", headers={"cookie": f"{security.SESSION_COOKIE}={old}"})
                for _ in range(12)
            )
        )
        assert {a.status_code for a in answers} == {401}
        right = await client.get("/jobs", headers={"authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
