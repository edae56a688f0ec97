"""The check ahead: while the loader's connection is in the COPY of one chunk, another
connection of the pool has PostgreSQL judge the next chunk's suspects (the rows the
screen could not vouch for: ``Copier.verdicts``) and, once the target refused rows, find
the rows of the next chunk its NOT NULL and CHECK refuse (``CheckTable.find_refused``).
The loader then finds the verdicts on the chunk (``Batch.verdicts``, ``Screened.settled``,
``Screened.refused``) and runs only the COPY of the rest, as for a clean chunk.

Only a head start: when no connection is free at once, or the check fails, nothing is
set and the loader does the work itself, with the same result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

from ... import db
from ..records import Records
from .batches import Batch, Screened
from .checking import TRY

if TYPE_CHECKING:
    from .copying import Copier

# Seconds a connection taken with a short acquire timeout gets to be reset when it is
# released (asyncpg would give the release the acquire's timeout).
RELEASE_TIMEOUT = 30.0

# Milliseconds the check ahead's transaction waits for a lock before it steps aside
# (``sql/queries/ahead_lock_timeout.sql``): a lock queued behind the loader's would
# otherwise hold it, and the loader, waiting for it, forever.
LOCK_TIMEOUT_MS = 50


def start(
    copier: Copier,
    pool: asyncpg.Pool,
    target: Batch | Screened,
    records_of: Callable[[], Records] | None = None,
) -> None:
    """Start ``check`` for ``target`` as a task of its own (its ``ahead``,
    awaited by the loader), so that the producer goes on preparing meanwhile."""
    if _converts(copier, target) or _finds_refused(copier, target, records_of):
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        target.ahead = ready
        task = asyncio.create_task(check(copier, pool, target, records_of, ready))
        _running.add(task)
        task.add_done_callback(_running.discard)
        # (its errors are logged in it; retrieved here so that none goes unretrieved)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


# The checks under way (a task is only weakly held by the loop), until each ends.
_running: set[asyncio.Task[None]] = set()


def _converts(copier: Copier, target: Batch | Screened) -> bool:
    """Whether ``check`` converts the suspects of ``target``: when there are
    some and they are fewer than a quarter of its rows (or lines)."""
    if copier.types is None:
        return False
    if isinstance(target, Screened):
        return 0 < len(target.rows) <= target.lines // 4
    suspects = target.suspects
    return bool(suspects) and len(suspects or ()) <= len(target) // 4


def _finds_refused(
    copier: Copier, target: Batch | Screened, records_of: Callable[[], Records] | None
) -> bool:
    """Whether ``check`` finds the rows of ``target`` (a chunk's bytes) that the
    target's NOT NULL and CHECK refuse: after a chunk with such rows, when
    ``CheckTable.filtered`` applies."""
    return (
        isinstance(target, Screened)
        and records_of is not None
        and copier.checks.refusing
        and copier.checks.filtering
    )


async def check(
    copier: Copier,
    pool: asyncpg.Pool,
    target: Batch | Screened,
    records_of: Callable[[], Records] | None = None,
    ready: asyncio.Future[None] | None = None,
) -> None:
    """Have PostgreSQL convert the suspects of ``target`` now, on a connection of
    their own, while the chunk before is in its COPY: the loader then finds the
    verdicts ready (``verdicts``) and runs only the COPY of the rest, as for a
    clean chunk. A conversion depends on the value, its type and the session's
    settings (DateStyle, TimeZone), which every connection of the pool has alike
    (asyncpg resets them on release), not on the transaction: the verdicts are the
    ones the loader's own connection would give. When no connection is free at
    once, or the check cannot be done so, nothing is set and the loader checks the
    suspects itself.

    After a chunk with rows the target refused, the rows of a chunk's bytes that
    its NOT NULL and CHECK refuse are found here too (``CheckTable.find_refused``): the
    loader then COPYs the rest into the target and only those rows go in one by
    one. (The test is immutable: what it says of a row does not depend on the
    connection either.)

    ``ready`` is set once the findings are on ``target`` (or once there will be none):
    the loader waits for that, not for the check's transaction to end and its
    connection to go back to the pool (the commit empties the temporary tables: a few
    milliseconds a chunk)."""
    try:
        await _check(copier, pool, target, records_of, ready)
    finally:
        _set(ready)


async def _check(
    copier: Copier,
    pool: asyncpg.Pool,
    target: Batch | Screened,
    records_of: Callable[[], Records] | None,
    ready: asyncio.Future[None] | None,
) -> None:
    """``check``'s work."""
    checks = _converts(copier, target)
    refused = _finds_refused(copier, target, records_of)
    if not checks and not refused:
        return
    if isinstance(target, Screened):
        rows = target.rows
    else:
        assert target.suspects is not None
        rows = target.subset(target.suspects)
    try:
        conn = await pool.acquire(timeout=0.05)
    except TimeoutError:
        return  # (never wait: the loader may hold the pool's last connections)
    try:
        async with conn.transaction():
            await db.one(conn, "ahead_lock_timeout", f"{LOCK_TIMEOUT_MS}ms")
            await conn.execute(f"SAVEPOINT {TRY}")
            into = ("pg_temp", copier.checks.name)
            verdicts = await copier.verdicts(conn, into, rows) if checks else {}
            settled = None
            if verdicts is not None and isinstance(target, Screened):
                settled = copier.settle_screened(target, verdicts)
            if verdicts is not None and checks:
                # (A conversion's verdicts: good whatever becomes of this transaction.)
                target.verdicts = verdicts
                if isinstance(target, Screened):
                    target.settled = settled
            if refused and settled is not None and records_of is not None:
                assert isinstance(target, Screened)
                target.refused = await copier.checks.find_refused(
                    conn, target, settled[0], settled[2], records_of
                )
            _set(ready)
    except Exception as exc:
        # Only a head start: the loader checks the suspects itself, and meets the
        # same error there if it lasts.
        _log_failed(copier, exc)
    finally:
        try:
            # (Its own budget: asyncpg gives a release the acquire's 50 ms by
            # default, which a loaded server's reset of the session can exceed.)
            await pool.release(conn, timeout=RELEASE_TIMEOUT)
        except Exception as exc:  # asyncpg closed it; the pool opens another
            _log_failed(copier, exc)


def _set(ready: asyncio.Future[None] | None) -> None:
    if ready is not None and not ready.done():
        ready.set_result(None)


def _log_failed(copier: Copier, exc: Exception) -> None:
    if db.is_transient(exc):
        copier.log.warning("check_ahead_failed", error=db.describe_db_error(exc))
    else:
        copier.log.error("check_ahead_failed", error=db.describe_db_error(exc), exc_info=exc)
