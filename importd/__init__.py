"""importd: a PostgreSQL import-job daemon.

Producers call :func:`enqueue` / :func:`enqueue_many` inside their own transaction;
handlers are async functions registered with :func:`handler`.

The database boundary: SQL lives in ``sql/`` (one statement a file under ``queries``,
loaded by name through :mod:`importd.sql`; forward-only ``migrations``). These modules
speak to asyncpg directly, and why:

- :mod:`importd.db`, the connector: pools, direct connections, which errors are transient;
- :mod:`importd.repository`: the job statements, run on the engine's pool;
- :mod:`importd.migrate`: whole migration files, each in its own transaction;
- :mod:`importd.tables` and :mod:`importd.handlers.imports`: COPY, and the errors
  PostgreSQL raises for a rejected row.

:mod:`importd.listener` holds a dedicated LISTEN connection, opened through ``db``, never
taken from a pool. :mod:`importd.daemon`, :mod:`importd.executor` and :mod:`importd.cli`
import asyncpg only for pool types and error classes: a known debt (issue 14), as is the
SQL text left in Python. docs/ARCHITECTURE.md is the map.
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
