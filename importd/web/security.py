"""importd web's guards: who may look, who may act, and the headers every answer carries.

- With no ``web_token``, only loopback clients asking for a loopback host name
  (``Host: 127.0.0.1:8080``, ``localhost``, ``[::1]``) are served, and nobody may act: a
  web page whose name was re-pointed at 127.0.0.1 (DNS rebinding) would otherwise be
  served as if it were this server, and read every page.
- With a ``web_token``, every request must prove it: a session cookie (set by the login
  form, an HMAC of the token, never the token itself) or ``Authorization: Bearer``.
- Every POST carries a CSRF token equal to its browser's ``importd_csrf`` cookie
  (double submit), and an ``Origin`` header, when sent, must be this server's.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "importd_session"
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


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: proves the token without holding it."""
    return hmac.new(token.encode(), b"importd-web-session", hashlib.sha256).hexdigest()


def authenticated(request: Request, token: str | None) -> bool:
    """Whether ``request`` proves ``token`` (False when there is no token to prove)."""
    if not token:
        return False
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and hmac.compare_digest(
        header[7:].strip().encode(), token.encode()
    ):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())


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

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
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
        elif not path.startswith(_OPEN_PATHS) and not authenticated(request, self.token):
            if scope["method"] == "GET" and "text/html" in request.headers.get("accept", ""):
                await _redirect(send_with_headers, "/login")
            else:
                await _refuse(send_with_headers, 401, "importd web: the web token is required")
            return
        await self.app(scope, receive, send_with_headers)


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def cookie_args(request: Request) -> dict[str, Any]:
    """The attributes of importd web's cookies."""
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/",
    }
