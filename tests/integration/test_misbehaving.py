"""What users' handlers do that they should not, run through real importd processes:
a job still runs at most once at a time, and at least once until it completes, fails for
good or is cancelled, and the daemon goes on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import asyncpg
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


async def test_a_completion_committed_by_the_handler_is_not_a_lost_lease(
    conn: Conn, dsn: str
) -> None:
    """A handler completes its job in its own transaction (``complete_in``); the heartbeat
    that waited on the row meanwhile finds it completed once that commits: the run's end,
    not a lost lease. A job cancelled after such a completion was rolled back is lost."""
    from importd import db  # noqa: PLC0415
    from importd.guard import LeaseKeeper  # noqa: PLC0415
    from importd.models import Outcome  # noqa: PLC0415
    from importd.repository import Repository, cancel_jobs  # noqa: PLC0415

    repo = Repository(conn)
    for _ in range(2):
        await importd.enqueue(conn, "noop", {}, timeout=30)
    done, undone = await repo.claim(2, "A", queues=None, kinds=None, lease_margin=5.0)
    lost: list[int] = []
    keeper = LeaseKeeper(dsn, "A", interval=0.05, margin=5)
    keeper.start(lost.extend)
    handler = await db.connect(dsn)
    try:
        now = time.monotonic()
        for job in (done, undone):
            keeper.register(job, deadline=now + 30, leased_at=now, progress=dict)

        async def beats_after(n: int) -> bool:
            await asyncio.sleep(0)  # let the keeper's reports reach this loop
            return keeper.beats >= n

        async def heartbeat_waits() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'importd-leases'"
                )
            )

        # The completion commits while a heartbeat waits on the row.
        async with handler.transaction():
            assert await repo.finish("A", [(done, Outcome.completed({}))], conn=handler)
            keeper.completing(done.id)
            await wait_until(heartbeat_waits, what="a heartbeat to wait on the row")
        await wait_until(functools.partial(beats_after, keeper.beats + 3), what="heartbeats")
        assert lost == []
        assert [lease.job.id for lease in keeper.snapshot() if not lease.completed] == [undone.id]
        # A completion rolled back leaves the run holding the lease; an operator's cancel
        # then takes it, and the keeper says so.
        with contextlib.suppress(asyncpg.DivisionByZeroError):
            async with handler.transaction():
                assert await repo.finish("A", [(undone, Outcome.completed({}))], conn=handler)
                keeper.completing(undone.id)
                await wait_until(heartbeat_waits, what="a heartbeat to wait on the row")
                await handler.execute("SELECT 1/0")  # the handler fails: rolled back
        assert await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", undone.id) == (
            "running"
        )
        await wait_until(functools.partial(beats_after, keeper.beats + 2), what="heartbeats")
        assert lost == []  # still running under this lease
        assert await cancel_jobs(conn, [undone.id]) == [(undone.id, "running")]
        # (Reported at each heartbeat until its run is unregistered, which the executor
        # does and this test does not: once or more, by the time this loop looks.)
        await wait_until(lambda: asyncio.sleep(0, result=undone.id in lost), what="lost")
        assert set(lost) == {undone.id}
    finally:
        await handler.close()
        keeper.stop()


async def test_a_control_message_with_odd_digits_is_ignored(conn: Conn, dsn: str) -> None:
    """``cancel ²``: str.isdigit() says yes, int() refuses it. Anyone who may NOTIFY can
    send it; the executor ignores it (before, int() raised in the listener's callback)."""
    from importd.backoff import Backoff  # noqa: PLC0415
    from importd.executor import Executor, ResultWriter  # noqa: PLC0415
    from importd.guard import LeaseKeeper  # noqa: PLC0415
    from importd.handlers import Registry  # noqa: PLC0415
    from importd.repository import Repository  # noqa: PLC0415

    repo = Repository(conn)
    executor = Executor(
        repo=repo,
        pool=conn,
        registry=Registry(),
        writer=ResultWriter(repo, "A"),
        keeper=LeaseKeeper(dsn, "A", interval=1, margin=1),
        worker_id="A",
        backoff=Backoff(1, 10, 0),
        lease_margin=1,
    )
    for message in ("cancel \u00b2", "cancel \u0663", "cancel 1\u00b2", "cancel ", "cancel 12"):
        executor.control(message)  # nothing runs: nothing to cancel, and nothing raised
