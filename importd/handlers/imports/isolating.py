"""Bad rows isolated COPY by COPY: the last of ``copying``'s means, for rows that do not
even split into the table's fields (see its module docstring), and for what the check
could not take.

A COPY error names its line: the rows before it are known good and travel with the next
window, the bad one is recorded, and the window after it is sized by the gap between bad
rows (doubling while COPYs succeed). An error that names no line (or not the one
PostgreSQL meant) is isolated by halves. Every group of rows that loads is kept behind a
new savepoint ``importd_try``; a failed COPY rolls back to the last one.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from ... import tables
from ...db import Connection
from ...repository import RowFailure
from .batches import locate
from .checking import TRY, copy_in
from .common import ROW_LEVEL, Row

MIN_WINDOW = 16


async def try_copy(
    conn: Connection,
    into: tuple[str, str],
    columns: list[str],
    payload: bytes,
    fmt: tables.CopyFormat,
) -> asyncpg.PostgresError | None:
    """COPY ``payload`` after savepoint ``importd_try``; on a row-level error, roll
    back to it (it stays) and return the error."""
    try:
        await copy_in(conn, into[0], into[1], columns, payload, fmt)
    except ROW_LEVEL as exc:
        await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
        return exc
    return None


class Isolation:
    """Isolating the bad rows of rows whose COPY into ``into`` failed, over ``conn``
    (after savepoint ``importd_try``): ``describe`` tells an error's line and message
    (under the user's column names), ``reject`` records a row as rejected; ``csv``: lines
    counted as PostgreSQL counts CSV lines; ``doubt``: that count may be off (an escape
    other than the quote), so a row found through a multi-line record is tried alone."""

    def __init__(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        fmt: tables.CopyFormat,
        describe: Callable[[asyncpg.PostgresError], tuple[int | None, str]],
        reject: Callable[[list[RowFailure], Row, str], None],
        *,
        csv: bool,
        doubt: bool,
    ) -> None:
        self.conn, self.into, self.columns, self.fmt = conn, into, columns, fmt
        self.describe, self.reject = describe, reject
        self.csv, self.doubt = csv, doubt

    async def _try(self, payload: bytes) -> asyncpg.PostgresError | None:
        return await try_copy(self.conn, self.into, self.columns, payload, self.fmt)

    async def run(
        self,
        rows: list[Row],
        failures: list[RowFailure],
        error: asyncpg.PostgresError,
    ) -> int:
        """Load ``rows`` whose COPY failed with ``error``; rejected rows go to
        ``failures``. Returns the rows loaded (see the module docstring)."""
        loaded = 0
        carried: list[Row] = []  # known good rows, sent with the next window
        start, size = 0, len(rows)  # the window: rows[start:start + size]
        while True:
            # Here: the COPY of carried + rows[start:start + size] failed with ``error``.
            batch = carried + rows[start : start + size]
            line, message = self.describe(error)
            index = locate(batch, line, self.csv)
            if index is not None and index >= len(carried) and self.doubt:
                doubtful = any(
                    row.payload.count(b"\n") > 1 or b"\r" in row.payload
                    for row in batch[: index + 1]
                )
                if doubtful:
                    alone = await self._try(batch[index].payload)
                    if alone is None:  # it loads: the count was off; go by halves
                        await self.conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
                        index = None
                    else:
                        message = self.describe(alone)[1]
            if index is None or index < len(carried):
                loaded += await self._bisect(batch, failures)
                carried, start, size = [], start + size, MIN_WINDOW
            else:
                self.reject(failures, batch[index], message)
                gap = index + 1 - len(carried)
                carried, start = batch[:index], start + gap
                size = max(MIN_WINDOW, 2 * gap)
            # Windows that load double; the first that fails goes round again.
            while True:
                if len(carried) > max(4 * MIN_WINDOW, 2 * size):
                    # Good rows pile up when every window fails: load them on their own
                    # rather than send them again with each window.
                    if await self._settle(carried) is None:
                        loaded += len(carried)
                    else:
                        loaded += await self._bisect(carried, failures)
                    carried = []
                window = rows[start : start + size]
                if not window:
                    if carried:
                        error_left = await self._settle(carried)
                        if error_left is not None:
                            loaded += await self._bisect(carried, failures)
                        else:
                            loaded += len(carried)
                    return loaded
                failed = await self._settle(carried + window)
                if failed is not None:
                    error, size = failed, len(window)
                    break
                loaded += len(carried) + len(window)
                carried, start, size = [], start + len(window), size * 2

    async def _settle(self, rows: list[Row]) -> asyncpg.PostgresError | None:
        """COPY ``rows``; on success keep them (a new savepoint after them)."""
        error = await self._try(b"".join(row.payload for row in rows))
        if error is None:
            await self.conn.execute(f"RELEASE SAVEPOINT {TRY}; SAVEPOINT {TRY}")
        return error

    async def _bisect(
        self,
        rows: list[Row],
        failures: list[RowFailure],
    ) -> int:
        """Isolate bad rows by halves, when an error names no line (or not the one
        PostgreSQL meant)."""
        error = await self._settle(rows)
        if error is None:
            return len(rows)
        if len(rows) == 1:
            self.reject(failures, rows[0], self.describe(error)[1])
            return 0
        half = len(rows) // 2
        return await self._bisect(rows[:half], failures) + await self._bisect(rows[half:], failures)
