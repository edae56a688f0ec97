"""The floor: a minimal raw-asyncpg job daemon (LISTEN + SKIP LOCKED), the reference that
bench/daemon.py measures importd against in the same run. No retries, leases that are
never checked, no fairness, no logs: the least a worker on this table can do. Its
connections plan with sorts, sequential and bitmap scans off, so its claim reads the
claim index in order on a never-analyzed table too: without that, its own claim would
read and sort the whole backlog (the cold cliff importd had), and importd would be
measured against a floor that is not one.

    python -m bench.floor DSN [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import asyncpg

CLAIM = """
UPDATE import_jobs AS j SET status = 'running', attempts = j.attempts + 1,
       locked_by = 'floor', locked_until = now() + j.timeout, started_at = now()
FROM (SELECT id FROM import_jobs WHERE status = 'pending' AND run_at <= now()
      ORDER BY priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) AS n
WHERE j.id = n.id RETURNING j.id, j.kind, j.payload
"""
FINISH = """
UPDATE import_jobs SET status = 'completed', finished_at = now(), locked_by = NULL,
       locked_until = NULL, result = s.result::jsonb
FROM unnest($1::bigint[], $2::text[]) AS s(id, result) WHERE import_jobs.id = s.id
"""


async def run(dsn: str, concurrency: int) -> None:
    plans = {
        "enable_sort": "off",
        "enable_seqscan": "off",
        "enable_bitmapscan": "off",
        "jit": "off",
    }
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=3, server_settings=plans)
    listener = await asyncpg.connect(dsn)
    wake, stop = asyncio.Event(), asyncio.Event()
    await listener.add_listener("importd", lambda *_: wake.set())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    done: list[tuple[int, str]] = []
    flushed = asyncio.Event()
    running = 0

    async def handle(job_id: int) -> None:
        nonlocal running
        started = time.time()  # the "stamp" handler's result: when the handler ran
        done.append((job_id, f'{{"started": {started}}}'))
        running -= 1
        flushed.set()
        wake.set()  # a free slot: claim again while the result is written

    async def writer() -> None:
        while not stop.is_set():
            await flushed.wait()
            flushed.clear()
            batch = done[:]
            del done[:]
            if batch:
                await pool.execute(FINISH, [b[0] for b in batch], [b[1] for b in batch])
            wake.set()

    write_task = asyncio.create_task(writer())
    wake.set()
    while not stop.is_set():
        free = concurrency - running
        if free > 0:
            rows = await pool.fetch(CLAIM, free)
            for row in rows:
                running += 1
                asyncio.get_running_loop().create_task(handle(row["id"]))
            if rows:
                continue
        wake.clear()
        waiter = asyncio.create_task(wake.wait())
        await asyncio.wait(
            [waiter, asyncio.create_task(stop.wait())],
            timeout=1.0,
            return_when=asyncio.FIRST_COMPLETED,
        )
    write_task.cancel()
    await listener.close()
    await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.dsn, args.concurrency))
