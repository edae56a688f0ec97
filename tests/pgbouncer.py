"""A real pgbouncer in transaction mode in front of the session's PostgreSQL.

Started like the throwaway cluster: a temporary directory, a free port, an unprivileged
user when the tests run as root (pgbouncer refuses to run as root), stopped at the end
of the session. Every database of the server is reachable through it under its own name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from importd.cluster import free_port

PGBOUNCER = Path(os.environ.get("IMPORTD_PGBOUNCER", "/usr/sbin/pgbouncer"))


class PgBouncerError(Exception):
    """pgbouncer could not be started."""


class PgBouncer:
    """One pgbouncer process in ``pool_mode`` in front of the server at ``server_dsn``."""

    def __init__(
        self, server_dsn: str, *, pool_mode: str = "transaction", pool_size: int = 8
    ) -> None:
        url = urlsplit(server_dsn)
        self.server_host = url.hostname or "127.0.0.1"
        self.server_port = url.port or 5432
        self.user = url.username or "postgres"
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="importd-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn_for(self, database: str) -> str:
        """A URL of ``database`` through pgbouncer."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> PgBouncer:
        """Start pgbouncer and wait until it accepts TCP connections."""
        if not os.access(PGBOUNCER, os.X_OK):
            raise PgBouncerError(
                f"{PGBOUNCER} is missing: install pgbouncer (apt-get install -y pgbouncer; "
                ".ci/run does) or set IMPORTD_PGBOUNCER"
            )
        (self.directory / "users.txt").write_text(f'"{self.user}" ""\n')
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            f"admin_users = {self.user}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 1000\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
            "server_check_delay = 0\n"
        )
        argv = [str(PGBOUNCER), "-q"]
        if os.geteuid() == 0:
            run_as = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
            if run_as is None:
                raise PgBouncerError("running as root, and no 'postgres' or 'nobody' user")
            shutil.chown(self.directory, run_as)
            for child in self.directory.iterdir():
                shutil.chown(child, run_as)
            os.chmod(self.directory, 0o755)
            argv += ["-u", run_as]
        self.proc = subprocess.Popen(
            [*argv, str(ini)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise PgBouncerError(
                    f"pgbouncer exited {self.proc.returncode}: {out}{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PgBouncerError(
                        f"pgbouncer did not listen within {timeout} s: {self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        """The end of pgbouncer's log."""
        try:
            text = (self.directory / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop pgbouncer and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd  # noqa: PLC0415

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
