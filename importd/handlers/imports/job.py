"""One run of an import job: the pipeline source → records → COPY → checkpoint, with
the direct, per-chunk and atomic strategies side by side (see the package docstring).

The producer reads and prepares the next chunk while the loader's COPY runs
(``Import._pipeline``). The loader is one connection (``_serial``) or, with
``copy_streams`` > 1 in the direct and atomic strategies, several (``_parallel``): each
chunk in a transaction of its own, committed in chunk order with its checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from ... import tables
from ...context import JobContext
from ...db import Connection
from ...models import Job, PermanentError
from ...repository import RowFailure, count_failures, forget_failures, record_failures
from .. import sources, spec
from ..records import NdjsonRows, Records, Splitter
from . import reading
from .common import (
    RAW_LIMIT,
    Budget,
    CheckFailed,
    LeaseLost,
    Prepared,
    TooManyErrors,
    classify,
    raw_text,
)
from .copying import Batch, Copier
from .moving import Move, Mover
from .reading import Chunk
from .screening import value_type

CHECKPOINT_VERSION = 1
CHECKPOINT_INTERVAL = 1.0  # seconds of loading per committed checkpoint, at most
STREAM_WAIT = 5.0  # seconds to wait for the pool's connections of parallel COPY streams
# Starts the raw record of a row the target rejected when the source could not be read
# again: what follows is the row's staged values as JSON, not the source text.
UNREAD_MARK = "[not the source text"


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
    async def open(cls, pool: Any) -> Span:
        """Take a connection and begin the transaction."""
        conn = await pool.acquire()
        tx = conn.transaction()
        await tx.start()
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


def _ident(name: str) -> str:
    """``name`` as SQL would need it typed in a GRANT (quoted unless plain)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


class Import:
    """One run of an import job.

    Strategies: ``direct`` COPYs into the target, a transaction about every second;
    ``single`` (atomic, from a file, ``on_conflict: error``) does the same in one
    transaction, which completes the job; ``per_chunk`` COPYs into ``job_<id>`` and
    moves each chunk with the conflict rule; ``atomic`` (from a URL, or with a conflict
    rule) COPYs each chunk into a staging table of its own, moved by a ``Mover`` in the
    transaction that completes the job.

    Why an atomic import of a file does not stage: a staged import that is retried
    resumes its staging but must move every staged row again (the move's transaction
    died with the run), so a retry costs about what a fresh start in one transaction
    costs, while every first run pays the server's work twice (COPY into staging, then
    ``INSERT … SELECT``). A URL's import stages: its retry resumes the download with
    ``Range`` instead of fetching the file again."""

    def __init__(self, job: Job, ctx: JobContext, fmt: str) -> None:
        self.job = job
        self.ctx = ctx
        self.settings = ctx.settings
        self.spec = spec.parse(job.payload, fmt, self.settings.tables)
        self.chunk_rows = self.spec.chunk_rows or self.settings.copy_chunk_rows
        self.budget = Budget(self.spec.max_errors, self.spec.atomic)
        self.skipped = 0  # rows ON CONFLICT DO NOTHING left out
        self.offset = 0
        self.columns: list[str] = []
        self.target: tables.Table | None = None
        self.mode = _strategy(self.spec)
        # The strategies whose rows are COPYed straight into the target (no staging).
        self.into_target = self.mode in ("direct", "single")
        self.staging: tables.Staging | None = (
            tables.Staging(job.id) if self.mode == "per_chunk" else None
        )
        self.parts = 0  # atomic: staging tables (chunks) committed so far
        self.committed: dict[str, Any] | None = None  # the last checkpoint committed
        self.mover: Mover | None = None
        self.whole: Span | None = None  # single: the one transaction, until it commits
        self.copier: Copier | None = None
        self.move: Move | None = None
        self.copy_format = tables.CopyFormat(
            "csv" if fmt == "csv" else "text",
            self.spec.delimiter,
            self.spec.quote,
            self.spec.escape,
            self.spec.null,
            self.spec.pg_encoding,
        )
        self.started = time.monotonic()
        self.fingerprint: dict[str, Any] = {}
        self.reader: reading.Reader | None = None
        self._data_line = 1  # the line the records start on, after a header

    @property
    def loaded(self) -> int:
        """Rows loaded so far (committed or in the open span)."""
        return self.budget.loaded

    @property
    def failed(self) -> int:
        """Rows rejected and committed so far."""
        return self.budget.failed

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> Any:
        """Load the file; the job's result."""
        s = self.spec
        try:
            async with self.ctx.pool.acquire() as conn:
                self.target = await tables.describe(conn, s.schema, s.table)
        except asyncpg.InsufficientPrivilegeError as exc:
            # Reading the catalog for a table in a schema without USAGE: no retry helps.
            raise PermanentError(
                f"PermissionDenied: {exc.message}; GRANT USAGE ON SCHEMA "
                f"{_ident(s.schema)} TO importd's role (and INSERT on "
                f"{s.qualified})"
            ) from exc
        except asyncpg.PostgresError as exc:
            permanent = classify(exc, s.qualified, s.on_conflict)
            if permanent is None:
                raise
            raise permanent from exc
        if self.target is None:
            raise PermanentError(
                f"TableNotFound: {s.qualified} does not exist or importd's role cannot see it"
            )
        checkpoint = await self._usable_checkpoint()
        try:
            try:
                return await self._load(checkpoint)
            except CheckFailed as exc:  # importd's own fault: said once, with its trace
                self.ctx.log.error("import_check_failed", error=str(exc), exc_info=exc)
                raise
            except asyncpg.PostgresError as exc:
                permanent = classify(exc, s.qualified, s.on_conflict)
                if permanent is None:
                    raise
                raise permanent from exc
        except TooManyErrors:
            if self.mover is not None and self.mover.failures:
                await self.mover.close()  # its transaction is void: keep what it found
                found = await self._with_source_records(self.mover.failures)
                async with self.ctx.pool.acquire() as conn, conn.transaction():
                    await record_failures(conn, self.job, found)
            await self._drop_staging()
            # The job row's counters as the failure leaves things (written with it): the
            # rows that stay loaded (none for an atomic import), the errors recorded.
            # (Best effort: the counters must not turn the failure into something else.)
            try:
                async with self.ctx.pool.acquire() as conn:
                    failed = await count_failures(conn, self.job.id)
            except Exception as exc:
                self.ctx.log.warning("import_counters_unread", error=str(exc), exc_info=exc)
            else:
                kept = 0 if s.atomic or not self.committed else int(self.committed["loaded"])
                self.ctx.progress(kept, failed=failed)
            raise
        except BaseException as exc:
            if not self.into_target and (
                isinstance(exc, PermanentError)
                or (self.job.last_attempt and isinstance(exc, Exception))
            ):
                await self._drop_staging()
            raise
        finally:
            if self.mover is not None:
                await self.mover.close()
            if self.whole is not None:  # (rolled back unless it committed)
                await self.whole.close(self.ctx.pool)

    async def _usable_checkpoint(self) -> dict[str, Any] | None:
        cp = self.job.checkpoint
        if (
            not cp
            or self.mode == "single"  # nothing of an earlier run was kept: start over
            or cp.get("version") != CHECKPOINT_VERSION
            or cp.get("source") != self.spec.source
        ):
            return None
        if self.mode == "atomic" and cp.get("parts", 0) > 0:
            assert self.target is not None
            columns = list(cp.get("columns") or ())
            async with self.ctx.pool.acquire() as conn:
                parts = await tables.Staging.all_of(conn, self.job.id)
                stale = [p for p in parts if await p.stale(conn, self.target, columns)]
                filled = len(parts) == cp["parts"] and await parts[-1].filled(conn)
            if stale:
                # Staged by an older release (its tables named the user's columns), or
                # for columns the table no longer has so: never read as this one's.
                self.ctx.log.warning("import_restarting", reason="staging tables of another shape")
                return None
            if not filled:
                # An UNLOGGED table loses its rows in a server crash: start again.
                self.ctx.log.warning("import_restarting", reason="staging tables lost")
                return None
        return cp

    async def _load(self, cp: dict[str, Any] | None) -> dict[str, Any]:
        s = self.spec
        start = cp["offset"] if cp else 0
        opened = await reading.open_source(
            s.source,
            self.settings,
            self.ctx.http,
            self.ctx.remaining,
            start,
            cp["fingerprint"] if cp else None,
        )
        try:
            if cp:
                sources.check_unchanged(cp["fingerprint"], opened.fingerprint, s.source)
            self.fingerprint = opened.fingerprint
            quote = s.quote.encode() if s.fmt == "csv" else None
            escape = s.escape.encode() if s.fmt == "csv" else None
            reader = reading.Reader(
                quote,
                escape,
                cp["line"] if cp else 1,
                cp.get("newline", "\n").encode() if cp else None,
                self.settings.max_record_bytes,
                at_start=start == 0,
                utf8=s.encoding == "utf_8",
            )
            self.reader = reader
            batches = reader.records(opened.blocks)
            if cp:
                self.ctx.log.info(
                    "import_resumed",
                    offset=start,
                    line=cp["line"],
                    rows_loaded=cp["loaded"],
                    rows_rejected=cp["failed"],
                )
                self.columns = list(cp["columns"])
                self.budget.loaded, self.budget.failed = cp["loaded"], cp["failed"]
                self.offset = start
                self.parts = cp.get("parts", 0)
                self.committed = cp
                leftover = Records()
            else:
                leftover = await self._begin(batches)
            self._prepare_copier()
            await self._prepare_staging(fresh=cp is None)
            await self._pipeline(self._chunks(opened, reader, batches, leftover, start, cp))
        finally:
            await opened.close()
        if self.mover is not None:
            return await self._finish_atomic(self.mover)
        if self.whole is not None:
            return await self._finish_single(self.whole)
        async with self.ctx.pool.acquire() as conn:
            await self._save_totals(conn)
        return self._result()

    def _chunks(
        self,
        opened: sources.Opened,
        reader: reading.Reader,
        batches: AsyncIterator[Records],
        leftover: Records,
        start: int,
        cp: dict[str, Any] | None,
    ) -> AsyncIterator[Chunk]:
        """The source's chunks: a CSV with LF line ends loaded directly into its table is
        cut from its bytes (records split only where PostgreSQL rejects a row); the rest
        goes through the splitter (staged rows need every record's line: splitting the
        stream is then cheaper than cutting it first)."""
        s = self.spec
        rows, size = self.chunk_rows, self.settings.copy_chunk_bytes
        if s.fmt != "csv" or reader.newline != b"\n" or not self.into_target:
            return reading.chunks(leftover, batches, start, rows, size)
        if cp:  # resumed where a chunk ended
            pending, offset, line = b"", start, int(cp["line"])
        else:
            offset = self.offset if s.header else reader.origin
            pending = b"".join(reader.fed)[offset - reader.origin :]
            line = self._data_line
        reader.fed = []
        quote, escape = s.quote.encode(), s.escape.encode()
        limit = self.settings.max_record_bytes
        cutter = reading.Cutter(quote, escape, rows, min(size, limit), limit)

        def splitter(first_line: int, at: int) -> Splitter:
            return Splitter(quote, escape, first_line, newline=b"\n", limit=limit, offset=at)

        return reading.raw_chunks(opened.blocks, pending, offset, line, cutter, splitter)

    async def _begin(self, batches: AsyncIterator[Records]) -> Records:
        """A fresh start: forget old row errors, read the header, fix the columns."""
        async with self.ctx.pool.acquire() as conn:
            await forget_failures(conn, self.job.id)
        s = self.spec
        first = Records()
        async for batch in batches:
            first = batch
            break
        if not first:
            raise PermanentError(f"EmptySource: {s.source} is empty")
        assert self.target is not None
        # Parsing the header (or first record) and checking its columns run in a thread:
        # hostile input (a 4 MiB header, 300,000 columns) must not hold the event loop.
        if s.fmt == "ndjson":
            # Like a CSV header, the columns are fixed at the start: the mapped ones, or
            # the keys of the first record. Columns outside the list keep their defaults.
            if s.mapping:
                self.columns = list(dict.fromkeys(s.mapping.values()))
                await asyncio.to_thread(self._check_columns, self.columns, "payload.columns")
            else:
                self.columns = await asyncio.to_thread(reading.first_keys, first)
                await asyncio.to_thread(self._check_columns, self.columns, "first record")
            return first
        if not s.header:
            self.columns = list(s.columns) if s.columns else self.target.writable
            await asyncio.to_thread(self._check_columns, self.columns, "payload.columns")
            return first
        header, rest = first.split(1)
        self.offset = header.ends[0]
        self._data_line = header.next_line(0)
        if not header.datas[0]:
            raise PermanentError(
                f"HeaderTooLong: the header line is longer than max_record_bytes="
                f"{self.settings.max_record_bytes:,}"
            )
        self.columns = await asyncio.to_thread(self._header_columns, header.datas[0])
        return rest

    def _header_columns(self, line: bytes) -> list[str]:
        """The columns a CSV header line names (mapped), checked; in a thread."""
        columns = [self.spec.mapping.get(f, f) for f in reading.header_fields(line, self.spec)]
        self._check_columns(columns, "header")
        return columns

    def _check_columns(self, columns: list[str], where: str) -> None:
        assert self.target is not None
        seen: set[str] = set()
        for name in columns:
            if name in seen:
                raise PermanentError(f"HeaderMismatch: {where} names column {_short(name)!r} twice")
            seen.add(name)
        by_name = {c.name: c for c in self.target.columns}
        for name in columns:
            column = by_name.get(name)
            if column is None:
                raise PermanentError(
                    f"HeaderMismatch: {where} field {_short(name)!r} is not a column of "
                    f"{self.spec.qualified} (columns: {', '.join(self.target.writable)}); "
                    "map it with payload.columns"
                )
            if not column.writable:
                raise PermanentError(
                    f"HeaderMismatch: column {name!r} of {self.spec.qualified} is generated"
                )
        for key in self.spec.conflict_columns:
            if self.target.column(key) is None:
                raise PermanentError(
                    f"payload.conflict_columns: {key!r} is not a column of {self.spec.qualified}"
                )

    def _prepare_copier(self) -> None:
        assert self.target is not None
        ndjson = None
        if self.spec.fmt == "ndjson":
            json_columns = [c.name for c in self.target.columns if c.is_json]
            ndjson = NdjsonRows(self.spec.mapping, self.columns, json_columns)
        self.copier = Copier(
            self.copy_format,
            self.spec.encoding,
            self.spec.delimiter,
            self.spec.quote,
            not self.into_target,
            ndjson,
            self.settings.max_record_bytes,
            self.budget.check,
        )
        by_name = {c.name: c for c in self.target.columns}
        self.copier.names = list(self.columns)
        if all(name in by_name for name in self.columns):  # (a resumed run: maybe not)
            self.copier.types = [by_name[name].type for name in self.columns]
            self.copier.screen_types = [value_type(by_name[name]) for name in self.columns]
        self.move = Move(
            self.target,
            self.columns,
            self.spec.on_conflict,
            list(self.spec.conflict_columns),
            self.budget.check,
            self.spec.encoding if self.spec.fmt == "csv" else "utf_8",
        )

    async def _prepare_staging(self, *, fresh: bool) -> None:
        assert self.target is not None and self.move is not None
        async with self.ctx.pool.acquire() as conn:
            if fresh and self.mode != "direct":
                for table in await tables.Staging.all_of(conn, self.job.id):
                    await table.drop(conn)
            if self.staging is not None:
                # (Emptied after each chunk: one of another shape, an older release's,
                # is dropped and made again.)
                if await self.staging.stale(conn, self.target, self.columns):
                    await self.staging.drop(conn)
                await self.staging.create(conn, self.target, self.columns)
            if self.mode == "atomic":
                existing = await tables.Staging.all_of(conn, self.job.id)
        if self.mode == "atomic":
            self.ctx.timeout_hint = (
                "an atomic import keeps its staged chunks for the next run, but moves "
                "every one of them again in it; if its runs keep timing out, raise the "
                "job's timeout"
            )
            self.mover = Mover(self.ctx.pool, self.move)
            self.budget.elsewhere = self.mover.failures
            await self.mover.start()
            for table in existing:  # staged by earlier attempts: move them again
                self.mover.add(table)

    async def _save_totals(self, conn: Connection) -> None:
        """The final counters, rows_total included (known only now), beside the last
        committed checkpoint (a retry must resume from what is really loaded)."""
        await self._store(
            conn, self.committed or {}, total=self.loaded + self.failed + self.skipped
        )

    async def _store(
        self, conn: Connection, checkpoint: dict[str, Any], total: int | None = None
    ) -> bool:
        """Write ``checkpoint`` and the counters, fenced by the lease."""
        return await self.ctx.save_checkpoint(
            conn,
            checkpoint,
            rows_done=self.loaded,
            rows_failed=self.failed,
            bytes_read=self.offset,
            rows_total=total,
        )

    async def _pipeline(self, chunks: AsyncIterator[Chunk]) -> None:
        """Read, split and encode the next chunk while the current one is in COPY. At
        most two chunks are in memory: the producer starts on a chunk only once the
        loader has taken the one before."""
        assert self.copier is not None
        copier = self.copier
        queue: asyncio.Queue[Prepared | Exception | None] = asyncio.Queue(maxsize=1)

        async def produce() -> None:
            try:
                async for chunk in chunks:
                    failures: list[RowFailure] = []
                    batch, screened = None, None
                    # Raw bytes go to COPY unless they need a change. After a chunk with
                    # bad rows they are screened first, as they are (its suspects
                    # checked ahead), which costs less than a COPY that fails and a
                    # split after it; where they cannot be screened so, or need a
                    # change, records are split (and screened). Off the event loop:
                    # screening, splitting records and converting NDJSON are CPU work.
                    if chunk.copyable and copier.suspecting:
                        screened = await asyncio.to_thread(
                            copier.screen_raw, chunk.raw, chunk.first_line, chunk.next_line
                        )
                    if not chunk.copyable or (copier.suspecting and screened is None):
                        batch = await asyncio.to_thread(_prepare, copier, chunk, failures)
                    target = screened or batch
                    if target is not None:
                        copier.start_check_ahead(self.ctx.pool, target)  # (bad rows only)
                    await queue.put(Prepared(chunk, batch, failures, screened))
                    await queue.join()
            except Exception as exc:  # hand the reader's error to the loader
                await queue.put(exc)
                return
            await queue.put(None)

        producer = asyncio.create_task(produce())
        # One transaction is one connection: ``single`` loads serially.
        streams = self.settings.copy_streams if self.mode in ("direct", "atomic") else 1
        try:
            if streams > 1:
                await self._parallel(queue, streams)
            else:
                await self._serial(queue)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _serial(self, queue: asyncio.Queue[Prepared | Exception | None]) -> None:
        """Load the chunks over one connection, a transaction about every second."""
        # Chunks share a transaction until it is about a second old (less under a short
        # timeout): the checkpoint, and so the job row, is written about once a second,
        # and a crash costs at most that much work. ``single`` keeps its one transaction
        # open for ``_finish_single``.
        interval = min(CHECKPOINT_INTERVAL, self.job.timeout / 10)
        single = self.mode == "single"
        span: Span | None = None
        try:
            while (item := await queue.get()) is not None:
                queue.task_done()
                if isinstance(item, Exception):
                    raise item
                if span is None:
                    span = await Span.open(self.ctx.pool)
                    if single:
                        self.whole = span
                await self._load_chunk(span, item)
                if single:
                    self.ctx.timeout_hint = (
                        "an atomic import of a file loads it whole in one run and keeps "
                        f"nothing of a run that stops ({self.loaded:,} rows were loaded); "
                        "raise the job's timeout, or import with atomic: false, which "
                        "resumes where a run stopped"
                    )
                    self.ctx.progress(
                        self.loaded, failed=len(span.failures), bytes_read=self.offset
                    )
                elif time.monotonic() - span.started >= interval:
                    await self._commit(span)
                    await span.close(self.ctx.pool)
                    span = None
            if single:
                span = None  # (self.whole holds it)
            elif span is not None:
                await self._commit(span)
        except TooManyErrors:
            if span is not None:  # what the span found, whatever became of its rows
                await span.close(self.ctx.pool)
                self.whole = None
                async with self.ctx.pool.acquire() as conn, conn.transaction():
                    await record_failures(conn, self.job, span.failures)
                span = None
            raise
        finally:
            if span is not None:
                await span.close(self.ctx.pool)

    async def _parallel(
        self, queue: asyncio.Queue[Prepared | Exception | None], streams: int
    ) -> None:
        """Load the chunks over ``streams`` connections at once (``copy_streams``), each
        chunk in a transaction of its own. The COPYs overlap; the commits keep the
        chunks' order: a chunk commits, with the checkpoint that accounts for it, only
        once the chunk before it has, so a checkpoint never passes a chunk that is not
        committed. When the pool cannot spare the extra connections at once, fewer
        streams load."""
        pool = self.ctx.pool
        conns = [await pool.acquire()]
        free: asyncio.Queue[Any] = asyncio.Queue()
        tasks: list[asyncio.Task[None]] = []
        errors: list[BaseException] = []
        try:
            while len(conns) < streams:
                try:
                    conns.append(await pool.acquire(timeout=STREAM_WAIT))
                except TimeoutError:
                    self.ctx.log.warning("import_streams_reduced", streams=len(conns))
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
                if self.mover is not None:
                    self.mover.check()  # stop early if the move already failed
                conn = await free.get()
                if errors:
                    free.put_nowait(conn)
                    break
                part = None
                if self.mode == "atomic":
                    part, part_no = tables.Staging(self.job.id, part_no), part_no + 1
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
                await pool.release(conn)

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
        ``parts``: the staging tables committed once this chunk is (atomic)."""
        assert self.target is not None and self.copier is not None
        s, chunk = self.spec, prepared.chunk
        failures = list(prepared.failures)  # NDJSON rows rejected before COPY
        into = (part.schema, part.name) if part else (s.schema, s.table)
        tx = conn.transaction()
        committed = False
        try:
            error: Exception | None = None
            loaded = 0
            try:
                await tx.start()
                if part is not None:
                    await part.create(conn, self.target, self.columns)
                loaded = await self._copy(
                    conn, into, self.copier.columns(self.columns), prepared, failures
                )
            except Exception as exc:
                error = exc
                if isinstance(exc, TooManyErrors):
                    # Counted into the budget as it was raised: not yet its turn.
                    self.budget.failed -= len(failures)
            if not await before:
                return  # an earlier chunk failed: this one is rolled back
            # Every chunk before this one is committed: its turn.
            try:
                if error is not None and not isinstance(error, TooManyErrors):
                    raise error
                # (Raised during the COPY, TooManyErrors is raised again here, its
                # message counting the rows of the chunks committed before this one.)
                self.budget.check(failures)
                if error is not None:
                    raise error
            except TooManyErrors:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                async with conn.transaction():  # what the chunk found
                    await record_failures(conn, self.job, failures)
                raise
            self.budget.loaded += loaded
            self.offset = chunk.end_offset
            self.parts = parts
            span = Span(conn, tx, time.monotonic(), failures, [part] if part else [])
            span.next_line = chunk.next_line
            await self._commit(span)
            committed = True
        except Exception as exc:
            errors.append(exc)
        finally:
            if not committed:
                with contextlib.suppress(Exception):
                    await tx.rollback()
            if not mine.done():
                mine.set_result(committed)
            free.put_nowait(conn)

    # -- one chunk -----------------------------------------------------------------

    async def _load_chunk(self, span: Span, prepared: Prepared) -> None:
        """Load one chunk inside ``span``'s open transaction (committed by ``_commit``)."""
        assert self.copier is not None and self.move is not None
        s = self.spec
        chunk, batch, failures = prepared.chunk, prepared.batch, prepared.failures
        part = tables.Staging(self.job.id, self.parts) if self.mode == "atomic" else None
        staging = part or self.staging
        into = (staging.schema, staging.name) if staging else (s.schema, s.table)
        columns = self.copier.columns(self.columns)
        if self.mover is not None:
            self.mover.check()  # stop early if the move already failed
        conn = span.conn
        before = (
            self.budget.loaded,
            self.offset,
            span.next_line,
            self.parts,
            len(span.parts),
            self.skipped,
        )
        span.failures.extend(failures)  # NDJSON rows rejected before COPY
        failures = span.failures
        savepoint = conn.transaction()
        await savepoint.start()
        try:
            if part is not None:
                assert self.target is not None
                await part.create(conn, self.target, self.columns)
                span.parts.append(part)
                self.parts += 1
            loaded = await self._copy(conn, into, columns, prepared, failures)
            if self.staging is not None:
                assert batch is not None
                lines = (chunk.first_line, chunk.next_line)
                rejected = len(failures)
                moved = await self.move.isolating(
                    conn, self.staging, lines, failures, (batch.lines, batch.raws)
                )
                self.skipped += loaded - moved - (len(failures) - rejected)
                loaded = moved
                await self.staging.truncate(conn)
            self.budget.loaded += loaded
            self.offset = chunk.end_offset
            span.next_line = chunk.next_line
            self.budget.check(failures)
        except TooManyErrors:
            # Undo this chunk only; with atomic: false the chunks before it stay loaded.
            await savepoint.rollback()
            self.budget.loaded, self.offset, span.next_line, self.parts, kept, self.skipped = before
            del span.parts[kept:]
            if self.mode in ("direct", "per_chunk") and span.next_line:
                found, span.failures = span.failures, []
                await self._commit(span)
                span.failures = found  # recorded by the caller, once
            raise
        await savepoint.commit()

    async def _copy(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        prepared: Prepared,
        failures: list[RowFailure],
    ) -> int:
        """COPY one chunk (its source bytes as they are, or its prepared batch)."""
        assert self.copier is not None
        copier, chunk = self.copier, prepared.chunk
        if prepared.batch is None:
            return await copier.copy_raw(
                conn,
                into,
                columns,
                chunk.raw,
                lambda: _prepare(copier, chunk, failures),
                failures,
                prepared.screened,
            )
        return await copier.copy_chunk(conn, into, columns, prepared.batch, failures)

    async def _commit(self, span: Span) -> None:
        """Record the span's rejected rows and the checkpoint that accounts for its
        chunks, fenced by the lease, and commit them with the rows."""
        conn = span.conn
        await record_failures(conn, self.job, span.failures)
        self.budget.failed += len(span.failures)
        checkpoint = {
            "version": CHECKPOINT_VERSION,
            "source": self.spec.source,
            "offset": self.offset,
            "line": span.next_line,
            "columns": self.columns,
            "loaded": self.loaded,
            "failed": self.failed,
            "fingerprint": self.fingerprint,
            "parts": self.parts,
            "newline": (self.reader.newline or b"\n").decode() if self.reader else "\n",
        }
        held = await self._store(conn, checkpoint)
        if not held:
            raise LeaseLost("the job's lease was lost; the uncommitted chunks were rolled back")
        await span.tx.commit()
        span.tx = None
        self.committed = checkpoint
        if self.mover is not None:
            for part in span.parts:
                self.mover.add(part)
        self.ctx.progress(self.loaded, failed=self.failed, bytes_read=self.offset)

    async def _finish_atomic(self, mover: Mover) -> dict[str, Any]:
        """Wait for the last chunk's move, then complete the job in the mover's
        transaction: the rows become visible exactly when the job is completed."""
        conn = await mover.finish()
        staged = self.loaded
        self.budget.loaded = 0
        self.budget.elsewhere = None
        self.budget.count(mover.moved, mover.failures)
        self.skipped = staged - mover.moved - len(mover.failures)
        self.ctx.log.info(
            "import_moved",
            rows=mover.moved,
            staged=staged,
            tables=mover.tables,
            move_wait_ms=round(mover.waited * 1000),
        )
        await record_failures(conn, self.job, await self._with_source_records(mover.failures))
        for table in await tables.Staging.all_of(conn, self.job.id):
            await table.drop(conn)
        await self._save_totals(conn)
        result = self._result()
        if not await self.ctx.complete_in(conn, result):
            raise LeaseLost("the job's lease was lost before the final move")
        await mover.commit()
        return result

    async def _finish_single(self, whole: Span) -> dict[str, Any]:
        """Record the rejected rows and complete the job in the import's one
        transaction: the rows become visible exactly when the job is completed."""
        conn = whole.conn
        await record_failures(conn, self.job, whole.failures)
        self.budget.failed += len(whole.failures)
        await self._save_totals(conn)
        result = self._result()
        if not await self.ctx.complete_in(conn, result):
            raise LeaseLost("the job's lease was lost; nothing was loaded")
        await whole.tx.commit()
        whole.tx = None
        return result

    async def _with_source_records(self, failures: list[RowFailure]) -> list[RowFailure]:
        """``failures`` with the raw record of each row the move rejected read again from
        the source (one pass, up to the last such line); where the source cannot be read
        any more, the staged values as JSON, marked as such."""
        assert self.move is not None
        lines = {f.line for f in failures if f.line in self.move.rendered}
        if not lines:
            return failures
        try:
            async with asyncio.timeout(max(self.ctx.remaining / 2, 1.0)):
                found = await self._source_records(lines)
            reason = "the record was not found in the source"
        except (PermanentError, OSError, httpx.HTTPError, TimeoutError) as exc:
            found, reason = {}, str(exc) or type(exc).__name__
            self.ctx.log.warning("import_source_reread_failed", error=reason)
        except Exception as exc:
            found, reason = {}, f"{type(exc).__name__}: {exc}"
            self.ctx.log.exception("import_source_reread_failed", error=reason)
        self.ctx.log.info("import_source_reread", rows=len(lines), found=len(found))
        encoding = self.move.encoding
        unread = f"{UNREAD_MARK}: the source could not be read again ({reason[:200]}); "
        unread += "the staged values as JSON] "

        def fixed(f: RowFailure) -> RowFailure:
            if f.line not in lines:
                return f
            if f.line in found:
                return RowFailure(f.line, f.message, raw_text(found[f.line], encoding))
            return RowFailure(f.line, f.message, (unread + (f.raw or ""))[:RAW_LIMIT])

        return [fixed(f) for f in failures]

    async def _source_records(self, lines: set[int]) -> dict[int, bytes]:
        """The source records at ``lines``, read again from the start of the source,
        which must still be the file this import read (its fingerprint)."""
        s = self.spec
        opened = await reading.open_source(
            s.source, self.settings, self.ctx.http, self.ctx.remaining, 0, self.fingerprint
        )
        found: dict[int, bytes] = {}
        last = max(lines)
        try:
            sources.check_unchanged(self.fingerprint, opened.fingerprint, s.source)
            reader = reading.Reader(
                s.quote.encode() if s.fmt == "csv" else None,
                s.escape.encode() if s.fmt == "csv" else None,
                1,
                self.reader.newline if self.reader else None,
                self.settings.max_record_bytes,
                at_start=True,
                utf8=s.encoding == "utf_8",
            )
            async with contextlib.aclosing(reader.records(opened.blocks)) as batches:
                async for batch in batches:
                    for line, data in zip(batch.lines, batch.datas, strict=True):
                        if line in lines and data:
                            found[line] = data
                    if batch.lines and batch.lines[-1] >= last:
                        break
        finally:
            await opened.close()
        return found

    def _result(self) -> dict[str, Any]:
        result = {
            "table": self.spec.qualified,
            "rows_loaded": self.loaded,
            "rows_rejected": self.failed,
            "bytes_read": self.offset,
            "atomic": self.spec.atomic,
            "duration_s": round(time.monotonic() - self.started, 3),
        }
        if self.spec.on_conflict != "error":
            result["rows_skipped"] = self.skipped
        return result

    async def _drop_staging(self) -> None:
        try:
            async with asyncio.timeout(10), self.ctx.pool.acquire() as conn:
                for table in await tables.Staging.all_of(conn, self.job.id):
                    await table.drop(conn)
        except Exception as exc:  # the rescuer's sweep drops them later
            self.ctx.log.warning("staging_drop_failed", error=str(exc), exc_info=exc)


def _strategy(s: spec.ImportSpec) -> str:
    """How an import loads (see ``Import``)."""
    if not s.atomic:
        return "direct" if s.on_conflict == "error" else "per_chunk"
    from_file = s.source.partition(":")[0].lower() == "file"
    return "single" if from_file and s.on_conflict == "error" else "atomic"


def _prepare(copier: Copier, chunk: Chunk, failures: list[RowFailure]) -> Batch:
    """The COPY data of ``chunk`` (its records split first, for a raw chunk)."""
    return copier.prepare(chunk.records, failures)


def _short(name: str) -> str:
    """A name from the file, cut for a message."""
    return name if len(name) <= 100 else name[:100] + "…"
