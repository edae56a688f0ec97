"""What a handler gets besides its job: ``JobContext`` and the ``HandlerSettings`` in it.

A handler sees the job, its deadline, progress reporting, the handlers' connection pool,
the daemon's shared HTTP client, a bound logger and the settings meant for handlers.
Nothing of the daemon itself: no DSN or other secret it does not need, no repository, no
executor, no worker id. This module imports neither the executor nor the daemon, so the
handlers (and a third-party handler package, which imports only ``importd``) never pull
them in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .db import Connection, Pool
from .models import Job, Outcome
from .redaction import redact_value

if TYPE_CHECKING:
    import httpx

    from .config import Settings

# The largest value a bigint progress column holds.
_BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class HandlerSettings:
    """The settings a handler may read: where imports may come from and go to, the HTTP
    endpoint, the COPY sizes and streams. No DSN, no daemon internals (slots, leases, intervals).

    The fields are the settings declared with ``setting(..., handler=True)`` in
    ``config.Settings``, with their names and types (written here for mypy) and no
    defaults of their own; tests/unit/test_context.py checks that they stay in step."""

    import_roots: tuple[str, ...]
    url_prefixes: tuple[str, ...]
    tables: tuple[str, ...]
    http_url: str | None
    # The bearer token the ``http`` handler sends; never shown in a repr.
    http_token: str | None = dataclasses.field(repr=False)
    http_token_prefixes: tuple[str, ...]
    copy_chunk_rows: int
    copy_chunk_bytes: int
    max_record_bytes: int
    copy_streams: int

    @classmethod
    def of(cls, settings: Settings) -> HandlerSettings:
        """The handlers' part of ``settings`` (same names, same values)."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def defaults(cls) -> HandlerSettings:
        """The handlers' part of the default settings."""
        from .config import Settings  # noqa: PLC0415  (config is not needed otherwise)

        return cls.of(Settings())


@dataclass(frozen=True)
class Fence:
    """This run's hold on its row, for writes a handler makes in its own transaction:
    each changes the row only while the run still holds the lease. Built by the executor;
    a handler only sees it through ``JobContext.complete_in`` / ``save_checkpoint``."""

    # (conn, outcome) → whether the lease still held and the outcome was written.
    finish: Callable[[Any, Outcome], Awaitable[bool]]
    # (conn, checkpoint, counters) → whether the lease still held and it was stored.
    checkpoint: Callable[..., Awaitable[bool]]


class JobContext:
    """What a handler gets besides its job: the handlers' connection pool, a bound
    logger, progress reporting, the deadline, the handler settings and the daemon's
    shared HTTP client."""

    def __init__(
        self,
        job: Job,
        *,
        pool: Pool,
        log: Any,
        deadline: float,
        settings: HandlerSettings | None = None,
        http: httpx.AsyncClient | None = None,
        fence: Fence | None = None,
        on_rows: Callable[[int, int], None] | None = None,
        make_fence: Callable[[], Fence] | None = None,
        started: float | None = None,
    ) -> None:
        self.job = job
        self.pool = pool  # the handlers' pool (not the engine's)
        self.log = log
        self.deadline = deadline  # on the event loop's clock
        self.settings = settings if settings is not None else HandlerSettings.defaults()
        self.http = http  # one shared client per daemon
        self._fence = fence
        self._make_fence = make_fence  # built on first use: most handlers never write
        self._on_rows = on_rows  # (rows loaded, rows rejected) since the last report
        self._rows_seen = (job.rows_done, job.rows_failed)  # an earlier attempt's count
        self._progress: dict[str, int | None] = {}
        # Progress reports made / read by the heartbeat: the run's last write carries
        # what the heartbeat has not read (a handler shorter than a heartbeat interval).
        self._reports = 0
        self._reports_read = 0
        self.started = started if started is not None else asyncio.get_running_loop().time()
        self.finished_in_transaction = False
        # What the job's user can change, said after "JobTimeout: …" should this run
        # exceed its timeout (a handler sets it; e.g. an atomic import: nothing was kept).
        self.timeout_hint: str | None = None

    @property
    def remaining(self) -> float:
        """Seconds left before the job's timeout (also from a synchronous handler's thread)."""
        return self.deadline - time.monotonic()

    def progress(
        self,
        done: int | None = None,
        total: int | None = None,
        *,
        failed: int | None = None,
        bytes_read: int | None = None,
    ) -> None:
        """Record progress; the heartbeat writes it to the job row about once a second,
        and the run's outcome writes what no heartbeat read.

        Raises ``ValueError`` here, in the handler, for a value the job row cannot hold:
        not an integer, negative, beyond a bigint, or ``done`` above ``total``."""
        given = (
            ("rows_done", "done", done),
            ("rows_total", "total", total),
            ("rows_failed", "failed", failed),
            ("bytes_read", "bytes_read", bytes_read),
        )
        for _, name, value in given:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"ctx.progress: {name} must be an int, not {type(value).__name__} {value!r}"
                )
            if not 0 <= value <= _BIGINT_MAX:
                raise ValueError(f"ctx.progress: {name} must be between 0 and 2**63-1, not {value}")
        new_done = done if done is not None else self._progress.get("rows_done")
        new_total = total if total is not None else self._progress.get("rows_total")
        if new_done is not None and new_total is not None and new_done > new_total:
            raise ValueError(f"ctx.progress: done ({new_done}) is more than total ({new_total})")
        for key, _, value in given:
            if value is not None:
                self._progress[key] = value
        self._reports += 1
        if self._on_rows is not None and (done is not None or failed is not None):
            seen_done, seen_failed = self._rows_seen
            new_done = done if done is not None else seen_done
            new_failed = failed if failed is not None else seen_failed
            self._on_rows(new_done - seen_done, new_failed - seen_failed)
            self._rows_seen = (new_done, new_failed)

    def take_progress(self) -> dict[str, int | None]:
        """The progress recorded so far (for the heartbeat)."""
        self._reports_read = self._reports  # (read first: a report meanwhile stays unread)
        return dict(self._progress)

    def unread_progress(self) -> dict[str, int | None] | None:
        """The progress recorded so far if the heartbeat has not read all of it, else
        None: what the run's last write must carry."""
        return dict(self._progress) if self._reports != self._reports_read else None

    async def complete_in(self, conn: Connection, result: Any = None) -> bool:
        """Mark the job completed inside ``conn``'s open transaction, so that the
        handler's own writes and the completion commit together. False when the lease is
        lost: the handler must then roll back (raise). A result PostgreSQL cannot store
        raises ``ValueError``."""
        problem = result_problem(result)
        if problem is not None:
            raise ValueError(f"ResultNotJSON: the job's result cannot be stored: {problem}")
        self.finished_in_transaction = await self._held().finish(conn, Outcome.completed(result))
        return self.finished_in_transaction

    async def save_checkpoint(
        self,
        conn: Connection,
        checkpoint: dict[str, Any],
        *,
        rows_done: int,
        rows_failed: int,
        bytes_read: int,
        rows_total: int | None = None,
    ) -> bool:
        """Store ``checkpoint`` (what a later attempt resumes from, as ``job.checkpoint``)
        and the counters inside ``conn``'s open transaction, fenced by the lease: False
        when the lease is lost (the handler must then roll back)."""
        return await self._held().checkpoint(
            conn,
            checkpoint,
            rows_done=rows_done,
            rows_failed=rows_failed,
            bytes_read=bytes_read,
            rows_total=rows_total,
        )

    def _held(self) -> Fence:
        if self._fence is None and self._make_fence is not None:
            self._fence = self._make_fence()
        if self._fence is None:
            raise RuntimeError("this JobContext runs outside a daemon: no lease to write under")
        return self._fence


def _where(path: Sequence[Any]) -> str:
    return "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in path)


def result_problem(result: Any) -> str | None:
    """Why PostgreSQL's jsonb would refuse ``result``, or None when it is storable."""
    return encode_result(result)[1]


def encode_result(result: Any) -> tuple[str | None, str | None]:
    """``result`` as the JSON text to store, or why PostgreSQL's jsonb would refuse it:
    (text, None) or (None, problem). None encodes as (None, None).

    JSON has no NaN or Infinity, and PostgreSQL text (and so jsonb) holds neither a NUL
    character nor half of a surrogate pair; everything else json.dumps refuses too."""
    if result is None:
        return None, None
    try:
        return _encode(result)
    except Exception as exc:  # the value's own code failed (a __iter__, __str__ that raises)
        try:
            text = str(exc)
        except Exception:
            text = ""
        return None, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _encode(result: Any) -> tuple[str | None, str | None]:
    stack: list[tuple[Any, tuple[Any, ...]]] = [(result, ())]
    seen: set[int] = set()
    shared = False
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return None, f"{value!r} at {_where(path)} is not a JSON number"
        if isinstance(value, str):
            if "\x00" in value:
                return None, f"the string at {_where(path)} holds a NUL character (\\u0000)"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None, (
                    f"the string at {_where(path)} is not valid Unicode (a lone surrogate)"
                )
        elif isinstance(value, dict | list | tuple):
            if id(value) in seen:
                shared = True  # perhaps a cycle: json.dumps below names it
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str) and (
                        "\x00" in key
                        or key.encode("utf-8", "surrogatepass") != key.encode("utf-8", "replace")
                    ):
                        return None, f"a key at {_where(path)} holds a NUL or lone surrogate"
                    stack.append((item, (*path, key)))
            else:
                stack.extend((item, (*path, n)) for n, item in enumerate(value))
    try:
        if shared:
            json.dumps(result, allow_nan=False)  # a cycle fails here, named as one
        # What is stored is redacted, like every result (a token an endpoint echoed).
        return json.dumps(redact_value(result), allow_nan=False), None
    except (TypeError, ValueError, RecursionError) as exc:
        return None, str(exc) or type(exc).__name__
