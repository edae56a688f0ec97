"""``make demo``: the first five minutes of importd, on a throwaway PostgreSQL.

Starts a PostgreSQL from this machine's server binaries (or the ``embedded`` extra),
creates a table, enqueues three imports (a clean CSV, an NDJSON file, a CSV with bad
rows), runs ``importd drain`` until they are done, prints ``importd status`` and the
rejected rows, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path

from . import config, daemon, db, logs, migrate, ops, sql
from .cluster import Cluster, ClusterError
from .repository import enqueue


def write_samples(folder: Path) -> dict[str, Path]:
    """Three files: clean CSV, NDJSON, CSV with a few bad rows."""
    rng = random.Random(7)
    names = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Edsger", "Frances"]
    clean = folder / "people.csv"
    with clean.open("w") as fh:
        fh.write("id,name,email,signed_up,score\n")
        for i in range(1, 1001):
            name = rng.choice(names)
            fh.write(
                f'{i},"{name}, {i}",{name.lower()}{i}@example.com,2024-0{i % 9 + 1}-1{i % 9},'
                f"{rng.uniform(0, 100):.2f}\n"
            )
    ndjson = folder / "people.ndjson"
    with ndjson.open("w") as fh:
        for i in range(1001, 1501):
            fh.write(
                f'{{"id": {i}, "name": "{rng.choice(names)}", '
                f'"meta": {{"source": "api", "tags": ["demo", "n{i % 3}"]}}}}\n'
            )
    bad = folder / "people-with-errors.csv"
    with bad.open("w") as fh:
        fh.write("id,name,email,signed_up,score\n")
        for i in range(2001, 2101):
            if i == 2004:
                fh.write(f"{i},Nobody,x@example.com,not-a-date,1\n")
            elif i == 2050:
                fh.write(f"{i},,empty@example.com,2024-01-01,1\n")
            elif i == 2077:
                fh.write(f"{i},Negative,neg@example.com,2024-01-01,-5\n")
            else:
                fh.write(f"{i},Person {i},p{i}@example.com,2024-02-02,{i % 50}\n")
    return {"clean": clean, "ndjson": ndjson, "bad": bad}


async def _prepare(dsn: str, folder: Path) -> list[int]:
    conn = await db.connect(dsn)
    try:
        await migrate.apply(conn)
        await conn.execute(sql.query("create_demo_table"))
        files = write_samples(folder)
        return [
            await enqueue(conn, "csv", {"source": f"file://{files['clean']}", "table": "people"}),
            await enqueue(
                conn, "ndjson", {"source": f"file://{files['ndjson']}", "table": "people"}
            ),
            await enqueue(
                conn,
                "csv",
                {"source": f"file://{files['bad']}", "table": "people", "max_errors": 10},
            ),
        ]
    finally:
        await conn.close()


async def _report(dsn: str, bad_job: int) -> str:
    conn = await db.connect(dsn)
    try:
        loaded = await conn.fetchval(sql.query("count_demo_rows"))
        status = await ops.status(conn)
        rejected = await ops.errors(conn, bad_job)
    finally:
        await conn.close()
    return (
        f"$ importd status\n{status}\n\n{loaded} rows are in table people.\n\n"
        f"$ importd show {bad_job} --errors\n{rejected}"
    )


def main() -> int:
    """Run the demo; its exit code."""
    logs.configure("warning", "console")
    print("importd demo: starting a throwaway PostgreSQL ...", flush=True)
    try:
        cluster = Cluster().init().start()
    except ClusterError as exc:
        print(f"importd demo: {exc}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="importd-demo-") as tmp:
            folder = Path(tmp)
            dsn = cluster.dsn_for("postgres")
            jobs = asyncio.run(_prepare(dsn, folder))
            print(
                f"enqueued jobs {jobs} (csv, ndjson, csv with 3 bad rows); draining ...", flush=True
            )
            settings = config.Settings(
                dsn=dsn, import_roots=(str(folder),), tables=("public.people",), log_level="warning"
            )
            code = daemon.run(settings, daemon.DrainOptions())
            print(f"importd drain exited with {code}\n", flush=True)
            print(asyncio.run(_report(dsn, jobs[2])))
            return int(code)
    finally:
        cluster.destroy()
        print("\nimportd demo: the throwaway PostgreSQL is gone.")


if __name__ == "__main__":
    sys.exit(main())
