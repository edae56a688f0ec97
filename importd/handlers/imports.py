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
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
        self.staging: tables.Staging | None = None
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
        if s.atomic or s.on_conflict != "error":
            self.staging = tables.Staging(self.job.id)
        checkpoint = await self._usable_checkpoint()
        try:
            result = await self._load(checkpoint)
        except BaseException as exc:
            if self.staging is not None and (
                isinstance(exc, PermanentError)
                or (self.job.last_attempt and isinstance(exc, Exception))
            ):
                await self._drop_staging()
            raise
        return result

    async def _usable_checkpoint(self) -> dict[str, Any] | None:
        cp = self.job.checkpoint
        if (
            not cp
            or cp.get("version") != CHECKPOINT_VERSION
            or cp.get("source") != self.spec.source
        ):
            return None
        if self.staging is not None and self.spec.atomic and cp.get("loaded", 0) > 0:
            async with self.ctx.pool.acquire() as conn:
                state = await self.staging.state(conn)
            if state != "filled":
                # An UNLOGGED table loses its rows in a server crash: start again.
                self.ctx.log.warning("import_restarting", reason=f"staging table {state}")
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
                leftover = Records()
            else:
                leftover = await self._begin(records)
            self._prepare_rows()
            if self.staging is not None:
                async with self.ctx.pool.acquire() as conn:
                    if not cp:
                        await self.staging.drop(conn)
                    assert self.target is not None
                    await self.staging.create(conn, self.target, self.columns)
            await self._pipeline(self._chunks(leftover, records, start))
        finally:
            await opened.close()
        if self.staging is not None and s.atomic:
            return await self._finish_atomic()
        async with self.ctx.pool.acquire() as conn:
            await self._save_totals(conn)
        return self._result()

    async def _save_totals(self, conn: asyncpg.Connection) -> None:
        """The final counters, rows_total included (known only now)."""
        checkpoint = self.job.checkpoint or {}
        await save_checkpoint(
            conn,
            self.job,
            self.ctx.worker_id,
            checkpoint,
            rows_done=self.loaded,
            rows_failed=self.failed,
            bytes_read=self.offset,
            rows_total=self.loaded + self.failed + self.skipped,
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
        """Read and split the next chunk while the current one is in COPY."""
        queue: asyncio.Queue[Chunk | Exception | None] = asyncio.Queue(maxsize=1)

        async def produce() -> None:
            try:
                async for chunk in chunks:
                    await queue.put(chunk)
            except Exception as exc:  # hand the reader's error to the loader
                await queue.put(exc)
                return
            await queue.put(None)

        producer = asyncio.create_task(produce())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                await self._load_chunk(item)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    # -- one chunk -----------------------------------------------------------------

    def _payload(
        self, records: Records, failures: list[RowFailure]
    ) -> tuple[bytes, list[Row] | None]:
        """The COPY data of ``records``, and (for NDJSON, which is converted row by row
        anyway) the rows. CSV rows are only built when a COPY fails (``_rows``)."""
        if self.ndjson is None:
            if self.staging is None:
                return b"\n".join(records.datas) + b"\n", None
            return b"".join(self._staged(records)), None
        rows: list[Row] = []
        suffix = self.staging is not None
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
        """CSV rows with their source line appended (the staging table's last column)."""
        tail = self.spec.delimiter.encode() + b"%d\n"
        return [
            (data[:-1] if data.endswith(b"\r") else data) + tail % line
            for line, data in zip(records.lines, records.datas, strict=True)
        ]

    def _rows(self, records: Records) -> list[Row]:
        """One Row per record (for isolating bad rows)."""
        if self.staging is None:
            payloads = [data + b"\n" for data in records.datas]
        else:
            payloads = self._staged(records)
        return [
            Row(line, data, payload)
            for line, data, payload in zip(records.lines, records.datas, payloads, strict=True)
        ]

    async def _load_chunk(self, chunk: Chunk) -> None:
        s = self.spec
        failures: list[RowFailure] = []
        payload, rows = self._payload(chunk.records, failures)
        into = (self.staging.schema, self.staging.name) if self.staging else (s.schema, s.table)
        columns = self.columns + (["importd_line"] if self.staging else [])
        async with self.ctx.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    loaded = await self._copy_chunk(
                        conn, into, columns, chunk.records, payload, rows, failures
                    )
                    if self.staging is not None and not s.atomic:
                        lines = (chunk.records.lines[0], chunk.next_line)
                        rejected = len(failures)
                        moved = await self._move_isolating(conn, lines, failures)
                        self.skipped += loaded - moved - (len(failures) - rejected)
                        loaded = moved
                        await self.staging.truncate(conn)
                    self._count(loaded, failures)
                    await record_failures(conn, self.job, failures)
                    self.offset = chunk.end_offset
                    checkpoint = {
                        "version": CHECKPOINT_VERSION,
                        "source": s.source,
                        "offset": chunk.end_offset,
                        "line": chunk.next_line,
                        "columns": self.columns,
                        "loaded": self.loaded,
                        "failed": self.failed,
                        "fingerprint": self.fingerprint,
                    }
                    held = await save_checkpoint(
                        conn,
                        self.job,
                        self.ctx.worker_id,
                        checkpoint,
                        rows_done=self.loaded,
                        rows_failed=self.failed,
                        bytes_read=self.offset,
                    )
                    if not held:
                        raise LeaseLost("the job's lease was lost; the chunk was rolled back")
            except TooManyErrors:
                async with conn.transaction():
                    await record_failures(conn, self.job, failures)
                raise
        self.ctx.progress(self.loaded, failed=self.failed, bytes_read=self.offset)

    def _count(self, loaded: int, failures: list[RowFailure]) -> None:
        self.loaded += loaded
        self.failed += len(failures)
        if self.failed > self.spec.max_errors:
            first = failures[0] if failures else None
            raise TooManyErrors(
                f"TooManyErrors: {self.failed} rows rejected, more than max_errors="
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
                async with conn.transaction():
                    await tables.copy_in(
                        conn,
                        into[0],
                        into[1],
                        columns,
                        b"".join(row.payload for row in rows),
                        self.copy_format,
                    )
                return loaded + len(rows)
            except ROW_LEVEL as exc:
                line, message = _describe(exc)
                index = _row_at(rows, line)
                if index is None:
                    return loaded + await self._bisect_copy(conn, into, columns, rows, failures)
                bad = rows[index]
                failures.append(RowFailure(bad.line, message, _raw(bad.raw, self.spec.encoding)))
                self._check_budget(failures)
                if index:
                    loaded += await self._copy_isolating(
                        conn, into, columns, rows[:index], failures
                    )
                rows = rows[index + 1 :]
        return loaded

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
            async with conn.transaction():
                await tables.copy_in(
                    conn,
                    into[0],
                    into[1],
                    columns,
                    b"".join(row.payload for row in rows),
                    self.copy_format,
                )
            return len(rows)
        except ROW_LEVEL as exc:
            if len(rows) == 1:
                failures.append(
                    RowFailure(
                        rows[0].line, _describe(exc)[1], _raw(rows[0].raw, self.spec.encoding)
                    )
                )
                self._check_budget(failures)
                return 0
        half = len(rows) // 2
        return await self._bisect_copy(
            conn, into, columns, rows[:half], failures
        ) + await self._bisect_copy(conn, into, columns, rows[half:], failures)

    def _check_budget(self, failures: list[RowFailure]) -> None:
        if self.failed + len(failures) > self.spec.max_errors:
            self._count(0, failures)  # raises TooManyErrors

    async def _move_isolating(
        self, conn: asyncpg.Connection, lines: tuple[int, int], failures: list[RowFailure]
    ) -> int:
        """Move staged rows of ``lines`` to the target; rows the target rejects (NOT NULL,
        CHECK, unique, foreign keys) are isolated by bisection. Returns rows moved."""
        assert self.staging is not None and self.target is not None
        statement = await self.staging.move_statement(
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
                assert self.staging is not None
                if not indexed:
                    await self.staging.index_lines(conn)
                    indexed = True
                stats = await self.staging.range_stats(conn, lo, hi)
                if stats["n"] == 0:
                    return 0
                if stats["n"] == 1:
                    row = await self.staging.one_row(conn, lo, hi)
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

    async def _finish_atomic(self) -> dict[str, Any]:
        """Move everything staged into the target and complete the job, in one
        transaction; then the staging table is gone."""
        assert self.staging is not None
        async with self.ctx.pool.acquire() as conn:
            failures: list[RowFailure] = []
            try:
                async with conn.transaction():
                    staged = self.loaded
                    self.loaded = 0
                    moved = await self._move_isolating(conn, ALL_LINES, failures)
                    self._count(moved, failures)
                    self.skipped = staged - moved - len(failures)
                    await record_failures(conn, self.job, failures)
                    result = self._result()
                    await self.staging.drop(conn)
                    await self._save_totals(conn)
                    if not await self.ctx.complete_in(conn, result):
                        raise LeaseLost("the job's lease was lost before the final move")
            except TooManyErrors:
                async with conn.transaction():
                    await record_failures(conn, self.job, failures)
                raise
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
        if self.staging is None:
            return
        try:
            async with asyncio.timeout(10), self.ctx.pool.acquire() as conn:
                await self.staging.drop(conn)
        except Exception as exc:  # the rescuer's sweep drops it later
            self.ctx.log.warning("staging_drop_failed", error=str(exc))
