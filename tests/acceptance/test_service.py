"""Running as a service: sd_notify and the watchdog, structured logs without secrets,
metrics and health endpoints, the systemd unit, configuration."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

import importd
from tests.helpers import (
    Conn,
    NotifySocket,
    PgServer,
    StartDaemon,
    importd_env,
    run_importd,
    wait_until,
)
from tests.httpserver import Reply, Server


async def test_sd_notify_ready_status_watchdog_stopping(
    conn: Conn, daemons: StartDaemon, tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        env = importd_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
        proc = daemons("--poll-interval", "1", env=env)
        await wait_until(lambda: "READY" in notify.kinds(), timeout=15, what="READY=1")
        first = notify.drain()[0][1]
        assert first.startswith("READY=1\nSTATUS=running 0/8, 0 done, listener ok")
        # (the log lines were written before READY; the test reads them a moment later)
        await proc.wait_for_event("daemon_ready", timeout=5)
        await proc.wait_for_event("listener_connected", timeout=5)
        await importd.enqueue(conn, "noop", {})

        def status_after_the_job() -> bool:
            statuses = [m for _, m in notify.drain() if m.startswith("STATUS=")]
            return bool(statuses) and statuses[-1] == "STATUS=running 0/8, 1 done, listener ok"

        await wait_until(status_after_the_job, timeout=15, what="STATUS with 1 done")
        await wait_until(
            lambda: len([m for _, m in notify.drain() if m == "WATCHDOG=1"]) >= 3,
            timeout=15,
            what="three watchdog pings",
        )
        pings = [t for t, m in notify.drain() if m == "WATCHDOG=1"]
        assert max(b - a for a, b in itertools.pairwise(pings)) < 0.9  # every half of WATCHDOG_USEC

        # Wedge the worker loop: its next claim waits on a table lock. The event loop is
        # fine, the worker is not: the pings must stop, so systemd would restart us.
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE import_jobs IN ACCESS EXCLUSIVE MODE")
        await proc.wait_for_event("watchdog_withheld", timeout=15)
        withheld_seen = time.monotonic()
        # ...and stay stopped: the next check (half a second later) withholds it again.
        await proc.wait_for_event("watchdog_withheld", timeout=15, count=2)
        assert [t for t, m in notify.drain() if m == "WATCHDOG=1" and t > withheld_seen] == []
        await tx.rollback()
        released = time.monotonic()
        await wait_until(
            lambda: [t for t, m in notify.drain() if m == "WATCHDOG=1" and t > released],
            timeout=15,
            what="a watchdog ping once the worker loop is free again",
        )

        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
        kinds = notify.kinds()
        assert kinds[-1] == "STOPPING" and kinds[0] == "READY"
    finally:
        notify.close()


async def test_json_logs_carry_job_fields_and_never_a_secret(
    conn: Conn, dsn: str, daemons: StartDaemon, tmp_path: Path
) -> None:
    token = "tok-very-secret-" + "x" * 20
    password = "pa55-w0rd-secret"
    await conn.execute(f"ALTER ROLE CURRENT_USER PASSWORD '{password}'")
    server = Server().start()
    try:
        # An endpoint that echoes what it got (headers included) in a 401 and a 200.
        denied = server.route("/denied", Reply(401, f"bad token: Bearer {token}".encode()))
        echo = server.route(
            "/echo",
            Reply(
                200,
                json.dumps({"auth": f"Bearer {token}", "raw": token}).encode(),
                {"Content-Type": "application/json"},
            ),
        )
        secret_dsn = dsn.replace("postgres@", f"postgres:{password}@")
        env = importd_env(
            IMPORTD_HTTP_TOKEN=token,
            IMPORTD_URL_PREFIXES=server.url + "/",
            IMPORTD_HTTP_TOKEN_PREFIXES=server.url + "/",
        )
        proc = daemons("--poll-interval", "1", env=env, target=secret_dsn)
        jobs = [
            await importd.enqueue(conn, "http", {"url": url}, tenant_id="acme", queue="hooks")
            for url in (denied, echo)
        ]
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 2 FROM import_jobs WHERE status IN ('completed', 'failed')"
            )
        )
        assert server.hits("/echo")[0].headers["Authorization"] == f"Bearer {token}"
        proc.signal(signal.SIGTERM)
        await proc.wait_exit()
    finally:
        server.stop()
        await conn.execute("ALTER ROLE CURRENT_USER PASSWORD NULL")
    text = proc.text()
    assert token not in text and password not in text
    rows = await conn.fetch("SELECT * FROM import_jobs WHERE id = ANY($1)", jobs)
    assert all(token not in json.dumps({k: str(v) for k, v in dict(r).items()}) for r in rows)
    events = proc.events()
    assert all("event" in e and "timestamp" in e and "level" in e for e in events)
    ended = [e for e in events if e["event"] in ("job_completed", "job_failed")]
    assert {e["job_id"] for e in ended} == set(jobs)
    for event in ended:
        assert event["kind"] == "http" and event["queue"] == "hooks"
        assert event["tenant_id"] == "acme" and event["attempt"] == 1
        assert isinstance(event["duration_ms"], float)


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def scrape_when(port: int, want: dict[str, float]) -> dict[str, float]:
    """The first scrape in which the metrics named have the values given."""

    def check() -> dict[str, float] | None:
        values = scrape(port)
        return values if all(values.get(k) == v for k, v in want.items()) else None

    values: dict[str, float] = await wait_until(check, timeout=20, what=f"metrics {want}")
    return values


async def test_metrics_and_health_endpoints(conn: Conn, daemons: StartDaemon) -> None:
    proc = daemons("--poll-interval", "1", "--metrics-address", "127.0.0.1:0", "--concurrency", "4")
    await proc.wait_for_event("metrics_listening")
    port = int(
        next(e for e in proc.events() if e["event"] == "metrics_listening")["address"].rsplit(
            ":", 1
        )[1]
    )
    await proc.wait_for_event("daemon_ready")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    before = scrape(port)
    assert before["importd_listener_connected"] == 1
    await importd.enqueue_many(
        conn,
        [importd.NewJob("noop", {}, queue="q1") for _ in range(30)]
        + [importd.NewJob("sleep", {"seconds": 3}, queue="q2")]
        + [importd.NewJob("permanent", {}, queue="q1")],
    )
    # the 31 quick ones end while the sleeper (3 s) still runs
    during = await scrape_when(
        port,
        {
            'importd_job_duration_seconds_count{kind="noop",queue="q1"}': 30,
            'importd_jobs_failed_total{kind="permanent",queue="q1"}': 1,
        },
    )
    assert during["importd_jobs_in_flight"] == 1  # the sleeper
    after = await scrape_when(port, {'importd_jobs_completed_total{kind="sleep",queue="q2"}': 1})
    assert after['importd_jobs_claimed_total{kind="noop",queue="q1"}'] == 30
    assert after['importd_jobs_completed_total{kind="noop",queue="q1"}'] == 30
    assert after['importd_jobs_completed_total{kind="sleep",queue="q2"}'] == 1
    assert after['importd_jobs_failed_total{kind="permanent",queue="q1"}'] == 1
    assert after['importd_job_duration_seconds_count{kind="noop",queue="q1"}'] == 30
    assert after['importd_job_duration_seconds_sum{kind="sleep",queue="q2"}'] >= 3
    assert after['importd_job_start_latency_seconds_count{queue="q1"}'] == 31
    assert after["importd_jobs_in_flight"] == 0
    assert after["importd_seconds_since_last_wake"] < 5
    # readiness follows the schema: a migration this code does not know makes it 503
    await conn.execute(
        "INSERT INTO importd_migrations (version, name, checksum) VALUES (9999, '9999_future', 'x')"
    )
    await wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503,
        timeout=15,
        what="503",
    )
    # the sample (every 5 s) that saw the migration counted the jobs after the sleeper ended
    assert scrape(port).get('importd_jobs{queue="q2",status="running"}', 0) == 0
    # liveness follows the worker loop: wedge it on a table lock
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE import_jobs IN ACCESS EXCLUSIVE MODE")
    await wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 503,
        timeout=20,
        what="503",
    )
    await tx.rollback()
    await wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
        timeout=10,
        what="200",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[importd]\nconcurency = 3\n", "unknown setting 'concurency'"),
        ("[importd]\nconcurrency = 0\n", "concurrency: bad value 0: must be at least 1"),
        ("[importd]\nconcurrency = 'many'\n", "concurrency: bad value 'many'"),
        ("concurrency = [", "is not valid TOML"),
    ],
)
def test_bad_configuration_is_one_line_with_the_config_exit_code(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "importd.toml"
    path.write_text(content)
    done = run_importd("config", "--config", str(path))
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_importd_config_prints_the_effective_settings_redacted(tmp_path: Path) -> None:
    done = run_importd(
        "config",
        "--json",
        "--dsn",
        "postgresql://app:hunter22@db/app",
        env=importd_env(IMPORTD_CONCURRENCY="12", IMPORTD_HTTP_TOKEN="tok-abcdef-123"),
    )
    assert done.returncode == 0
    shown = json.loads(done.stdout)
    assert shown["concurrency"] == 12 and shown["dsn"] == "postgresql://app:***@db/app"
    assert shown["http_token"] == "***"
    assert "hunter22" not in done.stdout and "tok-abcdef-123" not in done.stdout


async def test_watchdog_keeps_pinging_while_the_database_is_away(
    pg_server: PgServer, daemons: StartDaemon, tmp_path: Path
) -> None:
    if pg_server.cluster is None:
        pytest.skip(f"the server ({pg_server.how}) is not the suite's to stop and start")
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        env = importd_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
        proc = daemons("--poll-interval", "1", "--probe-interval", "0.5", env=env)
        await wait_until(lambda: "READY" in notify.kinds(), timeout=15, what="READY=1")
        await asyncio.to_thread(pg_server.cluster.stop, "fast")
        stopped = time.monotonic()
        # The claim backoff reaches its 5 s cap; 4 s into that wait, a worker loop that
        # did not tick while it waits would have lost its pings (stale after 3 s).
        await proc.wait_for_event("claim_failed", timeout=40, retry_in_s=5.0)
        capped = time.monotonic()
        await wait_until(
            lambda: [t for t, m in notify.messages if m == "WATCHDOG=1" and t > capped + 4],
            timeout=20,
            what="a ping 4 s into the longest backoff",
        )
        window = time.monotonic() - stopped
        await asyncio.to_thread(pg_server.cluster.start)
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1" and t > stopped]
        # Failed claims back off, the listener reconnects: alive, not wedged.
        assert len(pings) >= 0.7 * window / 0.5, (len(pings), window)  # one every 0.5 s
        assert max(b - a for a, b in itertools.pairwise([stopped, *pings])) < 1.6
        await proc.wait_for_event("listener_reconnected", timeout=40)
        assert proc.proc.poll() is None
    finally:
        notify.close()
