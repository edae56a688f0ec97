"""structlog set-up: JSON lines for machines (no TTY, or journald), console for people.

Every line passes a redaction step, so a DSN password or a bearer token that slips into an
event or an exception message is masked before it is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from .redaction import redact, redact_value

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|authorization|credential|dsn)", re.I)


def redact_event(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask secrets: values under secret-sounding keys and passwords inside strings."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and isinstance(value, str) and key != "event":
            event[key] = redact(value) if "://" in value or "=" in value else "***"
        else:
            event[key] = redact_value(value)
    return event


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def log_enabled(level: int, logger: Any) -> bool:
    """Whether ``logger`` (structlog's, as configured) writes events of ``level``: True
    when its wrapper cannot tell."""
    check = getattr(logger, "is_enabled_for", None)
    return True if check is None else bool(check(level))


def _nop(*_args: Any, **_kw: Any) -> None:
    return None


class LazyBound:
    """``logger.bind(**fields)``, bound only when an event of an enabled level is logged
    (or anything else is asked of it): a job's run binds its fields for every line it
    logs, and most runs log none at the daemon's level. Events, levels and fields are
    those of the bound logger."""

    __slots__ = ("_bound", "_fields", "_logger")

    def __init__(self, logger: Any, **fields: Any) -> None:
        self._logger = logger
        self._fields = fields
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:
        bound = self._bound
        if bound is None:
            level = _LEVELS.get(name)
            if level is not None and not log_enabled(level, self._logger):
                return _nop
            bound = self._bound = self._logger.bind(**self._fields)
        return getattr(bound, name)


def use_json(fmt: str, stream: Any = None) -> bool:
    """Whether ``fmt`` ('auto', 'json', 'console') means JSON on ``stream``."""
    if fmt != "auto":
        return fmt == "json"
    stream = stream or sys.stderr
    under_journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    return under_journal or not stream.isatty()


def _dropping(events: frozenset[str]) -> Any:
    def drop(
        _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.get("event") in events:
            raise structlog.DropEvent
        return event

    return drop


class _Terminal:
    """``bar_open``: a progress bar is drawn on stderr with no line end yet
    (``progress.Progress`` on a TTY): the next log line starts on a line of its own, and
    the bar is drawn again below it."""

    bar_open = False


TERMINAL = _Terminal()


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (not when logging was set up):
    a test harness or an embedding application that swaps the stream, and closes the
    old one, keeps getting the lines."""

    def write(self, text: str) -> int:
        if TERMINAL.bar_open:
            TERMINAL.bar_open = False
            sys.stderr.write("\n")
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(
    level: str = "info", fmt: str = "auto", *, per_job: frozenset[str] = frozenset()
) -> None:
    """Send structlog events to stderr at ``level`` in ``fmt``; the ``per_job`` events
    only at level debug (``drain`` off a TTY: a summary, not a line per job)."""
    numeric = logging.getLevelName(level.upper())
    stamps: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    shared: list[Any] = [
        *([_dropping(per_job)] if per_job and numeric > logging.DEBUG else []),
        *stamps,
    ]
    if use_json(fmt):
        renderer: list[Any] = [
            structlog.processors.format_exc_info,
            redact_event,
            structlog.processors.JSONRenderer(),
        ]
    else:
        # The traceback is rendered to text before redaction, so that a secret in an
        # exception's message is masked on a terminal too.
        renderer = [
            structlog.processors.format_exc_info,
            redact_event,
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    _route_stdlib(numeric, stamps, renderer)


class _ImportdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler that ``configure`` installs (and replaces when called
    again)."""

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be rendered (arguments that do not fit its message, a
        message whose ``str`` raises): one redacted JSON line, where logging's own report
        prints the arguments in clear."""
        line = {
            "event": "log_record_unformattable",
            "logger": record.name,
            "level": "error",
            "message": redact(_safe_text(record.msg)),
            "args": redact(_safe_text(record.args)),
        }
        with contextlib.suppress(Exception):  # (stderr itself failed: nothing left to tell)
            self.stream.write(json.dumps(line) + "\n")


def _safe_text(value: object) -> str:
    """``repr(value)``, or a placeholder where even that raises."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"


def _route_stdlib(level: int, stamps: list[Any], renderer: list[Any]) -> None:
    """Records of the standard library's logging (asyncio's "Future exception was never
    retrieved" and "Task was destroyed", asyncpg's, httpx's) rendered as importd's own
    lines: the same format, the same redaction, ``logger`` naming their source. Without
    a handler, Python prints them as plain text on stderr, unredacted. At WARNING or
    above whatever importd's level, as Python's own fallback did: httpx logs every request
    at INFO (its URL, query and all)."""
    handler = _ImportdHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*stamps, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ImportdHandler)]
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))
