"""Staging → target: the staged strategies (``StagedPerChunk``, ``StagedAtomic``) move
staged rows into the target with the conflict rule; rows the target rejects (NOT NULL,
CHECK, unique, foreign keys) are isolated by bisection on their source lines, and so are
rows that share a key under ``on_conflict: update`` (one ``ON CONFLICT DO UPDATE`` may
not touch a row twice: the halves are moved one after the other, in file order).

A rejected row's raw record is its text in the source, not its staged values:
``StagedPerChunk`` still holds the chunk's records (``Move.isolating``'s ``raws``);
``StagedAtomic`` moves chunks long after they were read, so its rows are marked
(``Move.rendered``) and their records read again from the source once, at the end
(``StagedAtomic._with_source_records``)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from ... import tables
from ...db import Connection, Record
from ...models import PermanentError
from ...repository import RowFailure
from .common import RAW_LIMIT, ROW_CAUSED, describe, raw_text

ALL_LINES = (0, 2**62)


class Move:
    """Moves rows of staging tables into the target, for one import."""

    def __init__(
        self,
        target: tables.Table,
        columns: list[str],
        on_conflict: str,
        conflict_columns: list[str],
        check: Callable[[list[RowFailure]], None],
        encoding: str,
    ) -> None:
        self.target = target
        self.encoding = encoding
        # Rejected rows whose raw record is, for now, their staged values as JSON: the
        # source is read again for them (see the module docstring).
        self.rendered: set[int] = set()
        self.columns = columns
        self.on_conflict = on_conflict
        self.conflict_columns = conflict_columns
        self._check = check

    async def isolating(
        self,
        conn: Connection,
        staging: tables.Staging,
        lines: tuple[int, int],
        failures: list[RowFailure],
        raws: tuple[Sequence[int], Sequence[bytes]] | None = None,
    ) -> int:
        """Move staged rows of ``lines`` to the target; rows the target rejects are
        isolated by bisection and go to ``failures``. Returns rows moved.

        ``raws``: the source lines (ascending) and records of the staged rows, when the
        caller still holds them; without them, a rejected row is marked in
        ``rendered``."""
        statement = await staging.move_statement(
            conn, self.target, self.columns, self.on_conflict, self.conflict_columns
        )
        indexed = False
        whole: bool | None = None  # whether a feature error is the statement's own

        async def statement_refused(lo: int) -> bool:
            """Whether the move fails with no row at all (a rule that forbids ON
            CONFLICT, say): then a feature error is the statement's, not a row's."""
            nonlocal whole
            if whole is None:
                try:
                    async with conn.transaction():
                        await conn.execute(statement, lo, lo)
                    whole = False
                except asyncpg.FeatureNotSupportedError:
                    whole = True
            return whole

        async def move(lo: int, hi: int) -> int:
            nonlocal indexed
            try:
                async with conn.transaction():
                    status = await conn.execute(statement, lo, hi)
                return int(status.rsplit(" ", 1)[-1])
            except asyncpg.InvalidColumnReferenceError as exc:
                if self.on_conflict == "error":
                    raise
                # The ON CONFLICT clause names no unique index or constraint.
                raise PermanentError(
                    f"payload.conflict_columns: {exc.message}; name the columns of a "
                    f"unique index or constraint of {self.target.schema}.{self.target.name}"
                ) from exc
            except (*ROW_CAUSED, asyncpg.CardinalityViolationError) as exc:
                # (CardinalityViolation: ON CONFLICT DO UPDATE met a key twice in the
                # rows of one statement; the halves go in one after the other, in file
                # order, so the later record wins, as row by row.)
                if isinstance(exc, asyncpg.FeatureNotSupportedError) and (
                    await statement_refused(lo)
                ):
                    raise PermanentError(
                        f"payload.on_conflict: {exc.message}; importd moves rows with INSERT "
                        f"… ON CONFLICT, which PostgreSQL refuses here: use on_conflict "
                        f"'error', or change {self.target.schema}.{self.target.name}"
                    ) from exc
                if not indexed:
                    await staging.index_lines(conn)
                    indexed = True
                stats = await staging.range_stats(conn, lo, hi)
                if stats["n"] == 0:
                    return 0
                if stats["n"] == 1:
                    row = await staging.one_row(conn, lo, hi, self.columns)
                    line = row["line"] if row else lo
                    failures.append(RowFailure(line, describe(exc)[1], self._raw(line, row, raws)))
                    self._check(failures)
                    return 0
                mid = stats["mid"] if stats["mid"] > stats["lo"] else stats["lo"] + 1
                return await move(lo, mid) + await move(mid, hi)

        return await move(*lines)

    def _raw(
        self,
        line: int,
        row: Record | None,
        raws: tuple[Sequence[int], Sequence[bytes]] | None,
    ) -> str | None:
        """The raw record of rejected source line ``line``."""
        if raws is not None:
            index = bisect.bisect_left(raws[0], line)
            if index < len(raws[0]) and raws[0][index] == line:
                return raw_text(raws[1][index], self.encoding)
        if row is None:
            return None
        self.rendered.add(line)
        return str(row["raw"])[:RAW_LIMIT]


class Mover:
    """Atomic imports: moves each staged chunk into the target inside one transaction
    that stays open until the job completes. It runs beside the loader, so the move of
    chunk n overlaps the COPY of chunk n + 1 (two server processes at work), and the
    rows become visible all at once, at completion. A crash rolls the moves back; the
    staging tables stay, and the next attempt moves them again."""

    def __init__(self, pool: Any, move: Move) -> None:
        self._pool = pool
        self._move = move
        self._queue: asyncio.Queue[tables.Staging | None] = asyncio.Queue()
        self._conn: Any = None
        self._tx: Any = None
        self._task: asyncio.Task[None] | None = None
        self.moved = 0
        self.failures: list[RowFailure] = []
        self.tables = 0
        self.waited = 0.0

    async def start(self) -> None:
        """Take a connection and open the transaction."""
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        self._task = asyncio.create_task(self._run())

    def add(self, table: tables.Staging) -> None:
        """Move ``table`` once the moves before it are done."""
        self._queue.put_nowait(table)

    def check(self) -> None:
        """Raise the mover's error, if it failed."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def _run(self) -> None:
        while (table := await self._queue.get()) is not None:
            self.moved += await self._move.isolating(self._conn, table, ALL_LINES, self.failures)
            self.tables += 1

    async def finish(self) -> Any:
        """Wait for every move; the connection, its transaction still open."""
        assert self._task is not None
        began = time.monotonic()
        self._queue.put_nowait(None)
        await self._task
        self.waited = time.monotonic() - began
        return self._conn

    async def commit(self) -> None:
        """Commit the moves (and the completion written in the same transaction)."""
        await self._tx.commit()
        self._tx = None

    async def close(self) -> None:
        """Roll back what was not committed and give the connection back."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is None:
            return
        try:
            if self._tx is not None:
                with contextlib.suppress(Exception):
                    await self._tx.rollback()
                self._tx = None
        finally:
            await self._pool.release(self._conn)
            self._conn = None
