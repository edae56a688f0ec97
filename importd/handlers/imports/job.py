"""One run of an import job: the pipeline source → records → COPY data that every
strategy shares (``Import``), handing its chunks to the import's strategy
(``strategies``), which loads them, commits them with their checkpoints and completes the
job.

The producer reads and prepares the next chunk while the strategy's loader has the
current one in COPY (``Import._pipeline``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from ... import tables
from ...context import JobContext
from ...db import Connection
from ...models import Job, PermanentError
from ...repository import RowFailure, count_failures, forget_failures
from .. import sources, spec
from ..records import NdjsonRows, Records, Splitter
from . import bounds, reading, strategies
from .batches import Batch
from .common import Budget, CheckFailed, Prepared, TooManyErrors, classify
from .copying import Copier
from .moving import Move
from .reading import Chunk
from .screening import value_type
from .strategies import ChunkQueue, Strategy

CHECKPOINT_VERSION = 1


def _ident(name: str) -> str:
    """``name`` as SQL would need it typed in a GRANT (quoted unless plain)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


class Import:
    """One run of an import job: what every strategy shares (the spec, the target, the
    source and its header, the COPY data, the ``max_errors`` budget, the checkpoint's
    contents, progress, the result). Its ``strategy`` (``strategies.choose``) does the
    rest."""

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
        self.strategy: Strategy = strategies.choose(self.spec)(self)
        self.committed: dict[str, Any] | None = None  # the last checkpoint committed
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
            await self.strategy.too_many_errors()
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
            if self.strategy.staged and (
                isinstance(exc, PermanentError)
                or (self.job.last_attempt and isinstance(exc, Exception))
            ):
                await self._drop_staging()
            raise
        finally:
            await self.strategy.close()

    async def _usable_checkpoint(self) -> dict[str, Any] | None:
        cp = self.job.checkpoint
        if (
            not cp
            or cp.get("version") != CHECKPOINT_VERSION
            or cp.get("source") != self.spec.source
            or not await self.strategy.resumable(cp)
        ):
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
                self.strategy.resume(cp)
                self.committed = cp
                leftover = Records()
            else:
                leftover = await self._begin(batches)
            self._prepare_copier()
            await self.strategy.begin(fresh=cp is None)
            await self._pipeline(self._chunks(opened, reader, batches, leftover, start, cp))
        finally:
            await opened.close()
        return await self.strategy.finish()

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
        if s.fmt != "csv" or reader.newline != b"\n" or self.strategy.staged:
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
                # Every mapped column once: two fields mapped to one column are refused
                # (as a CSV header naming a column twice is), not merged, where a record
                # holding both would keep one value and lose the other unseen.
                self.columns = list(s.mapping.values())
                await asyncio.to_thread(
                    self._check_columns, self.columns, "payload.columns", list(s.mapping)
                )
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
        fields = reading.header_fields(line, self.spec)
        columns = [self.spec.mapping.get(f, f) for f in fields]
        self._check_columns(columns, "header", fields)
        return columns

    def _check_columns(
        self, columns: list[str], where: str, fields: list[str] | None = None
    ) -> None:
        """Refuse a column named twice, or a name that is no writable column of the
        target. ``fields``: the file's field each of ``columns`` comes from, where
        ``payload.columns`` maps them: a message then names the field and its mapping,
        not the mapped name as if the file held it."""
        assert self.target is not None
        seen: set[str] = set()
        for name in columns:
            if name in seen:
                raise PermanentError(f"HeaderMismatch: {where} names column {_short(name)!r} twice")
            seen.add(name)
        by_name = {c.name: c for c in self.target.columns}
        for index, name in enumerate(columns):
            column = by_name.get(name)
            if column is None:
                field = name if fields is None else fields[index]
                if field in self.spec.mapping:
                    raise PermanentError(
                        f"HeaderMismatch: {where} field {_short(field)!r} is mapped by "
                        f"payload.columns to {_short(name)!r}, which is not a column of "
                        f"{self.spec.qualified} (columns: {', '.join(self.target.writable)})"
                    )
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
            # (``json`` keeps its text as given: its values go as the file writes them.)
            verbatim = [c.name for c in self.target.columns if c.type == "json"]
            ndjson = NdjsonRows(self.spec.mapping, self.columns, json_columns, verbatim)
        self.copier = Copier(
            self.copy_format,
            self.spec.encoding,
            self.spec.delimiter,
            self.spec.quote,
            self.strategy.staged,
            ndjson,
            self.settings.max_record_bytes,
            self.budget.check,
            self.ctx.log,
        )
        by_name = {c.name: c for c in self.target.columns}
        self.copier.names = list(self.columns)
        if all(name in by_name for name in self.columns):  # (a resumed run: maybe not)
            self.copier.types = [by_name[name].type for name in self.columns]
            self.copier.screen_types = [value_type(by_name[name]) for name in self.columns]
            self.copier.watch.bounds = {
                name: found
                for name in self.columns
                if (column := by_name[name]).checks
                and (found := bounds.of_column(column.screen_as or column.type, column.checks))
            }
        self.move = Move(
            self.target,
            self.columns,
            self.spec.on_conflict,
            list(self.spec.conflict_columns),
            self.budget.check,
            self.spec.encoding if self.spec.fmt == "csv" else "utf_8",
        )

    def checkpoint(self, line: int, parts: int) -> dict[str, Any]:
        """The checkpoint of what is loaded so far: the source to resume from (its
        offset, the line there, how its lines end), the columns, the counters, the
        strategy's staging tables (``parts``)."""
        return {
            "version": CHECKPOINT_VERSION,
            "source": self.spec.source,
            "offset": self.offset,
            "line": line,
            "columns": self.columns,
            "loaded": self.loaded,
            "failed": self.failed,
            "fingerprint": self.fingerprint,
            "parts": parts,
            "newline": (self.reader.newline or b"\n").decode() if self.reader else "\n",
        }

    async def save_totals(self, conn: Connection) -> None:
        """The final counters, rows_total included (known only now), beside the last
        committed checkpoint (a retry must resume from what is really loaded)."""
        await self.store(conn, self.committed or {}, total=self.loaded + self.failed + self.skipped)

    async def store(
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
        queue: ChunkQueue = asyncio.Queue(maxsize=1)

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
                        # (bad rows only; a chunk's bytes are split there if need be)
                        copier.start_check_ahead(self.ctx.pool, target, _records_of(chunk))
                    prepared = Prepared(chunk, batch, failures, screened)
                    await queue.put(prepared)
                    await queue.join()
                    # The next chunk is cut while this one is in COPY, not in the round
                    # trips before it (``tables.COPY_STARTED``): the cut holds the event
                    # loop for milliseconds, which there would hold the loader back.
                    await prepared.copying.wait()
            except Exception as exc:  # hand the reader's error to the loader
                await queue.put(exc)
                return
            await queue.put(None)

        producer = asyncio.create_task(produce())
        try:
            await self.strategy.load(queue)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def copy(
        self,
        conn: Connection,
        into: tuple[str, str],
        prepared: Prepared,
        failures: list[RowFailure],
    ) -> int:
        """COPY one chunk into table ``into`` (its source bytes as they are, or its
        prepared batch); the rows loaded."""
        assert self.copier is not None
        copier, chunk = self.copier, prepared.chunk
        columns = copier.columns(self.columns)
        if prepared.batch is None:
            return await copier.copy_raw(
                conn,
                into,
                columns,
                chunk.raw,
                lambda: _prepare(copier, chunk, failures),
                failures,
                prepared.screened,
                lambda: chunk.records,
            )
        return await copier.copy_chunk(conn, into, columns, prepared.batch, failures)

    async def source_records(self, lines: set[int]) -> dict[int, bytes]:
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

    def result(self) -> dict[str, Any]:
        """The job's result: what was loaded, rejected, read."""
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
                await strategies.drop_staged(conn, self.job.id)
        except Exception as exc:  # the rescuer's sweep drops them later
            self.ctx.log.warning("staging_drop_failed", error=str(exc), exc_info=exc)


def _records_of(chunk: Chunk) -> Callable[[], Records]:
    """What splits ``chunk`` into records (once; CPU work, run it in a thread)."""
    return lambda: chunk.records


def _prepare(copier: Copier, chunk: Chunk, failures: list[RowFailure]) -> Batch:
    """The COPY data of ``chunk`` (its records split first, for a raw chunk)."""
    return copier.prepare(chunk.records, failures)


def _short(name: str) -> str:
    """A name from the file, cut for a message."""
    return name if len(name) <= 100 else name[:100] + "…"
