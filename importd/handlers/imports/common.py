"""What the stages of an import share: its errors, the rows on their way to COPY, and
the budget of rejected rows (``max_errors``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg

from ...models import PermanentError
from ...repository import RowFailure

if TYPE_CHECKING:
    from .batches import Batch, Screened
    from .reading import Chunk

# The errors one row causes (retrying the import cannot help, leaving the row out can):
# a value that does not convert, a constraint, and what a trigger's PL/pgSQL raises for a
# row it refuses (RAISE EXCEPTION, ASSERT). An error of this kind that no single row
# causes (a trigger that refuses every row) makes every row a rejected one, and the
# import ends with TooManyErrors.
ROW_LEVEL = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.PLPGSQLError)


class RowFeatureError(asyncpg.FeatureNotSupportedError, asyncpg.DataError):
    """A feature PostgreSQL does not support, met on one row of a COPY (its context names
    the line): a value a CHECK's function cannot take (``array_position`` of a
    two-dimensional array), not one of COPY's options, which fail before any row (as
    does row-level security, which refuses COPY itself). A data error, then
    (``ROW_LEVEL``): the row is rejected, the others load."""


# From an INSERT of rows (never from a COPY, whose options may raise it), a feature error
# is a row's unless the statement fails with no row at all (``Move`` asks): errors only a
# row causes, there.
ROW_CAUSED = (*ROW_LEVEL, asyncpg.FeatureNotSupportedError)


def as_row_error(exc: asyncpg.FeatureNotSupportedError) -> None:
    """Tell ``exc`` as the row's it is (``RowFeatureError``) when COPY's context names
    the line it was met on (anywhere in the context: a function or a trigger that raised
    it comes first)."""
    if _COPY_LINE.search(exc.context or ""):
        exc.__class__ = RowFeatureError


# PostgreSQL's context of a COPY error: "COPY t, line 3, column c: "value"" (or without
# the value, or without the column); a column's name may hold ": " itself.
_COPY_LINE = re.compile(r"\bCOPY .+?, line (\d+)(?:, column (.+))?")
RAW_LIMIT = 1000
# PostgreSQL's message for a short row; the column is a helper table's in a staged COPY.
_MISSING = re.compile(r'(?<=^missing data for column )"(c[0-9]+)"$')


class LeaseLost(Exception):
    """The job's lease went to someone else mid-import; the chunk was rolled back."""


class TooManyErrors(PermanentError):
    """More rows were rejected than ``max_errors`` allows."""


class CheckFailed(PermanentError):
    """The set-based check of a failing chunk's rows (``CheckTable.convert``) failed with an
    SQL error of its own (not a row's conversion error, which it records): importd's
    fault, not the file's; a retry would fail the same way."""

    @classmethod
    def of(cls, exc: asyncpg.PostgresError) -> CheckFailed:
        """The error for ``exc``, raised by one of the check's statements."""
        detail = f" ({exc.detail})" if exc.detail else ""
        return cls(
            f"CheckFailed: importd's check of a chunk's rows (sql/queries/build_check.sql) "
            f"failed: {type(exc).__name__} (SQLSTATE {exc.sqlstate}): {exc.message}{detail}; "
            "a fault of importd, not of the file: report it"
        )


def lasting(exc: asyncpg.PostgresError) -> bool:
    """Whether ``exc`` is an error of the statement itself (a name, a type, a feature),
    which a retry would meet again, rather than of the moment (a lost connection, a
    deadlock, a server shutting down, out of memory)."""
    return (exc.sqlstate or "")[:2] in ("42", "0A")


@dataclass(frozen=True, slots=True)
class Row:
    """One row on its way to COPY: its source line, its source bytes, its COPY bytes."""

    line: int
    raw: bytes
    payload: bytes


@dataclass
class Prepared:
    """A chunk with its COPY data, ready to load."""

    chunk: Chunk
    batch: Batch | None  # None: the chunk's bytes go to COPY as they are
    failures: list[RowFailure]
    screened: Screened | None = None  # those bytes, screened (after a chunk with bad rows)
    # Set once the chunk's first COPY is under way (``tables.COPY_STARTED``), or its
    # loading is over: the producer prepares the next chunk from then on.
    copying: asyncio.Event = field(default_factory=asyncio.Event)


def raw_text(data: bytes, encoding: str) -> str:
    """A rejected record as stored in ``import_job_errors.raw_record`` (cut to a limit)."""
    text = data.decode(encoding if encoding != "ascii" else "latin_1", "replace")
    return text.replace("\x00", "\\0").rstrip("\r\n")[:RAW_LIMIT]


def describe(
    exc: asyncpg.PostgresError, names: list[str] | None = None, columns: Sequence[str] = ()
) -> tuple[int | None, str]:
    """The COPY line (1-based within the statement) an error names, and a message.

    ``names``: the COPY went into a helper table whose columns ``c1``..``cN`` hold the
    values of the user's columns ``names``: a column it names is told under the user's
    name. ``columns``: the COPY's own column names, by which the one the error names is
    told apart from the value after it (a name may hold ``: "``)."""
    context = (getattr(exc, "context", None) or "").split("\n", 1)[0]
    match = _COPY_LINE.search(context)
    message = exc.message
    if names is not None:
        message = _MISSING.sub(lambda m: f'"{_user(m.group(1), names)}"', message)
    if match and match.group(2):
        column = _column(match.group(2), columns)
        column = column if names is None else _user(column, names)
        message = f"column {column}: {message}"
    if exc.detail:
        message += f" ({exc.detail})"
    return (int(match.group(1)) if match else None), message


def _column(rest: str, columns: Sequence[str]) -> str:
    """The column named at the start of ``rest`` (what follows "column " in a COPY
    error's context: the name, then ``: "value"`` when there is one): the longest of
    ``columns`` that fits, else the text before the first ``: "``."""
    fits = [c for c in columns if rest == c or rest.startswith(c + ': "')]
    return max(fits, key=len) if fits else rest.split(': "', 1)[0]


def _user(column: str, names: list[str]) -> str:
    """The user's name of helper column ``column`` (``c<k>``: the k-th of ``names``)."""
    if column[:1] == "c" and column[1:].isdigit() and 1 <= int(column[1:]) <= len(names):
        return names[int(column[1:]) - 1]
    return column


class Budget:
    """Counts rejected rows against ``max_errors``: those committed (``failed``), those of
    the open transaction, and those the atomic mover found."""

    def __init__(self, max_errors: int, atomic: bool) -> None:
        self.max_errors = max_errors
        self.atomic = atomic
        self.failed = 0  # committed rejected rows
        self.loaded = 0
        self.elsewhere: list[RowFailure] | None = None  # the mover's failures

    def check(self, failures: list[RowFailure]) -> None:
        """Raise TooManyErrors once the rejected rows exceed max_errors."""
        extra = (
            len(self.elsewhere)
            if self.elsewhere is not None and failures is not self.elsewhere
            else 0
        )
        if self.failed + len(failures) + extra > self.max_errors:
            self.count(0, failures, extra=extra)  # raises

    def count(self, loaded: int, failures: list[RowFailure], extra: int = 0) -> None:
        """Add ``loaded`` rows and ``failures``; TooManyErrors past max_errors."""
        self.loaded += loaded
        self.failed += len(failures)
        if self.failed + extra > self.max_errors:
            # The first in the file of the rows found (found in another order: the
            # screen's suspects come before the rows the target refuses).
            first = min(failures, key=lambda f: (f.line is None, f.line or 0)) if failures else None
            raise TooManyErrors(
                f"TooManyErrors: {self.failed + extra} rows rejected, more than max_errors="
                f"{self.max_errors}"
                + (f"; first: line {first.line}: {first.message}" if first else "")
                + (
                    "; nothing was loaded"
                    if self.atomic
                    else f"; {self.loaded} rows of earlier chunks stay loaded"
                )
            )


def classify(exc: asyncpg.PostgresError, table: str, on_conflict: str) -> PermanentError | None:
    """The permanent error that ``exc`` is, with what to change, or None when a retry may
    get past it (a lost connection, a deadlock, a server shutting down).

    Only what any statement of an import may raise is told here, by its class: an error
    whose cause is one statement's (the conflict rule of a move: ``Move``; the check of a
    failing chunk: ``CheckFailed``) is told where that statement runs, so that an error
    of another statement is never blamed on it."""
    state = exc.sqlstate or ""
    detail = f" ({exc.detail})" if exc.detail else ""
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        need = "INSERT" + (", SELECT and UPDATE" if on_conflict == "update" else "")
        return PermanentError(
            f"PermissionDenied: {exc.message}{detail}; grant importd's role {need} on "
            f"{table} and USAGE on its schema"
        )
    if "row-level security" in exc.message:
        # (0A000, as a COPY option no server takes; but no option is the cause.)
        return PermanentError(
            f"RowLevelSecurity: {exc.message}{detail}; importd loads {table} with COPY, "
            "which PostgreSQL refuses on a table with row-level security for this role: "
            "give importd's role BYPASSRLS, or import into a table without it"
        )
    if state.startswith("0A") or state == "22023":
        return PermanentError(
            f"CopyOptions: {exc.message}{detail}; change payload.delimiter, quote, escape or null"
        )
    if state.startswith("42"):
        return PermanentError(f"{type(exc).__name__}: {exc.message}{detail} (on {table})")
    return None
