"""The producer API and `importd enqueue`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import importd
from importd import NewJob
from tests.helpers import Conn, Notifications


async def test_enqueue_inside_a_rolled_back_transaction_leaves_nothing(
    conn: Conn, dsn: str
) -> None:
    notes = await Notifications().start(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        job_id = await importd.enqueue(conn, "noop", {"a": 1})
        assert await conn.fetchval("SELECT count(*) FROM import_jobs WHERE id = $1", job_id) == 1
        await tx.rollback()
        assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 0
        assert await notes.settle() == []
        async with conn.transaction():
            await importd.enqueue(conn, "noop", {"a": 2}, queue="imports")
        assert await notes.settle() == ["imports"]
    finally:
        await notes.close()


async def test_enqueue_stores_every_option(conn: Conn) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"table": "t"},
        queue="imports",
        priority=-2,
        run_at=run_at,
        max_attempts=3,
        timeout=12.5,
        dedup_key="k1",
        tenant_id="acme",
    )
    row = await conn.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)
    assert row["kind"] == "csv" and row["payload"] == {"table": "t"}
    assert row["queue"] == "imports" and row["priority"] == -2
    assert row["run_at"] == run_at and row["max_attempts"] == 3
    assert row["timeout"] == timedelta(seconds=12.5)
    assert row["dedup_key"] == "k1" and row["tenant_id"] == "acme"
    assert row["status"] == "pending" and row["attempts"] == 0


async def test_enqueue_many_ten_thousand_in_one_statement(conn: Conn) -> None:
    jobs = [NewJob("noop", {"n": i}, priority=i % 3) for i in range(10_000)]
    ids = await importd.enqueue_many(conn, jobs)
    assert len(ids) == len(set(ids)) == 10_000
    rows = await conn.fetch("SELECT id, payload FROM import_jobs ORDER BY id")
    assert len(rows) == 10_000
    by_id = {r["id"]: r["payload"]["n"] for r in rows}
    assert [by_id[i] for i in ids] == list(range(10_000))  # ids come back in input order


async def test_dedup_key_returns_the_unfinished_job(conn: Conn) -> None:
    first = await importd.enqueue(conn, "csv", {"v": 1}, dedup_key="upload-7")
    again = await importd.enqueue(conn, "csv", {"v": 2}, dedup_key="upload-7")
    assert again == first
    assert await conn.fetchval("SELECT count(*) FROM import_jobs") == 1
    # Within one batch too, and mixed with new keys.
    ids = await importd.enqueue_many(
        conn,
        [
            NewJob("csv", {}, dedup_key="upload-8"),
            NewJob("csv", {}, dedup_key="upload-7"),
            NewJob("csv", {}, dedup_key="upload-8"),
            NewJob("csv", {}),
        ],
    )
    assert ids[1] == first and ids[0] == ids[2] and len({ids[0], ids[3], first}) == 3
    # A finished job frees its key.
    await conn.execute(
        "UPDATE import_jobs SET status = 'completed', finished_at = now() WHERE id = $1", first
    )
    assert await importd.enqueue(conn, "csv", {}, dedup_key="upload-7") != first


async def test_enqueue_rejects_a_payload_that_is_not_an_object(conn: Conn) -> None:
    with pytest.raises(TypeError, match="JSON object"):
        await importd.enqueue(conn, "csv", [1, 2])  # type: ignore[arg-type]


async def test_enqueue_many_one_notification_per_transaction_and_queue(
    conn: Conn, dsn: str
) -> None:
    notes = await Notifications().start(dsn)
    try:
        async with conn.transaction():
            for _ in range(3):  # three batches of 1,000 over two queues, one transaction
                await importd.enqueue_many(
                    conn,
                    [NewJob("noop", {"n": i}, queue="a" if i % 2 else "b") for i in range(1000)],
                )
            await importd.enqueue_many(conn, [NewJob("noop", {}, queue="a", dedup_key="d1")])
            assert await notes.settle(0.3) == []  # nothing before commit
        assert sorted(await notes.settle()) == ["a", "b"]
        # Outside a transaction block, a batch is its own transaction.
        await importd.enqueue_many(conn, [NewJob("noop", {}, queue="c") for _ in range(5)])
        assert sorted(await notes.settle()) == ["a", "b", "c"]
    finally:
        await notes.close()


async def test_enqueue_many_mixed_options_and_payloads_keep_input_order(conn: Conn) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    jobs = [
        NewJob(
            f"k{i % 4}",
            {"n": i, "s": "é\u2028\"'\\", "nested": [i, {"x": None}]},
            queue=f"q{i % 3}",
            priority=i % 5 - 2,
            tenant_id=None if i % 2 else f"t{i}",
            run_at=later if i % 7 == 0 else None,
            max_attempts=1 + i % 9,
            timeout=0.5 + i,
        )
        for i in range(1500)
    ]
    ids = await importd.enqueue_many(conn, jobs)
    rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM import_jobs")}
    assert len(rows) == 1500
    for job, job_id in zip(jobs, ids, strict=True):
        row = rows[job_id]
        assert row["payload"] == job.payload and row["kind"] == job.kind
        assert (row["queue"], row["priority"], row["tenant_id"], row["max_attempts"]) == (
            job.queue,
            job.priority,
            job.tenant_id,
            job.max_attempts,
        )
        assert row["timeout"] == timedelta(seconds=job.timeout)
        assert (row["run_at"] == later) == (job.run_at is not None)


async def test_enqueue_many_ids_stay_in_order_beside_a_concurrent_producer(
    conn: Conn, dsn: str
) -> None:
    import asyncpg  # noqa: PLC0415

    other = await asyncpg.connect(dsn)
    try:

        async def interleave() -> None:
            for _ in range(200):
                await importd.enqueue(other, "noop", {"other": True})

        mine = [NewJob("noop", {"n": i}) for i in range(1000)]
        _, ids = await asyncio.gather(interleave(), importd.enqueue_many(conn, mine))
        by_id = {
            r["id"]: r["payload"].get("n")
            for r in await conn.fetch("SELECT id, payload FROM import_jobs")
        }
        assert [by_id[i] for i in ids] == list(range(1000))
    finally:
        await other.close()
