"""sd_notify without a dependency: READY, STATUS, WATCHDOG, STOPPING.

Every call is a no-op outside systemd (no ``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import os
import socket
import threading


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address or None
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if (
            watchdog_usec.isascii()
            and watchdog_usec.isdigit()
            and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        ):
            # Ping at half the period systemd allows, as sd_watchdog_enabled(3) advises.
            self.watchdog_interval = int(watchdog_usec) / 1_000_000 / 2
        self._sock: socket.socket | None = None
        # The watchdog is pinged from the loop monitor's thread: once STOPPING is sent no
        # ping follows it (the lock orders a ping racing the stop).
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def enabled(self) -> bool:
        """Whether a systemd is listening."""
        return self._address is not None

    def send(self, *lines: str) -> None:
        """Send ``KEY=value`` lines as one message; errors are ignored, as sd_notify does."""
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        """Startup is complete."""
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A free-form status line for ``systemctl status``."""
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Proof of life for ``WatchdogSec=``; none after STOPPING."""
        with self._lock:
            if not self._stopping:
                self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        """Shutdown has begun."""
        with self._lock:
            self._stopping = True
            self.send("STOPPING=1", f"STATUS={status}")
