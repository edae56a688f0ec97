"""importd web on a big table: server render time of each page, and what one open live
page costs the database.

    python -m bench.web [--finished 1000000] [--pending 1000] [--requests 40] [--seconds 20]

The table holds ``--finished`` finished jobs (97 % completed, 2 % failed, 1 % cancelled,
finished over the last week), then ``--pending`` pending and 20 running jobs, and one
failed import with 10,000 rejected rows. Nothing is vacuumed or analysed by hand: the
figures are the cold case a user gets right after a bulk load (autovacuum may run).

Render time is the server's own (the ``Server-Timing`` header of a real ``importd web``
process), p50 and p95 over ``--requests`` requests per page, against the 100 ms budget.
The live cost counts the statements the web process runs (``pg_stat_statements``, by the
web's own database role) while one page is open, by fifths of the window: idle, and while
a producer enqueues 50 jobs a second (each one a notification that wakes the stream). A
page is its event stream plus, as ``static/app.js`` does, its parts redrawn by the server
at most every 2 s (3 s for the overview); played here at every event, an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

import importd
from importd.cluster import Cluster

from .common import ROOT, fresh_database, machine, server_settings, table

TOKEN = "bench-web-token-0123456789"
BUDGET_MS = 100.0


async def fill(conn: asyncpg.Connection, finished: int, pending: int) -> dict[str, int]:
    """The big history, the queue, the running jobs, a failed import's rejected rows."""
    await conn.execute("SET importd.notify = 'off'")
    step = 200_000
    for start in range(0, finished, step):
        await conn.execute(
            """
            INSERT INTO import_jobs (kind, queue, tenant_id, payload, status, attempts,
                                     rows_done, rows_total, created_at, started_at,
                                     finished_at, last_error, dedup_key)
            SELECT (ARRAY['csv', 'ndjson', 'http'])[1 + g % 3], 'q' || (g % 10),
                   't' || (g % 1000),
                   jsonb_build_object('source', 'file:///data/' || g || '.csv', 'table', 'users'),
                   s.status, 1, 1000, 1000, f - interval '2 min', f - interval '1 min', f,
                   CASE WHEN s.status = 'failed' THEN 'RuntimeError: boom ' || g END,
                   'upload-' || g
            FROM generate_series($1::bigint, $2::bigint) AS g,
                 LATERAL (SELECT CASE WHEN g % 100 < 2 THEN 'failed'
                                      WHEN g % 100 = 2 THEN 'cancelled'
                                      ELSE 'completed' END AS status,
                                 now() - interval '7 days' * (1 - g::float8 / $3) AS f) AS s
            """,
            start + 1,
            min(start + step, finished),
            finished,
        )
    await conn.execute(
        "INSERT INTO import_jobs (kind, queue, tenant_id, payload) "
        "SELECT 'csv', 'q' || (g % 10), 't' || (g % 1000), '{}' "
        "FROM generate_series(1, $1) AS g",
        pending,
    )
    await conn.execute(
        "INSERT INTO import_jobs (kind, queue, tenant_id, payload, status, attempts, "
        "started_at, locked_by, locked_until, rows_done, rows_total, bytes_read) "
        "SELECT 'csv', 'q' || (g % 10), 't' || g, '{}', 'running', 1, now(), 'bench:1', "
        "now() + interval '1 hour', g * 1000, 50000, g * 100000 FROM generate_series(1, 20) g"
    )
    bad = await importd.enqueue(conn, "csv", {"source": "file:///data/bad.csv"})
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', attempts = 1, "
        "finished_at = now(), last_error = 'TooManyErrors' WHERE id = $1",
        bad,
    )
    await conn.execute(
        "INSERT INTO import_job_errors (job_id, attempt, line_number, message, raw_record) "
        "SELECT $1, 1, g * 2, 'invalid input syntax for type integer', g || ',x,y' "
        "FROM generate_series(1, 10000) AS g",
        bad,
    )
    await conn.execute("RESET importd.notify")
    top = await conn.fetchval("SELECT max(id) FROM import_jobs")
    return {"bad": bad, "top": top}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_web(dsn: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "IMPORTD_WEB_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "importd",
            "web",
            "--dsn",
            dsn,
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--log-format",
            "json",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.get(url + "/login")
                return proc, url
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"importd web did not start: {log_path.read_text()}")


async def render_times(url: str, pages: dict[str, str], requests: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in pages}
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        for _ in range(requests):
            for name, path in pages.items():
                answer = await client.get(path)  # an id search answers 303 to the job
                if answer.status_code >= 400:
                    answer.raise_for_status()
                timing = answer.headers["server-timing"]
                out[name].append(float(timing.split("dur=")[1]))
    return out


async def web_statements(conn: asyncpg.Connection) -> int:
    """Statements the web's role has run (pg_stat_statements)."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE userid = 'importd_web'::regrole"
        )
    )


async def live_cost(
    dsn: str,
    url: str,
    seconds: float,
    producer_rate: float,
    page: str | None = None,
    gap: float = 2.0,
) -> list[float]:
    """Statements per second the web runs for one open page, by fifths.

    The page is played as ``static/app.js`` does: its event stream open and, for each
    ``data:`` event, its parts asked for again (``x-importd-part``), at most once every
    ``gap`` seconds. The browser asks only when what the page shows changed (not for a
    running job's seconds ticking): this asks at every event, an upper bound.
    """
    probe = await asyncpg.connect(dsn)
    producer = await asyncpg.connect(dsn)
    stop = asyncio.Event()
    asked = asyncio.Event()
    job = page.rpartition("/")[2] if page and page.startswith("/jobs/") else ""

    async def produce() -> None:
        while not stop.is_set():
            await importd.enqueue(producer, "noop", {}, queue="live")
            await asyncio.sleep(1 / producer_rate)

    headers = {"authorization": f"Bearer {TOKEN}"}

    async def watch() -> None:
        async with (
            httpx.AsyncClient(headers=headers, timeout=None) as client,
            client.stream("GET", url + "/events" + (f"?job={job}" if job else "")) as stream,
        ):
            async for line in stream.aiter_lines():
                if stop.is_set():
                    return
                if line.startswith("data:"):
                    asked.set()

    async def draw() -> None:
        async with httpx.AsyncClient(
            headers={**headers, "x-importd-part": "1"}, timeout=None
        ) as client:
            while not stop.is_set():
                await asked.wait()
                asked.clear()
                started = time.monotonic()
                (await client.get(url + (page or "/"))).raise_for_status()
                await asyncio.sleep(gap - (time.monotonic() - started))

    watcher = asyncio.create_task(watch())
    drawer = asyncio.create_task(draw()) if page is not None else None
    await asyncio.sleep(2)  # the stream is open and has sent its first picture
    feeder = asyncio.create_task(produce()) if producer_rate else None
    rates = []
    for _ in range(5):
        before, started = await web_statements(probe), time.monotonic()
        await asyncio.sleep(seconds / 5)
        after = await web_statements(probe)
        rates.append((after - before) / (time.monotonic() - started))
    stop.set()
    if feeder is not None:
        await feeder
    watcher.cancel()
    if drawer is not None:
        drawer.cancel()
    await asyncio.gather(watcher, *([drawer] if drawer else []), return_exceptions=True)
    await probe.close()
    await producer.close()
    return rates


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(machine())
    cluster = Cluster(
        settings={
            "max_connections": "200",
            "shared_buffers": "256MB",
            "shared_preload_libraries": "pg_stat_statements",
        }
    )
    cluster.init().start()
    log_dir = Path(__file__).resolve().parent / "out"
    log_dir.mkdir(exist_ok=True)
    web = None
    try:
        dsn = await fresh_database(cluster, "bench_web")
        print(await server_settings(dsn))
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        # The web runs as a role of its own, so its statements can be told apart.
        await conn.execute("CREATE ROLE importd_web LOGIN SUPERUSER")
        web_dsn = dsn.replace("postgresql://postgres@", "postgresql://importd_web@")
        started = time.monotonic()
        ids = await fill(conn, args.finished, args.pending)
        print(
            f"filled {args.finished:,} finished + {args.pending:,} pending jobs "
            f"in {time.monotonic() - started:.0f} s"
        )
        failed_mid = await conn.fetchval(
            "SELECT id FROM import_jobs WHERE status = 'failed' AND id < $1 "
            "ORDER BY id DESC LIMIT 1",
            ids["top"] // 2,
        )
        await conn.close()
        web, url = await start_web(web_dsn, log_dir / "web.log")
        deep = ids["top"] - 50 * 1000  # page 1,000 of the unfiltered list
        pages = {
            "overview /": "/",
            "running /running": "/running",
            "jobs, page 1": "/jobs",
            "jobs, page 1,000": f"/jobs?before={deep}",
            "jobs ?status=failed": "/jobs?status=failed",
            "jobs ?status=failed, deep": f"/jobs?status=failed&before={failed_mid}",
            "jobs ?status=pending": "/jobs?status=pending",
            "jobs ?queue=q3&kind=csv": "/jobs?queue=q3&kind=csv",
            "jobs ?tenant=t17": "/jobs?tenant=t17",
            "jobs ?q=<dedup key>": f"/jobs?q=upload-{args.finished // 3}",
            "jobs ?q=<dedup key>, 950,000 ids back": (
                f"/jobs?q=upload-1&before={ids['top'] - 950_000}"
            ),
            "jobs ?q=<id> (303 to the job)": f"/jobs?q={args.finished // 3}",
            "jobs, created in a day": "/jobs?from=2000-01-01&to=2100-01-01",
            "job (10,000 rejected)": f"/jobs/{ids['bad']}",
            "job, rejected page 150": f"/jobs/{ids['bad']}?errors_page=150",
        }
        times = await render_times(url, pages, args.requests)
        rows = []
        worst = 0.0
        for name, values in times.items():
            p50, p95 = summary(values)
            worst = max(worst, p95)
            rows.append(
                (
                    name,
                    f"p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   p95 / budget {p95 / BUDGET_MS:4.2f}",
                )
            )
        print(
            table(
                f"server render time, {args.requests} requests per page "
                f"(budget {BUDGET_MS:.0f} ms p95)",
                rows,
            )
        )
        first = summary(times["jobs, page 1"])[1]
        print(f"page 1,000 / page 1 (p95): {summary(times['jobs, page 1,000'])[1] / first:.2f}")
        print(f"worst p95 / budget: {worst / BUDGET_MS:.2f}")
        # The running page (the stream alone), then the pages that also redraw their parts
        # (the gaps static/app.js keeps: the overview reads six statements, the others two).
        live_pages = [
            ("running", None, 0.0),
            ("overview", "/", 3.0),
            ("job list", "/jobs", 2.0),
            ("job", f"/jobs/{ids['bad']}", 2.0),
        ]
        for name, path, gap in live_pages:
            for label, rate in (("idle", 0.0), ("50 enqueues/s", 50.0)):
                fifths = await live_cost(dsn, url, args.seconds, rate, path, gap)
                print(
                    f"one open live page ({name}), {label}: statements/s by fifths "
                    + " ".join(f"{r:.2f}" for r in fifths)
                    + f"   mean {statistics.fmean(fifths):.2f} (budget 5, "
                    f"ratio {statistics.fmean(fifths) / 5:.2f})"
                )
    finally:
        if web is not None:
            web.terminate()
            web.wait(10)
        cluster.destroy()


if __name__ == "__main__":
    asyncio.run(main())
