"""Log lines go to the stderr of the moment they are written."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from importd import logs


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
