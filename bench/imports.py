"""Import benchmarks: importd's csv handler against psql's \\copy on the same file and
server, and the daemon's peak memory for 1M and 5M rows; hostile files: 20,000 bad rows
in 1M against the same file without them, peak memory under a 200 MB record, and a
100,000-column header.

    python -m bench.imports [--rows 1000000] [--big-rows 5000000] [--skip-big] [--streams 1,2]
    python -m bench.imports --only-hostile [--bad-rows 20000] [--record-mb 200] [--atomic false]
        [--bad-shape int,short,extra,utf8,jsonb,badjson,check,notnull] [--bad-rows-only]
        [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
JSONB_TABLE = TABLE.replace("ratio double precision", "ratio jsonb")
# Targets that refuse rows whose values have a good shape (``check``, ``notnull``).
CHECK_TABLE = TABLE.replace("account int", "account int CHECK (account > 0)")
NOT_NULL_TABLE = TABLE.replace("account int", "account int NOT NULL")
TABLES = {"jsonb": JSONB_TABLE, "badjson": JSONB_TABLE, "check": CHECK_TABLE}
TABLES["notnull"] = NOT_NULL_TABLE


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
            fh.write(
                f"{i},{rng.randrange(1, 10_000)},{title},{body},{created},{amount},"
                f"{rng.random():.6f},{note}\n"
            )
    return path.stat().st_size


# How a record is spoiled, by ``--bad-shape``: a word in the integer column ``account``
# (``int``, and ``jsonb``: the same into a table whose ``ratio`` is a jsonb column), a
# field too few (``short``: the last one dropped), a field too many (``extra``), bytes that
# are not UTF-8 in the text column ``title`` (``utf8``), a value that is not JSON in the
# jsonb column ``ratio`` (``badjson``, into the table of ``jsonb``); rows the target
# refuses though every value converts: ``account`` negative against a CHECK (``check``),
# empty (NULL) against a NOT NULL (``notnull``).
SHAPES = ("int", "short", "extra", "utf8", "jsonb", "badjson", "check", "notnull")


def spoil_fields(fields: list[bytes], shape: str) -> list[bytes]:
    """The fields of a spoiled record (see ``SHAPES``)."""
    if shape in ("int", "jsonb"):
        return [fields[0], b"acct" + fields[1], *fields[2:]]
    if shape == "short":
        return fields[:-1]
    if shape == "extra":
        return [*fields, b"x"]
    if shape == "check":
        return [fields[0], b"-" + fields[1], *fields[2:]]
    if shape == "notnull":
        return [fields[0], b"", *fields[2:]]
    if shape == "badjson":
        return [*fields[:6], b"{" + fields[6], *fields[7:]]
    if shape == "utf8":
        return [fields[0], fields[1], fields[2] + b"\xff", *fields[3:]]
    raise ValueError(shape)


def spoil(clean: Path, spoiled: Path, bad: int, shape: str = "int") -> int:
    """``clean`` with ``bad`` records spread evenly through it made bad (``shape``: see
    ``SHAPES``); the count of records spoiled. Streamed, so that this process stays small
    (a child's peak RSS starts from its parent's at fork)."""

    def candidate(line: bytes) -> bool:
        # Records that are one line each (every 50th has a quoted newline).
        return line[:1].isdigit() and line.count(b",") == 7

    with clean.open("rb") as src:
        count = sum(1 for line in src if candidate(line))
    step = count / bad
    picks = {int(k * step) for k in range(bad)}
    seen = 0
    with clean.open("rb") as src, spoiled.open("wb") as out:
        out.write(src.readline())
        for line in src:
            if candidate(line):
                if seen in picks:
                    fields = spoil_fields(line.rstrip(b"\n").split(b","), shape)
                    line = b",".join(fields) + b"\n"  # noqa: PLW2901
                seen += 1
            out.write(line)
    return len(picks)


def big_record(path: Path, megabytes: int) -> None:
    """A CSV whose second record is one field of ``megabytes`` MB."""
    chunk = b"y" * (1 << 20)
    with path.open("wb") as fh:
        fh.write(b"id,account,title,body,created,amount,ratio,note\n1,1,ok,")
        for _ in range(megabytes):
            fh.write(chunk)
        fh.write(b",2024-01-01,1,0.5,\n2,2,fine,body,2024-01-01,1,0.5,\n")


def wide_header(path: Path, columns: int) -> None:
    """A CSV whose header names ``columns`` columns (the last one twice)."""
    names = [f"c{i}" for i in range(columns)] + [f"c{columns - 1}"]
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")


async def hostile(dsn: str, root: Path, args: Any) -> list[tuple[str, str]]:
    """The hostile-input figures (see the module docstring)."""
    clean = root / "clean.csv"
    generate(clean, args.rows, seed=2)
    rows: list[tuple[str, str]] = []
    modes = {"both": (True, False), "true": (True,), "false": (False,)}[args.atomic]
    for shape, atomic in itertools.product(args.bad_shape.split(","), modes):
        spoiled = root / f"spoiled_{shape}.csv"
        spoil(clean, spoiled, args.bad_rows, shape)
        create = TABLES.get(shape, TABLE)
        clean_runs, bad_runs = [], []  # (seconds, CPU seconds of importd drain)
        for _ in range(args.repeat):
            took, _, result = await import_once(
                dsn, root, clean, "clean_load", atomic, create=create
            )
            clean_runs.append((took, result["drain_cpu_s"]))
            took, _, result = await import_once(
                dsn, root, spoiled, "bad_load", atomic, max_errors=args.bad_rows, create=create
            )
            if result["rows_rejected"] != args.bad_rows:
                raise RuntimeError(f"{result['rows_rejected']} rows rejected, not {args.bad_rows}")
            bad_runs.append((took, result["drain_cpu_s"]))
        clean_s, bad_s = (statistics.median(r[0] for r in runs) for runs in (clean_runs, bad_runs))
        clean_cpu, bad_cpu = (
            statistics.median(r[1] for r in runs) for runs in (clean_runs, bad_runs)
        )
        pairs = [b[0] / c[0] for c, b in zip(clean_runs, bad_runs, strict=True)]
        rows.append(
            (
                f"{args.rows:,} rows, {args.bad_rows:,} bad, {shape} "
                f"(atomic: {str(atomic).lower()})",
                f"{bad_s:.2f} s vs {clean_s:.2f} s without them: {bad_s / clean_s:.2f}x "
                f"(medians of {args.repeat}; runs {', '.join(f'{x:.2f}' for x, _ in bad_runs)}"
                f" vs {', '.join(f'{x:.2f}' for x, _ in clean_runs)}; each bad run against "
                f"the clean one before it {', '.join(f'{x:.2f}x' for x in pairs)}, median "
                f"{statistics.median(pairs):.2f}x); importd drain's CPU {bad_cpu:.2f} s vs "
                f"{clean_cpu:.2f} s ({bad_cpu / clean_cpu:.2f}x)",
            )
        )
    if args.bad_rows_only:
        return rows
    big = root / "record.csv"
    big_record(big, args.record_mb)
    _, rss, result = await import_once(dsn, root, big, "big_record", True, max_errors=1)
    conn = await asyncpg.connect(dsn)
    try:
        message = await conn.fetchval(
            "SELECT message FROM import_job_errors ORDER BY id DESC LIMIT 1"
        )
    finally:
        await conn.close()
    rows.append(
        (
            f"one {args.record_mb} MB record (max_record_bytes 4 MiB)",
            f"peak RSS of importd drain {rss:.0f} MiB; rows_loaded "
            f"{result['rows_loaded']}, rejected {result['rows_rejected']}: "
            f"{(message or '')[:60]}",
        )
    )
    wide = root / "wide.csv"
    wide_header(wide, args.columns)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS wide_load; " + TABLE.format(name="wide_load"))
        job_id = await importd.enqueue(
            conn, "csv", {"source": f"file://{wide}", "table": "wide_load"}
        )
        await asyncio.to_thread(drain, dsn, root, False)
        row = await conn.fetchrow(
            "SELECT status, last_error, finished_at - started_at AS took "
            "FROM import_jobs WHERE id = $1",
            job_id,
        )
    finally:
        await conn.close()
    if row is None:
        raise RuntimeError(f"job {job_id} is gone")
    rows.append(
        (
            f"a {args.columns:,}-column header",
            f"{row['status']} after {row['took'].total_seconds() * 1000:.0f} ms: "
            f"{row['last_error'][:70]}",
        )
    )
    return rows


def reading_cpu(path: Path, repeat: int) -> tuple[list[float], list[float]]:
    """CPU seconds of the reading stage alone over ``path`` (no database), interleaved
    ``repeat`` times: records split out and joined again for COPY (what staged imports
    do, and direct ones did before), against chunks cut from the bytes and sent as they
    are (direct imports; a chunk that is not copyable is split all the same)."""
    from importd import tables  # noqa: PLC0415
    from importd.handlers.imports import reading  # noqa: PLC0415
    from importd.handlers.imports.copying import Copier  # noqa: PLC0415
    from importd.handlers.records import Records, Splitter  # noqa: PLC0415

    limit = 4 * 2**20

    async def blocks() -> Any:
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                yield block

    def copier() -> Copier:
        fmt = tables.CopyFormat("csv")
        return Copier(fmt, "utf_8", ",", '"', False, None, limit, lambda _: None)

    async def split() -> None:
        reader = reading.Reader(b'"', b'"', 1, None, limit, at_start=True, utf8=True)
        prepare = copier().prepare
        batches = reader.records(blocks())
        async for chunk in reading.chunks(Records(), batches, 0, 20_000, 8 * 2**20):
            prepare(chunk.records, [])

    async def cut() -> None:
        cutter = reading.Cutter(b'"', b'"', 20_000, limit, limit)
        prepare = copier().prepare

        def splitter(line: int, at: int) -> Splitter:
            return Splitter(b'"', b'"', line, newline=b"\n", limit=limit, offset=at)

        async for chunk in reading.raw_chunks(blocks(), b"", 0, 1, cutter, splitter):
            if not chunk.copyable:
                prepare(chunk.records, [])

    got: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for runs, stage in zip(got, (split, cut), strict=True):
            began = time.process_time()
            asyncio.run(stage())
            runs.append(time.process_time() - began)
    return got


def psql_copy(cluster_bin: Path, dsn: str, table_name: str, path: Path) -> float:
    psql = cluster_bin / "psql"
    if not psql.exists():
        psql = Path("psql")
    began = time.perf_counter()
    subprocess.run(
        [
            str(psql),
            dsn,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"\\copy {table_name} FROM '{path}' WITH (FORMAT csv, HEADER true)",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - began


def drain(dsn: str, root: Path, check: bool = True, streams: int = 1) -> tuple[float, float]:
    """Run ``importd drain`` (``copy_streams``: ``streams``); its wall time and its peak
    RSS in MiB."""
    elapsed, rss, _ = drain_cpu(dsn, root, check, streams)
    return elapsed, rss


def drain_cpu(
    dsn: str, root: Path, check: bool = True, streams: int = 1
) -> tuple[float, float, float]:
    """``drain``, and the CPU seconds (user + system) the process took."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        IMPORTD_IMPORT_ROOTS=str(root),
        IMPORTD_TABLES="public.*",
        IMPORTD_COPY_STREAMS=str(streams),
    )
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "importd", "drain", "--dsn", dsn, "--log-level", "warning"], env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - began
    if check and os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"importd drain exited with {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


async def import_once(
    dsn: str,
    root: Path,
    path: Path,
    name: str,
    atomic: bool,
    max_errors: int = 0,
    streams: int = 1,
    create: str = TABLE,
) -> tuple[float, float, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {name}; " + create.format(name=name))
        await conn.execute("CHECKPOINT")
        job_id = await importd.enqueue(
            conn,
            "csv",
            {"source": f"file://{path}", "table": name, "atomic": atomic, "max_errors": max_errors},
            timeout=3600,
        )
        _, rss, cpu = await asyncio.to_thread(drain_cpu, dsn, root, True, streams)
        row = await conn.fetchrow(
            "SELECT status, result, last_error FROM import_jobs WHERE id = $1", job_id
        )
        if row is None:
            raise RuntimeError(f"job {job_id} is gone")
        if row["status"] != "completed":
            raise RuntimeError(f"import failed: {row['last_error']}")
        result = json.loads(row["result"])
        result["drain_cpu_s"] = cpu  # (the bench's own: CPU of the whole drain process)
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
    if args.only_hostile:
        cluster = await asyncio.to_thread(start_cluster)
        try:
            dsn = await fresh_database(cluster, "bench_hostile")
            pg = await server_settings(dsn)
            rows = await hostile(dsn, root, args)
        finally:
            await asyncio.to_thread(cluster.destroy)
        facts = machine()
        print(
            table(
                "importd hostile-input benchmark",
                [
                    (
                        "machine",
                        f"{facts['cores']} cores, {facts['cpu']}, Python {facts['python']}",
                    ),
                    ("postgresql", f"{pg['version']}, fsync={pg['fsync']}"),
                    *rows,
                ],
            )
        )
        return
    streams = [int(n) for n in args.streams.split(",")]
    small = root / "small.csv"
    generate(small, 10_000)
    path = root / "bench.csv"
    size = generate(path, args.rows)
    big = root / "big.csv"
    if not args.skip_big:
        generate(big, args.big_rows)
    split_cpu, cut_cpu = await asyncio.to_thread(reading_cpu, path, args.repeat)
    cluster = await asyncio.to_thread(start_cluster)
    try:
        dsn = await fresh_database(cluster, "bench_imports")
        pg = await server_settings(dsn)
        conn = await asyncpg.connect(dsn)
        await conn.execute(TABLE.format(name="via_psql"))
        await conn.close()
        # This machine's timings wander: each figure is the median of --repeat runs,
        # interleaved so that a slow minute hurts every contender alike; each import's
        # ratio is also taken against the psql run just before it.
        psql_runs: list[float] = []
        # An atomic import of a file loads in one transaction, over one connection:
        # copy_streams applies to it only at 1.
        runs: dict[tuple[bool, int], list[tuple[float, float, float]]] = {
            (atomic, n): [] for n in streams for atomic in (False, True) if not (atomic and n > 1)
        }
        for _ in range(args.repeat):
            await conn_exec(dsn, "TRUNCATE via_psql")
            psql_s = await asyncio.to_thread(psql_copy, cluster.bindir, dsn, "via_psql", path)
            psql_runs.append(psql_s)
            for (atomic, n), got in runs.items():
                name = f"{'atomic' if atomic else 'plain'}_load"
                took, rss, _ = await import_once(dsn, root, path, name, atomic, streams=n)
                got.append((took, rss, took / psql_s))
        psql_s = statistics.median(psql_runs)
        small_s, _, small_result = await import_once(dsn, root, small, "small_load", True)
        big_rss = None
        if not args.skip_big:
            _, big_rss, _ = await import_once(dsn, root, big, "big_load", atomic=False)
    finally:
        await asyncio.to_thread(cluster.destroy)
    facts = machine()
    rows = [
        ("machine", f"{facts['cores']} cores, {facts['cpu']}, Python {facts['python']}"),
        (
            "postgresql",
            f"{pg['version']}, fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}",
        ),
        ("file", f"{args.rows:,} rows, {size / 2**20:.0f} MiB, 8 columns"),
        (
            "psql \\copy",
            f"{psql_s:.2f} s (median of {args.repeat}; {', '.join(f'{x:.2f}' for x in psql_runs)})",
        ),
        *[
            (
                f"importd atomic: {str(atomic).lower()}, copy_streams {n}",
                f"{statistics.median(r[0] for r in got):.2f} s "
                f"({statistics.median(r[0] for r in got) / psql_s:.2f}x psql's median; "
                f"against the psql run before each: "
                f"{', '.join(f'{r[2]:.2f}x' for r in got)}), "
                f"peak RSS {max(r[1] for r in got):.0f} MiB",
            )
            for (atomic, n), got in runs.items()
        ],
        (
            "reading stage CPU (no database)",
            f"split into records and joined {', '.join(f'{x:.2f}' for x in split_cpu)} s; "
            f"cut from the bytes {', '.join(f'{x:.2f}' for x in cut_cpu)} s "
            f"({statistics.median(c / w for c, w in zip(cut_cpu, split_cpu, strict=True)):.2f}x)",
        ),
        (
            "10,000-record file, end to end",
            f"{small_s * 1000:.0f} ms ({small_result['rows_loaded']:,} rows loaded)",
        ),
    ]
    if big_rss is not None:
        rows.append(
            (
                f"peak RSS at {args.big_rows:,} rows (atomic: false)",
                f"{big_rss:.0f} MiB (vs {max(r[1] for r in runs[(False, streams[0])]):.0f} MiB"
                f" at {args.rows:,})",
            )
        )
    print(table("importd import benchmark", rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--streams", default="1,2", help="the copy_streams settings to measure (default 1,2)"
    )
    parser.add_argument(
        "--only-hostile",
        action="store_true",
        help="only the hostile-input figures (bad rows, a huge record, a wide header)",
    )
    parser.add_argument("--bad-rows", type=int, default=20_000)
    parser.add_argument(
        "--atomic",
        choices=["both", "true", "false"],
        default="both",
        help="the atomic modes of the bad-rows figure (default both)",
    )
    parser.add_argument(
        "--bad-shape",
        default="int",
        help=f"how bad rows are bad, comma-separated: {', '.join(SHAPES)} (default int)",
    )
    parser.add_argument(
        "--bad-rows-only",
        action="store_true",
        help="only the bad-rows figures (no huge record, no wide header)",
    )
    parser.add_argument("--record-mb", type=int, default=200)
    parser.add_argument("--columns", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
