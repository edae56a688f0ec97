"""Connections to PostgreSQL: the pool, direct connections, and which errors are transient.

The connector. Apart from the import handlers (COPY's row errors), it is the only module
that imports asyncpg: every other one takes the types it passes around
(``Pool``, ``Connection``, ``Record``, ``Conn``) and the errors it tells apart (``ERRORS``,
``is_transient``) from here."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import asyncpg
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
)

from . import sql
from .backoff import FullJitter
from .redaction import redact

T = TypeVar("T")
log = structlog.get_logger("importd.db")

# -- the types at the boundary -------------------------------------------------------
# The types importd passes around, named here once. mypy checks them against
# asyncpg-stubs (a dev dependency, the installed asyncpg's version); asyncpg's classes are
# not generic at run time, so the parameters exist for mypy only.
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    # A connection of its own, or one from a pool (a proxy with the same methods).
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection
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


async def one(conn: Conn, name: str, *args: Any) -> Record:
    """The row of query ``name`` (``sql/queries/<name>.sql``), one that always returns
    exactly one (an aggregate, a probe of the catalog): no row is a bug, said so here."""
    row = await conn.fetchrow(sql.query(name), *args)
    if row is None:
        raise RuntimeError(f"query {name} returned no row")
    return row


# The errors of the database and its driver: any error PostgreSQL reported, and one the
# driver raised for the connection (closed, broken, misused). Network errors
# (OSError, TimeoutError) are not in it.
ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)

# SQLSTATE classes that mean "the server or the connection is in trouble, try again":
# 08 connection exception, 53 insufficient resources, 57P01-57P03 shutdown / cannot connect
# now, 40001 / 40P01 serialization failure and deadlock.
_TRANSIENT_SQLSTATE = re.compile(r"^(08|53|57P0[123]|40001|40P01)")


def is_configuration_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the driver refusing a DSN or an option it cannot read
    (``sslmode=bogus``): the configuration's fault, not the database's."""
    return isinstance(exc, asyncpg.ClientConfigurationError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure fault that a retry may get past."""
    if isinstance(exc, asyncpg.PostgresError):
        return bool(_TRANSIENT_SQLSTATE.match(exc.sqlstate or ""))
    if is_configuration_error(exc):
        return False  # a DSN or option the driver cannot read: no retry reads it better
    return isinstance(
        exc,
        OSError  # refused, reset, unreachable
        | TimeoutError
        | asyncpg.InterfaceError  # includes ConnectionDoesNotExistError
        | asyncpg.InternalClientError
        | EOFError,
    )


# How deep a json/jsonb value read from the database may nest. PostgreSQL takes far
# deeper values than Python's decoder (about 1,000 levels) and the code that walks a
# decoded value (redaction, the dashboard, ``importd show``, a handler) can follow; a job
# row a producer wrote that deep must not stop a claim of the jobs beside it.
MAX_JSON_DEPTH = 200
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class DeepJSON(str):
    """A json/jsonb value nested deeper than ``MAX_JSON_DEPTH``: its text, not decoded
    (the executor fails a job whose payload is one; ``importd show`` prints it)."""

    __slots__ = ()


def json_depth(text: str) -> int:
    """How deep the JSON ``text`` nests (brackets inside strings left out)."""
    depth = deepest = 0
    for bracket in _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def json_in(text: str) -> Any:
    """A json/jsonb value as Python reads it; a ``DeepJSON`` when it nests deeper than
    ``MAX_JSON_DEPTH`` (a scan of its brackets, made only when it holds that many)."""
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
        return DeepJSON(text)
    return json.loads(text)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=json.dumps, decoder=json_in
        )


# The array types importd's statements send. asyncpg knows text[] by itself but looks the
# others up in the catalog once per connection, the first time a statement of that
# connection uses them: a query of about 5 ms on the server, and a round trip. A daemon's
# connection learns them all when it opens, in one look-up, rather than in the middle of
# a drain, where each connection of the pool that first writes a batch of finishes (or
# the lease keeper's first heartbeat) would stall the claims behind it for 10 to 15 ms.
async def _init_daemon_connection(conn: asyncpg.Connection) -> None:
    """``_init_connection``, and the array types learned (``learn_array_types.sql``)."""
    await _init_connection(conn)
    await conn.fetchrow(sql.query("learn_array_types"), None, None, None, None, None)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A pool reset that skips the reset query (asyncpg still rolls back a transaction left
    open and drops listeners)."""


# asyncpg 0.32 made a pool's ``min_size`` a floor: a connection of it that breaks (the
# server restarts, its backend is terminated) is opened again in the background, and
# every failed try is logged with its traceback through the standard library's logging,
# as plain text on stderr beside importd's JSON lines, every few seconds for as long as
# the database is away. ``init_size`` (new in 0.32) opens connections at start without
# a floor: a broken one is opened again by the next ``acquire``, whose caller already
# handles (and logs, once, as JSON) a database that is away. Before 0.32, ``min_size``
# was only the number opened at start.
_HAS_INIT_SIZE = "init_size" in inspect.signature(asyncpg.create_pool).parameters


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
    idle_lifetime: float = 300.0,
) -> Pool:
    """Open a pool with JSON codecs; raises the connection error as asyncpg gives it.

    ``reset_sessions=False`` saves the round trip of asyncpg's reset query on every
    release; only for pools whose users leave no session state behind (importd's own
    single-statement queries). ``server_settings`` are more session settings.
    ``idle_lifetime``: seconds after which an unused connection is closed (0: never).
    ``min_size`` connections open with the pool; one that breaks is opened again when
    next asked for, not in the background (``_HAS_INIT_SIZE``)."""
    sizes: dict[str, Any] = (
        {"min_size": 0, "init_size": min_size} if _HAS_INIT_SIZE else {"min_size": min_size}
    )
    pool: Pool = await asyncpg.create_pool(
        dsn,
        **sizes,
        max_size=max_size,
        init=_init_daemon_connection,
        statement_cache_size=statement_cache_size,
        timeout=connect_timeout,
        max_inactive_connection_lifetime=idle_lifetime,
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
    arrays: bool = False,
) -> Connection:
    """One connection of its own (not from an asyncpg pool), with JSON codecs; with
    ``arrays``, the array types of importd's statements learned at once, as a pool's
    connections learn them (for a daemon's connection that writes jobs).

    ``statement_cache_size=0`` for one-shot commands: they gain nothing from named
    prepared statements, and a transaction-mode pooler cannot keep them."""
    conn = await asyncpg.connect(
        dsn,
        timeout=timeout,
        statement_cache_size=statement_cache_size,
        server_settings={"application_name": application_name},
    )
    await (_init_daemon_connection if arrays else _init_connection)(conn)
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


async def statement_cache_for(dsn: str, cache_size: int, *, patience: float = 0.0) -> int:
    """The statement cache size for connections to ``dsn``: 0 when it goes through a
    pooler (``behind_pooler``; ``pooler_detected`` logged), since named prepared
    statements do not survive a transaction-mode pooler and a session-mode one gains
    little from them; else ``cache_size``. 0 given stays 0 (said so: no look).

    The look needs a connection, so it waits for one as a pool does, retrying transient
    failures for ``patience`` seconds: a daemon that starts before its pooler (boot order)
    must still see the pooler once it answers. A failure that outlasts the patience, or is
    not transient, is left to the pool opened next to report."""
    if cache_size == 0:
        return 0
    try:
        conn = await retry_transient(
            "connect",
            lambda: connect(dsn, timeout=3, statement_cache_size=0),
            give_up_after=patience,
        )
    except Exception:
        return cache_size
    try:
        pooled = await behind_pooler(conn)
    finally:
        await conn.close()
    if not pooled:
        return cache_size
    log.warning(
        "pooler_detected",
        detail="the DSN goes through a pooler: prepared statements off "
        "(set statement_cache_size = 0 to say so); LISTEN needs a direct listen_dsn",
        statement_cache_size=0,
    )
    return 0


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
    jitter, for at most ``give_up_after`` seconds (for ever when None), counted from the
    first call: a pause never runs past the budget, and no call starts after it."""
    started = time.monotonic()

    def left() -> float:
        if give_up_after is None:
            return float("inf")
        return give_up_after - (time.monotonic() - started)

    try:
        return await call()  # the common case, without building a retry controller
    except Exception as exc:
        if not is_transient(exc) or left() <= 0:
            raise
        _log_failure(what, 1, 0.0, exc)
    jitter = FullJitter(first=0.05, cap=max_wait)
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        # The last pause is cut to what is left of the budget, so the last attempt comes
        # at its end, not up to ``max_wait`` after it.
        wait=lambda state: max(min(jitter(state), left()), 0.0),
        stop=lambda _state: left() <= 0,
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
