"""The ``importd`` command line: parse arguments, call one function, exit with its code."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime

from . import config, daemon, db, logs, migrate
from .models import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT_S,
    ExitCode,
)
from .repository import enqueue

_DAEMON_FIELDS = (
    "concurrency",
    "poll_interval",
    "shutdown_grace",
    "lease_margin",
    "heartbeat_interval",
    "rescue_interval",
    "probe_interval",
    "backoff_base",
    "backoff_max",
    "backoff_jitter",
    "statement_cache_size",
    "pool_size",
    "worker_name",
    "metrics_address",
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="PostgreSQL URL (else IMPORTD_DSN, else DATABASE_URL)")
    parser.add_argument(
        "--config",
        dest="config_path",
        metavar="FILE",
        help="TOML file (default /etc/importd/importd.toml when present)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"])


def _add_daemon(parser: argparse.ArgumentParser) -> None:
    for field in config.FIELDS:
        if field.name in _DAEMON_FIELDS:
            parser.add_argument(
                f"--{field.name.replace('_', '-')}",
                dest=field.name,
                metavar=field.name.split("_")[-1].upper(),
                help=f"{field.help} (default {field.default})",
            )
    parser.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE",
        help="import MODULE for its @importd.handler kinds (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="importd",
        description="importd: a PostgreSQL import-job daemon.",
        formatter_class=_Formatter,
        epilog="Run 'importd COMMAND --help' for the options and an example of each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate",
        help="apply pending schema migrations",
        formatter_class=_Formatter,
        epilog="example:\n  importd migrate --dsn postgresql://app@db/app\n"
        "  importd migrate --check   # exit 1 and list what is pending",
    )
    _add_common(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; exit 0 if current, 1 with the pending list otherwise",
    )

    p = sub.add_parser(
        "run",
        help="run the daemon until SIGTERM",
        formatter_class=_Formatter,
        epilog="example:\n  importd run --concurrency 16 --handlers myapp.jobs",
    )
    _add_common(p)
    _add_daemon(p)
    p.add_argument("--listen-dsn", help="direct connection for LISTEN (when --dsn is a pooler)")
    p.add_argument(
        "--no-listen",
        dest="listen",
        action="store_const",
        const=False,
        help="poll only; for setups that cannot LISTEN",
    )
    p.add_argument(
        "--queue",
        dest="queues",
        action="append",
        metavar="NAME",
        help="serve only this queue (repeatable; default: all)",
    )

    p = sub.add_parser(
        "drain",
        help="run every runnable job, then exit",
        formatter_class=_Formatter,
        epilog="example:\n  importd drain --queue imports --timeout 600\n\n"
        "exit codes: 0 all completed (or nothing to do), 10 some failed,\n"
        "11 some left pending for a retry, 12 stopped by --timeout/signal",
    )
    _add_common(p)
    _add_daemon(p)
    p.add_argument(
        "--queue",
        dest="queues",
        action="append",
        metavar="NAME",
        help="only this queue (repeatable)",
    )
    p.add_argument(
        "--kind", dest="kinds", action="append", metavar="KIND", help="only this kind (repeatable)"
    )
    p.add_argument("--max-jobs", type=int, metavar="N", help="claim at most N jobs")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop claiming after SECONDS, hand back what still runs",
    )

    p = sub.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        formatter_class=_Formatter,
        epilog="example:\n  IMPORTD_CONCURRENCY=16 importd config --json",
    )
    _add_common(p)
    p.add_argument("--json", action="store_true", help="as JSON instead of TOML")

    p = sub.add_parser(
        "enqueue",
        help="add one job and print its id",
        formatter_class=_Formatter,
        epilog="example:\n  importd enqueue csv --payload "
        '\'{"source": "file:///data/u.csv", "table": "users"}\'',
    )
    _add_common(p)
    p.add_argument("kind")
    p.add_argument("--payload", default="{}", help="the job's JSON object (default {})")
    p.add_argument("--queue", default=DEFAULT_QUEUE)
    p.add_argument("--priority", type=int, default=DEFAULT_PRIORITY, help="smaller runs first")
    p.add_argument("--run-at", help="ISO 8601 time to run at (default: now)")
    p.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt")
    p.add_argument("--dedup-key", help="no second unfinished job with this key")
    p.add_argument("--tenant", dest="tenant_id")
    return parser


def _settings(args: argparse.Namespace) -> config.Settings:
    flags = {f.name: getattr(args, f.name, None) for f in config.FIELDS}
    return config.load(flags, config_path=getattr(args, "config_path", None))


def _fail(message: str, code: ExitCode) -> int:
    print(f"importd: {db.redact(message)}", file=sys.stderr)
    return int(code)


async def _migrate(settings: config.Settings, check: bool) -> int:
    conn = await db.connect(settings.require_dsn())
    try:
        if check:
            state = await migrate.inspect(conn)
            print(state.describe())
            for name in state.pending:
                print(f"pending: {name}")
            return 0 if state.current else 1
        applied = await migrate.apply(conn)
        print(
            f"applied {len(applied)} migration(s)"
            + (f": {', '.join(applied)}" if applied else "; schema already current")
        )
        return 0
    finally:
        await conn.close()


async def _enqueue(settings: config.Settings, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        return _fail(f"--payload is not valid JSON: {exc}", ExitCode.USAGE)
    if not isinstance(payload, dict):
        return _fail('--payload must be a JSON object, e.g. \'{"table": "users"}\'', ExitCode.USAGE)
    run_at = None
    if args.run_at:
        try:
            run_at = datetime.fromisoformat(args.run_at)
        except ValueError:
            return _fail(f"--run-at {args.run_at!r} is not an ISO 8601 time", ExitCode.USAGE)
        if run_at.tzinfo is None:
            run_at = run_at.astimezone()  # a naive time is local time
    conn = await db.connect(settings.require_dsn())
    try:
        job_id = await enqueue(
            conn,
            args.kind,
            payload,
            queue=args.queue,
            priority=args.priority,
            run_at=run_at,
            max_attempts=args.max_attempts,
            timeout=args.timeout,
            dedup_key=args.dedup_key,
            tenant_id=args.tenant_id,
        )
    finally:
        await conn.close()
    print(job_id)
    return 0


def _render_config(settings: config.Settings, *, as_json: bool) -> str:
    values = settings.redacted()
    if as_json:
        return json.dumps(values, indent=2)
    lines = ["[importd]"]
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} = (unset)")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``importd`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except config.ConfigError as exc:
        return _fail(str(exc), ExitCode.CONFIG)
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command in ("run", "drain"):
            settings.require_dsn()
            drain = None
            if args.command == "drain":
                drain = daemon.DrainOptions(
                    queues=args.queues,
                    kinds=args.kinds,
                    max_jobs=args.max_jobs,
                    timeout=args.timeout,
                )
            return daemon.run(settings, drain)
        if args.command == "migrate":
            return asyncio.run(_migrate(settings, args.check))
        if args.command == "enqueue":
            return asyncio.run(_enqueue(settings, args))
        if args.command == "config":
            print(_render_config(settings, as_json=args.json))
            return 0
    except config.ConfigError as exc:
        return _fail(str(exc), ExitCode.CONFIG)
    except (OSError, TimeoutError) as exc:
        return _fail(f"cannot connect to the database: {exc}", ExitCode.UNAVAILABLE)
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):
            return _fail(f"database error: {db.describe_db_error(exc)}", ExitCode.ERROR)
        raise
    return _fail(f"unknown command {args.command}", ExitCode.USAGE)


def run_main() -> None:
    """``python -m importd``."""
    sys.exit(main())
