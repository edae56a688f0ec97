"""importd: a PostgreSQL import-job daemon.

Producers call :func:`enqueue` / :func:`enqueue_many` inside their own transaction;
handlers are async functions registered with :func:`handler`.
"""

from __future__ import annotations

from importlib import metadata as _metadata

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
try:  # the version lives in pyproject.toml only
    __version__ = _metadata.version("importd")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
