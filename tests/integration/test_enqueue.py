"""The producer API and `importd enqueue`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import importd
from importd import NewJob
from tests.helpers import Conn, Notifications, wait_until


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


_LATER = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
_ODD_ONE = {
    "kind": "other",
    "queue": "odd",
    "tenant_id": "acme",
    "priority": 7,
    "run_at": _LATER,
    "max_attempts": 9,
    "timeout": 1.25,
}


@pytest.mark.parametrize("position", [0, 500, 999])
@pytest.mark.parametrize("column", sorted(_ODD_ONE))
async def test_enqueue_many_one_row_unlike_the_rest_keeps_its_own_value(
    conn: Conn, column: str, position: int
) -> None:
    # A column that is the same in every row travels once (insert_jobs.sql): a batch in
    # which one row differs must still store every row's own value.
    usual: dict[str, Any] = {"kind": "noop"}
    jobs = [
        NewJob(payload={"n": i}, **(usual | ({column: _ODD_ONE[column]} if i == position else {})))
        for i in range(1000)
    ]
    ids = await importd.enqueue_many(conn, jobs)
    rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM import_jobs")}
    assert len(rows) == 1000
    created = await conn.fetchval("SELECT now()")  # the insert's transaction has ended
    for i, (job, job_id) in enumerate(zip(jobs, ids, strict=True)):
        row = rows[job_id]
        assert row["payload"] == {"n": i}
        stored = {
            "kind": row["kind"],
            "queue": row["queue"],
            "tenant_id": row["tenant_id"],
            "priority": row["priority"],
            "run_at": row["run_at"] if job.run_at is not None else None,
            "max_attempts": row["max_attempts"],
            "timeout": row["timeout"].total_seconds(),
        }
        assert stored == {name: getattr(job, name) for name in _ODD_ONE}
        if job.run_at is None:
            assert row["run_at"] <= created


async def test_enqueue_many_constant_options_apply_to_every_row(conn: Conn) -> None:
    jobs = [
        NewJob(
            "csv",
            {"n": i},
            queue="imports",
            tenant_id="acme",
            priority=-1,
            run_at=_LATER,
            max_attempts=3,
            timeout=42,
        )
        for i in range(1000)
    ]
    ids = await importd.enqueue_many(conn, jobs)
    rows = await conn.fetch(
        "SELECT id, payload, kind, queue, tenant_id, priority, run_at, max_attempts, timeout "
        "FROM import_jobs ORDER BY id"
    )
    assert [r["id"] for r in rows] == ids
    assert [r["payload"]["n"] for r in rows] == list(range(1000))
    assert {tuple(r.values())[2:] for r in rows} == {
        ("csv", "imports", "acme", -1, _LATER, 3, timedelta(seconds=42))
    }
    # A batch of one is a batch whose every column is constant.
    (one,) = await importd.enqueue_many(conn, [NewJob("noop", {"x": 1}, queue="solo")])
    assert await conn.fetchval("SELECT queue FROM import_jobs WHERE id = $1", one) == "solo"


async def test_enqueue_many_big_batch_mixing_dedup_and_plain_jobs(conn: Conn) -> None:
    held = await importd.enqueue(conn, "csv", {"old": True}, dedup_key="k-3")
    freed = await importd.enqueue(conn, "csv", {"old": True}, dedup_key="k-4")
    await conn.execute(
        "UPDATE import_jobs SET status = 'completed', finished_at = now() WHERE id = $1", freed
    )
    # 3,000 jobs: every third carries one of ten keys (k-3 held by an unfinished job, k-4
    # by a finished one), the others none.
    jobs = [
        NewJob("csv", {"n": i}, dedup_key=f"k-{i % 10}" if i % 3 == 0 else None)
        for i in range(3000)
    ]
    ids = await importd.enqueue_many(conn, jobs)
    assert len(ids) == 3000
    first_of: dict[str, int] = {}
    for job, job_id in zip(jobs, ids, strict=True):
        if job.dedup_key is not None:
            first_of.setdefault(job.dedup_key, job_id)
            assert job_id == first_of[job.dedup_key]
    assert first_of["k-3"] == held
    assert freed not in ids
    created = {
        r["id"]: r["payload"]
        for r in await conn.fetch(
            "SELECT id, payload FROM import_jobs WHERE id <> ALL ($1)", [held, freed]
        )
    }
    # One new row per job without a key and per first use of a key other than k-3, in
    # input order.
    seen: set[str | None] = {"k-3"}
    expected = []
    for i, job in enumerate(jobs):
        if job.dedup_key is None or job.dedup_key not in seen:
            expected.append(i)
            seen.add(job.dedup_key)
    assert sorted(created) == [ids[i] for i in expected]
    assert [created[ids[i]]["n"] for i in expected] == expected
    assert len(created) == 2000 + 9


async def test_enqueue_many_one_notification_per_batch_and_queue(conn: Conn, dsn: str) -> None:
    notes = await Notifications().start(dsn)
    try:
        # Outside a transaction block each batch is its own transaction: one notification
        # per batch for each queue it touched, however many rows.
        for _ in range(3):
            await importd.enqueue_many(
                conn, [NewJob("noop", {"n": i}, queue="a" if i % 2 else "b") for i in range(1000)]
            )
        await importd.enqueue_many(conn, [NewJob("noop", {}, queue="c") for _ in range(1000)])
        payloads = await notes.settle()
        assert sorted(payloads) == ["a"] * 3 + ["b"] * 3 + ["c"]
    finally:
        await notes.close()


async def test_dedup_key_taken_by_a_concurrent_transaction_returns_its_job(
    conn: Conn, dsn: str
) -> None:
    # B's batch waits on A's uncommitted key; once A commits, B's statement cannot see A's
    # row in its snapshot (its id comes back NULL) and enqueue_many asks again: B gets A's
    # job, and its other rows are inserted once.
    import asyncpg  # noqa: PLC0415

    other = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        held = await importd.enqueue(conn, "csv", {"by": "a"}, dedup_key="race")
        pid = await other.fetchval("SELECT pg_backend_pid()")
        batch = [NewJob("csv", {"by": "b", "n": i}) for i in range(500)]
        batch[250] = NewJob("csv", {"by": "b"}, dedup_key="race")
        waiting = asyncio.ensure_future(importd.enqueue_many(other, batch))
        await wait_until(
            lambda: conn.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            ),
            what="the second batch to wait for the first transaction's key",
        )
        await tx.commit()
        ids = await waiting
        assert ids[250] == held
        assert len(set(ids)) == 500
        rows = await conn.fetch("SELECT id, payload FROM import_jobs ORDER BY id")
        assert len(rows) == 500  # A's job and B's 499 others
        assert [r["payload"].get("n") for r in rows if r["id"] != held] == [
            i for i in range(500) if i != 250
        ]
    finally:
        await other.close()
