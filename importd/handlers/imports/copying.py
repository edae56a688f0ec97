"""Records → COPY: a chunk's COPY data (``preparing``), loaded in one statement; only when
PostgreSQL rejects a row are bad rows sought, by three means, each the fallback of the
one before:

1. the screen (``screening``, ``Copier._screened``): records whose values all have a
   shape their types surely accept are known good; a record of a bad shape (a field too
   many or too few, bytes that are not UTF-8) is judged by the screen where that is
   certain (``Copier.verdicts``); PostgreSQL converts the others (the
   suspects, 2 % of a chunk when 2 % of its rows are bad) in a temporary table (after a
   chunk with bad rows, on another connection while the chunk before is in its COPY:
   ``ahead.check``), and the chunk loads without its bad rows in one COPY, in
   file order (a raw chunk, screened from its bytes: ``Copier.screen_raw``, as slices
   of them: ``Screened``);
2. the set-based check (``Copier._checked``): the whole chunk converted in the temporary
   table, a subtransaction per row, and moved by one ``INSERT … SELECT``; when the
   target refuses a row of it (a constraint, a trigger), the rows go in one by one in
   one statement, each refusal noted (``checking.CheckTable``), and the chunks after
   it come straight here (``Copier.refusing``). Where the target refuses rows by a NOT
   NULL or a CHECK alone (an immutable test), one COPY leaves those rows out and loads
   the others, and only the rows it left out go in one by one (``CheckTable.filtered``);
3. isolation COPY by COPY (``isolating.Isolation``), for rows that do not split into
   fields.

Isolating bad rows costs about one failed COPY per bad row, whatever their number: a
COPY error names its line, the rows before it are known good and travel with the next
window, the bad one is recorded, and the window after it is sized by the gap between
bad rows (doubling while COPYs succeed). No row is sent more than a few times, so
20,000 bad rows in a million cost about 20,000 short statements, not 20,000 re-sends of
the rest of the chunk.

Line numbers: PostgreSQL counts the lines of a COPY its own way (newlines inside quoted
fields count, but in the first record only carriage returns do), so the failing row is
found by that same rule; where a multi-line record makes the count doubtful, the row is
checked alone before it is rejected. In staging tables every row carries its source
line in ``importd_line``, written first in the row. The helper tables' columns never
take the user's names (a target may have columns of any name): the values go to
``c1``..``cN`` by position (``tables.positional``), and a COPY error that names one of
them (a value that does not convert, a short row's missing column) is told under the
user's name (``describe``).

A raw chunk (``reading.raw_chunks``) goes to COPY as the source's bytes (``copy_raw``)
and is split into records only when that COPY fails. After a chunk with bad rows
(``Copier.suspecting``) the next one, raw or not, is prepared and screened before its
COPY, and so on until a chunk has none (``preparing.Preparer``). Once bad values were
found, the screen looks only at the columns that held them so far (``watching.Watch``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from ... import tables
from ...db import Connection
from ...repository import RowFailure
from ..records import NdjsonRows, Records
from . import ahead
from .batches import Batch, Screened, join_rows
from .checking import FILTERABLE, TRY, CheckTable, copy_in
from .common import (
    ROW_LEVEL,
    Row,
    describe,
    raw_text,
)
from .isolating import Isolation, try_copy
from .preparing import Preparer
from .screening import Screen, ValueType
from .watching import Watch


def _server_utf8(conn: Connection) -> bool:
    """Whether the server's encoding is UTF8 (then COPY refuses the bytes of a UTF-8 file
    that are not UTF-8 with the message ``Screen.verdict`` gives, and nothing else)."""
    return str(getattr(conn.get_settings(), "server_encoding", "")).upper() == "UTF8"


class Copier:
    """Builds and loads the COPY data of chunks, for one import.

    ``staged``: the rows go to a staging table (the strategies ``StagedPerChunk`` and
    ``StagedAtomic``), each with its source line first (the table's ``importd_line``
    column). It changes a few details, each where it is, not the ways to find bad rows,
    which every strategy shares (so no class per strategy here): the COPY columns and the
    line prefix, the user's name for a helper column in an error, a line ``\\.`` alone
    (it would end the COPY: quoted when direct; staged, its line number comes first), no
    screen of raw bytes (a staged chunk is split into records anyway), the columns the
    check's ``INSERT`` fills."""

    def __init__(
        self,
        copy_format: tables.CopyFormat,
        encoding: str,
        delimiter: str,
        quote: str,
        staged: bool,
        ndjson: NdjsonRows | None,
        max_record: int,
        check: Callable[[list[RowFailure]], None],
        log: Any = None,
    ) -> None:
        self.copy_format = copy_format
        self.log = log if log is not None else structlog.get_logger("importd.imports")
        self.encoding = encoding
        self.staged = staged
        self._check = check
        self._csv = ndjson is None
        # Rows with their source line first: in staging tables and the check's table.
        # (A format string: a "%" delimiter is written "%%" in it.)
        self._line_prefix = b"%d" + (delimiter.encode() if self._csv else b"\t").replace(
            b"%", b"%%"
        )
        # PostgreSQL's count of lines is followed exactly (``locate``) when the escape is
        # the quote; with another escape its quote tracking may differ from the
        # splitter's, so a row found through a multi-line record is checked alone.
        self._doubt = self._csv and copy_format.escape != copy_format.quote
        # The set-based check and the rows the target refuses (``names`` and ``types``
        # are its own: set once the target is known).
        self.checks = CheckTable(copy_format, staged, self._line_prefix, self.reject)
        # The screen, and the columns it watches once bad rows appeared.
        self.watch = Watch(copy_format, self.checks, screened=not self._doubt, csv=self._csv)
        # The COPY data of a chunk: its records prepared, or its bytes screened as they are.
        self.prep = Preparer(
            self.watch,
            encoding=encoding,
            staged=staged,
            ndjson=ndjson,
            max_record=max_record,
            line_prefix=self._line_prefix,
            quote=quote,
        )

    @property
    def names(self) -> list[str]:
        """The import's columns, in the order of the COPY data."""
        return self.checks.names

    @names.setter
    def names(self, names: list[str]) -> None:
        self.checks.names = names

    @property
    def suspecting(self) -> bool:
        """Whether the last chunk had bad rows: then the next is screened before its COPY
        (in ``prepare``, in the producer's thread) and goes straight to ``_screened``."""
        return self.watch.suspecting

    @suspecting.setter
    def suspecting(self, value: bool) -> None:
        self.watch.suspecting = value

    @property
    def screen_types(self) -> list[ValueType] | None:
        """The types of ``names`` as the screen judges values (``screening.value_type``:
        an enum's labels, a domain's base type); None: ``types``."""
        return self.watch.value_types

    @screen_types.setter
    def screen_types(self, kinds: list[ValueType] | None) -> None:
        self.watch.value_types = kinds

    @property
    def types(self) -> list[str] | None:
        """The types of ``names`` (``format_type``'s), or None when not known."""
        return self.checks.types

    @types.setter
    def types(self, types: list[str] | None) -> None:
        self.checks.types = types

    # -- COPY data -----------------------------------------------------------------

    def columns(self, columns: list[str]) -> list[str]:
        """The COPY column list for the import's columns: theirs, or a staging table's
        (the source line, then ``c1``..``cN``)."""
        return [tables.LINE, *tables.positional(len(columns))] if self.staged else columns

    def _describe(self, error: asyncpg.PostgresError) -> tuple[int | None, str]:
        """``describe`` for a COPY into ``into``: a staging table's columns told under
        the user's names."""
        if self.staged:
            return describe(error, self.names, tables.positional(len(self.names)))
        return describe(error, None, self.names)

    def prepare(self, records: Records, failures: list[RowFailure]) -> Batch:
        """``Preparer.prepare``: the rows of ``records`` for COPY (in a thread)."""
        return self.prep.prepare(records, failures)

    def screen_raw(
        self, data: bytes, first_line: int, next_line: int | None = None
    ) -> Screened | None:
        """``Preparer.screen_raw``: a chunk's bytes screened as they are (in a thread)."""
        return self.prep.screen_raw(data, first_line, next_line)

    def screen(self) -> Screen | None:
        """The screen of this import's columns (None: not screened; see
        ``screening``), as ``watching.Watch`` has it now."""
        return self.watch.screen()

    # -- loading -------------------------------------------------------------------

    async def copy_chunk(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        batch: Batch,
        failures: list[RowFailure],
    ) -> int:
        """COPY a chunk in one statement; rejected rows go to ``failures``. Returns the
        rows loaded.

        A chunk whose COPY fails is screened (``screening``): PostgreSQL converts only
        the suspects, in a temporary table, and the rest loads in one COPY with the bad
        ones left out (``_screened``). After a chunk with bad rows the next one is
        screened first and does not try the COPY that would likely fail."""
        if batch.ahead is not None:
            await batch.ahead
        if not batch.payload:
            return 0
        before = len(failures)
        await conn.execute(f"SAVEPOINT {TRY}")
        loaded = None
        suspects = batch.suspects
        # Screened up front: skip the COPY that would likely fail (it stops at the first
        # bad row, but the whole chunk is sent: about a tenth of a COPY), unless the
        # screen doubts a quarter of the rows or more. It may then not know this file's
        # way of writing a value, and a COPY that succeeds is cheaper than converting
        # them all one by one.
        if suspects and len(suspects) <= len(batch) // 4:
            loaded = await self._screened(conn, into, columns, batch, suspects, failures)
        if loaded is None and self.checks.refusing:
            # The target refused rows of the chunk before: this one likely too.
            loaded = await self._rest(conn, into, columns, batch, failures, None)
        if loaded is None:
            loaded = await self._whole(conn, into, columns, batch, failures)
        await conn.execute(f"RELEASE SAVEPOINT {TRY}")
        self._note_bad_rows(failures[before:])
        return loaded

    def _note_bad_rows(self, found: list[RowFailure]) -> None:
        """After a chunk: whether it had bad rows (then the next is screened before its
        COPY), and which columns held them (the screen watches those)."""
        self.suspecting = bool(found)
        if found:
            self.watch.bad_rows(found)

    async def _whole(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        batch: Batch,
        failures: list[RowFailure],
    ) -> int:
        """COPY the whole chunk; when that fails, screen it, then check it set-based,
        then isolate its bad rows COPY by COPY, whichever works first."""
        error = await self._try(conn, into, columns, batch.payload)
        if error is None:
            return len(batch)
        return await self._recover(conn, into, columns, batch, failures, error)

    async def copy_raw(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        data: bytes,
        batch_of: Callable[[], Batch],
        failures: list[RowFailure],
        screened: Screened | None = None,
        records_of: Callable[[], Records] | None = None,
    ) -> int:
        """COPY a chunk's source bytes as they are (CSV that needs no change, loaded
        into the target); only when PostgreSQL rejects a row are they split into records
        (``batch_of``, run in a thread) to isolate it. Returns the rows loaded.

        ``screened``: the bytes were screened before (``screen_raw``, after a chunk with
        bad rows): PostgreSQL converts the suspects alone and the bytes without the bad
        ones load in one COPY (``_raw_screened``), unless the screen doubts a quarter of
        the lines or more (as in ``copy_chunk``). After a chunk whose rows the target
        refused (``refusing``), the bytes go in by a COPY that leaves out what a NOT
        NULL or a CHECK refuses (``CheckTable.filtered``), split into records (``records_of``)
        only to tell which rows those were."""
        await conn.execute(f"SAVEPOINT {TRY}")
        before = len(failures)
        loaded = None
        if screened is not None and len(screened.rows) <= screened.lines // 4:
            loaded = await self._raw_screened(
                conn, into, columns, screened, batch_of, failures, records_of
            )
        elif self.checks.refusing and records_of is not None:
            split = functools.partial(self._rows_of, records_of, set())
            loaded = await self.checks.filtered(conn, into, columns, data, split, failures)
        if loaded is not None:
            await conn.execute(f"RELEASE SAVEPOINT {TRY}")
            self._note_bad_rows(failures[before:])
            return loaded
        try:
            loaded = await copy_in(conn, into[0], into[1], columns, data, self.copy_format)
        except ROW_LEVEL as exc:
            await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
            batch = await asyncio.to_thread(batch_of)
            loaded = await self._recover(conn, into, columns, batch, failures, exc)
            # As after a prepared chunk: the next chunks are screened before their COPY
            # (from their bytes, or prepared when that cannot be done).
            self._note_bad_rows(failures[before:])
            return loaded
        await conn.execute(f"RELEASE SAVEPOINT {TRY}")
        self.suspecting = False
        return loaded

    async def _raw_screened(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        screened: Screened,
        batch_of: Callable[[], Batch],
        failures: list[RowFailure],
        records_of: Callable[[], Records] | None = None,
    ) -> int | None:
        """``_screened`` for a chunk's bytes: the suspects checked (ahead, or here), the
        bytes without the bad ones COPYed in one statement (by ``CheckTable.filtered`` after a
        chunk the target refused rows of). When that COPY fails (a row the screen
        vouched for in error, or one the target's constraints refuse), the chunk is
        split into records (``batch_of``) and its other rows checked and isolated as
        any failing chunk's. None (nothing loaded, nothing rejected) when the suspects
        cannot be checked so."""
        if screened.ahead is not None:
            await screened.ahead
        rows = screened.rows
        settled = screened.settled
        if settled is None:
            bad = screened.verdicts if rows else {}
            if bad is None:
                bad = await self.verdicts(conn, into, rows)
                if bad is None:
                    return None
            settled = self.settle_screened(screened, bad)
        gone, rejected, data = settled
        for failure in rejected:  # (as ``reject``: max_errors counted row by row)
            failures.append(failure)
            self._check(failures)
        if not data:
            return 0
        error = None
        left = {rows.lines[i] for i in gone}
        if self.checks.refusing and records_of is not None:
            split = functools.partial(self._rows_of, records_of, left)
            loaded = await self.checks.filtered(
                conn, into, columns, data, split, failures, screened.refused
            )
            if loaded is not None:
                return loaded
        elif not self.checks.refusing:
            try:
                return await copy_in(conn, into[0], into[1], columns, data, self.copy_format)
            except ROW_LEVEL as exc:
                await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
                error = exc
        batch = await asyncio.to_thread(batch_of)
        rest = [i for i, line in enumerate(batch.lines) if line not in left]
        return await self._rest(conn, into, columns, batch.subset(rest), failures, error)

    def _rows_of(self, records_of: Callable[[], Records], left: set[int]) -> Batch:
        """The records of a raw chunk (``records_of``: split from its bytes, which COPY
        takes as they are) but those at lines ``left``, as a batch whose COPY data is
        the check table's (each row after its source line: ``CheckTable.filtered`` COPYs the
        chunk's bytes into the target, and these rows into the check's table only when
        rows were left out). CPU-bound: run it in a thread."""
        records = records_of()
        lines, datas = records.lines, records.datas
        if left:
            keep = [i for i, line in enumerate(lines) if line not in left]
            lines, datas = [lines[i] for i in keep], [datas[i] for i in keep]
        prefix = self._line_prefix
        return Batch(lines, datas, datas, join_rows(prefix, lines, datas), prefix)

    def settle_screened(
        self, screened: Screened, bad: dict[int, str]
    ) -> tuple[list[int], list[RowFailure], bytes]:
        """What the verdicts ``bad`` (message by line) make of ``screened``: see
        ``Screened.settled``."""
        rows = screened.rows
        gone = [i for i, line in enumerate(rows.lines) if line in bad]
        rejected = [
            RowFailure(rows.lines[i], bad[rows.lines[i]], raw_text(rows.raws[i], self.encoding))
            for i in gone
        ]
        return gone, rejected, screened.without(gone) if gone else screened.data

    async def _recover(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        batch: Batch,
        failures: list[RowFailure],
        error: asyncpg.PostgresError,
    ) -> int:
        """Load ``batch``, whose COPY failed with ``error`` (savepoint ``importd_try``
        still set): the good rows load, the bad ones go to ``failures``."""
        suspects = batch.suspects
        if suspects is None and (screen := self.screen()) is not None:
            suspects = await asyncio.to_thread(screen.suspects, batch.bodies)
        if suspects:
            loaded = await self._screened(conn, into, columns, batch, suspects, failures)
            if loaded is not None:
                return loaded
        return await self._rest(conn, into, columns, batch, failures, error)

    async def _screened(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        batch: Batch,
        suspects: list[int],
        failures: list[RowFailure],
    ) -> int | None:
        """Load ``batch`` whose rows at ``suspects`` the screen could not vouch for: the
        suspects alone go through the set-based check (``CheckTable.convert``, which notes the bad
        ones and loads nothing), then the chunk without its bad rows loads in one COPY,
        in file order. None (nothing loaded, nothing rejected) when the suspects cannot
        be checked so: the caller takes the whole chunk down the older path.

        Exact whatever the screen says: the bad rows are the ones PostgreSQL's own
        conversion refused, and a row called good in error (or one the target's
        constraints refuse) fails the COPY of the rest, which is then checked and
        isolated as any failing chunk."""
        bad = batch.verdicts if suspects is batch.suspects else None
        if bad is None:
            bad = await self.verdicts(conn, into, batch.subset(suspects))
            if bad is None:
                return None
        gone = [i for i in suspects if batch.lines[i] in bad]
        for i in gone:
            self.reject(failures, Row(batch.lines[i], batch.raws[i], b""), bad[batch.lines[i]])
        count = len(batch) - len(gone)
        if not count:
            return 0
        error = None
        if not self.checks.refusing:
            payload = batch.without(gone) if gone else batch.payload
            error = await self._try(conn, into, columns, payload)
            if error is None:
                return count
        left = set(gone)
        rest = batch.subset([i for i in range(len(batch)) if i not in left])
        return await self._rest(conn, into, columns, rest, failures, error)

    async def _rest(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        rest: Batch,
        failures: list[RowFailure],
        error: asyncpg.PostgresError | None,
    ) -> int:
        """Load ``rest``, a chunk's rows but the bad ones the screen's check found, whose
        COPY failed with ``error`` anyway (None: not tried, as the target refused rows
        of the chunk before: ``refusing``): by a COPY that leaves out what a NOT NULL
        or a CHECK refuses (``CheckTable.filtered``) when the target refused such rows, else
        set-based, else COPY by COPY."""
        loaded = None
        if error is None or isinstance(error, FILTERABLE):
            loaded = await self.checks.filtered(conn, into, columns, rest.payload, rest, failures)
        if loaded is None:
            loaded = await self._checked(conn, into, rest, failures)
        if loaded is None:
            if error is None:
                error = await self._try(conn, into, columns, rest.payload)
                if error is None:
                    return len(rest)
            loaded = await self._isolate(conn, into, columns, rest.rows(), failures, error)
        return loaded

    def start_check_ahead(
        self,
        pool: asyncpg.Pool,
        target: Batch | Screened,
        records_of: Callable[[], Records] | None = None,
    ) -> None:
        """``ahead.start`` for this import: the check ahead of ``target``'s suspects
        (and of the rows the target refuses) as a task of its own."""
        ahead.start(self, pool, target, records_of)

    async def check_ahead(
        self,
        pool: asyncpg.Pool,
        target: Batch | Screened,
        records_of: Callable[[], Records] | None = None,
    ) -> None:
        """``ahead.check``, awaited here (see there)."""
        await ahead.check(self, pool, target, records_of)

    async def verdicts(
        self, conn: Connection, into: tuple[str, str], rows: Batch
    ) -> dict[int, str] | None:
        """PostgreSQL's verdict on suspect ``rows``: the message of each bad one by its
        line; None (after a rollback to ``importd_try``) when they cannot be checked
        set-based.

        Where the verdict is certain without PostgreSQL (``Screen.verdict``: bytes that
        are not UTF-8, a field too many, a field too few after fields that surely
        convert) it is taken from the screen, with PostgreSQL's own message; a record
        with a field too few and fields in doubt goes to the check with NULL for its
        missing fields, and its message is the first of its present fields' errors, or
        else the missing one's. The others go to ``CheckTable.convert`` as they are, which
        finds the rows the target's NOT NULL or CHECK refuses among them too (once the
        target refused rows so: ``refusals``). (A record COPY cannot split into fields
        would make the whole check fail.)"""
        screen = self.screen()
        if screen is None or not self._csv:
            checked = await self.checks.convert(conn, into, rows, insert=False, refusals=True)
            return None if checked is None else {r["line"]: r["message"] for r in checked[1]}
        utf8 = self.copy_format.encoding == "UTF8" and _server_utf8(conn)
        decided: dict[int, str] = {}
        short: dict[int, int] = {}  # line → the index of its first missing column
        kept: list[int] = []
        bodies = list(rows.bodies)
        for i, (line, body) in enumerate(zip(rows.lines, rows.bodies, strict=True)):
            verdict = screen.verdict(body + b"\n", body, self.names, utf8)
            if isinstance(verdict, str):
                decided[line] = verdict
                continue
            if verdict is not None:
                count = screen.fields(body)
                assert count is not None
                short[line] = count
                bodies[i] = verdict
            kept.append(i)
        if kept:
            lines = [rows.lines[i] for i in kept]
            sent = [bodies[i] for i in kept]
            batch = Batch(
                lines,
                [rows.raws[i] for i in kept],
                sent,
                self.prep.join(lines, sent),
                self.prep.prefix,
            )
            checked = await self.checks.convert(conn, into, batch, insert=False, refusals=True)
            if checked is None:
                return None
            for row in checked[1]:
                line, message = row["line"], row["message"]
                count = short.get(line)
                if count is not None and not message.startswith("column "):
                    continue  # (a refusal: the missing field's error comes before it)
                if count is not None:
                    # Which column failed: one of the fields present, or a NULL put in
                    # for a missing one (a domain that refuses NULL).
                    names = enumerate(self.names)
                    at = {i for i, name in names if message.startswith(f"column {name}: ")}
                    if not at or (min(at) < count <= max(at)):
                        return None  # (the name says no column for sure)
                    if min(at) >= count:
                        continue  # the missing field's error comes first
                decided[line] = message
            for line, count in short.items():
                decided.setdefault(line, f'missing data for column "{self.names[count]}"')
        return decided

    async def _checked(
        self,
        conn: Connection,
        into: tuple[str, str],
        batch: Batch,
        failures: list[RowFailure],
    ) -> int | None:
        """Load a failing chunk set-based (see ``sql/queries/build_check.sql``): a few
        statements whatever the number of bad rows. None when that cannot be done (a row
        COPY cannot even split into fields, or the target refuses a converted row): the
        caller then isolates bad rows COPY by COPY."""
        checked = await self.checks.convert(conn, into, batch, insert=True)
        if checked is None:
            return None
        loaded, bad = checked
        raws = dict(zip(batch.lines, batch.raws, strict=True))
        for row in bad:
            self.reject(failures, Row(row["line"], raws.get(row["line"], b""), b""), row["message"])
        return loaded

    def reject(self, failures: list[RowFailure], row: Row, message: str) -> None:
        """Record ``row`` as rejected; TooManyErrors past max_errors."""
        failures.append(RowFailure(row.line, message, raw_text(row.raw, self.encoding)))
        self._check(failures)

    async def _try(
        self, conn: Connection, into: tuple[str, str], columns: list[str], payload: bytes
    ) -> asyncpg.PostgresError | None:
        """``isolating.try_copy`` in this import's COPY format."""
        return await try_copy(conn, into, columns, payload, self.copy_format)

    async def _isolate(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        rows: list[Row],
        failures: list[RowFailure],
        error: asyncpg.PostgresError,
    ) -> int:
        """Load ``rows`` whose COPY failed with ``error`` COPY by COPY
        (``isolating.Isolation``); rejected rows go to ``failures``. The rows loaded."""
        isolation = Isolation(
            conn,
            into,
            columns,
            self.copy_format,
            self._describe,
            self.reject,
            csv=self._csv,
            doubt=self._doubt,
        )
        return await isolation.run(rows, failures, error)
