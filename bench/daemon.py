"""Daemon benchmarks, each figure a ratio against a reference measured in the same run.

    python -m bench.daemon [--jobs 20000] [--runs 2] [--finished 1000000]
                           [--cases cold,warm,finished] [--side-by-side]
                           [--latency-jobs 500] [--rate 50] [--idle 30]
                           [--enqueue-rounds 4 (0: skip the enqueue)]
    python -m bench.daemon --only-enqueue [--enqueue-rounds 4] [--enqueue-batches 50]

- enqueue: ``enqueue_many`` in batches of 1,000 against four references of the same rows
  (and ``enqueue_many`` of jobs that carry dedup keys),
  interleaved: a plain multi-row INSERT (``INSERT ... VALUES ($1, $2), ...``), a COPY, a
  COPY into a temporary table + INSERT ... SELECT ... RETURNING, and the rows made by the
  server itself (``INSERT ... SELECT FROM generate_series``: the table's own ceiling);
  rates, and CPU per job of the client and of the server.
- drain: ``--jobs`` no-op jobs enqueued in batches of 1,000 into a fresh database, then one
  daemon with concurrency 16 and default settings (fair claim on) until every completion
  is persisted; the floor (bench/floor.py, a minimal LISTEN + SKIP LOCKED daemon) drains
  the same in the same run. Three cases, the cold one first:
    cold      a fresh table: no VACUUM, no ANALYZE (what a user who bulk-enqueues gets)
    warm      VACUUM ANALYZE after the enqueue
    finished  ``--finished`` finished rows in the table, analyzed while nothing was pending
              (the statistics say no job is pending), then the enqueue: no ANALYZE after
  Rates come by fifths of each drain, so a cliff cannot hide in an average. Each drain
  also reports its daemon's CPU per job and its server processes' (the backends of its
  database).
  ``--side-by-side``: the floor and importd drain cold backlogs at the same time, each in
  its own database, and importd's completions are divided by the floor's in five equal
  slices of the time both ran: the same background load for both.
- latency: commit of a one-job transaction to the start of its handler at ``--rate`` jobs/s,
  importd and the floor, interleaved; then again with ``synchronous_commit = off`` for
  the database (``--no-latency-async`` skips it). Where it goes: commit → notification,
  commit → the claim's start (the wake-up path), claim start → handler, the task start
  (executor → handler), each claim statement with and without its commit, and the WAL
  flush a commit waits for.
- idle CPU of a listening daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

import importd
from importd import sql
from importd.cluster import Cluster

from .common import (
    ROOT,
    cpu_seconds,
    fresh_database,
    machine,
    server_settings,
    start_cluster,
    start_daemon,
    table,
)

OUT = Path(__file__).resolve().parent / "out"
BATCH = 1000


def start_floor(dsn: str, concurrency: int, log_path: Path) -> subprocess.Popen[bytes]:
    """The floor daemon (bench/floor.py) as a process of its own, like importd."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.floor", dsn, "--concurrency", str(concurrency)],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


async def clone(cluster: Cluster, template: str, name: str) -> str:
    """A new database ``name`` copied from ``template``; its URL."""
    admin = await asyncpg.connect(cluster.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return cluster.dsn_for(name)


async def drop(cluster: Cluster, name: str) -> None:
    admin = await asyncpg.connect(cluster.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# -- enqueue ---------------------------------------------------------------------------


ENQUEUE_SYSTEMS = ("enqueue_many", "INSERT", "COPY", "COPY+INSERT", "server", "with keys")


async def enqueue_rates(dsn: str, rounds: int, batches: int) -> dict[str, list[dict[str, Any]]]:
    """Per system, per round: jobs/s, jobs/s by fifths, and CPU µs per job of the client
    (this process) and of the server (the connection's backend), interleaved round by round.

    enqueue_many    ``importd.enqueue_many`` of ``NewJob("noop", {"n": i})``, ids returned
    INSERT          a plain multi-row ``INSERT ... VALUES ($1, $2), ... RETURNING id``
    COPY            ``COPY import_jobs (kind, payload)`` of the same rows (no ids back)
    COPY+INSERT     a COPY into a temporary table, then ``INSERT ... SELECT ... RETURNING
                    id`` from it: the way to get ids back from a COPY
    server          ``INSERT ... SELECT ... FROM generate_series`` of the same rows, made
                    by the server itself: what the table takes with no client at all
    with keys       ``enqueue_many`` of the same jobs, each with a dedup key of its own
    Each batch of 1,000 is its own transaction, and each system starts from an empty table.
    """
    conn = await asyncpg.connect(dsn)
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    values = ", ".join(f"(${2 * i + 1}, ${2 * i + 2}::jsonb)" for i in range(BATCH))
    plain = f"INSERT INTO import_jobs (kind, payload) VALUES {values} RETURNING id"
    made = (
        "INSERT INTO import_jobs (kind, payload) SELECT 'noop', jsonb_build_object('n', g) "
        "FROM generate_series($1::int, $1::int + $2::int - 1) AS g RETURNING id"
    )

    async def api(first: int) -> None:
        await importd.enqueue_many(
            conn, [importd.NewJob("noop", {"n": n}) for n in range(first, first + BATCH)]
        )

    async def insert(first: int) -> None:
        args: list[Any] = []
        for n in range(first, first + BATCH):
            args += ["noop", json.dumps({"n": n})]
        await conn.fetch(plain, *args)

    async def copy(first: int) -> None:
        await conn.copy_records_to_table(
            "import_jobs",
            records=[("noop", json.dumps({"n": n})) for n in range(first, first + BATCH)],
            columns=["kind", "payload"],
        )

    await conn.execute(
        "CREATE TEMP TABLE staged (kind text, payload jsonb, ord serial) ON COMMIT DELETE ROWS"
    )

    async def staged(first: int) -> None:
        await conn.copy_records_to_table(
            "staged",
            records=[("noop", json.dumps({"n": n})) for n in range(first, first + BATCH)],
            columns=["kind", "payload"],
        )
        await conn.fetch(
            "INSERT INTO import_jobs (kind, payload) SELECT kind, payload FROM staged "
            "ORDER BY ord RETURNING id"
        )

    async def server(first: int) -> None:
        await conn.fetch(made, first, BATCH)

    async def keyed(first: int) -> None:
        await importd.enqueue_many(
            conn,
            [
                importd.NewJob("noop", {"n": n}, dedup_key=f"key-{n}")
                for n in range(first, first + BATCH)
            ],
        )

    systems = (api, insert, copy, staged, server, keyed)
    fns = dict(zip(ENQUEUE_SYSTEMS, systems, strict=True))

    async def measure(fn: Any) -> dict[str, Any]:
        fifth = max(1, batches // 5)
        marks = []
        client0, server0 = time.process_time(), cpu_seconds(backend)
        began = time.perf_counter()
        for b in range(batches):
            async with conn.transaction():
                await fn(b * BATCH)
            if (b + 1) % fifth == 0:
                marks.append(time.perf_counter())
        elapsed = time.perf_counter() - began
        client, served = time.process_time() - client0, cpu_seconds(backend) - server0
        await conn.execute("TRUNCATE import_jobs CASCADE")
        jobs = batches * BATCH
        starts = [began, *marks[:-1]]
        return {
            "rate": jobs / elapsed,
            "fifths": [fifth * BATCH / (e - s) for s, e in zip(starts, marks, strict=True)],
            "client_us": client / jobs * 1e6,
            "server_us": served / jobs * 1e6,
        }

    out: dict[str, list[dict[str, Any]]] = {name: [] for name in ENQUEUE_SYSTEMS}
    try:
        for fn in fns.values():  # warm-up: caches, prepared statements
            await measure(fn)
        for r in range(rounds):
            order = ENQUEUE_SYSTEMS if r % 2 == 0 else tuple(reversed(ENQUEUE_SYSTEMS))
            for name in order:
                out[name].append(await measure(fns[name]))
    finally:
        await conn.close()
    return out


def enqueue_rows(res: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """The enqueue figures: each system's rates, and enqueue_many's ratio against each."""
    rows = []
    mine = res["enqueue_many"]
    for name in ENQUEUE_SYSTEMS:
        runs = res[name]
        text = (
            f"{_span([r['rate'] for r in runs])} jobs/s (fifths "
            f"{_span([f for r in runs for f in r['fifths']])}); CPU per job: client "
            f"{_span([r['client_us'] for r in runs], '{:.1f}')} µs + server "
            f"{_span([r['server_us'] for r in runs], '{:.1f}')} µs"
        )
        if name != "enqueue_many":
            ratio = [m["rate"] / r["rate"] for m, r in zip(mine, runs, strict=True)]
            worst = min(
                a / b
                for m, r in zip(mine, runs, strict=True)
                for a, b in zip(m["fifths"], r["fifths"], strict=True)
            )
            cpu = [
                (m["client_us"] + m["server_us"]) / (r["client_us"] + r["server_us"])
                for m, r in zip(mine, runs, strict=True)
            ]
            text += (
                f"; enqueue_many = {_span(ratio, '{:.2f}')}x this rate (worst fifth "
                f"{worst:.2f}x), {_span(cpu, '{:.2f}')}x its CPU per job"
            )
        rows.append((f"enqueue, batches of 1,000: {name}", text))
    return rows


# -- drain -----------------------------------------------------------------------------


async def fill_finished(dsn: str, count: int) -> None:
    """``count`` completed rows, then VACUUM ANALYZE: statistics that say nothing pends."""
    conn = await asyncpg.connect(dsn, server_settings={"importd.notify": "off"})
    try:
        await conn.execute(
            "INSERT INTO import_jobs (kind, payload, status, attempts, started_at, finished_at, "
            "run_at, created_at) SELECT 'noop', '{}', 'completed', 1, "
            "now() - g * interval '1 ms', now() - g * interval '1 ms', "
            "now() - g * interval '1 ms', now() - g * interval '1 ms' "
            "FROM generate_series(1, $1) AS g",
            count,
        )
        await conn.execute("VACUUM ANALYZE import_jobs")
    finally:
        await conn.close()


async def enqueue_backlog(dsn: str, jobs: int, analyze: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, jobs, BATCH):
            await importd.enqueue_many(
                conn, [importd.NewJob("noop", {}) for _ in range(min(BATCH, jobs - start))]
            )
        if analyze:
            await conn.execute("VACUUM ANALYZE import_jobs")
    finally:
        await conn.close()


async def drain(dsn: str, system: str, jobs: int, concurrency: int) -> dict[str, Any]:
    """Run ``system`` on the backlog in ``dsn`` until every job is completed."""
    log_path = OUT / f"drain-{system.replace(' ', '')}.log"
    conn = await asyncpg.connect(dsn)
    first = await conn.fetchval("SELECT min(id) FROM import_jobs WHERE status = 'pending'")
    if system == "floor":
        proc = start_floor(dsn, concurrency, log_path)
    else:
        extra = ("--no-fair",) if system == "importd --no-fair" else ()
        proc = start_daemon(dsn, "--concurrency", str(concurrency), *extra, log_path=log_path)
    cpu_start: float | None = None  # after start-up (imports, connections)
    server_start: dict[int, float] = {}
    try:
        while await conn.fetchval(
            "SELECT EXISTS (SELECT FROM import_jobs WHERE status = 'pending') "
            "OR EXISTS (SELECT FROM import_jobs WHERE status = 'running')"
        ):
            if proc.poll() is not None:
                raise RuntimeError(f"{system} exited with {proc.returncode}; see {log_path}")
            if cpu_start is None and await conn.fetchval(
                "SELECT EXISTS (SELECT FROM import_jobs WHERE status = 'running')"
            ):
                cpu_start = cpu_seconds(proc.pid)
                server_start = await backend_cpu(conn)
            await asyncio.sleep(0.25)
        # The daemon's own CPU per job (the server's is not in it), and its server
        # processes' (every backend of this database but ours; one that appeared later
        # counts from zero).
        cpu = cpu_seconds(proc.pid) - (cpu_start or 0.0)
        server = sum(t - server_start.get(p, 0.0) for p, t in (await backend_cpu(conn)).items())
        began = await conn.fetchval("SELECT min(started_at) FROM import_jobs WHERE id >= $1", first)
        ends = [
            r[0]
            for r in await conn.fetch(
                "SELECT finished_at FROM import_jobs WHERE status = 'completed' AND id >= $1 "
                "ORDER BY finished_at",
                first,
            )
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        await conn.close()
    if len(ends) != jobs:
        raise RuntimeError(f"{system}: {len(ends)} jobs completed, expected {jobs}")
    span = (ends[-1] - began).total_seconds()
    fifths = []
    last = began
    for k in range(1, 6):
        edge = ends[k * jobs // 5 - 1]
        fifths.append((jobs / 5) / max((edge - last).total_seconds(), 1e-6))
        last = edge
    return {
        "rate": jobs / span,
        "fifths": fifths,
        "cpu_us": cpu / jobs * 1e6,
        "server_us": server / jobs * 1e6,
        "began": began,
        "ends": ends,
    }


async def backend_cpu(conn: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds so far of every server process on ``conn``'s database but its own."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    out = {}
    for (pid,) in pids:
        with contextlib.suppress(OSError):  # gone meanwhile
            out[pid] = cpu_seconds(pid)
    return out


CASES = ("cold", "warm", "finished")


async def drain_case(
    cluster: Cluster, case: str, args: Any, systems: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """``args.runs`` drains per system, the systems interleaved (their order alternates)."""
    template = "bench_template"
    if case == "finished":
        template = "bench_template_finished"
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for run in range(args.runs):
        order = systems if run % 2 == 0 else list(reversed(systems))
        for system in order:
            dsn = await clone(cluster, template, "bench_drain")
            await enqueue_backlog(dsn, args.jobs, analyze=case == "warm")
            results[system].append(await drain(dsn, system, args.jobs, args.concurrency))
            await drop(cluster, "bench_drain")
    return results


async def drain_side_by_side(cluster: Cluster, args: Any) -> list[dict[str, Any]]:
    """The floor and importd (fair claim on) draining cold backlogs at the same time, each
    in its own database of the same cluster: both meet the same background load, which on
    a shared machine swings more between two drains than the two daemons differ. Per run:
    each one's result, and importd's completions over the floor's in five equal slices of
    the time both were draining."""
    systems = ("floor", "importd")
    out = []
    for _ in range(args.runs):
        dsns = {}
        for system in systems:
            dsns[system] = await clone(cluster, "bench_template", f"bench_pair_{system}")
            await enqueue_backlog(dsns[system], args.jobs, analyze=False)
        floor, mine = await asyncio.gather(
            *(drain(dsns[s], s, args.jobs, args.concurrency) for s in systems)
        )
        for system in systems:
            await drop(cluster, f"bench_pair_{system}")
        start = max(floor["began"], mine["began"])
        end = min(floor["ends"][-1], mine["ends"][-1])
        step = (end - start) / 5
        edges = [start + step * k for k in range(6)]
        ratios = []
        for lo, hi in itertools.pairwise(edges):
            done = [sum(lo < t <= hi for t in r["ends"]) for r in (floor, mine)]
            ratios.append(done[1] / done[0] if done[0] else math.inf)
        out.append({"floor": floor, "importd": mine, "ratios": ratios})
    return out


# -- latency ---------------------------------------------------------------------------


async def latency(dsn: str, system: str, count: int, rate: float) -> dict[str, float]:
    """Commit of a one-job transaction → handler start, and its two halves: commit → the
    claim statement's start (started_at, set by the claim: the wake-up path) and claim
    start → handler start (the claim statement, decoding, task start)."""
    if system == "floor":
        proc = start_floor(dsn, 16, OUT / "latency-floor.log")
    else:
        proc = start_daemon(dsn, "--concurrency", "16", log_path=OUT / "latency.log")
    conn = await asyncpg.connect(dsn)
    try:
        # Started, listening and idle: one job through first (start-up under load can take
        # seconds, which a fixed wait would put into the first jobs' latency).
        async with conn.transaction():
            warm = await importd.enqueue(conn, "stamp", {})
        while (
            await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", warm) != "completed"
        ):
            if proc.poll() is not None:
                raise RuntimeError(f"{system} exited with {proc.returncode}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # idle again: its result written, nothing to claim
        commits: dict[int, float] = {}
        interval = 1 / rate
        next_at = time.perf_counter()
        for _ in range(count):
            async with conn.transaction():
                job_id = await importd.enqueue(conn, "stamp", {})
            commits[job_id] = time.time()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        while (
            await conn.fetchval("SELECT count(*) FROM import_jobs WHERE status = 'completed'")
            < count + 1
        ):
            await asyncio.sleep(0.1)
        rows = await conn.fetch(
            "SELECT id, result, extract(epoch FROM started_at)::float8 AS claimed "
            "FROM import_jobs WHERE id <> $1",
            warm,
        )
        total, wake, start, task = [], [], [], []
        for r in rows:
            result = json.loads(r["result"])
            started = result["started"]
            total.append((started - commits[r["id"]]) * 1000)
            wake.append((r["claimed"] - commits[r["id"]]) * 1000)
            start.append((started - r["claimed"]) * 1000)
            if "task_ms" in result:  # importd: executor.start → handler start
                task.append(result["task_ms"])
        total.sort()
        return {
            "p50_ms": statistics.median(total),
            "p95_ms": total[int(len(total) * 0.95) - 1],
            "p99_ms": total[int(len(total) * 0.99) - 1],
            "max_ms": total[-1],
            "wake_p50_ms": statistics.median(wake),
            "start_p50_ms": statistics.median(start),
            "task_p50_ms": statistics.median(task) if task else math.nan,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        await conn.execute("TRUNCATE import_jobs CASCADE")
        await conn.close()


async def notify_delay(dsn: str, count: int = 200) -> float:
    """p50 ms from the commit of a one-job transaction (as the producer sees it) to the
    notification's arrival on another connection of the same process."""
    listener = await asyncpg.connect(dsn)
    conn = await asyncpg.connect(dsn)
    arrived: asyncio.Queue[float] = asyncio.Queue()
    await listener.add_listener("importd", lambda *_: arrived.put_nowait(time.time()))
    delays = []
    try:
        for _ in range(count):
            async with conn.transaction():
                await importd.enqueue(conn, "noop", {})
            committed = time.time()
            delays.append((await arrived.get() - committed) * 1000)
            await asyncio.sleep(0.01)
    finally:
        await conn.execute("TRUNCATE import_jobs CASCADE")
        await conn.close()
        await listener.close()
    return statistics.median(delays)


# What a daemon with the benchmark handlers passes: the kinds it has handlers for.
KINDS = ["csv", "http", "ndjson", "noop", "stamp"]
FLOOR_CLAIM = """
UPDATE import_jobs AS j SET status = 'running', attempts = j.attempts + 1,
       locked_by = 'floor', locked_until = now() + j.timeout, started_at = now()
FROM (SELECT id FROM import_jobs WHERE status = 'pending' AND run_at <= now()
      ORDER BY priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) AS n
WHERE j.id = n.id RETURNING j.id, j.kind, j.payload
"""


async def claim_round_trips(dsn: str, count: int = 200, commit: bool = True) -> dict[str, float]:
    """p50 ms of one claim of up to 16 that finds one pending job, by claim statement:
    importd's fair claim (the default), its plain claim, and the floor's. ``commit``
    False: the statement alone, in a transaction rolled back (no commit, no WAL flush)."""
    conn = await asyncpg.connect(dsn, server_settings={"importd.notify": "off"})
    claims = {
        "fair": (
            sql.query("claim_fair"),
            (16, "bench", 30.0, None, KINDS, None, None, None, None, None),
        ),
        "plain": (sql.query("claim_jobs"), (16, "bench", None, KINDS, 30.0, None, None)),
        "floor": (FLOOR_CLAIM, (16,)),
    }
    times: dict[str, list[float]] = {name: [] for name in claims}
    try:
        for i in range(count + 10):
            for name, (query, args) in claims.items():
                await conn.execute("INSERT INTO import_jobs (kind) VALUES ('noop')")
                if not commit:
                    await conn.execute("BEGIN")
                began = time.perf_counter()
                rows = await conn.fetch(query, *args)
                elapsed = (time.perf_counter() - began) * 1000
                if not commit:
                    await conn.execute("ROLLBACK")
                assert len(rows) == 1
                await conn.execute("DELETE FROM import_jobs")
                if i >= 10:
                    times[name].append(elapsed)
    finally:
        await conn.close()
    return {name: statistics.median(t) for name, t in times.items()}


async def commit_flush(dsn: str, count: int = 200) -> tuple[float, float]:
    """p50 ms of a one-row UPDATE committed on its own, as PostgreSQL is set up
    (synchronous_commit on: the commit waits for the WAL flush) and with
    synchronous_commit off for the session (no wait): the difference is the flush that
    every claim's and every finish's commit waits for."""
    conn = await asyncpg.connect(dsn, server_settings={"importd.notify": "off"})
    times: dict[str, list[float]] = {"on": [], "off": []}
    try:
        job_id = await conn.fetchval("INSERT INTO import_jobs (kind) VALUES ('noop') RETURNING id")
        for i in range(count + 10):
            for mode in ("on", "off"):
                await conn.execute(f"SET synchronous_commit = {mode}")
                began = time.perf_counter()
                await conn.execute(
                    "UPDATE import_jobs SET updated_at = now() WHERE id = $1", job_id
                )
                if i >= 10:
                    times[mode].append((time.perf_counter() - began) * 1000)
        await conn.execute("DELETE FROM import_jobs")
    finally:
        await conn.close()
    return statistics.median(times["on"]), statistics.median(times["off"])


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


async def set_synchronous_commit(cluster: Cluster, database: str, mode: str) -> None:
    """The database's default synchronous_commit for the sessions that connect next."""
    admin = await asyncpg.connect(cluster.dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = {mode}')
    finally:
        await admin.close()


# -- report ----------------------------------------------------------------------------


def latency_rows(label: str, lat: dict[str, list[dict[str, float]]]) -> list[tuple[str, str]]:
    rows = []
    for system in ("floor", "importd"):
        runs = lat[system]
        text = (
            f"p50 {_span([r['p50_ms'] for r in runs], '{:.2f}')} ms, "
            f"p95 {_span([r['p95_ms'] for r in runs], '{:.2f}')} ms, "
            f"p99 {_span([r['p99_ms'] for r in runs], '{:.2f}')} ms"
        )
        if system == "importd":
            pairs = list(zip(runs, lat["floor"], strict=True))
            p50 = _span([r["p50_ms"] / f["p50_ms"] for r, f in pairs], "{:.2f}")
            p99 = _span([r["p99_ms"] / f["p99_ms"] for r, f in pairs], "{:.2f}")
            text += f" = p50 {p50}x, p99 {p99}x floor"
        wake = _span([r["wake_p50_ms"] for r in runs], "{:.2f}")
        start = _span([r["start_p50_ms"] for r in runs], "{:.2f}")
        text += f"; p50 commit→claim start {wake} ms, claim start→handler {start} ms"
        if system == "importd":
            task = _span([r["task_p50_ms"] for r in runs], "{:.3f}")
            text += f" (of which the task start, executor → handler, {task} ms)"
        rows.append((f"{label}: {system}", text))
    return rows


def _span(values: list[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = min(values), max(values)
    return (
        fmt.format(lo)
        if fmt.format(lo) == fmt.format(hi)
        else (f"{fmt.format(lo)} to {fmt.format(hi)}")
    )


def drain_rows(case: str, res: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    floor = res["floor"]
    rows = [
        (
            f"drain, {case}: floor",
            f"{_span([r['rate'] for r in floor])} jobs/s; "
            f"daemon CPU {_span([r['cpu_us'] for r in floor])} µs/job, "
            f"its server processes {_span([r['server_us'] for r in floor])} µs/job; fifths "
            + " | ".join(", ".join(f"{f:,.0f}" for f in r["fifths"]) for r in floor),
        )
    ]
    for system, runs in res.items():
        if system == "floor":
            continue
        ratios = [r["rate"] / f["rate"] for r, f in zip(runs, floor, strict=True)]
        fifth_ratios = [
            [a / b for a, b in zip(r["fifths"], f["fifths"], strict=True)]
            for r, f in zip(runs, floor, strict=True)
        ]
        worst = min(min(fr) for fr in fifth_ratios)
        rows.append(
            (
                f"drain, {case}: {system}",
                f"{_span([r['rate'] for r in runs])} jobs/s = {_span(ratios, '{:.2f}')}x floor; "
                f"daemon CPU {_span([r['cpu_us'] for r in runs])} µs/job, "
                f"its server processes {_span([r['server_us'] for r in runs])} µs/job; "
                f"by fifths x floor "
                + " | ".join(", ".join(f"{x:.2f}" for x in fr) for fr in fifth_ratios)
                + f"; worst fifth {worst:.2f}x",
            )
        )
    return rows


async def main(args: Any) -> None:
    OUT.mkdir(exist_ok=True)
    cluster = await asyncio.to_thread(start_cluster)
    rows: list[tuple[str, str]] = []
    try:
        dsn = await fresh_database(cluster, "bench_template")
        facts = machine()
        pg = await server_settings(dsn)
        rows += [
            (
                "machine",
                f"{facts['cores']} cores, {facts['cpu']}, {facts['memory_gib']} GiB, "
                f"Python {facts['python']}",
            ),
            (
                "postgresql",
                f"{pg['version']}, fsync={pg['fsync']}, "
                f"synchronous_commit={pg['synchronous_commit']}, "
                f"wal_sync_method={pg['wal_sync_method']}",
            ),
        ]
        if args.enqueue_rounds:
            work = await clone(cluster, "bench_template", "bench_enqueue")
            enq = await enqueue_rates(work, args.enqueue_rounds, args.enqueue_batches)
            rows += enqueue_rows(enq)
            await drop(cluster, "bench_enqueue")
        print(table("importd daemon benchmark (so far)", rows), flush=True)
        if args.only_enqueue:
            return

        if args.finished and "finished" in args.cases:
            finished = await clone(cluster, "bench_template", "bench_template_finished")
            await fill_finished(finished, args.finished)
        for case in args.cases.split(","):
            if case == "finished" and not args.finished:
                continue
            systems = ["floor", "importd"]
            if case == "cold":
                systems.append("importd --no-fair")
            res = await drain_case(cluster, case, args, systems)
            label = case if case != "finished" else f"{args.finished:,} finished rows"
            rows += drain_rows(label, res)
            print("\n".join(f"{k}  {v}" for k, v in drain_rows(label, res)), flush=True)

        if args.side_by_side:
            pairs = await drain_side_by_side(cluster, args)
            text = (
                f"floor {_span([p['floor']['rate'] for p in pairs])} jobs/s, importd "
                f"{_span([p['importd']['rate'] for p in pairs])} jobs/s; importd x floor "
                "in the same fifths of time "
                + " | ".join(", ".join(f"{x:.2f}" for x in p["ratios"]) for p in pairs)
                + f"; worst fifth {min(min(p['ratios']) for p in pairs):.2f}x"
            )
            rows.append(("drain, cold, side by side (both at once)", text))
            print(f"{rows[-1][0]}  {text}", flush=True)

        work = await clone(cluster, "bench_template", "bench_latency")
        if not args.latency_jobs:
            args.runs = 0
        modes = ["on", "off"] if args.latency_async else ["on"]
        for mode in modes if args.runs else ():
            # off: the daemons' (and the producer's) commits return before the WAL
            # flush, what a database or role set to synchronous_commit = off gets.
            await set_synchronous_commit(cluster, "bench_latency", mode)
            lat: dict[str, list[dict[str, float]]] = {"floor": [], "importd": []}
            for run in range(args.runs):
                for system in ("floor", "importd") if run % 2 == 0 else ("importd", "floor"):
                    lat[system].append(await latency(work, system, args.latency_jobs, args.rate))
            label = f"latency commit→start ({args.latency_jobs} at {args.rate:g}/s"
            label += ")" if mode == "on" else ", synchronous_commit off)"
            rows += latency_rows(label, lat)
        await set_synchronous_commit(cluster, "bench_latency", "on")
        if args.runs and args.latency_jobs:
            delay = await notify_delay(work)
            trips = await claim_round_trips(work)
            alone = await claim_round_trips(work, commit=False)
            flush_on, flush_off = await commit_flush(work)
            rows += [
                (
                    "  where it goes: commit→notification on another connection",
                    f"p50 {delay:.2f} ms",
                ),
                (
                    "  where it goes: one claim finding 1 job (round trip p50)",
                    f"fair {trips['fair']:.2f} ms, plain {trips['plain']:.2f} ms, "
                    f"floor's statement {trips['floor']:.2f} ms",
                ),
                (
                    "  where it goes: the same claim without its commit (rolled back)",
                    f"fair {alone['fair']:.2f} ms, plain {alone['plain']:.2f} ms, "
                    f"floor's statement {alone['floor']:.2f} ms",
                ),
                (
                    "  where it goes: a one-row UPDATE's commit (round trip p50)",
                    f"{flush_on:.2f} ms; with synchronous_commit off {flush_off:.2f} ms "
                    f"(the WAL flush each claim waits for: {flush_on - flush_off:.2f} ms)",
                ),
            ]
        if args.idle:
            idle = await idle_cpu(work, args.idle)
            rows.append((f"idle CPU ({args.idle:g} s, listening)", f"{idle:.2f} %"))
    finally:
        await asyncio.to_thread(cluster.destroy)
    print()
    print(table("importd daemon benchmark", rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2, help="runs of each comparison")
    parser.add_argument(
        "--finished",
        type=int,
        default=1_000_000,
        help="finished rows for the third drain case (0: skip it)",
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help="drain cases, comma-separated: " + ", ".join(CASES)
    )
    parser.add_argument("--enqueue-rounds", type=int, default=4, help="0: skip the enqueue")
    parser.add_argument("--enqueue-batches", type=int, default=50)
    parser.add_argument(
        "--only-enqueue", action="store_true", help="the enqueue figures alone, then stop"
    )
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="also drain cold backlogs with the floor and importd at the same time",
    )
    parser.add_argument(
        "--no-latency-async",
        dest="latency_async",
        action="store_false",
        help="skip the latency runs with synchronous_commit off",
    )
    parser.add_argument("--idle", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
