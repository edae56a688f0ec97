"""importd: a PostgreSQL import-job daemon.

Producers call :func:`enqueue` / :func:`enqueue_many` inside their own transaction;
handlers are async functions registered with :func:`handler`.
"""

from __future__ import annotations

from .executor import JobContext
from .handlers import handler
from .models import InvalidPayload, Job, Outcome, PermanentError, Status
from .repository import NewJob, enqueue, enqueue_many

__all__ = [
    "InvalidPayload",
    "Job",
    "JobContext",
    "NewJob",
    "Outcome",
    "PermanentError",
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
