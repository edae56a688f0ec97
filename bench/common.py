"""Shared pieces of the benchmarks: a durable throwaway cluster, machine facts, daemons."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from importd import db, migrate
from importd.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent


def start_cluster() -> Cluster:
    """A throwaway cluster with PostgreSQL's default durability (fsync on)."""
    cluster = Cluster(settings={"max_connections": "200", "shared_buffers": "256MB"})
    cluster.init().start()
    return cluster


async def fresh_database(cluster: Cluster, name: str) -> str:
    """Create and migrate database ``name``; its URL."""
    admin = await asyncpg.connect(cluster.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = cluster.dsn_for(name)
    conn = await db.connect(dsn)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    return dsn


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
    }


async def server_settings(dsn: str) -> dict[str, str]:
    """The PostgreSQL settings that matter for the figures."""
    conn = await asyncpg.connect(dsn)
    try:
        out = {"version": (await conn.fetchval("SHOW server_version"))}
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers"):
            out[name] = await conn.fetchval(f"SHOW {name}")
        return out
    finally:
        await conn.close()


def start_daemon(dsn: str, *args: str, log_path: Path) -> subprocess.Popen[bytes]:
    """An ``importd run`` process with the benchmark handlers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    log = log_path.open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "importd",
            "run",
            "--dsn",
            dsn,
            "--handlers",
            "bench.handlers",
            "--log-level",
            "warning",
            "--log-format",
            "json",
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def table(title: str, rows: list[tuple[str, str]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
