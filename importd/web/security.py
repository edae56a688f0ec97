"""importd web's guards: who may look, who may act, and the headers every answer carries.

- With no ``web_token``, only loopback clients asking for a loopback host name
  (``Host: 127.0.0.1:8080``, ``localhost``, ``[::1]``) are served, and nobody may act: a
  web page whose name was re-pointed at 127.0.0.1 (DNS rebinding) would otherwise be
  served as if it were this server, and read every page.
- With a ``web_token``, every request must prove it: a session cookie (set by the login
  form: when it was issued and an HMAC of that time under the token, never the token
  itself; good for ``SESSION_SECONDS``) or ``Authorization: Bearer``. A client that gave
  a wrong token ``Throttle.LIMIT`` times within ``Throttle.WINDOW`` seconds (the sign-in
  form or a bearer header) is refused until the oldest of those failures is that old.
- Every POST carries a CSRF token equal to its browser's ``importd_csrf`` cookie
  (double submit), and an ``Origin`` header, when sent, must be this server's.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "importd_session"
# How long a sign-in lasts: the cookie's max-age, and the age past which the server
# refuses its session whatever the browser kept.
SESSION_SECONDS = 12 * 3600
# A session issued this far ahead of the server's clock (another replica's clock) passes.
_CLOCK_SKEW = 60
CSRF_COOKIE = "importd_csrf"
# Pages are this server's only: no inline script or style, no framing, no plug-ins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make forms send "Origin: null"
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
log = structlog.get_logger("importd.web")
# Reached without a session: the login form and the assets it needs.
_OPEN_PATHS = ("/login", "/static/")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_is_loopback(header: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback (its port aside); True
    when there is none (no browser leaves it out)."""
    if header is None:
        return True
    name = header.strip()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.lower()
    return is_loopback(name[:-1] if name.endswith(".") else name)


def session_value(token: str, issued: int | None = None) -> str:
    """The session cookie's value for ``token``, issued at ``issued`` (Unix seconds; now
    when None): the time and an HMAC of it under a key derived from the token. It proves
    the token without holding it, and stops proving it ``SESSION_SECONDS`` later; a new
    token ends every session."""
    when = int(time.time()) if issued is None else issued
    return f"{when}.{_session_mac(token, when)}"


@functools.lru_cache(maxsize=4)
def _session_key(token: str) -> bytes:
    """The key sessions are signed with: the token through scrypt (a fraction of a second,
    once per token and process), so that a cookie copied out of a browser or a log
    cannot test guesses of the token at the speed of a hash. Derived from the token
    alone, it is the same in every ``importd web`` process serving that token."""
    return hashlib.scrypt(token.encode(), salt=b"importd-web-session", n=2**14, r=8, p=1, dklen=32)


def _session_mac(token: str, issued: int) -> str:
    message = f"importd-web-session:{issued}".encode()
    return hmac.new(_session_key(token), message, hashlib.sha256).hexdigest()


def session_check(value: str, token: str, now: float | None = None) -> tuple[str, int | None]:
    """What a session cookie's ``value`` is: ``("valid", issued)``, issued for ``token``
    less than ``SESSION_SECONDS`` before ``now`` (and not over a minute ahead of it);
    ``("forged", None)``, such a cookie whose HMAC is wrong (a guess of the token, or a
    cookie of an earlier token); ``("none", None)`` for anything else (absent, malformed,
    expired)."""
    issued_text, dot, mac = value.strip().partition(".")
    if not dot or not issued_text.isascii() or not issued_text.isdigit() or len(issued_text) > 12:
        return "none", None
    issued = int(issued_text)
    at = time.time() if now is None else now
    if not at - SESSION_SECONDS < issued <= at + _CLOCK_SKEW:
        return "none", None
    if hmac.compare_digest(mac.encode(), _session_mac(token, issued).encode()):
        return "valid", issued
    return "forged", None


def session_valid(value: str, token: str, now: float | None = None) -> bool:
    """Whether a session cookie's ``value`` proves ``token`` now (see session_check)."""
    return session_check(value, token, now)[0] == "valid"


def session_ends(request: Request, token: str | None) -> float | None:
    """When the session that lets ``request`` in ends (Unix seconds); None when it is let
    in otherwise (a bearer token, no token at all)."""
    given = bearer(request)
    if not token or (given is not None and token_matches(given, token)):
        return None
    state, issued = session_check(request.cookies.get(SESSION_COOKIE, ""), token)
    return issued + SESSION_SECONDS if state == "valid" and issued is not None else None


def token_matches(given: str, token: str) -> bool:
    """Whether ``given`` is ``token`` (in constant time)."""
    return hmac.compare_digest(given.encode(), token.encode())


def bearer(request: Request) -> str | None:
    """The token an ``Authorization: Bearer`` header gives, or None."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def authenticated(request: Request, token: str | None) -> bool:
    """Whether ``request`` proves ``token`` (False when there is no token to prove)."""
    if not token:
        return False
    given = bearer(request)
    if given is not None and token_matches(given, token):
        return True
    return session_valid(request.cookies.get(SESSION_COOKIE, ""), token)


class Throttle:
    """Wrong tokens per client address: after ``LIMIT`` of them within ``WINDOW`` seconds
    the client is refused, right token or not, until the oldest of those failures is
    ``WINDOW`` seconds old. Counted: a failed sign-in, a request with a wrong bearer
    token, and one with a session cookie of the last 12 hours whose HMAC is wrong (made
    from a guessed token; a browser holding a cookie of an earlier token is told to drop
    it at its first refusal). At most ``CLIENTS`` addresses are remembered, the longest
    quiet forgotten first. Everyone behind one address (a NAT, a proxy not named with
    ``web_proxies``) shares its count; an IPv6 client counts by its /64."""

    LIMIT = 10
    WINDOW = 300.0
    CLIENTS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[tuple[float, str]]] = {}

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        failures = self._failures.get(client)
        if failures is None or len(failures) < self.LIMIT:
            return None
        wait = failures[0][0] + self.WINDOW - self._clock()
        if wait <= 0:
            return None
        return wait

    def failed(self, client: str, what: str = "") -> bool:
        """Count a wrong token from ``client``; True when this failure throttles it.
        ``what``: the wrong value, where the same one may come again without being a new
        guess (a stale cookie, sent by every tab of one browser before it is dropped):
        it counts once while it is among the client's last LIMIT failures."""
        now = self._clock()
        failures = self._failures.pop(client, None) or deque(maxlen=self.LIMIT)
        counted = not (what and any(seen == what for _, seen in failures))
        if counted:
            failures.append((now, what))
        self._failures[client] = failures  # last in the dict: the most recently active
        while len(self._failures) > self.CLIENTS:
            del self._failures[next(iter(self._failures))]
        return counted and len(failures) == self.LIMIT and failures[0][0] > now - self.WINDOW


def client_address(request: Request) -> str:
    """The client as the throttle counts it: its address as the server sees it (behind a
    named proxy, the one its ``X-Forwarded-For`` gives), an IPv6 one by its /64 (a
    client may hold every address of one), anything else cut to 64 characters."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def csrf_token(request: Request) -> tuple[str, bool]:
    """This browser's CSRF token, and whether it is new (to be set as a cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) == 43:
        return current, False
    return secrets.token_urlsafe(32), True


def csrf_problem(request: Request, submitted: str | None) -> str | None:
    """Why a POST's CSRF field or Origin is refused (None: it is accepted)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie:
        return "no csrf cookie"
    if not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        return "the csrf field does not match the cookie"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    if origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        return "the request came from another origin"
    return None


class Guard:
    """ASGI middleware: security headers on every answer, and the access rules above."""

    def __init__(self, app: ASGIApp, token: str | None, throttle: Throttle | None = None) -> None:
        self.app = app
        self.token = token
        self.throttle = throttle or Throttle()
        self.web: Any = None  # the application's state, for the server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    *((n, v) for n, v in HEADERS if n not in names),
                ]
            await send(message)

        request = Request(scope)
        path: str = scope["path"]
        client = scope.get("client")
        if not self.token:
            if not is_loopback(client[0] if client else None):
                await _refuse(
                    send_with_headers,
                    403,
                    "importd web answers other machines only with web_token set",
                )
                return
            if not host_is_loopback(request.headers.get("host")):
                await _refuse(
                    send_with_headers,
                    403,
                    "importd web without web_token answers only requests for a loopback "
                    "host name (127.0.0.1, localhost, [::1])",
                )
                return
        elif bearer(request) is not None:
            refused = self.refused_bearer(request, self.token)
            if refused is not None:
                await _refuse(send_with_headers, *refused)
                return
        elif not path.startswith(_OPEN_PATHS):
            status = self.refused_session(request, self.token)
            if status == 429:
                wait = self.throttle.retry_after(client_address(request)) or 1.0
                await _refuse(
                    send_with_headers, 429, too_many_failures(wait), math.ceil(wait), True
                )
                return
            if status is not None:
                # (A cookie that failed is dropped: its browser stops sending it.)
                drop = SESSION_COOKIE in request.cookies
                if scope["method"] == "GET" and "text/html" in request.headers.get("accept", ""):
                    await _redirect(send_with_headers, "/login", drop)
                else:
                    await _refuse(
                        send_with_headers, 401, "importd web: the web token is required", 0, drop
                    )
                return
        await self.app(scope, receive, send_with_headers)

    def refused_session(self, request: Request, token: str) -> int | None:
        """Why a request without a bearer header is refused: its session cookie does not
        prove the token (401; a forged one counted, 429 when its client is throttled).
        None: it does."""
        cookie = request.cookies.get(SESSION_COOKIE, "")
        state, _ = session_check(cookie, token)
        if state == "valid":
            return None
        if state == "forged":
            client = client_address(request)
            if self.throttle.retry_after(client) is not None:
                return 429
            if self.throttle.failed(client, cookie.strip()):
                log.warning("web_login_throttled", client=client, failures=Throttle.LIMIT)
        return 401

    def refused_bearer(self, request: Request, token: str) -> tuple[int, str, int] | None:
        """Why a request with a bearer header is refused before it is served: its client
        is throttled (429), or the token is wrong (401, and counted). None: it is right."""
        client = client_address(request)
        wait = self.throttle.retry_after(client)
        if wait is not None:
            return 429, too_many_failures(wait), math.ceil(wait)
        if authenticated(request, token):
            return None
        if self.throttle.failed(client):
            log.warning("web_login_throttled", client=client, failures=Throttle.LIMIT)
        return 401, "importd web: the web token is required", 0


def too_many_failures(wait: float) -> str:
    return f"too many wrong tokens from this address: try again in {math.ceil(wait)} s"


# Drops the session cookie (the attributes cookie_args gives it; Secure or not alike).
_DROP_SESSION = (
    b"set-cookie",
    f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=strict".encode(),
)


async def _refuse(
    send: Send, status: int, text: str, retry_after: int = 0, drop_session: bool = False
) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    if drop_session:
        headers.append(_DROP_SESSION)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, drop_session: bool = False) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    if drop_session:
        headers.append(_DROP_SESSION)
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def cookie_args(request: Request) -> dict[str, Any]:
    """The attributes of importd web's cookies."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }
