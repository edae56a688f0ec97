"""Log lines go to the stderr of the moment they are written."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from importd import logs, redaction


def test_lines_follow_a_swapped_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    old = structlog.get_config()
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr("sys.stderr", first)
        logs.configure("info", "json")
        structlog.get_logger("t").info("one")
        first.close()  # what a test harness does with its capture of one test
        monkeypatch.setattr("sys.stderr", second)
        structlog.get_logger("t").info("two")  # no "I/O operation on closed file"
    finally:
        structlog.configure(**old)
    (line,) = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "two"


def _configured_lines(monkeypatch: pytest.MonkeyPatch, emit: Callable[[], None]) -> list[Any]:
    """What ``emit`` writes to stderr as JSON lines once importd's logging is set up."""
    old, root = structlog.get_config(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        monkeypatch.setattr("sys.stderr", stream)
        logs.configure("info", "json")
        emit()
    finally:
        structlog.configure(**old)
        root.handlers, root.level = handlers, level
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_asyncio_complaints_are_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    # What asyncpg leaves behind when a connect attempt is abandoned: a future whose
    # exception nobody reads, reported by asyncio when it is collected. Without a handler
    # Python printed it as three lines of plain text among the JSON ones.
    def abandon() -> None:
        loop = asyncio.new_event_loop()
        try:
            future = loop.create_future()
            future.set_exception(ConnectionError("unexpected connection_lost() call"))
            del future
            gc.collect()
        finally:
            loop.close()

    (line,) = _configured_lines(monkeypatch, abandon)
    assert line["logger"] == "asyncio"
    assert line["level"] == "error"
    assert line["event"].startswith("Future exception was never retrieved")
    assert "ConnectionError: unexpected connection_lost() call" in line["exception"]
    assert line["timestamp"].endswith("Z")


def test_library_records_are_redacted_and_quiet_below_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, saved = "Sup3r-secret-pw", redaction.SECRETS.forms
    redaction.register_secret(secret)

    def emit() -> None:
        library = logging.getLogger("asyncpg.pool")
        try:
            raise OSError(f"cannot reach postgresql://app:{secret}@db/app")
        except OSError:
            library.exception("error in a connection of the pool")
        logging.getLogger("httpx").info("HTTP Request: GET https://h/x?token=abc123")
        library.warning("password=%s sent", "hunter22")

    try:
        first, second = _configured_lines(monkeypatch, emit)
    finally:
        redaction.SECRETS.restore(saved)
    assert first["logger"] == "asyncpg.pool" and first["level"] == "error"
    assert secret not in first["exception"] and "postgresql://app:***@db/app" in first["exception"]
    assert second["event"] == "password=*** sent"


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("cannot reach postgresql://u:Sup3r-secret-pw@h/db")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


@pytest.mark.parametrize("shape", ["arguments", "message"])
def test_a_record_that_cannot_be_rendered_is_one_redacted_line(
    monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    # logging's own report of such a record printed its arguments in clear.
    secret, saved = "Sup3r-secret-pw", redaction.SECRETS.forms
    redaction.register_secret(secret)
    if shape == "arguments":  # (three placeholders, two arguments)
        record = logging.LogRecord(
            "asyncpg", logging.WARNING, __file__, 1, "%s %s %s", (secret, "pg://u:pw0rd@h"), None
        )
    else:
        record = logging.LogRecord(
            "asyncpg", logging.WARNING, __file__, 1, _Unprintable(), None, None
        )

    def emit() -> None:  # (to importd's handler alone: pytest's own raises on such records)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logs._ImportdHandler):
                handler.handle(record)

    try:
        (line,) = _configured_lines(monkeypatch, emit)
    finally:
        redaction.SECRETS.restore(saved)
    assert line["event"] == "log_record_unformattable" and line["logger"] == "asyncpg"
    assert secret not in json.dumps(line) and "pw0rd" not in json.dumps(line)
