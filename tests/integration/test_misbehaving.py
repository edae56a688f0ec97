"""What users' handlers do that they should not, run through real importd processes:
a job still runs at most once at a time, and at least once until it completes, fails for
good or is cancelled, and the daemon goes on."""

from __future__ import annotations

import asyncio

import structlog

import importd
from tests.helpers import Conn, wait_until


async def test_a_write_whose_reply_was_lost_is_read_back_not_called_lost(
    conn: Conn, dsn: str
) -> None:
    """The outcome committed but its reply never came (the connection dropped after the
    commit): the retried write finds no lease, reads the row, and sees its own write."""
    from importd.backoff import Backoff  # noqa: PLC0415
    from importd.executor import Executor, ResultWriter  # noqa: PLC0415
    from importd.guard import LeaseKeeper  # noqa: PLC0415
    from importd.handlers import Registry  # noqa: PLC0415
    from importd.models import Outcome  # noqa: PLC0415
    from importd.repository import Repository  # noqa: PLC0415

    repo = Repository(conn)
    writer = ResultWriter(repo, "A")
    executor = Executor(
        repo=repo,
        pool=conn,
        registry=Registry(),
        writer=writer,
        keeper=LeaseKeeper(dsn, "A", interval=1, margin=1),
        worker_id="A",
        backoff=Backoff(1, 10, 0),
        lease_margin=1,
    )
    writing = asyncio.create_task(writer.run())
    try:
        for _ in range(3):
            await importd.enqueue(conn, "noop", {}, timeout=0.2)
        first, second, third = await repo.claim(3, "A", queues=None, kinds=None, lease_margin=0.0)
        done, retry = Outcome.completed({"ok": 1}), Outcome.retry("Boom: \x00no", 5)
        # The first two were written by the attempt whose reply was lost.
        assert await repo.finish("A", [(first, done), (second, retry)]) == {first.id, second.id}
        # The third one's lease expires and another daemon takes it.
        await wait_until(
            lambda: conn.fetchval(
                "SELECT locked_until < now() FROM import_jobs WHERE id = $1", third.id
            ),
            what="the lease to expire",
        )
        await repo.rescue(10)
        await repo.claim(1, "B", queues=None, kinds=None, lease_margin=30.0)
        bound = structlog.get_logger("test")
        await executor._write(first, done, bound, 0.1)
        await executor._write(second, retry, bound, 0.1)
        assert executor.stats.lost == 0
        assert (executor.stats.completed, executor.stats.retried) == (1, 1)
        await executor._write(third, done, bound, 0.1)
        assert executor.stats.lost == 1
        assert (
            await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", third.id)
            == "running"
        )
    finally:
        writer.close()
        await writing
        executor.close()
