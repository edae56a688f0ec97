"""Daemon benchmarks: enqueue rate, throughput, notify-to-start latency, idle CPU.

    python -m bench.daemon [--jobs 20000] [--latency-jobs 500] [--idle 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg

import importd

from .common import (
    cpu_seconds,
    fresh_database,
    machine,
    server_settings,
    start_cluster,
    start_daemon,
    table,
)

OUT = Path(__file__).resolve().parent / "out"


async def enqueue_rate(dsn: str, batches: int = 50, size: int = 1000) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        jobs = [importd.NewJob("noop", {"n": i}) for i in range(size)]
        began = time.perf_counter()
        for _ in range(batches):
            async with conn.transaction():
                await importd.enqueue_many(conn, jobs)
        elapsed = time.perf_counter() - began
        await conn.execute("TRUNCATE import_jobs CASCADE")
        return batches * size / elapsed
    finally:
        await conn.close()


async def throughput(dsn: str, jobs: int, concurrency: int, *extra: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, jobs, 1000):
            await importd.enqueue_many(
                conn, [importd.NewJob("noop", {}) for _ in range(min(1000, jobs - start))])
        await conn.execute("VACUUM ANALYZE import_jobs")
        proc = start_daemon(dsn, "--concurrency", str(concurrency), *extra,
                            log_path=OUT / "tp.log")
        try:
            while await conn.fetchval(
                    "SELECT count(*) FROM import_jobs WHERE status = 'completed'") < jobs:
                if proc.poll() is not None:
                    raise RuntimeError(f"importd exited with {proc.returncode}")
                await asyncio.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM import_jobs")
        return {"jobs": jobs, "seconds": float(span), "jobs_per_s": jobs / float(span)}
    finally:
        await conn.execute("TRUNCATE import_jobs CASCADE")
        await conn.close()


async def latency(dsn: str, count: int, rate: float) -> dict[str, float]:
    proc = start_daemon(dsn, "--concurrency", "16", log_path=OUT / "latency.log")
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(2)  # listening and idle
        commits: dict[int, float] = {}
        interval = 1 / rate
        next_at = time.perf_counter()
        for _ in range(count):
            async with conn.transaction():
                job_id = await importd.enqueue(conn, "stamp", {})
            commits[job_id] = time.time()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        while await conn.fetchval(
                "SELECT count(*) FROM import_jobs WHERE status = 'completed'") < count:
            await asyncio.sleep(0.1)
        rows = await conn.fetch("SELECT id, result FROM import_jobs")
        waits = sorted((json.loads(r["result"])["started"] - commits[r["id"]]) * 1000
                       for r in rows)
        return {
            "p50_ms": statistics.median(waits),
            "p95_ms": waits[int(len(waits) * 0.95) - 1],
            "p99_ms": waits[int(len(waits) * 0.99) - 1],
            "max_ms": waits[-1],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        await conn.execute("TRUNCATE import_jobs CASCADE")
        await conn.close()


async def idle_cpu(dsn: str, seconds: float) -> float:
    proc = start_daemon(dsn, log_path=OUT / "idle.log")
    try:
        await asyncio.sleep(3)  # start-up is not idling
        before = cpu_seconds(proc.pid)
        await asyncio.sleep(seconds)
        used = cpu_seconds(proc.pid) - before
        return 100 * used / seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def main(args: Any) -> None:
    OUT.mkdir(exist_ok=True)
    cluster = await asyncio.to_thread(start_cluster)
    try:
        dsn = await fresh_database(cluster, "bench_daemon")
        facts = machine()
        pg = await server_settings(dsn)
        rate = await enqueue_rate(dsn)
        tp = await throughput(dsn, args.jobs, args.concurrency)
        # The same over the Unix socket, as a daemon on the database's host would connect.
        socket_dsn = f"postgresql://postgres@/bench_daemon?host={cluster.directory}&port={cluster.port}"
        tp_socket = await throughput(socket_dsn, args.jobs, args.concurrency)
        tp_plain = await throughput(dsn, args.jobs, args.concurrency, "--no-fair")
        lat = await latency(dsn, args.latency_jobs, args.rate)
        idle = await idle_cpu(dsn, args.idle)
    finally:
        await asyncio.to_thread(cluster.destroy)
    rows = [
        ("machine", f"{facts['cores']} cores, {facts['cpu']}, {facts['memory_gib']} GiB, "
                    f"Python {facts['python']}"),
        ("postgresql", f"{pg['version']}, fsync={pg['fsync']}, "
                       f"synchronous_commit={pg['synchronous_commit']}, "
                       f"wal_sync_method={pg['wal_sync_method']}"),
        ("enqueue_many (batches of 1,000)", f"{rate:,.0f} jobs/s"),
        (f"throughput ({tp['jobs']:,} noop, --concurrency {args.concurrency})",
         f"{tp['jobs_per_s']:,.0f} jobs/s ({tp['seconds']:.2f} s)"),
        ("  the same over the Unix socket", f"{tp_socket['jobs_per_s']:,.0f} jobs/s"),
        ("  the same with --no-fair (TCP)", f"{tp_plain['jobs_per_s']:,.0f} jobs/s"),
        (f"latency commit→start ({args.latency_jobs} at {args.rate:g}/s)",
         f"p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
         f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms"),
        (f"idle CPU ({args.idle:g} s, listening)", f"{idle:.2f} %"),
    ]
    print(table("importd daemon benchmark", rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--idle", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
