"""Helpers for tests: notifications, real importd processes, waiting for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from importd.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create databases on (the ``pg_server`` fixture)."""

    how: str
    admin_dsn: str
    cluster: Cluster | None = None

    def dsn_for(self, database: str) -> str:
        """The admin URL with another database."""
        base, _, _ = self.admin_dsn.rpartition("/")
        query = ""
        if "?" in self.admin_dsn.rpartition("/")[2]:
            query = "?" + self.admin_dsn.rpartition("?")[2]
        return f"{base}/{database}{query}"


# The types of the suite's fixtures, for the tests' annotations.
Conn = Any  # an asyncpg.Connection: asyncpg ships no type stubs
Drain = Callable[..., Coroutine[Any, Any, int]]  # the `drain` fixture: settings → exit code


class StartDaemon(Protocol):
    """The `daemons` fixture: start a real importd process on the test's database."""

    def __call__(
        self,
        *args: str,
        command: str = "run",
        env: dict[str, str] | None = None,
        target: str | None = None,
    ) -> DaemonProcess: ...


class Notifications:
    """Collects notifications on a channel over a connection of its own."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._conn: Any = None
        self._event = asyncio.Event()

    async def start(self, dsn: str, channel: str = "importd") -> Notifications:
        import asyncpg  # noqa: PLC0415

        self._conn = await asyncpg.connect(dsn)
        await self._conn.add_listener(channel, self._on)
        return self

    def _on(self, _c: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)
        self._event.set()

    async def settle(self, quiet: float = 0.4) -> list[str]:
        """Wait until no notification arrived for ``quiet`` seconds; the payloads so far."""
        while True:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), quiet)
            except TimeoutError:
                return list(self.payloads)

    async def close(self) -> None:
        await self._conn.close()


async def wait_until(
    check: Callable[[], Awaitable[Any] | Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``check`` (a plain or an async callable) until it returns something truthy;
    return that; fail after ``timeout`` seconds. What a test waits on instead of a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for(
    check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """``wait_until`` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def importd_env(**extra: str) -> dict[str, str]:
    """The environment for an importd child process (test handlers importable)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("IMPORTD_") and k not in ("DATABASE_URL", "NOTIFY_SOCKET")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_importd(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m importd ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "importd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or importd_env(),
    )


class LoopGaps:
    """The event loop's longest wait between two ticks of 2 ms while the block runs
    (``async with LoopGaps() as gaps: ...``; then ``gaps.longest``, in seconds): how
    long something held the loop."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._ticker: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.002)
            now = loop.time()
            self.longest, last = max(self.longest, now - last), now

    async def __aenter__(self) -> LoopGaps:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._ticker is not None
        self._ticker.cancel()


class DaemonProcess:
    """A real ``importd run`` (or drain) process whose JSON log lines are kept."""

    def __init__(
        self,
        dsn: str,
        *args: str,
        command: str = "run",
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        argv = [
            sys.executable,
            "-m",
            "importd",
            command,
            "--dsn",
            dsn,
            "--handlers",
            "tests.jobs",
            "--log-format",
            "json",
            *args,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env or importd_env(), text=True
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "_raw", "line": line})
        return out

    def saw(self, event: str, **fields: Any) -> bool:
        return bool(self.events_named(event, **fields))

    def events_named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """The log events called ``event`` whose fields have the values given."""
        return [
            e
            for e in self.events()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for_event(
        self, event: str, timeout: float = 20.0, count: int = 1, **fields: Any
    ) -> dict[str, Any]:
        """Wait until the log holds ``count`` such events; the last of them."""

        async def check() -> list[dict[str, Any]]:
            seen = self.events_named(event, **fields)
            if self.proc.poll() is not None and len(seen) < count:
                raise AssertionError(
                    f"importd exited ({self.proc.returncode}) before "
                    f"{event}:\n{self.log_path.read_text()[-3000:]}"
                )
            return seen if len(seen) >= count else []

        seen: list[dict[str, Any]] = await wait_until(
            check, timeout, what=f"log event {event} x{count}"
        )
        return seen[-1]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"importd did not exit within {timeout} s")
            await asyncio.sleep(0.05)
        self._log.flush()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def text(self) -> str:
        return self.log_path.read_text()


_BATCH = r"""
import contextlib, io, json, os, sys
from importd import cli
calls = json.load(sys.stdin)
results = []
for argv, extra_env in calls:
    saved = dict(os.environ)
    os.environ.update(extra_env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    os.environ.clear()
    os.environ.update(saved)
    results.append([code, out.getvalue(), err.getvalue()])
json.dump(results, sys.__stdout__)
"""


def run_importd_batch(
    calls: list[tuple[list[str], dict[str, str]]] | list[list[str]],
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``importd ARGS`` for each of ``calls`` (an argv, or an argv and extra
    environment) one after another in a single child process: the commands' own code
    paths without a Python start-up each. Not for run or drain (their loggers are cached
    process-wide)."""
    normal = [(c, {}) if isinstance(c, list) else c for c in calls]
    done = subprocess.run(
        [sys.executable, "-c", _BATCH],
        input=json.dumps(normal),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or importd_env(),
    )
    assert done.returncode == 0, done.stderr
    return [
        subprocess.CompletedProcess(argv, code, out, err)
        for (argv, _), (code, out, err) in zip(normal, json.loads(done.stdout), strict=True)
    ]


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; each message is
    stamped when it arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._receive)

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def drain(self) -> list[tuple[float, str]]:
        return self.messages

    def kinds(self) -> list[str]:
        return [m.split("\n")[0].split("=")[0] for _, m in self.messages]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


async def count_jobs(conn: Conn, where: str = "TRUE") -> int:
    """How many jobs match ``where`` (SQL of the test's own)."""
    return int(await conn.fetchval(f"SELECT count(*) FROM import_jobs WHERE {where}"))


@contextlib.asynccontextmanager
async def daemon_role(conn: Conn, dsn: str, name: str, password: str) -> AsyncIterator[str]:
    """A login role that is no superuser, with the rights importd's daemon needs on its
    own tables and every table of ``public`` (take some back in the test); its DSN.
    Dropped at the end, with what it owns."""
    await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    try:
        await conn.execute(f"""
            GRANT SELECT, INSERT, UPDATE, DELETE ON import_jobs, import_job_errors TO {name};
            GRANT ALL ON ALL TABLES IN SCHEMA public TO {name};
            GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name};
            GRANT ALL ON SCHEMA importd_staging TO {name};
            GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {name};
        """)
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
        yield urlunsplit(parts._replace(netloc=f"{name}:{password}@{host}"))
    finally:
        await conn.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")


async def while_a_lock_queues(
    conn: Conn, dsn: str, table: str, work: Awaitable[Any], timeout: float = 90
) -> None:
    """Await ``work`` (a drain that imports into ``table``) while another session asks
    for ACCESS EXCLUSIVE on ``table`` (ALTER-like) as soon as the import's transaction
    holds it: that request queues behind the import, and every later lock request on the
    table behind itself. Fails if ``work`` does not end within ``timeout`` seconds, or
    the lock is not had once it did."""
    import asyncpg  # noqa: PLC0415

    other = await asyncpg.connect(dsn)

    async def lock_once_the_import_holds_the_table() -> bool:
        await wait_until(
            lambda: conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = $1::regclass "
                "AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid())",
                table,
            ),
            60,
            interval=0.005,
            what="the import to hold the target",
        )
        async with other.transaction():
            await other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        return True

    locker = asyncio.create_task(lock_once_the_import_holds_the_table())
    try:
        await asyncio.wait_for(work, timeout)
        assert await asyncio.wait_for(locker, 30)
    finally:
        locker.cancel()
        await other.close()
