"""The one LISTEN connection: wake-ups, a health probe, and reconnects without end.

A notification is a hint; the table is the truth. This connection is never taken from the
pool (a pooled connection may be handed to someone else, or sit behind a transaction-mode
pooler that cannot LISTEN). It proves itself alive with a self-NOTIFY round trip on the
real channel every ``probe_interval`` seconds, so a dead, half-open or silently
unsubscribed connection is found within seconds and replaced.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from . import db, sql
from .backoff import FullJitter

log = structlog.get_logger("importd.listener")

CHANNEL = "importd"
# Operators' messages to every daemon, e.g. "cancel 42" (importd cancel).
CONTROL_CHANNEL = "importd_control"
# Probe payloads start with a character a queue name cannot (see the queue CHECK), so
# other daemons ignore them.
_PROBE_PREFIX = "!probe:"


class ListenerDead(Exception):
    """The LISTEN connection stopped answering or delivering."""


class Listener:
    """Keeps one LISTEN connection alive and calls ``on_wake(queue)`` for each hint
    (``None`` after every (re)connect: catch up on what was missed)."""

    def __init__(
        self,
        dsn: str,
        on_wake: Callable[[str | None], None],
        on_control: Callable[[str], None] = lambda _message: None,
        *,
        probe_interval: float = 5.0,
        probe_timeout: float = 3.0,
        # Reconnect attempts back off to one every 2 s, no further: after an outage the
        # listener is back (and catches up) within 2 s of the server. One connection
        # attempt every 2 s per daemon costs the server nothing worth saving.
        max_backoff: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._on_wake = on_wake
        self._on_control = on_control
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._max_backoff = max_backoff
        self._probe_token = ""
        self._probe_seen = asyncio.Event()
        self._lost = asyncio.Event()
        self.connected = False
        self.connects = 0
        self.last_ok = 0.0  # loop time of the last proof of life
        self.ready = asyncio.Event()
        self._id = secrets.token_hex(4)

    async def run(self) -> None:
        """The listener service: runs until cancelled."""
        while True:
            conn = await self._connect()
            try:
                await self._serve(conn)
            except (ListenerDead, Exception) as exc:
                if not isinstance(exc, ListenerDead) and not db.is_transient(exc):
                    raise
                log.warning("listener_lost", error=db.describe_db_error(exc))
            finally:
                self.connected = False
                conn.terminate()

    async def _connect(self) -> db.Connection:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "listener_connect_failed",
                attempt=state.attempt_number,
                retry_in_s=round(state.next_action.sleep if state.next_action else 0.0, 2),
                error=db.describe_db_error(exc) if exc else None,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: db.is_transient(e) or isinstance(e, OSError)),
            wait=FullJitter(first=0.2, cap=self._max_backoff),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await db.connect(
                    self._dsn, timeout=self._probe_timeout + 2, application_name="importd-listener"
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_notification(
        self, _conn: db.Connection, _pid: int, _channel: str, payload: object
    ) -> None:
        assert isinstance(payload, str)  # a NOTIFY payload is text (asyncpg's type: object)
        if payload.startswith(_PROBE_PREFIX):
            if payload == self._probe_token:
                self._probe_seen.set()
            return
        self._on_wake(payload or None)

    async def _serve(self, conn: db.Connection) -> None:
        loop = asyncio.get_running_loop()
        self._lost.clear()
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notification)
        await conn.add_listener(
            CONTROL_CHANNEL, lambda _c, _p, _ch, payload: self._on_control(payload)
        )
        self.connects += 1
        self.connected = True
        self.last_ok = loop.time()
        log.info(
            "listener_reconnected" if self.connects > 1 else "listener_connected", channel=CHANNEL
        )
        self._on_wake(None)  # catch up on anything committed while we were not listening
        self.ready.set()
        while True:
            lost = asyncio.create_task(self._lost.wait())
            done, _ = await asyncio.wait([lost], timeout=self._probe_interval)
            lost.cancel()
            if done:
                raise ListenerDead("the connection was closed")
            await self._probe(conn)
            self.last_ok = loop.time()

    async def _probe(self, conn: db.Connection) -> None:
        self._probe_token = f"{_PROBE_PREFIX}{self._id}:{secrets.token_hex(4)}"
        self._probe_seen.clear()
        try:
            async with asyncio.timeout(self._probe_timeout):
                await conn.execute(sql.query("notify_channel"), CHANNEL, self._probe_token)
                await self._probe_seen.wait()
        except TimeoutError:
            raise ListenerDead(
                f"no answer to the health probe within {self._probe_timeout:g} s"
            ) from None
