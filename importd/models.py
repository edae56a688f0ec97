"""The vocabulary of importd: a job as the daemon sees it, its statuses, and outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Defaults shared by the producer API and the schema's column defaults (a test keeps the
# two in agreement).
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT_S = 300.0


class ExitCode(enum.IntEnum):
    """The process exit codes, documented in the README."""

    OK = 0
    ERROR = 1  # an internal service died; systemd restarts the daemon
    USAGE = 2  # bad command line (argparse)
    CONFIG = 3  # missing or bad configuration: fix it, restarting will not help
    SCHEMA = 4  # the database schema is older or newer than this importd
    UNAVAILABLE = 5  # the database could not be reached at start-up
    DRAIN_FAILED = 10  # drain: at least one job failed for good
    DRAIN_PENDING = 11  # drain: some job was left pending for a later retry
    DRAIN_INTERRUPTED = 12  # drain: stopped by --timeout or a signal before it was done
    # stdout's reader went away (``importd status | head``): 128 + SIGPIPE, as the shell
    # reports grep or git killed by SIGPIPE in the same place; nothing is printed.
    OUTPUT_CLOSED = 141


class Status(enum.StrEnum):
    """A job's status; see DESIGN.md for the only moves allowed between them."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help: the job fails at once."""


class InvalidPayload(PermanentError):
    """The job's payload does not describe a job this handler can run."""


class RetryLater(Exception):
    """Raised by a handler to retry after ``delay`` seconds (e.g. an HTTP Retry-After)
    instead of the backoff's delay; attempts still count."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed run of a job: the row's fields plus the attempt this run is."""

    id: int
    kind: str
    queue: str
    tenant_id: str | None
    payload: dict[str, Any]
    priority: int
    run_at: datetime
    attempt: int
    max_attempts: int
    timeout: float
    created_at: datetime
    rows_done: int = 0
    rows_failed: int = 0
    rows_total: int | None = None
    # Where an earlier, interrupted run got to (the handler's own format), or None.
    checkpoint: dict[str, Any] | None = None
    # Seconds from the moment the job was due to its claim (by the database's clock).
    waited: float = 0.0

    @property
    def last_attempt(self) -> bool:
        """Whether a failure of this run fails the job for good."""
        return self.attempt >= self.max_attempts


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as written back to the job row (fenced by the lease)."""

    status: Status
    result: Any = None
    error: str | None = None
    delay: float = 0.0
    # 1 gives the attempt back: the run was interrupted by shutdown, not by the job.
    refund: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # The result as JSON text, when already encoded (and checked) by the executor.
    encoded: str | None = None
    # Progress the handler reported that no heartbeat wrote yet (rows_done, rows_total,
    # rows_failed, bytes_read): written with the outcome.
    progress: dict[str, int | None] | None = None

    @classmethod
    def completed(cls, result: Any = None) -> Outcome:
        """The handler returned; ``result`` is stored as the job's JSON result."""
        return cls(Status.COMPLETED, result=result)

    @classmethod
    def failed(cls, error: str) -> Outcome:
        """The job fails for good with ``error`` as its last error."""
        return cls(Status.FAILED, error=error)

    @classmethod
    def retry(cls, error: str, delay: float) -> Outcome:
        """The job goes back to pending and becomes runnable after ``delay`` seconds."""
        return cls(Status.PENDING, error=error, delay=delay)

    @classmethod
    def released(cls, reason: str) -> Outcome:
        """The run was interrupted by shutdown: pending again at once, attempt refunded."""
        return cls(Status.PENDING, error=reason, refund=1)

    @classmethod
    def cancelled(cls, reason: str) -> Outcome:
        """An operator cancelled the job while it ran."""
        return cls(Status.CANCELLED, error=reason)
