"""Audit 19: a URL's scheme is case-insensitive (RFC 3986), and the payload check takes
``FILE:///path`` as a file source, but the daemon told file sources from URLs by
``startswith("file:")``: ``FILE:///…`` and ``File:…`` went to the URL check and failed
with ``expected a file:///path or an https:// URL, not file://``, a message that
contradicts itself. ``importd enqueue`` refused them the same way. They are file
sources, in any letter case."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from importd import config, payloads
from tests.helpers import Conn, Drain


@pytest.mark.parametrize("scheme", ["FILE", "File"])
async def test_a_file_source_in_any_letter_case_loads(
    conn: Conn, drain: Drain, root: Path, scheme: str
) -> None:
    await conn.execute("CREATE TABLE t (a text, b int)")
    (root / "f.csv").write_text("a,b\nx,1\n")
    source = f"{scheme}://{root}/f.csv"
    payloads.check("csv", {"source": source, "table": "t"}, config.Settings())
    job_id = await importd.enqueue(conn, "csv", {"source": source, "table": "t"})
    assert await drain(import_roots=(str(root),), tables=("public.t",)) == 0
    job = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id = $1", job_id)
    assert tuple(job) == ("completed", None)
    assert await conn.fetch("SELECT a, b FROM t") == [("x", 1)]
