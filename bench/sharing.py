"""Fair-sharing benchmarks: the tenant-fair claim against the plain one, wake-up storms,
and enqueue throughput with the notification trigger on and off.

    python -m bench.sharing [--big 1000000] [--tenants 1000] [--storm 10000] [--seconds 5]
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

from importd import handlers, sql

from .common import fresh_database, machine, server_settings, start_cluster, start_daemon, table

OUT = Path(__file__).resolve().parent / "out"
CLAIM = 16  # jobs per claim, the daemon's default --concurrency 8 twice over


async def fill(conn: asyncpg.Connection, pending: int, tenants: int) -> None:
    """``pending`` runnable jobs spread evenly over ``tenants`` tenants."""
    await conn.execute("TRUNCATE import_jobs CASCADE")
    await conn.execute("SET importd.notify = 'off'")
    await conn.execute(
        "INSERT INTO import_jobs (kind, tenant_id, payload, run_at) "
        "SELECT 'noop', 't' || lpad((g % $2)::text, 5, '0'), '{}', "
        "now() - interval '1 day' + g * interval '1 ms' FROM generate_series(1, $1) AS g",
        pending,
        tenants,
    )
    await conn.execute("RESET importd.notify")
    await conn.execute("VACUUM ANALYZE import_jobs")


async def claim_cost(
    dsn: str, sizes: list[int], tenants: int, rounds: int
) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    out = []
    try:
        for size in sizes:
            await fill(conn, size, tenants)
            plain = await _rolled_back(conn, False, rounds, tenants)
            fair = await _rolled_back(conn, True, rounds, tenants)
            capped = await _rolled_back(conn, True, rounds, tenants, cap=2)
            out.append((size, plain, fair, capped))
        await conn.execute("TRUNCATE import_jobs CASCADE")
    finally:
        await conn.close()
    return out


async def _rolled_back(
    conn: asyncpg.Connection, fair: bool, rounds: int, tenants: int, cap: int | None = None
) -> dict[str, float]:
    plain = sql.query("claim_jobs")
    fair_sql = sql.query("claim_fair")
    kinds = handlers.load().kinds  # a daemon claims only the kinds it has handlers for
    times = []
    for i in range(rounds + 10):
        cursor_tenant = f"t{(i * 37) % tenants:05d}"
        tx = conn.transaction()
        await tx.start()
        began = time.perf_counter()
        if fair:
            rows = await conn.fetch(
                fair_sql,
                CLAIM,
                "bench",
                30.0,
                None,
                kinds,
                None,
                None,
                cap,
                "default",
                cursor_tenant,
            )
        else:
            rows = await conn.fetch(plain, CLAIM, "bench", None, kinds, 30.0, None, None)
        elapsed = time.perf_counter() - began
        await tx.rollback()
        if len(rows) != CLAIM:
            raise RuntimeError(f"claimed {len(rows)} of {CLAIM}")
        if i >= 10:  # warm-up: plan caches, buffers
            times.append(elapsed * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1]}


async def storm(dsn: str, jobs: int, daemons: int, producers: int) -> dict[str, int]:
    """``jobs`` single-row INSERT transactions from ``producers`` connections while
    ``daemons`` listening daemons run them; what the daemons heard and claimed."""
    procs = [
        start_daemon(
            dsn,
            "--concurrency",
            "8",
            "--log-level",
            "info",
            log_path=OUT / f"storm-{daemons}-{i}.log",
        )
        for i in range(daemons)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(2)  # listening and idle

        async def produce(n: int) -> None:
            c = await asyncpg.connect(dsn)
            try:
                for _ in range(n):
                    await c.execute("INSERT INTO import_jobs (kind, payload) VALUES ('noop', '{}')")
            finally:
                await c.close()

        share = jobs // producers
        await asyncio.gather(*(produce(share) for _ in range(producers)))
        while (
            await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'completed'")
            < share * producers
        ):
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        await conn.execute("TRUNCATE import_jobs CASCADE")
        await conn.close()
    claims = notes = 0
    for i in range(daemons):
        for line in (OUT / f"storm-{daemons}-{i}.log").read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "daemon_stopped":
                claims += event["claim_statements"]
                notes += event["notifications"]
    return {"jobs": share * producers, "claims": claims, "notifications": notes}


async def enqueue_rate(dsn: str, producers: int, seconds: float, trigger: bool) -> float:
    """Single-row INSERT transactions per second from ``producers`` connections, with a
    daemon running: listening when the trigger is on, polling when it is off."""
    args = ("--concurrency", "8") + (() if trigger else ("--no-listen", "--poll-interval", "1"))
    proc = start_daemon(dsn, *args, log_path=OUT / "enqueue.log")
    setting = {} if trigger else {"importd.notify": "off"}
    try:
        await asyncio.sleep(2)
        stop_at = time.perf_counter() + seconds
        counts = [0] * producers

        async def produce(slot: int) -> None:
            c = await asyncpg.connect(dsn, server_settings=setting)
            try:
                while time.perf_counter() < stop_at:
                    await c.execute("INSERT INTO import_jobs (kind, payload) VALUES ('noop', '{}')")
                    counts[slot] += 1
            finally:
                await c.close()

        began = time.perf_counter()
        await asyncio.gather(*(produce(i) for i in range(producers)))
        return sum(counts) / (time.perf_counter() - began)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        conn = await asyncpg.connect(dsn)
        await conn.execute("TRUNCATE import_jobs CASCADE")
        await conn.close()


async def main(args: Any) -> None:
    OUT.mkdir(exist_ok=True)
    cluster = await asyncio.to_thread(start_cluster)
    try:
        dsn = await fresh_database(cluster, "bench_sharing")
        facts = machine()
        pg = await server_settings(dsn)
        costs = await claim_cost(dsn, [args.small, args.big], args.tenants, args.rounds)
        storms = [await storm(dsn, args.storm, n, 4) for n in (1, 3)]
        rates = []
        for producers in (1, 4, 16):
            on = await enqueue_rate(dsn, producers, args.seconds, trigger=True)
            off = await enqueue_rate(dsn, producers, args.seconds, trigger=False)
            rates.append((producers, on, off))
    finally:
        await asyncio.to_thread(cluster.destroy)
    rows = [
        (
            "machine",
            f"{facts['cores']} cores, {facts['cpu']}, {facts['memory_gib']} GiB, "
            f"Python {facts['python']}",
        ),
        (
            "postgresql",
            f"{pg['version']}, fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}",
        ),
    ]
    for size, plain, fair, capped in costs:
        label = f"claim of {CLAIM}, {size:,} pending / {args.tenants:,} tenants"
        rows.append(
            (
                label,
                f"plain p50 {plain['p50']:.2f} ms (p95 {plain['p95']:.2f}); "
                f"fair p50 {fair['p50']:.2f} ms (p95 {fair['p95']:.2f}); "
                f"fair+cap p50 {capped['p50']:.2f} ms (p95 {capped['p95']:.2f})",
            )
        )
    for n, s in zip((1, 3), storms, strict=True):
        per_k = 1000 / s["jobs"]
        rows.append(
            (
                f"wake-up storm: {s['jobs']:,} 1-row txns, 4 producers, {n} daemon(s)",
                f"{s['notifications'] * per_k:,.0f} notifications per 1,000 "
                f"(= claims of a claim-per-notification daemon); "
                f"{s['claims'] * per_k:,.0f} claims per 1,000",
            )
        )
    for producers, on, off in rates:
        rows.append(
            (
                f"enqueue, 1-row txns, {producers} producer(s)",
                f"trigger on {on:,.0f}/s; trigger off (importd.notify=off) {off:,.0f}/s",
            )
        )
    print(table("importd fair-sharing benchmark", rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
