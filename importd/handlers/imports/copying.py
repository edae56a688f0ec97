"""Records → COPY: the COPY data of a chunk, loaded in one statement; only when
PostgreSQL rejects a row are the rows built one by one to isolate it."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable

import asyncpg

from ... import tables
from ...repository import RowFailure
from ..records import NdjsonRows, Records, RowError
from .common import ROW_LEVEL, Row, describe, raw_text


def _row_at(rows: list[Row], line: int | None) -> int | None:
    """The index of the row holding physical line ``line`` of a COPY's data (PostgreSQL
    counts newlines inside quoted fields too), or None."""
    if line is None or line < 1:
        return None
    ends = list(itertools.accumulate(row.payload.count(b"\n") or 1 for row in rows))
    index = bisect.bisect_left(ends, line)
    return index if index < len(rows) else None


class Copier:
    """Builds and loads the COPY data of chunks, for one import.

    ``staged``: the rows go to a staging table, each with its source line appended (the
    table's last column, ``importd_line``)."""

    def __init__(
        self,
        copy_format: tables.CopyFormat,
        encoding: str,
        delimiter: str,
        staged: bool,
        ndjson: NdjsonRows | None,
        check: Callable[[list[RowFailure]], None],
    ) -> None:
        self.copy_format = copy_format
        self.encoding = encoding
        self.delimiter = delimiter
        self.staged = staged
        self.ndjson = ndjson
        self._check = check

    # -- COPY data -----------------------------------------------------------------

    def payload(
        self, records: Records, failures: list[RowFailure]
    ) -> tuple[bytes, list[Row] | None]:
        """The COPY data of ``records``, and (for NDJSON, which is converted row by row
        anyway) the rows. CSV rows are only built when a COPY fails (``rows``)."""
        if self.ndjson is None:
            if not self.staged:
                return b"\n".join(records.datas) + b"\n", None
            return b"".join(self._staged(records)), None
        rows: list[Row] = []
        for line, data in zip(records.lines, records.datas, strict=True):
            try:
                converted = self.ndjson.convert(data)
            except RowError as exc:
                failures.append(RowFailure(line, str(exc), raw_text(data, "utf_8")))
                continue
            if converted is not None:
                if self.staged:
                    converted = converted[:-1] + b"\t%d\n" % line
                rows.append(Row(line, data, converted))
        return b"".join(row.payload for row in rows), rows

    def _staged(self, records: Records) -> list[bytes]:
        """CSV rows with their source line appended (the staging table's last column),
        as alternating pieces: row, delimiter + line + newline, row, ..."""
        tails = map((self.delimiter.encode() + b"%d\n").__mod__, records.lines)
        datas: Iterable[bytes] = records.datas
        if any(data.endswith(b"\r") for data in records.datas[:1] + records.datas[-1:]):
            datas = [data[:-1] if data.endswith(b"\r") else data for data in records.datas]
        return list(itertools.chain.from_iterable(zip(datas, tails, strict=True)))

    def rows(self, records: Records) -> list[Row]:
        """One Row per record (for isolating bad rows)."""
        if not self.staged:
            payloads = [data + b"\n" for data in records.datas]
        else:
            pieces = self._staged(records)
            payloads = [row + tail for row, tail in zip(pieces[::2], pieces[1::2], strict=True)]
        return [
            Row(line, data, payload)
            for line, data, payload in zip(records.lines, records.datas, payloads, strict=True)
        ]

    # -- loading -------------------------------------------------------------------

    async def copy_chunk(
        self,
        conn: asyncpg.Connection,
        into: tuple[str, str],
        columns: list[str],
        records: Records,
        payload: bytes,
        rows: list[Row] | None,
        failures: list[RowFailure],
    ) -> int:
        """COPY a chunk in one statement; rejected rows go to ``failures``. Returns the
        rows loaded."""
        if not payload:
            return 0
        try:
            async with conn.transaction():
                await tables.copy_in(conn, into[0], into[1], columns, payload, self.copy_format)
        except ROW_LEVEL:
            return await self._isolating(
                conn, into, columns, rows if rows is not None else self.rows(records), failures
            )
        return len(rows) if rows is not None else len(records)

    async def _isolating(
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
                line, message = describe(exc)
                index = _row_at(rows, line)
                if index is None:
                    return loaded + await self._bisect(conn, into, columns, rows, failures)
                self.reject(failures, rows[index], message)
                if index:
                    loaded += await self._isolating(conn, into, columns, rows[:index], failures)
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

    def reject(self, failures: list[RowFailure], row: Row, message: str) -> None:
        """Record ``row`` as rejected; TooManyErrors past max_errors."""
        failures.append(RowFailure(row.line, message, raw_text(row.raw, self.encoding)))
        self._check(failures)

    async def _bisect(
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
                self.reject(failures, rows[0], describe(exc)[1])
                return 0
        half = len(rows) // 2
        return await self._bisect(conn, into, columns, rows[:half], failures) + await self._bisect(
            conn, into, columns, rows[half:], failures
        )
