"""The set-based check of a chunk's rows in a temporary table, and the rows the target
refuses (``CheckTable``): what ``copying.Copier`` falls back on once a COPY failed.

- ``CheckTable.convert``: the rows converted as COPY would, in a temporary table of
  positional text columns, one exception block per row (``sql/queries/build_check.sql``),
  the bad ones noted with PostgreSQL's message; with ``insert``, the good ones moved into
  the target by one ``INSERT … SELECT``, or, when the target refuses a row (a
  constraint, a trigger: what no conversion sees), one by one in one statement, each
  refusal noted (``_insert``). After that, ``refusing`` says the next chunk likely has
  such rows too.
- ``CheckTable.filtered``: where the target refuses rows by a NOT NULL or an immutable
  CHECK alone, one COPY whose ``WHERE`` clause leaves those rows out and loads the
  others; only the rows it left out go in one by one, for PostgreSQL's own message.
  ``find_refused`` does that second part ahead, on another connection, for a chunk's
  bytes as they are: each row numbered by its place in the COPY, and the place turned
  into its source line (``batches.ChunkLines``).

Each step answers None, after a rollback to savepoint ``importd_try`` (nothing loaded,
nothing rejected), where it cannot be used: the caller takes the next, exact path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable

import asyncpg

from ... import db, tables
from ...db import Connection, Record
from ...repository import RowFailure
from ..records import Records, odd_lines
from .batches import Batch, ChunkLines, Refused, Screened, join_rows
from .common import ROW_CAUSED, ROW_LEVEL, CheckFailed, Row, as_row_error, lasting

TRY = "importd_try"  # the savepoint around a chunk's attempts (``Copier``'s too)
# What a NOT NULL or a CHECK of the target says of a row: ``CheckTable.filtered``'s case.
FILTERABLE = (asyncpg.NotNullViolationError, asyncpg.CheckViolationError)
_INSERT = "importd_insert"  # around the check's INSERT (``_insert``)
_PROBE = "importd_probe"  # around the test of ``_can_filter``


async def copy_in(
    conn: Connection,
    schema: str,
    table: str,
    columns: list[str],
    data: bytes,
    fmt: tables.CopyFormat,
    where: str | None = None,
) -> int:
    """``tables.copy_in``, a feature error met on a row told as that row's
    (``as_row_error``)."""
    try:
        return await tables.copy_in(conn, schema, table, columns, data, fmt, where)
    except asyncpg.FeatureNotSupportedError as exc:
        as_row_error(exc)
        raise


class _Disagree(Exception):
    """The rows one COPY's test left out are not the rows another's keeps
    (``CheckTable.filtered``)."""


class CheckTable:
    """The check's temporary tables and statements for one import's columns (``names``,
    of ``types``: None when they are not known, and nothing is checked so), into the
    target or a staging table (``staged``), rows written in ``copy_format`` with
    ``line_prefix`` (their source line first); ``reject`` records a row as rejected (and
    raises ``TooManyErrors`` past ``max_errors``)."""

    def __init__(
        self,
        copy_format: tables.CopyFormat,
        staged: bool,
        line_prefix: bytes,
        reject: Callable[[list[RowFailure], Row, str], None],
    ) -> None:
        self.copy_format = copy_format
        self.staged = staged
        self.line_prefix = line_prefix
        self.reject = reject
        self.names: list[str] = []
        self.types: list[str] | None = None
        self._checks: dict[tuple[str, str], Record] = {}  # build_check's statements
        self._filterable: dict[tuple[str, str], bool] = {}  # ``_can_filter``'s answer
        # Whether the target refused rows of the last chunk the check loaded (a
        # constraint, a trigger: what no screen sees): then the next chunk's rows go
        # through the check without the COPY and the INSERT that would likely fail.
        self.refusing = False

    @property
    def filtering(self) -> bool:
        """Whether ``filtered`` applies to the target (asked once it refused rows)."""
        return True in self._filterable.values()

    async def convert(
        self,
        conn: Connection,
        into: tuple[str, str],
        batch: Batch,
        insert: bool,
        refusals: bool = False,
    ) -> tuple[int, list[Record]] | None:
        """Convert the rows of ``batch`` as COPY would, in a temporary text table, one
        exception block per row; with ``insert``, load the good ones into ``into``. The
        rows loaded and the bad rows (line, message), or None (after a rollback to
        ``importd_try``) when a row does not split into fields, the target refuses a
        converted row, or temporary tables may not be created. Any other SQL error of
        the check's statements is raised as ``CheckFailed`` (when a retry would meet it
        again) or as it is.

        ``refusals`` (without ``insert``): the rows that convert but that the target's
        NOT NULL or CHECK refuses (``filtering``) are bad rows too, with PostgreSQL's
        message: each is tried into the target (``_refused``) in a savepoint rolled
        back after, so nothing of it stays."""
        statements = await self.statements(conn, into, insert)
        if statements is None:
            return None
        status = "INSERT 0 0"
        try:
            await self._fill(conn, statements, batch)
            await conn.execute(statements["check"])
            if insert:
                status = await self._insert(conn, statements)
            elif refusals and statements["flag"] is not None and self.filtering:
                return 0, await self._refused(conn, statements)
            bad = await conn.fetch(statements["errors"])
        except (*ROW_LEVEL, asyncpg.InsufficientPrivilegeError, asyncpg.LockNotAvailableError):
            # A row that does not split into fields, a row the target refuses, or no
            # right to create temporary tables: COPY by COPY then. (Or, in the check
            # ahead, the target's lock not had at once for ``refusals``'s tries:
            # ``ahead.LOCK_TIMEOUT_MS``; the loader does that work itself.)
            await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
            return None
        except asyncpg.PostgresError as exc:
            # Not a row's error (the DO block records those): the check's own. Told as
            # what it is, not as the import's (``classify`` would blame the payload);
            # one of the moment (a lost server, a deadlock) is retried as it is.
            if lasting(exc):
                raise CheckFailed.of(exc) from exc
            raise
        return int(status.rsplit(" ", 1)[-1]), bad

    async def _refused(self, conn: Connection, statements: Record) -> list[Record]:
        """The bad rows of the check's table (``convert``'s, converted) with the rows
        the target's NOT NULL and CHECK refuse among the others: those marked by the
        test (``flag``) are tried into the target one by one for PostgreSQL's own
        message (``insert_flagged``; a marked row that goes in after all is unmarked, a
        good row), read, and then rolled back with the rest.

        When the test itself fails on a row (a CHECK whose function cannot take its
        value, ``array_position`` of a two-dimensional array; a division by zero: what
        ``_insert`` meets too), no row is marked: the conversion's bad rows alone, and
        the chunk's COPY meets the refusals, which the exact path then finds."""
        await conn.execute(f"SAVEPOINT {_INSERT}")
        try:
            try:
                await conn.execute(statements["flag"])
            except ROW_CAUSED:
                await conn.execute(f"ROLLBACK TO SAVEPOINT {_INSERT}")
            else:
                await conn.execute(statements["insert_flagged"])
            return await conn.fetch(statements["errors"])
        finally:
            await conn.execute(f"ROLLBACK TO SAVEPOINT {_INSERT}; RELEASE SAVEPOINT {_INSERT}")

    async def statements(
        self, conn: Connection, into: tuple[str, str], insert: bool = True
    ) -> Record | None:
        """The check's statements (``sql/queries/build_check.sql``) for rows going into
        ``into`` (any target's when not ``insert``: only the moves name it); None when
        they cannot be built, or, with ``insert``, when a rule rewrites the target's
        INSERTs (``rewritten``)."""
        if self.types is None or any("$" in name for name in [*self.names, *self.types, *into]):
            # (No dollar sign may end the DO block's quoting early: not in a column's
            # name or type, nor in the target's schema or name, which the row-by-row
            # insert names. Such a target takes the exact path, COPY by COPY.)
            return None
        statements = self._checks.get(into)
        if statements is None and not insert and self._checks:
            statements = next(iter(self._checks.values()))
        if statements is None:
            statements = await db.one(
                conn,
                "build_check",
                self.name,
                self.names,
                self.types,
                into[0],
                into[1],
                self.staged,
            )
            # Atomic imports load each chunk into a table of its own: keep the last.
            self._checks = {into: statements}
        if insert and statements["rewritten"]:
            # An ON INSERT rule would rewrite the INSERTs that COPY's rows never meet:
            # rows go in by COPY alone (COPY by COPY, where a chunk fails).
            return None
        return statements

    async def _fill(self, conn: Connection, statements: Record, batch: Batch) -> None:
        """The rows of ``batch`` into the check's (emptied) temporary table, as text,
        each after its source line."""
        await conn.execute(statements["create"])
        await copy_in(
            conn,
            "pg_temp",
            self.name,
            [tables.LINE, *tables.positional(len(self.names))],
            self.lined(batch),
            self.copy_format,
        )

    def lined(self, batch: Batch) -> bytes:
        """The COPY data of ``batch`` with each row's source line first."""
        if batch.prefix:
            return batch.payload
        return join_rows(self.line_prefix, batch.lines, batch.bodies)  # (a direct import's)

    async def filtered(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        payload: bytes,
        rows: Batch | Callable[[], Batch],
        failures: list[RowFailure],
        known: Refused | None = None,
    ) -> int | None:
        """Load ``payload`` (the COPY data of ``rows``: a batch, or what makes it, run in
        a thread while the COPY runs) into a target that refuses rows by a NOT NULL or a
        CHECK: one COPY leaves out the rows the test ``flag`` names (``copy_where``) and
        loads the others at COPY's speed; when it left rows out, a second COPY of the
        chunk (each row after its source line) keeps only those in a temporary table
        (``refused_create``), and they go in one by one for PostgreSQL's own message
        (``insert_refused``); when the check ahead did that already (``known``), only
        the COPY into the target is left (``_filtered_known``). No row is converted in
        a subtransaction of its own.

        None (after a rollback to ``importd_try``, nothing loaded or rejected) when the
        test does not apply (a staging table, a partitioned target, BEFORE INSERT
        triggers, a CHECK that is not immutable, no right to read the target, a column
        named ``importd_line`` or ``importd_error``), when the COPY fails (a value that
        does not convert, a duplicate key: what the test does not see), or when the
        rows one COPY left out are not the rows the other kept (a guard: an immutable
        test says the same of a row every time): the caller takes the exact path."""
        statements = await self.statements(conn, into)
        if statements is None or not await self._can_filter(conn, into, statements):
            return None
        where = f"NOT coalesce(({statements['copy_where']}), false)"
        if known is not None:
            return await self._filtered_known(conn, into, columns, payload, known, where, failures)
        split: asyncio.Future[Batch]
        if isinstance(rows, Batch):
            split = asyncio.get_running_loop().create_future()
            split.set_result(rows)
        else:
            split = asyncio.ensure_future(asyncio.to_thread(rows))
        try:
            loaded = await copy_in(
                conn, into[0], into[1], columns, payload, self.copy_format, where=where
            )
            batch = await split
            if loaded == len(batch):
                self.refusing = False
                return loaded
            await conn.execute(statements["refused_create"])
            kept = await copy_in(
                conn,
                "pg_temp",
                statements["refused_table"],
                [tables.LINE, *self.names],
                self.lined(batch),
                self.copy_format,
                where=f"coalesce(({statements['copy_where']}), false)",
            )
            if kept != len(batch) - loaded:
                raise _Disagree
            await conn.execute(statements["insert_refused"])
            found = await conn.fetchrow(statements["refused_found"])
        except (*ROW_LEVEL, asyncpg.InsufficientPrivilegeError, _Disagree):
            # (A row the test does not see; no right to create temporary tables; the two
            # COPYs' tests disagree.)
            await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
            return None
        finally:
            if not split.done():  # (the COPY failed)
                await asyncio.gather(split, return_exceptions=True)
        assert found is not None
        inserted = int(found["inserted"])
        if len(found["lines"]) + inserted != kept:
            await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
            return None
        self.refusing = True
        raws = dict(zip(batch.lines, batch.raws, strict=True))
        for line, message in zip(found["lines"], found["messages"], strict=True):
            self.reject(failures, Row(line, raws.get(line, b""), b""), message)
        return loaded + inserted

    async def _filtered_known(
        self,
        conn: Connection,
        into: tuple[str, str],
        columns: list[str],
        payload: bytes,
        known: Refused,
        where: str,
        failures: list[RowFailure],
    ) -> int | None:
        """``filtered`` when the check ahead found the refused rows and their messages
        (``known``): the COPY into the target is all that is left; it must leave out as
        many rows as were found, or (a guard) the caller takes the exact path."""
        try:
            loaded = await copy_in(
                conn, into[0], into[1], columns, payload, self.copy_format, where=where
            )
            if loaded != known.total - len(known.messages):
                raise _Disagree
        except (*ROW_LEVEL, _Disagree):
            await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
            return None
        self.refusing = bool(known.messages)
        for line in sorted(known.messages):
            self.reject(failures, Row(line, known.raws[line], b""), known.messages[line])
        return loaded

    async def _can_filter(
        self, conn: Connection, into: tuple[str, str], statements: Record
    ) -> bool:
        """Whether ``filtered`` may load into ``into``: a test applies, importd may read
        the columns it names, and it is immutable (``probe``; asked once per target)."""
        if statements["copy_where"] is None or statements["refused_table"] is None:
            return False
        known = self._filterable.get(into)
        if known is None:
            await conn.execute(f"SAVEPOINT {_PROBE}")
            try:
                await conn.execute(statements["probe"])
                known = True
            except asyncpg.PostgresError:
                known = False
            await conn.execute(f"ROLLBACK TO SAVEPOINT {_PROBE}; RELEASE SAVEPOINT {_PROBE}")
            self._filterable = {into: known}
        return known

    async def _insert(self, conn: Connection, statements: Record) -> str:
        """Load the rows the check converted into the target: by one INSERT, or, when
        the target refuses a row (a constraint, a trigger: what the conversion cannot
        see), one by one in the check's table (``insert_each``), each refusal noted as
        that row's error; the INSERT's status either way. Before, a refused row sent the
        whole chunk COPY by COPY: about 1 ms per bad row, 23 - 25x the clean file with a
        row in twenty refused."""
        if not self.refusing:
            await conn.execute(f"SAVEPOINT {_INSERT}")
            try:
                status = str(await conn.execute(statements["insert"]))
            except ROW_CAUSED:
                await conn.execute(f"ROLLBACK TO SAVEPOINT {_INSERT}")
            else:
                await conn.execute(f"RELEASE SAVEPOINT {_INSERT}")
                return status
        # (Straight here when the chunk before had rows refused: this one likely too.)
        inserted, done = 0, False
        if statements["flag"] is not None:
            # The rows sure to be refused (NOT NULL, CHECK) marked set-based; the others
            # in one INSERT, the marked ones one by one for PostgreSQL's own message.
            await conn.execute(f"SAVEPOINT {_INSERT}")
            try:
                await conn.execute(statements["flag"])
                status = str(await conn.execute(statements["insert"]))
                await conn.execute(statements["insert_flagged"])
            except ROW_CAUSED:  # (a duplicate key, a foreign key…: every row one by one)
                await conn.execute(f"ROLLBACK TO SAVEPOINT {_INSERT}")
            else:
                await conn.execute(f"RELEASE SAVEPOINT {_INSERT}")
                inserted, done = int(status.rsplit(" ", 1)[-1]), True
        if not done:
            await conn.execute(statements["insert_each"])
        counts = await db.one(conn, "count_inserted")
        self.refusing = int(counts["refused"]) > 0
        return f"INSERT 0 {inserted + int(counts['inserted'])}"

    @property
    def name(self) -> str:
        """The temporary table ``convert`` uses: one per session and set of columns (the
        name says which: the table stays for the session, and a pooled connection may
        serve another import later). The key names the table's shape too (positional
        columns): a session a pooler shares with a daemon of an older release, whose
        table of the same columns named them after the user's, never meets it."""
        key = "\0".join(["positional", *self.names, "", *(self.types or ())]).encode()
        return "importd_check_" + hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16]

    async def find_refused(
        self,
        conn: Connection,
        screened: Screened,
        gone: list[int],
        data: bytes,
        records_of: Callable[[], Records],
    ) -> Refused | None:
        """The rows of ``data`` (the bytes of chunk ``screened`` but its bad suspects,
        at ``gone``) that the target's NOT NULL and CHECK refuse, with PostgreSQL's
        message for each: a COPY of the bytes as they are keeps only those (as
        ``filtered`` does), each numbered by its place in the data, and each is tried
        into the target in an exception block for its message (``insert_refused``).
        Nothing of it stays: the test is immutable, so each such row is refused (and
        were one to go in, the transaction of the check ahead rolls back and the loader
        takes the chunk itself). A row's place gives its source line where each line of
        the data is one row; else the records are split (``records_of``) to tell them.
        None when that cannot be done so."""
        into = next((key for key, yes in self._filterable.items() if yes), None)
        statements = None if into is None else self._checks.get(into)
        if statements is None:
            return None
        await conn.execute(statements["refused_create"])
        # (as the reader's splitter has them: ``ImportJob.source_records``)
        quote, escape = self.copy_format.quote.encode(), self.copy_format.escape.encode()
        odd = functools.partial(odd_lines, quote=quote, escape=escape)
        lines = asyncio.ensure_future(asyncio.to_thread(ChunkLines, data, odd))
        try:
            kept = await copy_in(
                conn,
                "pg_temp",
                statements["refused_table"],
                self.names,
                data,
                self.copy_format,
                where=f"coalesce(({statements['copy_where']}), false)",
            )
            if kept:
                await conn.execute(statements["insert_refused"])
            told = await conn.fetchrow(statements["refused_found"])
            assert told is not None
            total, places, messages = int(told["total"]), told["lines"], told["messages"]
            if kept and (told["inserted"] or len(places) != kept):
                raise _Disagree
        except (*ROW_LEVEL, _Disagree, asyncpg.LockNotAvailableError):
            # A bad row the screen did not see (a column it does not watch), or a row
            # that went in after all: the loader's COPY meets it too, and takes the exact
            # path. Or the target's lock was not had at once (another session's lock is
            # queued behind the loader's: ``ahead.LOCK_TIMEOUT_MS``): the loader does
            # the work. Not an error here; nothing of it stays (the rollback).
            await conn.execute(f"ROLLBACK TO SAVEPOINT {TRY}")
            await asyncio.gather(lines, return_exceptions=True)
            return None
        except BaseException:
            await asyncio.gather(lines, return_exceptions=True)
            raise
        rows = screened.rows
        spans = [(rows.lines[i], rows.raws[i].count(b"\n") + 1) for i in gone]
        found = (await lines).place(screened.first_line, spans, total, places)
        if found is None:  # (a record of lines the splitter tells apart otherwise)
            found = await asyncio.to_thread(self._place, spans, total, places, records_of)
        if found is None:
            return None
        by_line = {line: message for (line, _), message in zip(found, messages, strict=True)}
        return Refused(total, by_line, dict(found))

    def _place(
        self,
        gone: list[tuple[int, int]],
        total: int,
        places: list[int],
        records_of: Callable[[], Records],
    ) -> list[tuple[int, bytes]] | None:
        """The source line and record of the rows at ``places`` (ascending, 1 for the
        first) among the ``total`` rows of a chunk's records (``records_of``) but those
        ``gone`` (their lines first); None when the rows do not agree with the records
        (a guard). CPU-bound: run it in a thread."""
        records = records_of()
        left = {line for line, _ in gone}
        kept = [i for i, line in enumerate(records.lines) if line not in left]
        if len(kept) != total or any(not 0 < place <= total for place in places):
            return None
        return [(records.lines[kept[p - 1]], records.datas[kept[p - 1]]) for p in places]
