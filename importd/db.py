"""Connections to PostgreSQL: the pool, direct connections, and which errors are transient.

The connector. Apart from the COPY modules (``tables``, ``handlers.imports``), it is the
only module that imports asyncpg: every other one takes the types it passes around
(``Pool``, ``Connection``, ``Record``, ``Conn``) and the errors it tells apart (``ERRORS``,
``is_transient``) from here."""

from __future__ import annotations

import asyncio
import json
import re
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, TypeVar

import asyncpg
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from . import sql

T = TypeVar("T")
log = structlog.get_logger("importd.db")

# -- the types at the boundary -------------------------------------------------------
# asyncpg ships no type information (mypy sees Any for all of it), so the types importd
# passes around are named here, once.
Pool: TypeAlias = asyncpg.Pool
Connection: TypeAlias = asyncpg.Connection  # a connection of its own or one from a pool
Record: TypeAlias = asyncpg.Record


class Conn(Protocol):
    """What runs one statement: a connection (inside its transaction, if any) or a pool
    used like one (each statement on whichever connection it hands out)."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        """Run ``query``; the command tag (``INSERT 0 1``)."""

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Record]:
        """Every row ``query`` returns."""

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Record | None:
        """The first row ``query`` returns, or None."""

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        """One value of the first row ``query`` returns (None without a row)."""


# The errors of the database and its driver: any error PostgreSQL reported, and one the
# driver raised for the connection (closed, broken, misused). Network errors
# (OSError, TimeoutError) are not in it.
ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)

# SQLSTATE classes that mean "the server or the connection is in trouble, try again":
# 08 connection exception, 53 insufficient resources, 57P01-57P03 shutdown / cannot connect
# now, 40001 / 40P01 serialization failure and deadlock.
_TRANSIENT_SQLSTATE = re.compile(r"^(08|53|57P0[123]|40001|40P01)")

# Redaction. Every pattern is linear in the text and starts with a literal or a small
# set of letters, so the regex engine skips ahead at C speed: no unbounded run is
# followed by something that can fail and make the engine retry the run from the next
# character (the scheme of a URL is not matched at all: "://" is where a match starts),
# and the scans run only when a cheap ``in`` test says they can match.
#
# A URL's password: from "://user:" to the last "@" before the host (the authority ends
# at the first "/", "?", "#" or whitespace, as asyncpg and urllib read it), so a raw "@"
# inside the password is masked too.
# (A password already masked as a registered secret is skipped: no Python work per match.)
_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/?#\s]*+:)(?!\*\*\*@)(?P<pw>[^/?#\s]*)(?P<at>@)")
# Values of sensitive keys, in libpq's "key=value" form and in URL query strings. A key
# that ends in one of these counts (csrftoken=, db_password=): masking too much is the
# safe side.
SENSITIVE_KEYS = (
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
)
_SENSITIVE_NAMES = frozenset((*SENSITIVE_KEYS, "authorization", "dsn"))


def _anycase(word: str) -> str:
    # Character classes rather than re.IGNORECASE: the engine then scans for the first
    # character at C speed instead of trying every position.
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# Keys that end in another key are covered by it (a key that ends in "token" counts).
_KEY_SUFFIXES = sorted(
    {k for k in SENSITIVE_KEYS if not any(k != o and k.endswith(o) for o in SENSITIVE_KEYS)}
)
# A match starts at "=", a literal the engine finds fast, and looks back for the key; it
# is replaced by the constant "=***" (a replacement without group references stays in
# C: a template costs a Python call per match on Python 3.11).
# A first look-behind for the keys' last letters turns most "=" away cheaply.
_LAST_LETTERS = "[" + "".join(sorted({k[-1] + k[-1].upper() for k in _KEY_SUFFIXES})) + "]"
_SENSITIVE_KV = re.compile(
    rf"=(?:(?<={_LAST_LETTERS}=)|(?<={_LAST_LETTERS} =))(?:"
    + "|".join(f"(?<={_anycase(k)}{space}=)" for k in _KEY_SUFFIXES for space in ("", " "))
    + r")[ \t]*+(?P<pw>'(?:[^'\\]|\\.)*+'?|[^\s&'\"]++)"
)
# "Bearer <token>": everything up to whitespace, a quote or a delimiter is the token. The
# usual spellings are each replaced by a pattern that starts with a literal (found at C
# speed, and the constant replacement stays in C); any other spelling is found in an
# ASCII-lower-cased copy of the text.
_CREDENTIAL_RE_TAIL = r"[ \t]++(?!\*\*\*(?:[\s\"'<>,;]|$))(?P<pw>[^\s\"'<>,;]++)"
_BEARER = re.compile("bearer" + _CREDENTIAL_RE_TAIL)
_BEARER_SPELLINGS = {
    word: re.compile(word + _CREDENTIAL_RE_TAIL) for word in ("Bearer", "bearer", "BEARER")
}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MASK = "***"

# Secret values this process knows (passwords, tokens): masked wherever they appear.
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every redacted text from now on, also percent-encoded and as
    escaped inside a JSON string (short values are ignored: they would mask innocent
    words)."""
    if not value or len(value) < 6:
        return
    from urllib.parse import quote, unquote  # noqa: PLC0415

    for form in (value, unquote(value), quote(value, safe=""), json.dumps(value)[1:-1]):
        if len(form) >= 6:
            _SECRETS.add(form)


def secrets_in(dsn: str) -> list[str]:
    """The passwords in a connection string: the URL's password (percent-decoded too)
    and the values of sensitive keys, in URL or ``key=value`` form."""
    from urllib.parse import unquote  # noqa: PLC0415

    found = [m["pw"] for m in _PASSWORD_IN_URL.finditer(dsn)]
    # libpq's key=value form: the value may be quoted with backslash escapes.
    for match in _SENSITIVE_KV.finditer(dsn):
        value = match["pw"]
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:].removesuffix("'"))
        found.append(value)
    return [form for value in found for form in (value, unquote(value)) if form]


def _mask_secrets(text: str) -> str:
    # Each secret that occurs at all (the ``in`` tests run at C speed; most texts hold
    # none), longest first, replaced by str.replace: linear, and total: a replacement
    # only inserts "***", so it cannot make a secret (one without "*") appear, and an
    # occurrence left whole after a pass would have been replaced by it.
    present = sorted((s for s in _SECRETS if s in text), key=lambda s: (-len(s), s))
    for secret in present:
        text = text.replace(secret, MASK)
    return text


def _ascii_lower(text: str) -> str:
    """``text`` with A-Z lower-cased, every character where it was (str.lower() may
    change the length of non-ASCII text)."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def _mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    out: list[str] = []
    done = 0
    for start, end in sorted(spans):
        if end <= done:
            continue
        out.append(text[done : max(start, done)])
        out.append(MASK)
        done = end
    out.append(text[done:])
    return "".join(out)


def redact(text: str) -> str:
    """``text`` with every registered secret, connection-string passwords, values of
    sensitive keys (``SENSITIVE_KEYS``) and bearer tokens replaced by ``***``; for log
    lines, error messages and job rows alike. Linear in the length of ``text``."""
    text = _mask_secrets(text)
    if "://" in text:
        spans = [m.span("pw") for m in _PASSWORD_IN_URL.finditer(text)]
        if spans:
            text = _mask_spans(text, spans)
    if "bearer" in text.lower():  # (lower() only tells whether to look)
        seen = 0
        for word, pattern in _BEARER_SPELLINGS.items():
            if word in text:
                text = pattern.sub(word + " ***", text)
                seen += text.count(word)
        lowered = _ascii_lower(text)
        if lowered.count("bearer") > seen:  # a rarer spelling (BeArEr) is there too
            text = _mask_spans(text, [m.span("pw") for m in _BEARER.finditer(lowered)])
    if "=" in text:
        text = _SENSITIVE_KV.sub("=***", text)
    return text


def redact_value(value: Any) -> Any:
    """``value`` with ``redact`` applied to every string inside it, keys of objects
    included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            masked = redact(key) if isinstance(key, str) else key
            while masked in out:  # two keys masked alike: keep both values
                masked = f"{masked}#"
            sensitive = isinstance(key, str) and key.lower() in _SENSITIVE_NAMES
            out[masked] = MASK if sensitive and isinstance(item, str) else redact_value(item)
        return out
    return value


# How much of an error text a job row keeps.
MAX_STORED_ERROR = 4000


def clean_text(text: str, limit: int = MAX_STORED_ERROR) -> str:
    """``text`` fit for a text column and a log line: secrets masked, NUL characters
    removed (PostgreSQL text cannot hold them), lone surrogates replaced, at most
    ``limit`` characters (the cut marked with an ellipsis)."""
    text = redact(text.replace("\x00", ""))
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def traceback_text(exc: BaseException) -> str:
    """``exc``'s traceback, redacted: for the ``exception`` key of a log line about a
    job, whose handler's messages may hold anything (a token an endpoint echoed), even
    where structlog was never configured to redact (importd used as a library)."""
    return redact("".join(traceback.format_exception(exc)))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure fault that a retry may get past."""
    if isinstance(exc, asyncpg.PostgresError):
        return bool(_TRANSIENT_SQLSTATE.match(exc.sqlstate or ""))
    return isinstance(
        exc,
        OSError  # refused, reset, unreachable
        | TimeoutError
        | asyncpg.InterfaceError  # includes ConnectionDoesNotExistError
        | asyncpg.InternalClientError
        | EOFError,
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A pool reset that skips the reset query (asyncpg still rolls back a transaction left
    open and drops listeners)."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_cache_size: int = 100,
    connect_timeout: float = 10.0,
    reset_sessions: bool = True,
    application_name: str = "importd",
    server_settings: dict[str, str] | None = None,
) -> Pool:
    """Open a pool with JSON codecs; raises the connection error as asyncpg gives it.

    ``reset_sessions=False`` saves the round trip of asyncpg's reset query on every
    release; only for pools whose users leave no session state behind (importd's own
    single-statement queries). ``server_settings`` are more session settings."""
    pool: Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        statement_cache_size=statement_cache_size,
        timeout=connect_timeout,
        max_inactive_connection_lifetime=300.0,
        reset=None if reset_sessions else _keep_session,
        server_settings={"application_name": application_name, **(server_settings or {})},
    )
    return pool


async def connect(
    dsn: str,
    *,
    timeout: float = 10.0,
    application_name: str = "importd",
    statement_cache_size: int = 100,
) -> Connection:
    """One connection of its own (not from an asyncpg pool), with JSON codecs.

    ``statement_cache_size=0`` for one-shot commands: they gain nothing from named
    prepared statements, and a transaction-mode pooler cannot keep them."""
    conn = await asyncpg.connect(
        dsn,
        timeout=timeout,
        statement_cache_size=statement_cache_size,
        server_settings={"application_name": application_name},
    )
    await _init_connection(conn)
    return conn


def _timestamp_out(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _timestamp_in(text: str) -> datetime | str:
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return text  # a year Python cannot hold (20000, 100 BC): as PostgreSQL wrote it


async def readable_timestamps(conn: Connection) -> None:
    """Let ``conn`` read every timestamptz a row may hold: a datetime (in UTC) where
    Python can hold it, PostgreSQL's own text otherwise (asyncpg's codec raises on a year
    after 9999 or before 1, and an operator's command must not)."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_timestamp_out,
        decoder=_timestamp_in,
        format="text",
    )
    await conn.execute(sql.query("set_readable_timestamps"))


async def behind_pooler(conn: Connection) -> bool:
    """Whether ``conn`` reaches PostgreSQL through a pooler: the backend key a pooler
    (pgbouncer, Supavisor, pgcat) announces at connect is its own, so the process id in it
    is not the server session's ``pg_backend_pid()``."""
    announced = conn.get_server_pid()
    actual = await conn.fetchval(sql.query("backend_pid"))
    return bool(announced != actual)


def _log_failure(what: str, attempt: int, sleep: float, exc: BaseException | None) -> None:
    log.warning(
        "db_retry",
        operation=what,
        attempt=attempt,
        sleep_s=round(sleep, 3),
        error=redact(f"{type(exc).__name__}: {exc}") if exc else None,
    )


def _log_retry(what: str, tries_before: int = 0) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        _log_failure(
            what,
            state.attempt_number + tries_before,
            state.next_action.sleep if state.next_action else 0.0,
            state.outcome.exception() if state.outcome else None,
        )

    return before_sleep


async def retry_transient(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    give_up_after: float | None = None,
    max_wait: float = 5.0,
) -> T:
    """Run ``call`` again after transient database errors, with exponential backoff and
    jitter, for at most ``give_up_after`` seconds (for ever when None)."""
    try:
        return await call()  # the common case, without building a retry controller
    except Exception as exc:
        if not is_transient(exc):
            raise
        _log_failure(what, 1, 0.0, exc)
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.05, max=max_wait),
        stop=stop_after_delay(give_up_after) if give_up_after is not None else (lambda _s: False),
        before_sleep=_log_retry(what, tries_before=1),
        reraise=True,
        sleep=asyncio.sleep,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover


def describe_db_error(exc: BaseException) -> str:
    """``Type: message`` of a database error, with any password masked."""
    return redact(f"{type(exc).__name__}: {exc}")
