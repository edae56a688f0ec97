"""A long record later in the file (under max_record_bytes, 4 MiB by default) does not
hold the event loop, though its parsing runs in a worker thread: a C call holds the GIL
for as long as it runs. One 2.6 MB NDJSON record of 1.3M numbers held the loop 1.2 -
1.36 s (``json.loads`` with ``parse_int=Number``: no Python frame, no GIL switch), then
0.15 - 0.2 s (a Python frame per number, but the garbage collector's walk of a million
``Number`` objects); now about 45 ms: the record is walked key by key and the value of
its jsonb column taken as its text, never decoded to objects (found by an audit of
issue 12). A long CSV field of quotes, for comparison: 28 - 50 ms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain, LoopGaps


def ndjson(path: Path) -> None:
    with path.open("w") as out:
        out.write('{"a": "x", "j": [1]}\n')
        for _ in range(1):
            out.write(json.dumps({"a": "y", "j": [1] * 1_300_000}, separators=(",", ":")) + "\n")


def csv(path: Path) -> None:
    with path.open("w") as out:
        out.write("a,j\nx,1\n")
        for _ in range(8):
            out.write('"' + '""' * 1_300_000 + '",1\n')


@pytest.mark.timing  # (a gap of the event loop: measured alone, in the last layer)
@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
async def test_big_later_records_do_not_hold_the_loop(
    conn: Conn, drain: Drain, tmp_path: Path, fmt: str
) -> None:
    await conn.execute("CREATE TABLE lh (a text, j jsonb)")
    path = tmp_path / f"big.{fmt}"
    (ndjson if fmt == "ndjson" else csv)(path)
    job = await importd.enqueue(
        conn, fmt, {"source": f"file://{path}", "table": "lh", "max_errors": 100}
    )
    async with LoopGaps() as gaps:
        await drain(import_roots=(str(tmp_path),), tables=("public.lh",))
    longest = gaps.longest
    row: Any = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    # (45 ms here alone for NDJSON, 28 ms for CSV; 1.2 s before for NDJSON, then 0.15 -
    # 0.2 s while its numbers were decoded to Python objects.)
    assert longest < 0.15, f"{fmt}: the event loop was held {longest * 1000:.0f} ms"
    assert row["status"] == "completed", row["last_error"]
