"""A registered secret that a cut falls inside (an HTTP error body kept to 300
characters, an answer kept to 64 KiB) is masked whole: the redaction runs before the cut,
over a margin past it; before, the cut left the secret's head, which the whole-value mask
no longer matched (found by an audit of issue 12)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import importd
from importd import ops
from tests.httpserver import Reply, Server

SECRET_TOKEN = "Sk7Qm4Vx9Lp2Rt8Wz3Nc6Hb1Jd5Fg0Ay"  # a registered http_token, no key before it
HEAD = SECRET_TOKEN[:12]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


async def run_one(conn: Any, drain: Any, server: Server, url: str) -> tuple[str, str]:
    job = await importd.enqueue(conn, "http", {"url": url}, timeout=20, max_attempts=1)
    await drain(url_prefixes=(server.url + "/",), http_token=SECRET_TOKEN)
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job)
    stored = json.dumps({k: str(v) for k, v in dict(row).items() if k != "payload"})
    return stored, await ops.show(conn, job)


async def test_a_token_cut_at_the_error_bodys_300_bytes_is_not_stored(
    conn: Any, drain: Any, server: Server
) -> None:
    body = ("y" * 285 + " " + SECRET_TOKEN + " rest").encode()
    stored, shown = await run_one(conn, drain, server, server.route("/denied", Reply(403, body)))
    assert HEAD not in stored
    assert HEAD not in shown


async def test_a_token_cut_at_max_response_is_not_stored(
    conn: Any, drain: Any, server: Server
) -> None:
    big = ("z" * (64 * 1024 - 14) + " " + SECRET_TOKEN).encode()
    stored, shown = await run_one(conn, drain, server, server.route("/big", Reply(200, big)))
    assert HEAD not in stored
    assert HEAD not in shown
