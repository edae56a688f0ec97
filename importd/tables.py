"""Target and staging tables of imports: catalog look-ups, COPY, and moves.

Table and column names reach SQL only after two gates: the job's table passed the
configured allowlist, and every column exists in the catalog. They are then quoted by
PostgreSQL's ``format('%I')`` (statements built by the queries in ``sql/queries``) or by
asyncpg's COPY, never by string formatting here.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from . import sql
from .db import Connection, Record
from .models import InvalidPayload

# importd's own tables: the job queue, its row errors, and every importd_* table
# (importd_migrations, importd_rate_limits, and any a later version adds), in any schema,
# and anything in a schema of importd's (importd_staging). Never an import's target: a
# CSV loaded into import_jobs would forge jobs, one into importd_rate_limits rewrite a
# limit.
OWN_TABLES = frozenset({"import_jobs", "import_job_errors"})
OWN_PREFIX = "importd_"


def is_own_table(schema: str, name: str) -> bool:
    """Whether ``schema.name`` is (or could be) one of importd's own tables. Compared
    without regard to case, so a quoted ``"Import_Jobs"`` is refused too."""
    schema, name = schema.lower(), name.lower()
    return (
        name in OWN_TABLES
        or name.startswith(OWN_PREFIX)
        or schema == "importd"
        or schema.startswith(OWN_PREFIX)
    )


def refuse_own_table(schema: str, name: str) -> None:
    """Raise InvalidPayload (a permanent error) when ``schema.name`` is importd's own."""
    if is_own_table(schema, name):
        raise InvalidPayload(
            f"payload.table: {schema}.{name} is one of importd's own tables (import_jobs, "
            "import_job_errors, importd_*, the importd_staging schema): they are never "
            "import targets, whatever the 'tables' setting allows"
        )


@dataclass(frozen=True)
class Column:
    """One column of a target table."""

    name: str
    type: str
    is_json: bool
    writable: bool
    # How the screen of bad rows judges its values: a domain without constraints as its
    # base type, an enum by its labels (``describe_table.sql``).
    screen_as: str = ""
    labels: tuple[str, ...] | None = None
    # The CHECK constraints that read this column alone: name and expression, as
    # ``pg_get_expr`` deparses it (``describe_table.sql``; ``handlers.imports.bounds``).
    checks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Table:
    """A target table and its columns, in table order."""

    schema: str
    name: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        """The column called ``name``, or None."""
        return next((c for c in self.columns if c.name == name), None)

    @property
    def writable(self) -> list[str]:
        """Columns a load may set."""
        return [c.name for c in self.columns if c.writable]


async def describe(conn: Connection, schema: str, name: str) -> Table | None:
    """The target table ``schema.name`` as this role sees it, or None. Raises
    InvalidPayload when it is a view that reaches one of importd's own tables (an
    updatable view on import_jobs would forge jobs as surely as the table itself), or a
    table that inherits from one (its rows are the parent's)."""
    rows = await conn.fetch(sql.query("describe_table"), schema, name)
    if not rows:
        return None
    own = await conn.fetchval(sql.query("find_own_table"), schema, name)
    if own is not None:
        raise InvalidPayload(
            f"payload.table: {schema}.{name} reads or writes importd's own table {own} "
            "(through a view, or as a table that inherits from it): importd's own tables "
            "are never import targets, whatever "
            "the 'tables' setting allows"
        )
    columns = tuple(
        Column(
            r["name"],
            r["type"],
            r["is_json"],
            r["writable"],
            r["screen_as"],
            None if r["labels"] is None else tuple(r["labels"]),
            tuple(zip(r["check_names"], r["check_exprs"], strict=True)),
        )
        for r in rows
    )
    return Table(schema, name, columns)


@dataclass(frozen=True)
class CopyFormat:
    """COPY options of one load."""

    format: str  # csv | text
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    null: str = ""
    encoding: str = "UTF8"

    def options(self) -> dict[str, Any]:
        """Keyword arguments of asyncpg's ``copy_to_table``."""
        if self.format == "text":
            return {"format": "text", "encoding": self.encoding}
        return {
            "format": "csv",
            "delimiter": self.delimiter,
            "quote": self.quote,
            "escape": self.escape,
            "null": self.null,
            "encoding": self.encoding,
        }


async def copy_in(
    conn: Connection,
    schema: str,
    table: str,
    columns: list[str],
    data: bytes,
    fmt: CopyFormat,
    where: str | None = None,
) -> int:
    """COPY ``data`` into ``schema.table`` (asyncpg quotes the names); the rows copied.
    ``where``: COPY's WHERE clause (an expression built by the server from the catalog,
    never from a payload), which leaves out the rows it does not hold for."""
    # asyncpg takes each piece as a buffer, so memoryview slices spare a copy of the data
    # (every import test loads through them); its stubs say bytes.
    pieces = cast("AsyncIterable[bytes]", _pieces(data))
    status = await conn.copy_to_table(
        table, source=pieces, columns=columns, schema_name=schema, where=where, **fmt.options()
    )
    return int(str(status).rsplit(" ", 1)[-1])


# Called once a COPY's data starts to flow (the server took the COPY statement), by the
# task that runs it: an import's loader sets it to let its producer go on to the next
# chunk then, while this one is in COPY, and not in the round trips before it, where the
# producer's cutting (milliseconds of C-speed byte scans, on the event loop) would hold
# the loader's next statement back (``Import._pipeline``).
COPY_STARTED: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "importd_copy_started", default=None
)


async def _pieces(data: bytes, size: int = 1 << 20) -> AsyncIterator[memoryview]:
    """``data`` in slices, without copies. (A file-like source would make asyncpg define
    a reader class per call, whose reference cycle keeps each chunk's data alive until
    the cyclic garbage collector runs: memory that grows with the file.)"""
    started = COPY_STARTED.get()
    if started is not None:
        started()
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


LINE = "importd_line"  # a helper table's column of source lines (never a user's column)


def positional(count: int) -> list[str]:
    """The columns of a helper table (staging, check) that hold the values of an
    import's ``count`` columns, in their order: ``c1``..``cN``. Never the user's names:
    a target may have columns of any name, ``importd_line`` included."""
    return [f"c{k}" for k in range(1, count + 1)]


class Staging:
    """One staging table in ``importd_staging``: ``job_<id>`` or a chunk's ``job_<id>_<n>``.

    Its name is built here from integers only, and quoted by ``format('%I')`` in SQL. Its
    columns: ``importd_line`` (the source line), then ``c1``..``cN`` for the import's
    columns in order, with their types (``sql/queries/build_staging.sql``). An older
    release named them after the user's columns: such a table is ``stale`` here.
    """

    schema = "importd_staging"

    def __init__(self, job_id: int, part: int | None = None) -> None:
        self.job_id = job_id
        self.name = f"job_{job_id}" if part is None else f"job_{job_id}_{part}"
        self._statements: Record | None = None

    @classmethod
    def named(cls, job_id: int, name: str) -> Staging:
        """The staging table ``name`` of ``job_id`` (as listed by ``all_of``)."""
        prefix = f"job_{job_id}"
        part = name[len(prefix) + 1 :] if name != prefix else None
        if not name.startswith(prefix) or (part is not None and not part.isdigit()):
            raise ValueError(f"not a staging table of job {job_id}: {name!r}")
        return cls(job_id, int(part) if part is not None else None)

    @classmethod
    async def all_of(cls, conn: Connection, job_id: int) -> list[Staging]:
        """Every staging table of ``job_id``, in creation order."""
        rows = await conn.fetch(sql.query("staging_tables"), job_id)
        return [cls.named(job_id, row["name"]) for row in rows]

    async def _stmt(self, conn: Connection, key: str) -> str:
        if self._statements is None:
            self._statements = await conn.fetchrow(sql.query("staging_state"), self.name)
        assert self._statements is not None
        return str(self._statements[key])

    async def create(self, conn: Connection, target: Table, columns: list[str]) -> None:
        """Create the table (``importd_line``, then ``columns`` of ``target`` as
        ``c1``..``cN``) if missing."""
        statement = await conn.fetchval(
            sql.query("build_staging"), self.name, target.schema, target.name, columns
        )
        await conn.execute(statement)

    async def filled(self, conn: Connection) -> bool:
        """Whether the table exists and holds a row."""
        self._statements = await conn.fetchrow(sql.query("staging_state"), self.name)
        assert self._statements is not None
        return bool(self._statements["present"]) and bool(
            await conn.fetchval(self._statements["probe"])
        )

    async def stale(self, conn: Connection, target: Table, columns: list[str]) -> bool:
        """Whether the table exists but not in the shape this release gives it for
        ``columns`` of ``target`` (names, order and types): one an older release left, or
        one made for other columns or types. Its rows must not be read as this import's."""
        self._statements = await conn.fetchrow(sql.query("staging_state"), self.name)
        assert self._statements is not None
        if not self._statements["present"]:
            return False
        types = {c.name: c.type for c in target.columns}
        expected = [f"{LINE} bigint"] + [
            f"{name} {types.get(column)}"
            for name, column in zip(positional(len(columns)), columns, strict=True)
        ]
        return list(self._statements["shape"]) != expected

    async def drop(self, conn: Connection) -> None:
        """Drop the table if it exists."""
        await conn.execute(await self._stmt(conn, "drop"))

    async def truncate(self, conn: Connection) -> None:
        """Empty the table."""
        await conn.execute(await self._stmt(conn, "truncate"))

    async def index_lines(self, conn: Connection) -> None:
        """Index ``importd_line`` (before isolating bad rows by line range)."""
        await conn.execute(await self._stmt(conn, "index_lines"))

    async def range_stats(self, conn: Connection, lo: int, hi: int) -> Record:
        """``n``, ``lo`` and the median ``mid`` of the staged lines in ``[lo, hi)``."""
        row = await conn.fetchrow(await self._stmt(conn, "range_stats"), lo, hi)
        if row is None:  # an aggregate: always one row
            raise RuntimeError("range_stats returned no row")
        return row

    async def one_row(
        self, conn: Connection, lo: int, hi: int, columns: list[str]
    ) -> Record | None:
        """A staged row in ``[lo, hi)`` as JSON text under the user's ``columns``, with
        its line."""
        statement = await self._stmt(conn, "one_row")
        row: Record | None = await conn.fetchrow(statement, lo, hi, columns)
        return row

    async def move_statement(
        self,
        conn: Connection,
        target: Table,
        columns: list[str],
        on_conflict: str,
        keys: list[str],
    ) -> str:
        """The INSERT … SELECT that moves lines ``[$1, $2)`` into ``target``."""
        statement: str = await conn.fetchval(
            sql.query("build_move"),
            self.name,
            target.schema,
            target.name,
            columns,
            on_conflict,
            keys,
        )
        return statement


async def drop_orphan_staging(conn: Connection) -> int:
    """Drop staging tables whose job is no longer pending or running."""
    statements = [r["statement"] for r in await conn.fetch(sql.query("orphan_staging"))]
    for statement in statements:
        await conn.execute(statement)
    return len(statements)
