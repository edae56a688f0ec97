"""The daemon end to end: real importd processes, real signals, a real PostgreSQL."""

from __future__ import annotations

import importd
from importd.models import Outcome
from importd.repository import Repository
from tests.helpers import Conn, wait_until


async def test_lease_is_fenced_in_process(conn: Conn) -> None:
    """Claim, let the lease expire, rescue, re-claim: only the current holder may finish."""
    await importd.enqueue(conn, "noop", {}, timeout=0.2)
    repo = Repository(conn)
    (first,) = await repo.claim(1, "A", queues=None, kinds=None, lease_margin=0.0)
    await wait_until(
        lambda: conn.fetchval(
            "SELECT locked_until < now() FROM import_jobs WHERE id = $1", first.id
        ),
        what="the lease to expire",
    )
    (rescued,) = await repo.rescue(10)
    assert rescued["status"] == "pending" and rescued["lost_by"] == "A"
    (second,) = await repo.claim(1, "B", queues=None, kinds=None, lease_margin=0.0)
    assert second.attempt == 2
    assert await repo.finish("A", [(first, Outcome.completed())]) == set()
    assert await repo.finish("B", [(second, Outcome.completed({"ok": 1}))]) == {second.id}
    assert await repo.finish("B", [(second, Outcome.completed())]) == set()  # only once
