"""How an import's rows reach its target: the four strategies side by side, a class
each, chosen by the payload (``choose``). ``Import`` (``job``) runs the pipeline they share
(source → records → COPY data); a strategy takes the chunks from there: where their rows
go, when they commit with the checkpoint, how an earlier run is resumed, how the job
completes.

- ``Direct`` (``atomic: false``, ``on_conflict: error``): COPY into the target; the
  chunks of about a second commit together, with the checkpoint that accounts for them.
  A retry resumes after the last.
- ``StagedPerChunk`` (``atomic: false``, a conflict rule): COPY into the staging table
  ``job_<id>``, moved into the target with the rule (``Move.isolating``) in the chunk's
  transaction, then emptied. Committed and resumed as ``Direct``.
- ``SingleTransaction`` (``atomic: true`` from a file, ``on_conflict: error``): COPY into
  the target in one transaction, which completes the job: the rows become visible with
  it. A retry starts over.
- ``StagedAtomic`` (``atomic: true`` from a URL, or with a conflict rule): COPY each chunk
  into an UNLOGGED staging table of its own, committed with the checkpoint; a ``Mover``
  moves them into the target meanwhile, in a transaction that completes the job. A retry
  resumes the download (``Range``) and the staging, and moves every staged chunk again.

Why an atomic import of a file does not stage: a staged import that is retried resumes
its staging but must move every staged row again (the move's transaction died with the
run), so a retry costs about what a fresh start in one transaction costs, while every
first run pays the server's work twice (COPY into staging, then ``INSERT … SELECT``). A
URL's import stages: its retry resumes the download with ``Range`` instead of fetching
the file again.

The base ``Strategy`` holds what they share: one chunk in a savepoint of the open
transaction (``load_chunk``, rolled back alone past ``max_errors``), the commit of the
chunks with their checkpoint, fenced by the lease (``commit``), and the loaders: one
connection (``_serial``) or, with ``copy_streams`` > 1 where the chunks' transactions are
independent (``Direct``, ``StagedAtomic``), several (``_parallel``), each chunk in a
transaction of its own, committed in chunk order with its checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import asyncpg
import httpx

from ... import sql, tables
from ...db import Connection
from ...models import PermanentError
from ...repository import RowFailure, record_failures
from .. import spec
from .ahead import RELEASE_TIMEOUT
from .common import RAW_LIMIT, LeaseLost, Prepared, TooManyErrors, raw_text
from .moving import Mover

if TYPE_CHECKING:
    from .job import Import

CHECKPOINT_INTERVAL = 1.0  # seconds of loading per committed checkpoint, at most
STREAM_WAIT = 5.0  # seconds to wait for the pool's connections of parallel COPY streams
# Starts the raw record of a row the target rejected when the source could not be read
# again: what follows is the row's staged values as JSON, not the source text.
UNREAD_MARK = "[not the source text"

# The prepared chunks, from ``Import._pipeline`` (an Exception: the reader's; None: done).
ChunkQueue = asyncio.Queue[Prepared | Exception | None]


@dataclass
class Span:
    """Chunks loaded in one open transaction, not yet committed."""

    conn: Any
    tx: Any
    started: float
    failures: list[RowFailure] = field(default_factory=list)
    parts: list[tables.Staging] = field(default_factory=list)
    next_line: int = 0

    @classmethod
    async def open(cls, pool: Any, *, immediate: bool) -> Span:
        """Take a connection and begin the transaction (``immediate``: see
        ``Strategy.immediate``)."""
        conn = await pool.acquire()
        tx = conn.transaction()
        try:
            await tx.start()
            if immediate:
                await conn.execute(sql.query("constraints_immediate"))
        except BaseException:
            with contextlib.suppress(Exception):
                await tx.rollback()
            await pool.release(conn)
            raise
        return cls(conn, tx, time.monotonic())

    async def close(self, pool: Any) -> None:
        """Roll back what was not committed; give the connection back."""
        try:
            if self.tx is not None:
                with contextlib.suppress(Exception):
                    await self.tx.rollback()
                self.tx = None
        finally:
            await pool.release(self.conn)


async def check_deferred(conn: Connection, imp: Import) -> None:
    """Check the deferred constraints of the atomic import's one transaction now, before
    it completes: a violation fails the job at once, saying which constraint and why
    (a COMMIT that fails would be retried, and fail the same way each time)."""
    try:
        await conn.execute(sql.query("constraints_immediate"))
    except asyncpg.IntegrityConstraintViolationError as exc:
        detail = f" ({exc.detail})" if exc.detail else ""
        table = f"{imp.spec.schema}.{imp.spec.table}"
        raise PermanentError(
            f"DeferredConstraint: {exc.message}{detail}; a DEFERRABLE INITIALLY DEFERRED "
            f"constraint of {table}, checked once the whole file was loaded: an atomic "
            "import cannot tell which row broke it, and nothing was loaded. Fix the rows "
            "it names, or import with atomic: false, which checks such constraints with "
            "each chunk and rejects the rows that break them"
        ) from exc


def choose(s: spec.ImportSpec) -> type[Strategy]:
    """The strategy of an import (see the module docstring)."""
    if not s.atomic:
        return Direct if s.on_conflict == "error" else StagedPerChunk
    from_file = s.source.partition(":")[0].lower() == "file"
    return SingleTransaction if from_file and s.on_conflict == "error" else StagedAtomic


async def drop_staged(conn: Connection, job_id: int) -> None:
    """Drop every staging table of the job (any run's, any release's)."""
    for table in await tables.Staging.all_of(conn, job_id):
        await table.drop(conn)


class Strategy:
    """What the strategies share: chunks loaded in savepoints of a transaction that
    commits, with the checkpoint that accounts for them, about once a second (or, over
    several connections, once per chunk), and a job completed when the last has.
    ``Direct`` is this and nothing more; the others change what the docstrings of their
    methods say."""

    # The rows go to staging tables, each with its source line first (``Copier``'s
    # ``staged``); rows that go to the target as they are may be cut from the source's
    # bytes (``Import._chunks``).
    staged: ClassVar[bool] = False
    # ``copy_streams`` applies: a chunk may commit in a transaction of its own.
    streams: ClassVar[bool] = False
    # The transactions that load chunks check DEFERRABLE INITIALLY DEFERRED constraints
    # (foreign keys, unique keys) at the end of each statement, as if immediate
    # (``sql/queries/constraints_immediate.sql``): deferred to the COMMIT, a violation
    # would fail the checkpoint's commit, every retry the same way, and name no row;
    # checked with the chunk's COPY, its row is found and rejected like any other. (Rows
    # of one chunk may still refer to each other in any order; across chunks, which
    # commit on their own, a deferral to one commit held only by chance anyway.) The
    # atomic strategies, whose one transaction is the whole file, keep the deferral
    # and check it just before they complete (``check_deferred``).
    immediate: ClassVar[bool] = True

    def __init__(self, imp: Import) -> None:
        self.imp = imp
        # Staging tables (chunks) committed so far, in every checkpoint: ``StagedAtomic``
        # makes them; 0 for the others.
        self.parts = 0

    # -- resuming and beginning ----------------------------------------------------

    async def resumable(self, cp: dict[str, Any]) -> bool:
        """Whether checkpoint ``cp`` of an earlier run (of this source and release) can
        be resumed from: what it accounts for was committed."""
        return True

    def resume(self, cp: dict[str, Any]) -> None:
        """Take up the strategy's own part of checkpoint ``cp``."""
        self.parts = cp.get("parts", 0)

    async def begin(self, *, fresh: bool) -> None:
        """Set up what the chunks need, before the first of this run (``fresh``: the
        run starts over). Here: nothing (no run of a direct import stages rows)."""

    # -- loading -------------------------------------------------------------------

    async def load(self, queue: ChunkQueue) -> None:
        """Load the chunks ``queue`` hands over, until its ``None``."""
        streams = self.imp.settings.copy_streams if self.streams else 1
        if streams > 1:
            await self._parallel(queue, streams)
        else:
            await self._serial(queue)

    def _stop_if_failed(self) -> None:
        """Raise the error of what runs beside the chunks, if it failed (the move of
        ``StagedAtomic``): no chunk is loaded for a job that fails anyway."""

    async def _serial(self, queue: ChunkQueue) -> None:
        """Load the chunks over one connection, a transaction about every second."""
        # Chunks share a transaction until it is about a second old (less under a short
        # timeout): the checkpoint, and so the job row, is written about once a second,
        # and a crash costs at most that much work.
        imp = self.imp
        interval = min(CHECKPOINT_INTERVAL, imp.job.timeout / 10)
        span: Span | None = None
        try:
            while (item := await queue.get()) is not None:
                queue.task_done()
                if isinstance(item, Exception):
                    raise item
                if span is None:
                    span = await Span.open(imp.ctx.pool, immediate=self.immediate)
                await self.load_chunk(span, item)
                if time.monotonic() - span.started >= interval:
                    await self.commit(span)
                    await span.close(imp.ctx.pool)
                    span = None
            if span is not None:
                await self.commit(span)
        except TooManyErrors:
            if span is not None:  # what the span found, whatever became of its rows
                await span.close(imp.ctx.pool)
                async with imp.ctx.pool.acquire() as conn, conn.transaction():
                    await record_failures(conn, imp.job, span.failures)
                span = None
            raise
        finally:
            if span is not None:
                await span.close(imp.ctx.pool)

    async def load_chunk(self, span: Span, prepared: Prepared) -> None:
        """Load one chunk inside ``span``'s open transaction (committed by ``commit``),
        in a savepoint: past ``max_errors`` this chunk alone is undone, and with
        ``atomic: false`` the chunks before it commit."""
        imp = self.imp
        self._stop_if_failed()  # stop early if the move already failed
        before = (
            imp.budget.loaded,
            imp.offset,
            span.next_line,
            self.parts,
            len(span.parts),
            imp.skipped,
        )
        span.failures.extend(prepared.failures)  # NDJSON rows rejected before COPY
        failures = span.failures
        started = tables.COPY_STARTED.set(prepared.copying.set)
        try:
            await self._load_chunk(span, prepared, failures, before)
        finally:
            tables.COPY_STARTED.reset(started)
            prepared.copying.set()

    async def _load_chunk(
        self, span: Span, prepared: Prepared, failures: list[RowFailure], before: tuple[Any, ...]
    ) -> None:
        """``load_chunk``'s work, in the chunk's savepoint."""
        imp, chunk = self.imp, prepared.chunk
        savepoint = span.conn.transaction()
        await savepoint.start()
        try:
            loaded = await self._copy_chunk(span, prepared, failures)
            imp.budget.loaded += loaded
            imp.offset = chunk.end_offset
            span.next_line = chunk.next_line
            imp.budget.check(failures)
        except TooManyErrors:
            # Undo this chunk only; with atomic: false the chunks before it stay loaded.
            await savepoint.rollback()
            imp.budget.loaded, imp.offset, span.next_line, self.parts, kept, imp.skipped = before
            del span.parts[kept:]
            if not imp.spec.atomic and span.next_line:
                found, span.failures = span.failures, []
                await self.commit(span)
                span.failures = found  # recorded by the caller, once
            raise
        await savepoint.commit()

    async def _copy_chunk(self, span: Span, prepared: Prepared, failures: list[RowFailure]) -> int:
        """COPY one chunk's rows where they go; the rows it loaded."""
        s = self.imp.spec
        return await self.imp.copy(span.conn, (s.schema, s.table), prepared, failures)

    async def commit(self, span: Span) -> None:
        """Record the span's rejected rows and the checkpoint that accounts for its
        chunks, fenced by the lease, and commit them with the rows."""
        imp = self.imp
        conn = span.conn
        await record_failures(conn, imp.job, span.failures)
        imp.budget.failed += len(span.failures)
        checkpoint = imp.checkpoint(span.next_line, self.parts)
        held = await imp.store(conn, checkpoint)
        if not held:
            raise LeaseLost("the job's lease was lost; the uncommitted chunks were rolled back")
        await span.tx.commit()
        span.tx = None
        imp.committed = checkpoint
        self._committed(span)
        imp.ctx.progress(imp.loaded, failed=imp.failed, bytes_read=imp.offset)

    def _committed(self, span: Span) -> None:
        """After ``span`` committed (``StagedAtomic``: its staging tables can move)."""

    def _part(self, number: int) -> tables.Staging | None:
        """The staging table of a chunk of its own (``StagedAtomic``), or None."""
        return None

    async def _parallel(self, queue: ChunkQueue, streams: int) -> None:
        """Load the chunks over ``streams`` connections at once (``copy_streams``), each
        chunk in a transaction of its own. The COPYs overlap; the commits keep the
        chunks' order: a chunk commits, with the checkpoint that accounts for it, only
        once the chunk before it has, so a checkpoint never passes a chunk that is not
        committed. When the pool cannot spare the extra connections at once, fewer
        streams load."""
        imp = self.imp
        pool = imp.ctx.pool
        conns = [await pool.acquire()]
        free: asyncio.Queue[Any] = asyncio.Queue()
        tasks: list[asyncio.Task[None]] = []
        errors: list[BaseException] = []
        try:
            while len(conns) < streams:
                try:
                    conns.append(await pool.acquire(timeout=STREAM_WAIT))
                except TimeoutError:
                    imp.ctx.log.warning("import_streams_reduced", streams=len(conns))
                    break
            for conn in conns:
                free.put_nowait(conn)
            turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            turn.set_result(True)
            part_no = self.parts
            while (item := await queue.get()) is not None:
                queue.task_done()
                if isinstance(item, Exception):
                    raise item
                self._stop_if_failed()
                conn = await free.get()
                if errors:
                    free.put_nowait(conn)
                    break
                part = self._part(part_no)
                if part is not None:
                    part_no += 1
                mine: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                lane = self._lane(conn, item, part, part_no, turn, mine, free, errors)
                tasks.append(asyncio.create_task(lane))
                tasks = [task for task in tasks if not task.done()]
                turn = mine
            await asyncio.gather(*tasks)
            if errors:
                raise errors[0]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in conns:
                try:
                    # (Its own budget, not the acquire's STREAM_WAIT: see RELEASE_TIMEOUT.)
                    await pool.release(conn, timeout=RELEASE_TIMEOUT)
                except Exception as exc:  # asyncpg closed it; the pool opens another
                    imp.ctx.log.warning("connection_release_failed", error=str(exc))

    async def _lane(
        self,
        conn: Any,
        prepared: Prepared,
        part: tables.Staging | None,
        parts: int,
        before: asyncio.Future[bool],
        mine: asyncio.Future[bool],
        free: asyncio.Queue[Any],
        errors: list[BaseException],
    ) -> None:
        """One chunk over one of the parallel connections: COPY it in a transaction,
        wait for the chunk before it to commit, then commit it (or roll it back when an
        earlier chunk failed). Its error goes to ``errors`` once it is its turn.
        ``parts``: the staging tables committed once this chunk is (``StagedAtomic``)."""
        imp = self.imp
        assert imp.target is not None
        s, chunk, budget = imp.spec, prepared.chunk, imp.budget
        failures = list(prepared.failures)  # NDJSON rows rejected before COPY
        # (This task's own context: its COPY lets the producer go on; see load_chunk.)
        tables.COPY_STARTED.set(prepared.copying.set)
        into = (part.schema, part.name) if part else (s.schema, s.table)
        tx = conn.transaction()
        committed = False
        try:
            error: Exception | None = None
            loaded = 0
            try:
                await tx.start()
                if self.immediate:
                    await conn.execute(sql.query("constraints_immediate"))
                if part is not None:
                    await part.create(conn, imp.target, imp.columns)
                loaded = await imp.copy(conn, into, prepared, failures)
            except Exception as exc:
                error = exc
                if isinstance(exc, TooManyErrors):
                    # Counted into the budget as it was raised: not yet its turn.
                    budget.failed -= len(failures)
            if not await before:
                return  # an earlier chunk failed: this one is rolled back
            # Every chunk before this one is committed: its turn.
            try:
                if error is not None and not isinstance(error, TooManyErrors):
                    raise error
                # (Raised during the COPY, TooManyErrors is raised again here, its
                # message counting the rows of the chunks committed before this one.)
                budget.check(failures)
                if error is not None:
                    raise error
            except TooManyErrors:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                async with conn.transaction():  # what the chunk found
                    await record_failures(conn, imp.job, failures)
                raise
            budget.loaded += loaded
            imp.offset = chunk.end_offset
            self.parts = parts
            span = Span(conn, tx, time.monotonic(), failures, [part] if part else [])
            span.next_line = chunk.next_line
            await self.commit(span)
            committed = True
        except Exception as exc:
            errors.append(exc)
        finally:
            prepared.copying.set()  # (whatever became of its COPY)
            if not committed:
                with contextlib.suppress(Exception):
                    await tx.rollback()
            if not mine.done():
                mine.set_result(committed)
            free.put_nowait(conn)

    # -- the end -------------------------------------------------------------------

    async def finish(self) -> dict[str, Any]:
        """Complete the run once every chunk is loaded; the job's result. Here the rows
        are all committed already: the final counters, then the result."""
        async with self.imp.ctx.pool.acquire() as conn:
            await self.imp.save_totals(conn)
        return self.imp.result()

    async def too_many_errors(self) -> None:
        """The run failed with TooManyErrors: record what else found rejected rows."""

    async def close(self) -> None:
        """The run ended, whichever way: let go of what the strategy holds."""


class Direct(Strategy):
    """COPY into the target; the chunks commit with their checkpoint (``Strategy``, as
    it is). Loads over ``copy_streams`` connections."""

    streams = True


class StagedPerChunk(Strategy):
    """COPY into ``job_<id>``, then move the chunk's rows into the target with the
    conflict rule, in the chunk's transaction (rows the target rejects isolated by
    bisection, their records still at hand); one connection (the staging table is one)."""

    staged = True

    def __init__(self, imp: Import) -> None:
        super().__init__(imp)
        self.staging = tables.Staging(imp.job.id)

    async def begin(self, *, fresh: bool) -> None:
        """Make the staging table (emptied after each chunk: one of another shape, an
        older release's, is dropped and made again)."""
        imp = self.imp
        assert imp.target is not None
        async with imp.ctx.pool.acquire() as conn:
            if fresh:
                await drop_staged(conn, imp.job.id)
            if await self.staging.stale(conn, imp.target, imp.columns):
                await self.staging.drop(conn)
            await self.staging.create(conn, imp.target, imp.columns)

    async def _copy_chunk(self, span: Span, prepared: Prepared, failures: list[RowFailure]) -> int:
        """COPY into the staging table, move with the conflict rule, empty it; the rows
        moved (the ones the rule left out counted as skipped)."""
        imp = self.imp
        assert imp.move is not None
        chunk, batch, conn = prepared.chunk, prepared.batch, span.conn
        into = (self.staging.schema, self.staging.name)
        loaded = await imp.copy(conn, into, prepared, failures)
        assert batch is not None
        lines = (chunk.first_line, chunk.next_line)
        rejected = len(failures)
        moved = await imp.move.isolating(
            conn, self.staging, lines, failures, (batch.lines, batch.raws)
        )
        imp.skipped += loaded - moved - (len(failures) - rejected)
        await self.staging.truncate(conn)
        return moved


class SingleTransaction(Strategy):
    """COPY into the target in one transaction, over one connection, left open when the
    last chunk is loaded; the job completes in it (``finish``). Nothing commits before:
    a retry starts over. Deferred constraints stay deferred to the end (rows of the file
    may refer to rows further on), and are checked before it completes."""

    immediate = False

    def __init__(self, imp: Import) -> None:
        super().__init__(imp)
        self.whole: Span | None = None  # the one transaction, until it commits

    async def resumable(self, cp: dict[str, Any]) -> bool:
        """Never: nothing of an earlier run was kept; start over."""
        return False

    async def begin(self, *, fresh: bool) -> None:
        """Drop what earlier runs staged: an older release staged atomic imports of
        files too (``fresh``: always, as nothing is resumed)."""
        if fresh:
            async with self.imp.ctx.pool.acquire() as conn:
                await drop_staged(conn, self.imp.job.id)

    async def load(self, queue: ChunkQueue) -> None:
        """Load every chunk into the one transaction."""
        imp = self.imp
        try:
            while (item := await queue.get()) is not None:
                queue.task_done()
                if isinstance(item, Exception):
                    raise item
                if self.whole is None:
                    self.whole = await Span.open(imp.ctx.pool, immediate=False)
                await self.load_chunk(self.whole, item)
                imp.ctx.timeout_hint = (
                    "an atomic import of a file loads it whole in one run and keeps "
                    f"nothing of a run that stops ({imp.loaded:,} rows were loaded); "
                    "raise the job's timeout, or import with atomic: false, which "
                    "resumes where a run stopped"
                )
                imp.ctx.progress(imp.loaded, failed=len(self.whole.failures), bytes_read=imp.offset)
        except BaseException as exc:
            # Rolled back at once, not when the run's clean-up comes to it.
            if self.whole is not None:
                whole, self.whole = self.whole, None
                await whole.close(imp.ctx.pool)
                if isinstance(exc, TooManyErrors):  # what it found, though rolled back
                    async with imp.ctx.pool.acquire() as conn, conn.transaction():
                        await record_failures(conn, imp.job, whole.failures)
            raise

    async def finish(self) -> dict[str, Any]:
        """Record the rejected rows and complete the job in the import's one
        transaction: the rows become visible exactly when the job is completed."""
        imp = self.imp
        if self.whole is None:  # (no chunk: an empty file after its header)
            return await super().finish()
        whole = self.whole
        conn = whole.conn
        await check_deferred(conn, imp)
        await record_failures(conn, imp.job, whole.failures)
        imp.budget.failed += len(whole.failures)
        await imp.save_totals(conn)
        result = imp.result()
        if not await imp.ctx.complete_in(conn, result):
            raise LeaseLost("the job's lease was lost; nothing was loaded")
        await whole.tx.commit()
        whole.tx = None
        return result

    async def close(self) -> None:
        """Roll the transaction back, unless it committed; give its connection back."""
        if self.whole is not None:
            await self.whole.close(self.imp.ctx.pool)


class StagedAtomic(Strategy):
    """COPY each chunk into a staging table of its own (``job_<id>_<n>``), committed with
    the checkpoint; a ``Mover`` moves the committed ones into the target meanwhile, on a
    connection of its own, in a transaction that completes the job once the last has
    moved (``finish``). A retry resumes the staging (and a URL's download) and moves
    every staged table again. Loads over ``copy_streams`` connections."""

    staged = True
    streams = True

    def __init__(self, imp: Import) -> None:
        super().__init__(imp)
        self.mover: Mover | None = None

    async def resumable(self, cp: dict[str, Any]) -> bool:
        """Only when the staging tables the checkpoint counts are all there, of this
        release's shape, the last one filled."""
        imp = self.imp
        if cp.get("parts", 0) <= 0:
            return True
        assert imp.target is not None
        columns = list(cp.get("columns") or ())
        async with imp.ctx.pool.acquire() as conn:
            parts = await tables.Staging.all_of(conn, imp.job.id)
            stale = [p for p in parts if await p.stale(conn, imp.target, columns)]
            filled = len(parts) == cp["parts"] and await parts[-1].filled(conn)
        if stale:
            # Staged by an older release (its tables named the user's columns), or
            # for columns the table no longer has so: never read as this one's.
            imp.ctx.log.warning("import_restarting", reason="staging tables of another shape")
            return False
        if not filled:
            # An UNLOGGED table loses its rows in a server crash: start again.
            imp.ctx.log.warning("import_restarting", reason="staging tables lost")
            return False
        return True

    async def begin(self, *, fresh: bool) -> None:
        """Start the mover, with the tables earlier runs staged (moved again)."""
        imp = self.imp
        assert imp.move is not None
        async with imp.ctx.pool.acquire() as conn:
            if fresh:
                await drop_staged(conn, imp.job.id)
            existing = await tables.Staging.all_of(conn, imp.job.id)
        imp.ctx.timeout_hint = (
            "an atomic import keeps its staged chunks for the next run, but moves "
            "every one of them again in it; if its runs keep timing out, raise the "
            "job's timeout"
        )
        self.mover = Mover(imp.ctx.pool, imp.move)
        imp.budget.elsewhere = self.mover.failures
        await self.mover.start()
        for table in existing:  # staged by earlier attempts: move them again
            self.mover.add(table)

    def _stop_if_failed(self) -> None:
        if self.mover is not None:
            self.mover.check()

    def _part(self, number: int) -> tables.Staging:
        return tables.Staging(self.imp.job.id, number)

    async def _copy_chunk(self, span: Span, prepared: Prepared, failures: list[RowFailure]) -> int:
        """COPY into a new staging table, one of the span's."""
        imp = self.imp
        assert imp.target is not None
        part = self._part(self.parts)
        await part.create(span.conn, imp.target, imp.columns)
        span.parts.append(part)
        self.parts += 1
        return await imp.copy(span.conn, (part.schema, part.name), prepared, failures)

    def _committed(self, span: Span) -> None:
        assert self.mover is not None
        for part in span.parts:
            self.mover.add(part)

    async def finish(self) -> dict[str, Any]:
        """Wait for the last chunk's move, then complete the job in the mover's
        transaction: the rows become visible exactly when the job is completed."""
        imp = self.imp
        mover = self.mover
        assert mover is not None
        conn = await mover.finish()
        await check_deferred(conn, imp)
        staged = imp.loaded
        imp.budget.loaded = 0
        imp.budget.elsewhere = None
        imp.budget.count(mover.moved, mover.failures)
        imp.skipped = staged - mover.moved - len(mover.failures)
        imp.ctx.log.info(
            "import_moved",
            rows=mover.moved,
            staged=staged,
            tables=mover.tables,
            move_wait_ms=round(mover.waited * 1000),
        )
        await record_failures(conn, imp.job, await self._with_source_records(mover.failures))
        await drop_staged(conn, imp.job.id)
        await imp.save_totals(conn)
        result = imp.result()
        if not await imp.ctx.complete_in(conn, result):
            raise LeaseLost("the job's lease was lost before the final move")
        await mover.commit()
        return result

    async def too_many_errors(self) -> None:
        """Record the rows the move rejected: its transaction is void, not what it found."""
        if self.mover is not None and self.mover.failures:
            await self.mover.close()
            found = await self._with_source_records(self.mover.failures)
            async with self.imp.ctx.pool.acquire() as conn, conn.transaction():
                await record_failures(conn, self.imp.job, found)

    async def close(self) -> None:
        if self.mover is not None:
            await self.mover.close()

    async def _with_source_records(self, failures: list[RowFailure]) -> list[RowFailure]:
        """``failures`` with the raw record of each row the move rejected read again from
        the source (one pass, up to the last such line); where the source cannot be read
        any more, the staged values as JSON, marked as such."""
        imp = self.imp
        assert imp.move is not None
        lines = {f.line for f in failures if f.line in imp.move.rendered}
        if not lines:
            return failures
        try:
            async with asyncio.timeout(max(imp.ctx.remaining / 2, 1.0)):
                found = await imp.source_records(lines)
            reason = "the record was not found in the source"
        except (PermanentError, OSError, httpx.HTTPError, TimeoutError) as exc:
            found, reason = {}, str(exc) or type(exc).__name__
            imp.ctx.log.warning("import_source_reread_failed", error=reason)
        except Exception as exc:
            found, reason = {}, f"{type(exc).__name__}: {exc}"
            imp.ctx.log.exception("import_source_reread_failed", error=reason)
        imp.ctx.log.info("import_source_reread", rows=len(lines), found=len(found))
        encoding = imp.move.encoding
        unread = f"{UNREAD_MARK}: the source could not be read again ({reason[:200]}); "
        unread += "the staged values as JSON] "

        def fixed(f: RowFailure) -> RowFailure:
            if f.line not in lines:
                return f
            if f.line in found:
                return RowFailure(f.line, f.message, raw_text(found[f.line], encoding))
            return RowFailure(f.line, f.message, (unread + (f.raw or ""))[:RAW_LIMIT])

        return [fixed(f) for f in failures]
