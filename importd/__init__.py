"""importd: a PostgreSQL import-job daemon.

Producers call :func:`enqueue` / :func:`enqueue_many` inside their own transaction;
handlers are async functions registered with :func:`handler`.

The database boundary: SQL lives in ``sql/`` (one statement a file under ``queries``,
loaded by name through :mod:`importd.sql`; forward-only ``migrations``). Statements run
through the connector, :mod:`importd.db`, on the pools and connections it opens; the
statements about jobs and daemons are :mod:`importd.repository`'s, and the engine's
services reach its pool only through a ``Repository``. Only the modules that must speak to asyncpg
directly import it:

- :mod:`importd.db`, the connector: it opens pools and connections (codecs, session
  settings), tells transient errors from the rest, and names the types every other module
  uses (``Pool``, ``Connection``, ``Record``, the ``Conn`` protocol, ``ERRORS``);
- :mod:`importd.handlers.imports`: the error classes PostgreSQL raises for a rejected row,
  which decide whether a row or the whole chunk failed, around COPY (asyncpg's own
  protocol, ``copy_to_table``, run by :mod:`importd.tables` on a ``db.Connection``).

The listener's and the lease keeper's dedicated connections are asyncpg connections
opened through ``db.connect``, never taken from a pool (LISTEN must stay on one session).
No SQL text stands in Python except ``CREATE DATABASE`` in :mod:`importd.daemon` (no DO
block can run it, so ``format('%I')`` cannot quote it; the name is a constant; commented
there) and the savepoints of bad-row isolation in ``handlers.imports.copying``,
``checking``, ``isolating`` and ``ahead`` (``RELEASE``+``SAVEPOINT`` go in one round trip;
a query file holds one statement).
mypy checks the boundary against asyncpg-stubs. tests/unit/test_boundary.py keeps these rules.
docs/ARCHITECTURE.md is the map.
"""

from __future__ import annotations

from .context import HandlerSettings, JobContext
from .handlers import handler
from .models import InvalidPayload, Job, Outcome, PermanentError, RetryLater, Status
from .repository import NewJob, enqueue, enqueue_many

__all__ = [
    "HandlerSettings",
    "InvalidPayload",
    "Job",
    "JobContext",
    "NewJob",
    "Outcome",
    "PermanentError",
    "RetryLater",
    "Status",
    "enqueue",
    "enqueue_many",
    "handler",
]


def __getattr__(name: str) -> str:
    # ``importd.__version__``, read from the installed metadata only when asked for:
    # importlib.metadata costs tens of milliseconds of every command's start-up.
    if name == "__version__":
        from ._version import version  # noqa: PLC0415

        return version()
    raise AttributeError(f"module 'importd' has no attribute {name!r}")
