"""Import benchmarks: importd's csv handler against psql's \\copy on the same file and
server, and the daemon's peak memory for 1M and 5M rows.

    python -m bench.imports [--rows 1000000] [--big-rows 5000000] [--skip-big]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

import importd

from .common import ROOT, fresh_database, machine, server_settings, start_cluster, table

OUT = Path(__file__).resolve().parent / "out"

TABLE = """
CREATE TABLE {name} (
    id bigint, account int, title text, body text, created timestamptz,
    amount numeric(12, 2), ratio double precision, note text
)"""


def generate(path: Path, rows: int, seed: int = 1) -> int:
    """A CSV of ``rows`` records, about 100 bytes each: integers, text with quoted commas,
    quotes and newlines, timestamps, numerics and NULLs."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "Zoë", "naïve", "x" * 12, "quoted"]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("id,account,title,body,created,amount,ratio,note\n")
        for i in range(1, rows + 1):
            title = f"{rng.choice(words)} {rng.choice(words)}"
            if i % 7 == 0:
                body = f'"{rng.choice(words)}, with a comma and ""quotes"""'
            elif i % 50 == 0:
                body = f'"first line\nsecond line {i}"'
            else:
                body = " ".join(rng.choice(words) for _ in range(3))
            created = (start + timedelta(seconds=i * 37)).isoformat()
            amount = "" if i % 11 == 0 else f"{rng.uniform(-5000, 5000):.2f}"
            note = "" if i % 3 else rng.choice(words)
            fh.write(f"{i},{rng.randrange(1, 10_000)},{title},{body},{created},{amount},"
                     f"{rng.random():.6f},{note}\n")
    return path.stat().st_size


def psql_copy(cluster_bin: Path, dsn: str, table_name: str, path: Path) -> float:
    psql = cluster_bin / "psql"
    if not psql.exists():
        psql = Path("psql")
    began = time.perf_counter()
    subprocess.run([str(psql), dsn, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy {table_name} FROM '{path}' WITH (FORMAT csv, HEADER true)"],
                   check=True, capture_output=True)
    return time.perf_counter() - began


def drain(dsn: str, root: Path) -> tuple[float, float]:
    """Run ``importd drain``; its wall time and its peak RSS in MiB."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), IMPORTD_IMPORT_ROOTS=str(root),
               IMPORTD_TABLES="public.*")
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "importd", "drain", "--dsn", dsn,
                             "--log-level", "warning"], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"importd drain exited with {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss / 1024


async def import_once(dsn: str, root: Path, path: Path, name: str, atomic: bool
                      ) -> tuple[float, float, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {name}; " + TABLE.format(name=name))
        await conn.execute("CHECKPOINT")
        job_id = await importd.enqueue(conn, "csv", {"source": f"file://{path}",
                                                     "table": name, "atomic": atomic},
                                       timeout=3600)
        _, rss = await asyncio.to_thread(drain, dsn, root)
        row = await conn.fetchrow("SELECT status, result, last_error FROM import_jobs "
                                  "WHERE id = $1", job_id)
        if row["status"] != "completed":
            raise RuntimeError(f"import failed: {row['last_error']}")
        result = json.loads(row["result"])
        return result["duration_s"], rss, result
    finally:
        await conn.close()


async def conn_exec(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def main(args: Any) -> None:
    OUT.mkdir(exist_ok=True)
    root = OUT / "files"
    root.mkdir(exist_ok=True)
    small = root / "small.csv"
    generate(small, 10_000)
    path = root / "bench.csv"
    size = generate(path, args.rows)
    big = root / "big.csv"
    if not args.skip_big:
        generate(big, args.big_rows)
    cluster = await asyncio.to_thread(start_cluster)
    try:
        dsn = await fresh_database(cluster, "bench_imports")
        pg = await server_settings(dsn)
        conn = await asyncpg.connect(dsn)
        await conn.execute(TABLE.format(name="via_psql"))
        await conn.close()
        # This machine's timings wander: each figure is the median of --repeat runs,
        # interleaved so that a slow minute hurts every contender alike.
        psql_runs, plain_runs, atomic_runs = [], [], []
        for _ in range(args.repeat):
            await conn_exec(dsn, "TRUNCATE via_psql")
            psql_runs.append(await asyncio.to_thread(psql_copy, cluster.bindir, dsn,
                                                     "via_psql", path))
            plain_runs.append(await import_once(dsn, root, path, "plain_load", atomic=False))
            atomic_runs.append(await import_once(dsn, root, path, "atomic_load", atomic=True))
        psql_s = statistics.median(psql_runs)
        plain_s = statistics.median(r[0] for r in plain_runs)
        plain_rss = max(r[1] for r in plain_runs)
        atomic_s = statistics.median(r[0] for r in atomic_runs)
        atomic_rss = max(r[1] for r in atomic_runs)
        small_s, _, small_result = await import_once(dsn, root, small, "small_load", True)
        big_rss = None
        if not args.skip_big:
            _, big_rss, _ = await import_once(dsn, root, big, "big_load", atomic=False)
    finally:
        await asyncio.to_thread(cluster.destroy)
    facts = machine()
    rows = [
        ("machine", f"{facts['cores']} cores, {facts['cpu']}, Python {facts['python']}"),
        ("postgresql", f"{pg['version']}, fsync={pg['fsync']}, "
                       f"synchronous_commit={pg['synchronous_commit']}"),
        ("file", f"{args.rows:,} rows, {size / 2**20:.0f} MiB, 8 columns"),
        ("psql \\copy", f"{psql_s:.2f} s (median of {args.repeat})"),
        ("importd atomic: false", f"{plain_s:.2f} s ({plain_s / psql_s:.2f}x psql), "
                                  f"peak RSS {plain_rss:.0f} MiB"),
        ("importd atomic: true", f"{atomic_s:.2f} s ({atomic_s / psql_s:.2f}x psql), "
                                 f"peak RSS {atomic_rss:.0f} MiB"),
        ("10,000-record file, end to end", f"{small_s * 1000:.0f} ms "
                                           f"({small_result['rows_loaded']:,} rows loaded)"),
    ]
    if big_rss is not None:
        rows.append((f"peak RSS at {args.big_rows:,} rows (atomic: false)",
                     f"{big_rss:.0f} MiB (vs {plain_rss:.0f} MiB at {args.rows:,})"))
    print(table("importd import benchmark", rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
