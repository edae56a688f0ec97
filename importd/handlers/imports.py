"""The ``csv`` and ``ndjson`` handlers: stream a file into a table with COPY.

Exactly once, whatever crashes: every chunk of rows commits in one transaction with the
checkpoint that accounts for it (source offset, line, counters), and that transaction
only commits while this run still holds the job's lease. A retry resumes after the last
committed chunk. With ``atomic: true`` the rows go to an UNLOGGED per-job staging table
and move to the target in the transaction that marks the job completed.

Bad rows do not sink the file: PostgreSQL names the failing line of a COPY, so the rows
before it are loaded again at COPY speed, the bad one is recorded with its source line
number, and the load goes on after it. Errors without a line (constraints checked when
rows move out of staging) are isolated by bisection.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .. import tables
from ..executor import JobContext
from ..models import Job, PermanentError
from ..repository import RowFailure, forget_failures, record_failures, save_checkpoint
from . import sources, spec
from .records import NdjsonRows, Records, RowError, Splitter

ROW_LEVEL = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
_COPY_LINE = re.compile(r"\bCOPY [^,]+, line (\d+)(?:, column ([^:]+))?")
RAW_LIMIT = 1000
CHECKPOINT_VERSION = 1
ALL_LINES = (0, 2**62)
CHECKPOINT_INTERVAL = 1.0  # seconds of loading per committed checkpoint, at most


class LeaseLost(Exception):
    """The job's lease went to someone else mid-import; the chunk was rolled back."""


class TooManyErrors(PermanentError):
    """More rows were rejected than ``max_errors`` allows."""


async def import_csv(job: Job, ctx: JobContext) -> Any:
    """Load a CSV file into a table (see the module docstring)."""
    return await Import(job, ctx, "csv").run()


async def import_ndjson(job: Job, ctx: JobContext) -> Any:
    """Load an NDJSON file (one JSON object per line) into a table."""
    return await Import(job, ctx, "ndjson").run()


def _raw(data: bytes, encoding: str) -> str:
    text = data.decode(encoding if encoding != "ascii" else "latin_1", "replace")
    return text.replace("\x00", "\\0").rstrip("\r\n")[:RAW_LIMIT]


def _describe(exc: asyncpg.PostgresError) -> tuple[int | None, str]:
    """The COPY line (1-based within the statement) an error names, and a message."""
    context = getattr(exc, "context", None) or ""
    match = _COPY_LINE.search(context)
    message = exc.message
    if match and match.group(2):
        message = f"column {match.group(2)}: {message}"
    if exc.detail:
        message += f" ({exc.detail})"
    return (int(match.group(1)) if match else None), message


def _row_at(rows: list[Row], line: int | None) -> int | None:
    """The index of the row holding physical line ``line`` of a COPY's data (PostgreSQL
    counts newlines inside quoted fields too), or None."""
    if line is None or line < 1:
        return None
    ends = list(itertools.accumulate(row.payload.count(b"\n") or 1 for row in rows))
    index = bisect.bisect_left(ends, line)
    return index if index < len(rows) else None


def _first_keys(records: Records) -> list[str]:
    """The keys of the first record that is a JSON object."""
    for data in records.datas:
        with contextlib.suppress(ValueError):
            obj = json.loads(data)
            if isinstance(obj, dict) and obj:
                return [str(key) for key in obj]
    raise PermanentError(
        "NoColumns: the first lines hold no JSON object to take the "
        "columns from; give them with payload.columns"
    )


@dataclass
class Chunk:
    """Consecutive records of the source and where the stream stands after them."""

    records: Records
    end_offset: int
    next_line: int


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


@dataclass
class Prepared:
    """A chunk with its COPY data, ready to load."""

    chunk: Chunk
    payload: bytes
    rows: list[Row] | None
    failures: list[RowFailure]


@dataclass(frozen=True, slots=True)
class Row:
    """One row on its way to COPY: its source line, its source bytes, its COPY bytes."""

    line: int
    raw: bytes
    payload: bytes


class Import:
    """One run of an import job."""

    def __init__(self, job: Job, ctx: JobContext, fmt: str) -> None:
        self.job = job
        self.ctx = ctx
        self.settings = ctx.settings
        self.spec = spec.parse(job.payload, fmt, self.settings.tables)
        self.chunk_rows = self.spec.chunk_rows or self.settings.copy_chunk_rows
        self.loaded = 0
        self.failed = 0
        self.skipped = 0  # rows ON CONFLICT DO NOTHING left out
        self.offset = 0
        self.columns: list[str] = []
        self.target: tables.Table | None = None
        # direct: COPY into the target. per_chunk: COPY into job_<id>, then move each chunk
        # with the conflict rule. atomic: one staging table per chunk, moved by a Mover.
        self.mode = (
            "atomic"
            if self.spec.atomic
            else "direct"
            if self.spec.on_conflict == "error"
            else "per_chunk"
        )
        self.staging: tables.Staging | None = (
            tables.Staging(job.id) if self.mode == "per_chunk" else None
        )
        self.parts = 0  # atomic: staging tables (chunks) committed so far
        self.committed: dict[str, Any] | None = None  # the last checkpoint committed
        self.mover: Mover | None = None
        self.copy_format = tables.CopyFormat(
            "csv" if fmt == "csv" else "text",
            self.spec.delimiter,
            self.spec.quote,
            self.spec.escape,
            self.spec.null,
            self.spec.pg_encoding,
        )
        self.ndjson: NdjsonRows | None = None
        self.started = time.monotonic()
        self.fingerprint: dict[str, Any] = {}

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> Any:
        s = self.spec
        async with self.ctx.pool.acquire() as conn:
            self.target = await tables.describe(conn, s.schema, s.table)
        if self.target is None:
            raise PermanentError(
                f"TableNotFound: {s.qualified} does not exist or importd's role cannot see it"
            )
        checkpoint = await self._usable_checkpoint()
        try:
            return await self._load(checkpoint)
        except TooManyErrors:
            if self.mover is not None and self.mover.failures:
                await self.mover.close()  # its transaction is void: keep what it found
                async with self.ctx.pool.acquire() as conn, conn.transaction():
                    await record_failures(conn, self.job, self.mover.failures)
            await self._drop_staging()
            raise
        except BaseException as exc:
            if self.mode != "direct" and (
                isinstance(exc, PermanentError)
                or (self.job.last_attempt and isinstance(exc, Exception))
            ):
                await self._drop_staging()
            raise
        finally:
            if self.mover is not None:
                await self.mover.close()

    async def _usable_checkpoint(self) -> dict[str, Any] | None:
        cp = self.job.checkpoint
        if (
            not cp
            or cp.get("version") != CHECKPOINT_VERSION
            or cp.get("source") != self.spec.source
        ):
            return None
        if self.mode == "atomic" and cp.get("parts", 0) > 0:
            async with self.ctx.pool.acquire() as conn:
                parts = await tables.Staging.all_of(conn, self.job.id)
                filled = len(parts) == cp["parts"] and await parts[-1].filled(conn)
            if not filled:
                # An UNLOGGED table loses its rows in a server crash: start again.
                self.ctx.log.warning("import_restarting", reason="staging tables lost")
                return None
        return cp

    async def _load(self, cp: dict[str, Any] | None) -> dict[str, Any]:
        s = self.spec
        start = cp["offset"] if cp else 0
        opened = await self._open(start, cp["fingerprint"] if cp else None)
        try:
            if cp:
                sources.check_unchanged(cp["fingerprint"], opened.fingerprint, s.source)
            self.fingerprint = opened.fingerprint
            quote = s.quote.encode() if s.fmt == "csv" else None
            escape = s.escape.encode() if s.fmt == "csv" else None
            splitter = Splitter(quote, escape, first_line=cp["line"] if cp else 1)
            records = self._records(opened.blocks, splitter)
            if cp:
                self.ctx.log.info(
                    "import_resumed",
                    offset=start,
                    line=cp["line"],
                    rows_loaded=cp["loaded"],
                    rows_rejected=cp["failed"],
                )
                self.columns = list(cp["columns"])
                self.loaded, self.failed, self.offset = cp["loaded"], cp["failed"], start
                self.parts = cp.get("parts", 0)
                self.committed = cp
                leftover = Records()
            else:
                leftover = await self._begin(records)
            self._prepare_rows()
            await self._prepare_staging(fresh=cp is None)
            await self._pipeline(self._chunks(leftover, records, start))
        finally:
            await opened.close()
        if self.mover is not None:
            return await self._finish_atomic(self.mover)
        async with self.ctx.pool.acquire() as conn:
            await self._save_totals(conn)
        return self._result()

    async def _prepare_staging(self, *, fresh: bool) -> None:
        assert self.target is not None
        async with self.ctx.pool.acquire() as conn:
            if fresh and self.mode != "direct":
                for table in await tables.Staging.all_of(conn, self.job.id):
                    await table.drop(conn)
            if self.staging is not None:
                await self.staging.create(conn, self.target, self.columns)
            if self.mode == "atomic":
                existing = await tables.Staging.all_of(conn, self.job.id)
        if self.mode == "atomic":
            self.mover = Mover(self)
            await self.mover.start()
            for table in existing:  # staged by earlier attempts: move them again
                self.mover.add(table)

    async def _save_totals(self, conn: asyncpg.Connection) -> None:
        """The final counters, rows_total included (known only now), beside the last
        committed checkpoint (a retry must resume from what is really loaded)."""
        await self._store(
            conn, self.committed or {}, total=self.loaded + self.failed + self.skipped
        )

    async def _store(
        self, conn: asyncpg.Connection, checkpoint: dict[str, Any], total: int | None = None
    ) -> bool:
        """Write ``checkpoint`` and the counters, fenced by the lease."""
        return await save_checkpoint(
            conn,
            self.job,
            self.ctx.worker_id,
            checkpoint,
            rows_done=self.loaded,
            rows_failed=self.failed,
            bytes_read=self.offset,
            rows_total=total,
        )

    async def _open(self, offset: int, known: dict[str, Any] | None) -> sources.Opened:
        source = self.spec.source
        if source.startswith("file:"):
            return await sources.open_file(source, self.settings.import_roots, offset)
        if self.ctx.http is None:
            raise PermanentError("no HTTP client in this daemon")
        return await sources.open_url(
            source,
            self.ctx.http,
            self.settings.url_prefixes,
            offset,
            known,
            max(self.ctx.remaining, 1.0),
        )

    async def _records(
        self, blocks: AsyncIterator[bytes], splitter: Splitter
    ) -> AsyncIterator[Records]:
        async for block in blocks:
            found = splitter.feed(block)
            if found:
                yield found
        last = splitter.finish()
        if last:
            yield last

    async def _begin(self, records: AsyncIterator[Records]) -> Records:
        """A fresh start: forget old row errors, read the header, fix the columns."""
        async with self.ctx.pool.acquire() as conn:
            await forget_failures(conn, self.job.id)
        s = self.spec
        first = Records()
        async for batch in records:
            first = batch
            break
        if not first:
            raise PermanentError(f"EmptySource: {s.source} is empty")
        assert self.target is not None
        if s.fmt == "ndjson":
            # Like a CSV header, the columns are fixed at the start: the mapped ones, or
            # the keys of the first record. Columns outside the list keep their defaults.
            if s.mapping:
                self.columns = list(dict.fromkeys(s.mapping.values()))
                self._check_columns(self.columns, "payload.columns")
            else:
                self.columns = _first_keys(first)
                self._check_columns(self.columns, "first record")
            return first
        if not s.header:
            self.columns = list(s.columns) if s.columns else self.target.writable
            self._check_columns(self.columns, "payload.columns")
            return first
        header, rest = first.split(1)
        self.offset = header.ends[0]
        try:
            text = header.datas[0].decode(s.encoding).lstrip("\ufeff").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise PermanentError(
                f"HeaderEncoding: the header line is not {s.encoding}: {exc.reason}"
            ) from None
        dialect: dict[str, Any] = {"delimiter": s.delimiter, "quotechar": s.quote}
        if s.escape != s.quote:
            dialect.update(escapechar=s.escape, doublequote=False)
        fields = next(csv.reader([text], **dialect), [])
        if not any(f.strip() for f in fields):
            raise PermanentError("HeaderMismatch: the header line is empty")
        self.columns = [s.mapping.get(f, f) for f in fields]
        self._check_columns(self.columns, "header")
        return rest

    def _check_columns(self, columns: list[str], where: str) -> None:
        assert self.target is not None
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise PermanentError(f"HeaderMismatch: {where} names column {dup!r} twice")
        for name in columns:
            column = self.target.column(name)
            if column is None:
                raise PermanentError(
                    f"HeaderMismatch: {where} field {name!r} is not a column of "
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

    def _prepare_rows(self) -> None:
        if self.spec.fmt == "ndjson":
            assert self.target is not None
            json_columns = [c.name for c in self.target.columns if c.is_json]
            self.ndjson = NdjsonRows(self.spec.mapping, self.columns, json_columns)

    async def _chunks(
        self, leftover: Records, records: AsyncIterator[Records], start: int
    ) -> AsyncIterator[Chunk]:
        limit_bytes = self.settings.copy_chunk_bytes
        pending = leftover
        size = sum(map(len, pending.datas))

        def cut(count: int) -> Chunk:
            nonlocal pending, size
            taken, pending = pending.split(count)
            size -= sum(map(len, taken.datas))
            return Chunk(taken, start + taken.ends[-1], taken.next_line(len(taken) - 1))

        def full() -> bool:
            return len(pending) >= self.chunk_rows or (size >= limit_bytes and bool(pending))

        while full():
            yield cut(min(len(pending), self.chunk_rows))
        async for batch in records:
            pending.extend(batch)
            size += sum(map(len, batch.datas))
            while full():
                yield cut(min(len(pending), self.chunk_rows))
        if pending:
            yield cut(len(pending))

    async def _pipeline(self, chunks: AsyncIterator[Chunk]) -> None:
        """Read, split and encode the next chunk while the current one is in COPY. At
        most two chunks are in memory: the producer starts on a chunk only once the
        loader has taken the one before."""
        queue: asyncio.Queue[Prepared | Exception | None] = asyncio.Queue(maxsize=1)

        async def produce() -> None:
            try:
                async for chunk in chunks:
                    failures: list[RowFailure] = []
                    payload, rows = self._payload(chunk.records, failures)
                    await queue.put(Prepared(chunk, payload, rows, failures))
                    await queue.join()
            except Exception as exc:  # hand the reader's error to the loader
                await queue.put(exc)
                return
            await queue.put(None)

        producer = asyncio.create_task(produce())
        # Chunks share a transaction until it is about a second old (less under a short
        # timeout): the checkpoint, and so the job row, is written about once a second,
        # and a crash costs at most that much work.
        interval = min(CHECKPOINT_INTERVAL, self.job.timeout / 10)
        span: Span | None = None
        try:
            while (item := await queue.get()) is not None:
                queue.task_done()
                if isinstance(item, Exception):
                    raise item
                if span is None:
                    span = await Span.open(self.ctx.pool)
                await self._load_chunk(span, item)
                if time.monotonic() - span.started >= interval:
                    await self._commit(span)
                    await span.close(self.ctx.pool)
                    span = None
            if span is not None:
                await self._commit(span)
        except TooManyErrors:
            if span is not None:  # what the span found, whatever became of its rows
                await span.close(self.ctx.pool)
                async with self.ctx.pool.acquire() as conn, conn.transaction():
                    await record_failures(conn, self.job, span.failures)
                span = None
            raise
        finally:
            if span is not None:
                await span.close(self.ctx.pool)
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    # -- one chunk -----------------------------------------------------------------

    def _payload(
        self, records: Records, failures: list[RowFailure]
    ) -> tuple[bytes, list[Row] | None]:
        """The COPY data of ``records``, and (for NDJSON, which is converted row by row
        anyway) the rows. CSV rows are only built when a COPY fails (``_rows``)."""
        if self.ndjson is None:
            if self.mode == "direct":
                return b"\n".join(records.datas) + b"\n", None
            return b"".join(self._staged(records)), None
        rows: list[Row] = []
        suffix = self.mode != "direct"
        for line, data in zip(records.lines, records.datas, strict=True):
            try:
                converted = self.ndjson.convert(data)
            except RowError as exc:
                failures.append(RowFailure(line, str(exc), _raw(data, "utf_8")))
                continue
            if converted is not None:
                if suffix:
                    converted = converted[:-1] + b"\t%d\n" % line
                rows.append(Row(line, data, converted))
        return b"".join(row.payload for row in rows), rows

    def _staged(self, records: Records) -> list[bytes]:
        """CSV rows with their source line appended (the staging table's last column),
        as alternating pieces: row, delimiter + line + newline, row, ..."""
        tails = map((self.spec.delimiter.encode() + b"%d\n").__mod__, records.lines)
        datas: Iterable[bytes] = records.datas
        if any(data.endswith(b"\r") for data in records.datas[:1] + records.datas[-1:]):
            datas = [data[:-1] if data.endswith(b"\r") else data for data in records.datas]
        return list(itertools.chain.from_iterable(zip(datas, tails, strict=True)))

    def _rows(self, records: Records) -> list[Row]:
        """One Row per record (for isolating bad rows)."""
        if self.mode == "direct":
            payloads = [data + b"\n" for data in records.datas]
        else:
            pieces = self._staged(records)
            payloads = [row + tail for row, tail in zip(pieces[::2], pieces[1::2], strict=True)]
        return [
            Row(line, data, payload)
            for line, data, payload in zip(records.lines, records.datas, payloads, strict=True)
        ]

    async def _load_chunk(self, span: Span, prepared: Prepared) -> None:
        """Load one chunk inside ``span``'s open transaction (committed by ``_commit``)."""
        s = self.spec
        chunk, payload, rows, failures = (
            prepared.chunk,
            prepared.payload,
            prepared.rows,
            prepared.failures,
        )
        part = tables.Staging(self.job.id, self.parts) if self.mode == "atomic" else None
        staging = part or self.staging
        into = (staging.schema, staging.name) if staging else (s.schema, s.table)
        columns = self.columns + (["importd_line"] if staging else [])
        if self.mover is not None:
            self.mover.check()  # stop early if the move already failed
        conn = span.conn
        before = (
            self.loaded,
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
            loaded = await self._copy_chunk(
                conn, into, columns, chunk.records, payload, rows, failures
            )
            if self.staging is not None:
                lines = (chunk.records.lines[0], chunk.next_line)
                rejected = len(failures)
                moved = await self._move_isolating(conn, self.staging, lines, failures)
                self.skipped += loaded - moved - (len(failures) - rejected)
                loaded = moved
                await self.staging.truncate(conn)
            self.loaded += loaded
            self.offset = chunk.end_offset
            span.next_line = chunk.next_line
            self._check_budget(failures)
        except TooManyErrors:
            # Undo this chunk only; with atomic: false the chunks before it stay loaded.
            await savepoint.rollback()
            self.loaded, self.offset, span.next_line, self.parts, kept, self.skipped = before
            del span.parts[kept:]
            if self.mode != "atomic" and span.next_line:
                found, span.failures = span.failures, []
                await self._commit(span)
                span.failures = found  # recorded by the caller, once
            raise
        await savepoint.commit()

    async def _commit(self, span: Span) -> None:
        """Record the span's rejected rows and the checkpoint that accounts for its
        chunks, fenced by the lease, and commit them with the rows."""
        conn = span.conn
        await record_failures(conn, self.job, span.failures)
        self.failed += len(span.failures)
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

    def _count(self, loaded: int, failures: list[RowFailure], extra: int = 0) -> None:
        self.loaded += loaded
        self.failed += len(failures)
        if self.failed + extra > self.spec.max_errors:
            first = failures[0] if failures else None
            raise TooManyErrors(
                f"TooManyErrors: {self.failed + extra} rows rejected, more than max_errors="
                f"{self.spec.max_errors}"
                + (f"; first: line {first.line}: {first.message}" if first else "")
                + (
                    "; nothing was loaded"
                    if self.spec.atomic
                    else f"; {self.loaded} rows of earlier chunks stay loaded"
                )
            )

    async def _copy_chunk(
        self,
        conn: asyncpg.Connection,
        into: tuple[str, str],
        columns: list[str],
        records: Records,
        payload: bytes,
        rows: list[Row] | None,
        failures: list[RowFailure],
    ) -> int:
        """COPY a chunk in one statement; only if PostgreSQL rejects a row are the rows
        built one by one to isolate it. Returns the rows loaded."""
        if not payload:
            return 0
        try:
            async with conn.transaction():
                await tables.copy_in(conn, into[0], into[1], columns, payload, self.copy_format)
        except ROW_LEVEL:
            return await self._copy_isolating(
                conn, into, columns, rows if rows is not None else self._rows(records), failures
            )
        return len(rows) if rows is not None else len(records)

    async def _copy_isolating(
        self,
        conn: asyncpg.Connection,
        into: tuple[str, str],
        columns: list[str],
        rows: list[Row],
        failures: list[RowFailure],
    ) -> int:
        """COPY ``rows``; rejected rows go to ``failures``. Returns the rows loaded.

        PostgreSQL names the line of the first bad row: the rows before it load in one
        COPY, the bad one is recorded, and the rest go on in the next round."""
        loaded = 0
        while rows:
            try:
                await self._copy_rows(conn, into, columns, rows)
                return loaded + len(rows)
            except ROW_LEVEL as exc:
                line, message = _describe(exc)
                index = _row_at(rows, line)
                if index is None:
                    return loaded + await self._bisect_copy(conn, into, columns, rows, failures)
                self._reject(failures, rows[index], message)
                if index:
                    loaded += await self._copy_isolating(
                        conn, into, columns, rows[:index], failures
                    )
                rows = rows[index + 1 :]
        return loaded

    async def _copy_rows(
        self, conn: asyncpg.Connection, into: tuple[str, str], columns: list[str], rows: list[Row]
    ) -> None:
        """COPY ``rows`` in a savepoint of their own (a failure undoes just them)."""
        async with conn.transaction():
            await tables.copy_in(
                conn,
                into[0],
                into[1],
                columns,
                b"".join(row.payload for row in rows),
                self.copy_format,
            )

    def _reject(self, failures: list[RowFailure], row: Row, message: str) -> None:
        """Record ``row`` as rejected; TooManyErrors past max_errors."""
        failures.append(RowFailure(row.line, message, _raw(row.raw, self.spec.encoding)))
        self._check_budget(failures)

    async def _bisect_copy(
        self,
        conn: asyncpg.Connection,
        into: tuple[str, str],
        columns: list[str],
        rows: list[Row],
        failures: list[RowFailure],
    ) -> int:
        """Isolate bad rows by halves, when an error names no line."""
        try:
            await self._copy_rows(conn, into, columns, rows)
            return len(rows)
        except ROW_LEVEL as exc:
            if len(rows) == 1:
                self._reject(failures, rows[0], _describe(exc)[1])
                return 0
        half = len(rows) // 2
        return await self._bisect_copy(
            conn, into, columns, rows[:half], failures
        ) + await self._bisect_copy(conn, into, columns, rows[half:], failures)

    def _check_budget(self, failures: list[RowFailure]) -> None:
        """Raise TooManyErrors once the rejected rows (committed, in ``failures``, and the
        mover's) exceed max_errors."""
        extra = self._mover_failures(failures)
        if self.failed + len(failures) + extra > self.spec.max_errors:
            self._count(0, failures, extra=extra)  # raises

    def _mover_failures(self, failures: list[RowFailure]) -> int:
        if self.mover is None or failures is self.mover.failures:
            return 0
        return len(self.mover.failures)

    async def _move_isolating(
        self,
        conn: asyncpg.Connection,
        staging: tables.Staging,
        lines: tuple[int, int],
        failures: list[RowFailure],
    ) -> int:
        """Move staged rows of ``lines`` to the target; rows the target rejects (NOT NULL,
        CHECK, unique, foreign keys) are isolated by bisection. Returns rows moved."""
        assert self.target is not None
        statement = await staging.move_statement(
            conn, self.target, self.columns, self.spec.on_conflict, list(self.spec.conflict_columns)
        )
        indexed = False

        async def move(lo: int, hi: int) -> int:
            nonlocal indexed
            try:
                async with conn.transaction():
                    status = await conn.execute(statement, lo, hi)
                return int(status.rsplit(" ", 1)[-1])
            except ROW_LEVEL as exc:
                if not indexed:
                    await staging.index_lines(conn)
                    indexed = True
                stats = await staging.range_stats(conn, lo, hi)
                if stats["n"] == 0:
                    return 0
                if stats["n"] == 1:
                    row = await staging.one_row(conn, lo, hi)
                    failures.append(
                        RowFailure(
                            row["line"] if row else lo,
                            _describe(exc)[1],
                            row["raw"][:RAW_LIMIT] if row else None,
                        )
                    )
                    self._check_budget(failures)
                    return 0
                mid = stats["mid"] if stats["mid"] > stats["lo"] else stats["lo"] + 1
                return await move(lo, mid) + await move(mid, hi)

        return await move(*lines)

    async def _finish_atomic(self, mover: Mover) -> dict[str, Any]:
        """Wait for the last chunk's move, then complete the job in the mover's
        transaction: the rows become visible exactly when the job is completed."""
        conn = await mover.finish()
        staged = self.loaded
        self.loaded = 0
        self._count(mover.moved, mover.failures)
        self.skipped = staged - mover.moved - len(mover.failures)
        self.ctx.log.info(
            "import_moved",
            rows=mover.moved,
            staged=staged,
            tables=mover.tables,
            move_wait_ms=round(mover.waited * 1000),
        )
        await record_failures(conn, self.job, mover.failures)
        for table in await tables.Staging.all_of(conn, self.job.id):
            await table.drop(conn)
        await self._save_totals(conn)
        result = self._result()
        if not await self.ctx.complete_in(conn, result):
            raise LeaseLost("the job's lease was lost before the final move")
        await mover.commit()
        return result

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
            self.ctx.log.warning("staging_drop_failed", error=str(exc))


class Mover:
    """Atomic imports: moves each staged chunk into the target inside one transaction
    that stays open until the job completes. It runs beside the loader, so the move of
    chunk n overlaps the COPY of chunk n + 1 (two server processes at work), and the
    rows become visible all at once, at completion. A crash rolls the moves back; the
    staging tables stay, and the next attempt moves them again."""

    def __init__(self, load: Import) -> None:
        self._load = load
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
        self._conn = await self._load.ctx.pool.acquire()
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
            self.moved += await self._load._move_isolating(
                self._conn, table, ALL_LINES, self.failures
            )
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
            await self._load.ctx.pool.release(self._conn)
            self._conn = None
