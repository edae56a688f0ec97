"""Parallel COPY streams (``copy_streams`` 2): an import whose daemon is killed mid-way
resumes and loads every good row exactly once, each bad one reported once; an atomic
import of a file (one transaction, no streams) starts over and does the same."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, StartDaemon, importd_env, wait_until
from tests.httpserver import Reply, Server
from tests.integration.test_imports_streams import SLOW, mixed_csv


@pytest.mark.parametrize("how", ["direct", "atomic-url", "atomic-file"])
async def test_sigkill_mid_import_loads_every_row_exactly_once(
    conn: Conn, daemons: StartDaemon, tmp_path: Path, how: str
) -> None:
    await conn.execute("CREATE TABLE plain (a text, b int, c text)")
    await conn.execute(SLOW.format(delay=0.0003, table="plain"))
    source = mixed_csv(tmp_path / "big.csv", 8000, {500, 5000, 7999})
    atomic = how != "direct"
    server = Server().start()
    if how == "atomic-url":  # staged in chunks, resumed with Range requests
        body = (tmp_path / "big.csv").read_bytes()
        source = server.route("/big.csv", Reply(200, body, ranges=True))
    job_id = await importd.enqueue(
        conn,
        "csv",
        {
            "source": source,
            "table": "plain",
            "atomic": atomic,
            "max_errors": 10,
            "chunk_rows": 500,
        },
        # The lease a SIGKILL leaves behind runs out timeout + lease_margin after the claim,
        # so the timeout is as short as one run allows: a direct import resumes chunk by
        # chunk across timeouts, an atomic one must fit its final move (8,000 rows through
        # the slow trigger, about 3 s) into one run.
        timeout=12 if atomic else 4,
        max_attempts=25,
    )
    env = importd_env(
        IMPORTD_IMPORT_ROOTS=str(tmp_path),
        IMPORTD_TABLES="public.plain",
        IMPORTD_URL_PREFIXES=server.url + "/",
    )
    flags = (
        *("--lease-margin", "1", "--rescue-interval", "0.5", "--backoff-base", "0.1"),
        *("--poll-interval", "1", "--copy-streams", "2"),
    )
    first = daemons(*flags, env=env)
    await wait_until(
        lambda: conn.fetchval("SELECT rows_done >= 2000 FROM import_jobs WHERE id = $1", job_id),
        timeout=60,
        what="progress",
    )
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    second = daemons(*flags, env=env)
    await wait_until(
        lambda: conn.fetchval("SELECT status = 'completed' FROM import_jobs WHERE id = $1", job_id),
        timeout=180,
        what="the import to complete",
    )
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["attempts"] >= 2
    assert row["result"]["rows_loaded"] == 7997 and row["result"]["rows_rejected"] == 3
    counts = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT b) AS d FROM plain")
    assert counts["n"] == counts["d"] == 7997  # every good row, none twice
    lines = [
        r["line_number"]
        for r in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id = $1 ORDER BY 1", job_id
        )
    ]
    assert lines == [1 + i + (i - 1) // 13 + (i > 4000) for i in (500, 5000, 7999)]
    resumed = [e for e in second.events() if e["event"] == "import_resumed"]
    if how == "atomic-file":  # nothing of the killed run was kept: it started over
        assert resumed == []
    else:
        assert resumed and resumed[0]["rows_loaded"] >= 2000  # it did not start over
    if how == "atomic-url":
        ranges = [h.headers.get("Range") for h in server.hits("/big.csv")]
        assert any(r and not r.startswith("bytes=0-") for r in ranges), ranges
    server.stop()
