"""A job row whose payload nests deeper than importd reads (a producer may INSERT one:
PostgreSQL's jsonb takes thousands of levels, Python's decoder about a thousand, and the
code that walks a decoded value fewer) fails alone, at once, with a message that says
what to change; the claim that took it, and the jobs beside it, go on; ``importd show``
prints its text (issue 12: whatever the row holds, the daemon keeps running)."""

from __future__ import annotations

from typing import Any

import importd
from importd import ops
from importd.db import MAX_JSON_DEPTH, DeepJSON, json_depth, json_in


def nested(depth: int) -> str:
    return '{"x": ' + "[" * (depth - 1) + '"[{"' + "]" * (depth - 1) + "}"


async def test_a_payload_nested_too_deep_fails_alone(conn: Any, drain: Any) -> None:
    insert = (
        "INSERT INTO import_jobs (kind, payload, max_attempts) "
        "VALUES ('record', $1::text::jsonb, 3) RETURNING id"
    )
    deep = await conn.fetchval(insert, nested(5000))
    edge = await conn.fetchval(insert, nested(MAX_JSON_DEPTH))  # deep, but read
    good = await importd.enqueue(conn, "noop", {})
    await drain()
    rows = {
        r["id"]: r
        for r in await conn.fetch("SELECT id, status, attempts, last_error FROM import_jobs")
    }
    assert rows[good]["status"] == "completed"
    assert rows[edge]["status"] == "completed", rows[edge]["last_error"]
    assert rows[deep]["status"] == "failed" and rows[deep]["attempts"] == 1  # not retried
    assert rows[deep]["last_error"] == (
        f"PayloadTooDeep: the payload nests deeper than {MAX_JSON_DEPTH} levels, more than "
        "importd reads; flatten it"
    )
    shown = await ops.show(conn, deep)
    assert str(deep) in shown
    assert '{"x": [[[[' in shown and "PayloadTooDeep" in shown


def test_the_depth_is_counted_outside_strings() -> None:
    assert json_depth(nested(3)) == 3
    assert json_depth('{"a": "[[[[\\"[[", "b": [1, {"c": []}]}') == 4
    assert not isinstance(json_in(nested(MAX_JSON_DEPTH)), DeepJSON)
    assert json_in(nested(MAX_JSON_DEPTH + 1)) == DeepJSON(nested(MAX_JSON_DEPTH + 1))
