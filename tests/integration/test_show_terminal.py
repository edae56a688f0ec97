"""Text from outside (an endpoint's error body, a CSV row) reaches the
operator's terminal through `importd show` without terminal control sequences (ESC, BEL,
CR), which could rewrite what the screen shows: they are printed as escapes (found by an
audit of issue 12)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import importd
from importd import ops
from tests.httpserver import Reply, Server


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


async def test_importd_show_prints_no_terminal_escapes(
    conn: Any, drain: Any, server: Server, tmp_path: Path
) -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07fake: all good\r"
    denied = server.route("/denied", Reply(403, hostile.encode()))
    http_job = await importd.enqueue(conn, "http", {"url": denied}, max_attempts=1)
    await conn.execute("CREATE TABLE term (a text, b int)")
    path = tmp_path / "t.csv"
    path.write_text(f"a,b\nx,{hostile.strip()}\n")
    csv_job = await importd.enqueue(
        conn, "csv", {"source": f"file://{path}", "table": "term", "max_errors": 5}
    )
    await drain(
        url_prefixes=(server.url + "/",), import_roots=(str(tmp_path),), tables=("public.term",)
    )
    for job in (http_job, csv_job):
        shown = await ops.show(conn, job)
        assert "\x1b" not in shown and "\x07" not in shown, repr(shown[-300:])
        assert "\\x1b[2J" in shown  # shown as an escape: the operator sees what was sent
