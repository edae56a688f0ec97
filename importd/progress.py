"""Progress for people: a bar on a TTY, a log line now and then otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import structlog

from . import logs

log = structlog.get_logger("importd.progress")


class Progress:
    """Reports ``done`` of ``total`` (``total`` may grow)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._last = 0.0

    def update(self, done: int, total: int | None = None, **extra: Any) -> None:
        """Show ``done`` (and a new ``total``); a TTY redraws at most 10 times a second,
        a log gets a line at most every 5 seconds."""
        self.done = done
        if total is not None:
            self.total = max(total, done)
        now = time.monotonic()
        if self._tty:
            if now - self._last >= 0.1 or done >= self.total:
                self._last = now
                self._draw(extra)
        elif now - self._last >= 5:
            self._last = now
            log.info("progress", task=self.label, done=done, total=self.total, **extra)

    def _draw(self, extra: dict[str, Any]) -> None:
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        tail = "".join(f" {k}={v}" for k, v in extra.items())
        text = f"\r{self.label} [{bar:<30}] {self.done:,}/{self.total:,}{tail}"
        self._stream.write(text[:79].ljust(79))
        self._stream.flush()
        logs.TERMINAL.bar_open = self._stream is sys.stderr  # a log line starts a new line

    def finish(self, **extra: Any) -> None:
        """The final state."""
        if self._tty:
            self._draw(extra)
            self._stream.write("\n")
            self._stream.flush()
            logs.TERMINAL.bar_open = False
        else:
            log.info("progress", task=self.label, done=self.done, total=self.total, **extra)
