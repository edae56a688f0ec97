"""``importd doctor``: checks of the database, the schema, the trigger, LISTEN/NOTIFY,
clocks and table health, each ok / warning / error with what to do."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from . import db, fleet, migrate, redaction, repository, sql, urls
from .config import Settings, how_to_set
from .models import ExitCode

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Check:
    """One finding."""

    name: str
    level: str
    detail: str


async def run(settings: Settings) -> list[Check]:
    """Every check, in order; stops after the connection check if that fails."""
    checks: list[Check] = []
    dsn = settings.require_dsn()  # no DSN is a configuration error (exit 3), not a check
    try:
        conn = await db.connect(dsn, timeout=10, statement_cache_size=0)
    except Exception as exc:
        return [
            Check(
                "connection",
                ERROR,
                f"{db.describe_db_error(exc)}: check the DSN, the network and pg_hba.conf",
            )
        ]
    try:
        checks.append(Check("connection", OK, "connected"))
        state = await migrate.inspect(conn)
        checks.append(_schema(state))
        version = await db.one(conn, "server_version")
        checks.append(_version(version["n"], version["v"]))
        if state.applied:
            checks.append(await _trigger(conn))
            checks.extend(await _health(conn))
        if FLEET_VERSION in state.applied:
            checks.append(await _fleet(conn))
        checks.append(_imports(settings))
        if settings.http_token:
            checks.append(_http_token(settings))
        checks.append(await _pooler(conn, settings))
        checks.append(await _listen(settings, conn))
    finally:
        await conn.close()
    return checks


def _schema(state: migrate.SchemaState) -> Check:
    if state.current:
        return Check("schema", OK, state.describe())
    return Check("schema", ERROR, state.describe())


def _version(num: int, text: str) -> Check:
    if num < 110000:
        return Check("server version", ERROR, f"PostgreSQL {text}: importd needs 11 or newer")
    if num < 130000:
        return Check("server version", WARNING, f"PostgreSQL {text}: 13 or newer is advised")
    return Check("server version", OK, f"PostgreSQL {text}")


async def _trigger(conn: db.Connection) -> Check:
    row = await db.one(conn, "doctor_trigger")
    functions = row["functions"]
    problems = []
    if row["trigger_enabled"] is None:
        problems.append("trigger trigger_process_import_jobs is missing (run importd migrate)")
    elif row["trigger_enabled"] == "D":
        problems.append(
            "trigger trigger_process_import_jobs is disabled: ALTER TABLE "
            "import_jobs ENABLE TRIGGER trigger_process_import_jobs (until then "
            "daemons only poll)"
        )
    for name in ("notify_process_import_jobs_async", "trigger_import_job_processing"):
        info = functions.get(name)
        if info is None:
            problems.append(f"function {name} is missing (run importd migrate)")
        elif not info["security_definer"] or not info["search_path"]:
            problems.append(f"function {name} must be SECURITY DEFINER with a pinned search_path")
    if problems:
        return Check("trigger", ERROR, "; ".join(problems))
    if row["notify_setting"] == "off":
        return Check(
            "trigger",
            WARNING,
            "importd.notify is off for this database or role: inserts send no notification, "
            "so daemons must poll (run them with --no-listen --poll-interval 1), or "
            "ALTER DATABASE … RESET importd.notify",
        )
    return Check("trigger", OK, "enabled; both functions SECURITY DEFINER, search_path pinned")


async def _health(conn: db.Connection) -> list[Check]:
    sent = time.time()
    row = await db.one(conn, "doctor_health")
    received = time.time()
    out = []
    usage = row["queue_usage"]
    level = ERROR if usage > 0.9 else WARNING if usage > 0.5 else OK
    out.append(
        Check(
            "notify queue",
            level,
            f"{usage:.1%} used"
            + (
                ": a session is holding notifications (a long transaction that ran LISTEN?)"
                if level != OK
                else ""
            ),
        )
    )
    skew = row["server_epoch"] - (sent + received) / 2
    level = WARNING if abs(skew) > 2 else OK
    out.append(
        Check(
            "clock skew",
            level,
            f"{skew:+.2f} s between this host and the server"
            + (": sync the clocks (NTP); leases use the server's" if level != OK else ""),
        )
    )
    stuck = row["stuck"]
    out.append(
        Check(
            "stuck jobs",
            WARNING if stuck else OK,
            f"{stuck} running job(s) past their lease: is any importd running? "
            "A running daemon rescues them"
            if stuck
            else "none",
        )
    )
    dead, live = row["dead"], row["live"]
    ratio = dead / max(dead + live, 1)
    level = WARNING if dead > 10_000 and ratio > 0.2 else OK
    out.append(
        Check(
            "dead tuples",
            level,
            f"{dead:,} dead / {live:,} live in import_jobs"
            + (": VACUUM (ANALYZE) import_jobs, and check autovacuum" if level != OK else ""),
        )
    )
    return out


# The schema version that brought the daemon registry (importd_daemons).
FLEET_VERSION = 4


async def _fleet(conn: db.Connection) -> Check:
    """The live daemons, and the pending kinds none of them serves."""
    daemons = await repository.live_daemons(conn, fleet.STALE_AFTER)
    missing = fleet.unserved(await repository.pending_kinds(conn), daemons)
    live = f"{len(daemons)} live daemon(s)"
    if missing:
        return Check(
            "daemons",
            WARNING,
            f"{live}; "
            + "; ".join(u.text for u in missing)
            + ": those jobs wait until a daemon with their --handlers runs",
        )
    return Check("daemons", OK, f"{live}; every pending kind has a daemon that serves it")


def _imports(settings: Settings) -> Check:
    """Whether csv / ndjson jobs can load anything with these settings (the daemon's
    settings: run doctor with the same configuration)."""
    problems = []
    if not settings.tables:
        problems.append(
            "no tables allowed: every csv / ndjson job fails; allow one with "
            + how_to_set("tables", "public.customers", "doctor")
        )
    if not settings.import_roots and not settings.url_prefixes:
        problems.append(
            "no import_roots and no url_prefixes: every source is refused; allow a "
            "directory with " + how_to_set("import_roots", "/srv/uploads", "doctor")
        )
    if problems:
        return Check("imports", WARNING, "; ".join(problems))
    where = [f"files under {', '.join(settings.import_roots)}"] if settings.import_roots else []
    where += [f"URLs under {', '.join(settings.url_prefixes)}"] if settings.url_prefixes else []
    return Check("imports", OK, f"into {', '.join(settings.tables)}; from {' and '.join(where)}")


def _http_token(settings: Settings) -> Check:
    """Where ``http`` jobs may send the bearer token (see ``urls.token_allowed``)."""
    if settings.http_token_prefixes:
        return Check("http", OK, f"http_token goes to {', '.join(settings.http_token_prefixes)}")
    if settings.http_url:
        try:
            root = urls.origin(settings.http_url)
        except ValueError as exc:
            return Check("http", ERROR, f"http_url {settings.http_url!r} is not a URL: {exc}")
        return Check("http", OK, f"http_token goes to http_url's origin, {root}")
    return Check(
        "http",
        WARNING,
        "http_token is set, but neither http_url nor http_token_prefixes says where it may "
        "be sent: every http job fails (HttpToken); set "
        + how_to_set("http_url", "https://PROJECT.supabase.co/functions/v1/process", "doctor"),
    )


async def _pooler(conn: db.Connection, settings: Settings) -> Check:
    """Whether ``dsn`` goes through a pooler, and in which mode.

    A pooler announces a backend key of its own at connect, so its process id differs from
    ``pg_backend_pid()``. In transaction mode a server session serves whichever client has
    a transaction: a second connection's statement lands on the session the first one just
    used (pgbouncer hands out the most recently freed one), or one connection's successive
    transactions land on different sessions."""
    if not await db.behind_pooler(conn):
        return Check("pooler", OK, "none: the DSN reaches PostgreSQL directly")
    other = await db.connect(settings.require_dsn(), timeout=10, statement_cache_size=0)
    try:
        mine = {await conn.fetchval(sql.query("backend_pid")) for _ in range(3)}
        theirs = await other.fetchval(sql.query("backend_pid"))
    finally:
        await other.close()
    if len(mine) == 1 and theirs not in mine:
        return Check(
            "pooler",
            OK,
            "the DSN goes through a pooler that kept one server session per connection "
            "(session mode): LISTEN and prepared statements work through it",
        )
    problems = []
    if settings.listen and not settings.listen_dsn:
        problems.append("set listen_dsn to a direct connection (or run with --no-listen)")
    if settings.statement_cache_size:
        problems.append(
            "set statement_cache_size = 0 (the daemon uses 0 by itself when it sees the pooler)"
        )
    what = "the DSN goes through a transaction-mode pooler (server sessions are shared)"
    if problems:
        return Check("pooler", WARNING, f"{what}: {'; '.join(problems)}")
    return Check(
        "pooler",
        OK,
        f"{what}; statement_cache_size is 0"
        + ("; LISTEN uses listen_dsn" if settings.listen else "; poll only (listen off)"),
    )


async def _listen(settings: Settings, sender: db.Connection) -> Check:
    """A NOTIFY sent over the DSN (as a producer's would be), heard on the LISTEN
    connection; timed from before the NOTIFY to its arrival."""
    if not settings.listen:
        return Check(
            "listen", OK, "off (poll only): jobs start within poll_interval of their commit"
        )
    channel = f"importd_doctor_{secrets.token_hex(4)}"
    got = asyncio.Event()
    try:
        conn = await db.connect(settings.effective_listen_dsn, timeout=10, statement_cache_size=0)
    except Exception as exc:
        return Check(
            "listen", ERROR, f"cannot open the LISTEN connection: {db.describe_db_error(exc)}"
        )
    try:
        pooled = await db.behind_pooler(conn)
        await conn.add_listener(channel, lambda *_: got.set())
        started = time.monotonic()
        await sender.execute(sql.query("notify_channel"), channel, "ping")
        try:
            async with asyncio.timeout(3):
                await got.wait()
        except TimeoutError:
            if pooled:
                return Check(
                    "listen",
                    ERROR,
                    "no NOTIFY came back within 3 s: the LISTEN connection goes through a "
                    "pooler, and a LISTEN through a transaction-mode pooler never hears a "
                    "NOTIFY; set listen_dsn to a direct connection, or run the daemons "
                    "with --no-listen",
                )
            return Check(
                "listen",
                ERROR,
                "no NOTIFY came back within 3 s: LISTEN does not work on this "
                "connection; set listen_dsn, or run the daemons with --no-listen",
            )
        elapsed = (time.monotonic() - started) * 1000
        return Check(
            "listen",
            WARNING if pooled else OK,
            f"NOTIFY round trip in {elapsed:.1f} ms"
            + (
                " (through a pooler in session mode: a direct listen_dsn is safer)"
                if pooled
                else ""
            ),
        )
    finally:
        await conn.close()


def exit_code(checks: list[Check]) -> int:
    """5 when the database cannot be reached and 4 when the schema is behind or ahead (like
    every other command), 1 when any other check is an error, else 0."""
    if any(c.name == "connection" and c.level == ERROR for c in checks):
        return int(ExitCode.UNAVAILABLE)
    if any(c.name == "schema" and c.level == ERROR for c in checks):
        return int(ExitCode.SCHEMA)
    return int(ExitCode.ERROR) if any(c.level == ERROR for c in checks) else int(ExitCode.OK)


def render(checks: list[Check]) -> str:
    """A line per check."""
    width = max(len(c.name) for c in checks)
    return "\n".join(
        f"{c.level.upper():<8} {c.name.ljust(width)}  {redaction.redact(c.detail)}" for c in checks
    )
