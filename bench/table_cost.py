"""What each part of ``import_jobs`` costs the server per inserted row.

    python -m bench.table_cost [--batches 50] [--rounds 5]

A bulk enqueue is bound by what the table costs the server per row, not by the client
(``python -m bench.daemon --only-enqueue``). This benchmark takes the table apart: copies
of ``import_jobs`` (same columns and defaults) that carry one part each, built from the
live schema (``pg_get_indexdef``, ``pg_get_triggerdef``), so an index a later migration
adds shows up here by itself. The rows are made by the server (``INSERT ... SELECT FROM
generate_series``, no client, no ids back), 1,000 per transaction like ``enqueue_many``'s
batches, and the figure is the server's CPU per row, read from its backend's
``/proc/<pid>/stat``: on a loaded machine that moves far less than wall time. Every
figure is also given against the whole table, measured in the same run, interleaved.

    bare         columns and defaults only (no check, no index, no trigger)
    primary key  bare + the primary key (what every variant below adds to)
    + <index>    the primary key + that one index
    + checks     the primary key + every CHECK constraint
    + trigger    the primary key + the insert trigger (transition table, one pg_notify)
    import_jobs  the table itself
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import asyncpg

from .common import (
    cpu_seconds,
    fresh_database,
    machine,
    server_settings,
    start_cluster,
    table,
)

BATCH = 1000


async def variants(conn: asyncpg.Connection) -> dict[str, str]:
    """Create the copies of import_jobs; {label: table name}."""
    indexes = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def, i.indisprimary "
        "FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'public.import_jobs'::regclass ORDER BY c.relname"
    )
    (trigger,) = await conn.fetch(
        "SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger "
        "WHERE tgrelid = 'public.import_jobs'::regclass AND tgname = 'trigger_process_import_jobs'"
    )
    (pkey,) = [i for i in indexes if i["indisprimary"]]

    def on(definition: str, target: str, old_name: str | None = None, new_name: str = "") -> str:
        """``definition`` (an index's or the trigger's) made for table ``target``."""
        head, sep, tail = definition.partition(" ON public.import_jobs ")
        assert sep, definition
        if old_name is not None:
            head = head.replace(old_name, new_name, 1)
        return f"{head} ON public.{target} {tail}"

    out: dict[str, str] = {}

    async def copy(label: str, name: str, constraints: bool = False) -> str:
        extra = " INCLUDING CONSTRAINTS" if constraints else ""
        await conn.execute(
            f"CREATE TABLE public.{name} "
            f"(LIKE public.import_jobs INCLUDING DEFAULTS INCLUDING IDENTITY{extra})"
        )
        out[label] = name
        return name

    await copy("bare", "tc_bare")
    base: list[tuple[str, str, asyncpg.Record | None, bool]] = [
        ("primary key", "tc_pkey", None, False)
    ]
    for i, index in enumerate(i for i in indexes if not i["indisprimary"]):
        base.append((f"+ {index['relname']}", f"tc_idx{i}", index, False))
    base.append(("+ checks", "tc_checks", None, True))
    base.append(("+ trigger", "tc_trigger", None, False))
    for label, name, extra, constraints in base:
        await copy(label, name, constraints)
        await conn.execute(on(pkey["def"], name, pkey["relname"], f"{name}_pkey"))
        if extra is not None:
            await conn.execute(on(extra["def"], name, extra["relname"], f"{name}_index"))
        if label == "+ trigger":
            await conn.execute(on(trigger["def"], name))
    out["import_jobs"] = "import_jobs"
    return out


async def measure(dsn: str, batches: int, rounds: int) -> dict[str, list[float]]:
    conn = await asyncpg.connect(dsn)
    try:
        names = await variants(conn)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        res: dict[str, list[float]] = {label: [] for label in names}

        async def one(name: str) -> float:
            insert = (
                f"INSERT INTO public.{name} (kind, payload) "
                "SELECT 'noop', jsonb_build_object('n', g) "
                "FROM generate_series($1::int, $1::int + $2::int - 1) AS g"
            )
            before = cpu_seconds(backend)
            for b in range(batches):
                async with conn.transaction():
                    await conn.execute(insert, b * BATCH, BATCH)
            spent = cpu_seconds(backend) - before
            await conn.execute(f"TRUNCATE public.{name} CASCADE")
            return spent / (batches * BATCH) * 1e6

        for name in names.values():  # warm-up: plans, caches
            await one(name)
        labels = list(names)
        for r in range(rounds):
            for label in labels if r % 2 == 0 else reversed(labels):
                res[label].append(await one(names[label]))
        return res
    finally:
        await conn.close()


def rows_of(res: dict[str, list[float]]) -> list[tuple[str, str]]:
    whole = res["import_jobs"]
    pkey = res["primary key"]
    out = []
    for label, runs in res.items():
        med = statistics.median(runs)
        text = (
            f"{med:5.2f} µs/row (runs {min(runs):.2f} to {max(runs):.2f}) = "
            f"{med / statistics.median(whole):.2f}x import_jobs"
        )
        if label.startswith("+ "):
            extra = [a - b for a, b in zip(runs, pkey, strict=True)]
            text += f"; over the primary key {statistics.median(extra):+.2f} µs/row"
        out.append((label, text))
    return out


async def main(args: Any) -> None:
    cluster = await asyncio.to_thread(start_cluster)
    try:
        dsn = await fresh_database(cluster, "bench_table_cost")
        facts = machine()
        pg = await server_settings(dsn)
        head = [
            ("machine", f"{facts['cores']} cores, {facts['cpu']}, Python {facts['python']}"),
            ("postgresql", f"{pg['version']}, fsync={pg['fsync']}"),
        ]
        res = await measure(dsn, args.batches, args.rounds)
    finally:
        await asyncio.to_thread(cluster.destroy)
    print(
        table(
            f"server CPU per inserted row, {args.batches} transactions of {BATCH:,} rows, "
            f"{args.rounds} interleaved rounds (median)",
            head + rows_of(res),
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
