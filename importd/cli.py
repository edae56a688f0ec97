"""The ``importd`` command line: parse arguments, call one function, exit with its code."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import math
import os
import select
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from . import config, daemon, db, doctor, logs, migrate, ops, payloads, redaction
from .models import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT_S,
    ExitCode,
    InvalidPayload,
)
from .progress import Progress
from .repository import NewJob, enqueue, enqueue_many


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class CliError(Exception):
    """A command cannot go on; ``code`` is the exit code, the message says why."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """One line per error, saying where the help is (argparse prints the usage too), and
    the closest flag or command for a typo."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument COMMAND: invalid choice:"):
            given = message.split("'")[1] if "'" in message else ""
            message += _did_you_mean(given, list(_commands(self)))
        # (What follows "argument --dsn: " is argparse's reason, not a DSN's value: the
        # redaction would read "dsn:" as a key before a secret.)
        head, reason = "", message
        if message.startswith("argument "):
            name, sep, reason = message.partition(": ")
            head = name + sep
        text = head + redaction.redact(redaction.hide_userinfo(reason))
        self.exit(int(ExitCode.USAGE), f"importd: {text} (see '{self.prog} --help')\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> argparse.Namespace:
        parsed: argparse.Namespace
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = _commands(self).get(getattr(parsed, "command", None) or "", self)
            options = [o for a in sub._actions for o in a.option_strings]
            unknown = [e for e in extras if e.startswith("-")] or extras
            hint = "".join(
                _did_you_mean(e.split("=", 1)[0], options) for e in unknown if e.startswith("-")
            )
            shown = " ".join(redaction.hide_userinfo(e) for e in extras)
            sub.error(f"unrecognized arguments: {shown}{hint}")
        return parsed


class _Version(argparse.Action):
    """``--version``, reading the metadata only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        from ._version import version  # noqa: PLC0415

        print(f"importd {version()}")
        parser.exit(0)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _did_you_mean(given: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _add_common(parser: argparse.ArgumentParser, command: str) -> None:
    """``--config`` and the flag of every setting ``command`` takes (all of them for
    ``importd config``), each made from its one declaration in ``config.Settings``."""
    parser.add_argument(
        "--config",
        dest="config_path",
        metavar="FILE",
        help="TOML file (else IMPORTD_CONFIG, else /etc/importd/importd.toml when present)",
    )
    for field in config.FIELDS:
        if field.takes_flag_in(command):
            _add_setting(parser, field)


def _add_setting(parser: argparse.ArgumentParser, field: config.Field) -> None:
    notes = []
    if field.kind == "list":
        notes.append("repeatable")
    if field.shown_default != "—":
        notes.append(f"default {field.shown_default}")
    notes.append(" or ".join((field.env, *field.declared.also_env)))
    if field.secret:
        notes.append(f"secret: {field.env}_FILE keeps it out of ps")
    text = f"{field.help} ({'; '.join(notes)})".replace("%", "%%")
    kwargs: dict[str, Any] = {"dest": field.name, "help": text}
    if field.kind == "bool":
        # A switch: its flag turns the default around.
        kwargs.update(action="store_const", const=not field.default)
    elif field.declared.choices:
        # Shown as argparse shows choices, checked by the setting itself (any letter case,
        # a bad value exit 3 naming the flag), as from its variable or the file.
        kwargs["metavar"] = "{" + ",".join(field.declared.choices) + "}"
    else:
        kwargs["metavar"] = field.declared.metavar or field.name.split("_")[-1].upper()
        if field.kind == "list":
            kwargs["action"] = "append"
    parser.add_argument(field.option, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="importd",
        description="importd: a PostgreSQL import-job daemon.",
        formatter_class=_Formatter,
        epilog="Run 'importd COMMAND --help' for the options and an example of each command.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser(
        "migrate",
        help="apply pending schema migrations",
        formatter_class=_Formatter,
        epilog="example:\n  importd migrate --dsn postgresql://app@db/app\n"
        "  importd migrate --check   # exit 1 and list what is pending",
    )
    _add_common(p, "migrate")
    p.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; exit 0 if current, 1 with the pending list, 4 if the schema "
        "is newer than this importd",
    )

    p = sub.add_parser(
        "run",
        help="run the daemon until SIGTERM",
        formatter_class=_Formatter,
        epilog="examples:\n  importd run --import-root /srv/uploads --table public.customers\n"
        "  importd run --concurrency 16 --handlers myapp.jobs\n"
        "  importd run --queue imports=6 --queue webhooks=2 --rate-limit webhooks=10/s "
        "--tenant-concurrency 2",
    )
    _add_common(p, "run")
    p.add_argument(
        "--embedded",
        nargs="?",
        const="",
        metavar="DATA_DIR",
        help="run on a local PostgreSQL that importd manages in DATA_DIR "
        "(default ~/.local/share/importd/postgres), for trying importd out",
    )

    p = sub.add_parser(
        "drain",
        help="run every runnable job, then exit",
        formatter_class=_Formatter,
        epilog="example:\n  importd drain --queue imports --timeout 600\n\n"
        "exit codes: 0 all completed (or nothing to do), 10 some failed,\n"
        "11 some left pending for a retry, 12 stopped by --timeout/signal",
    )
    _add_common(p, "drain")
    p.add_argument(
        "--kind", dest="kinds", action="append", metavar="KIND", help="only this kind (repeatable)"
    )
    p.add_argument("--max-jobs", type=_count, metavar="N", help="claim at most N jobs")
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop claiming after SECONDS, hand back what still runs",
    )

    p = sub.add_parser(
        "status",
        help="what is queued, running and failing",
        formatter_class=_Formatter,
        epilog="example:\n  importd status --watch 2",
    )
    _add_common(p, "status")
    p.add_argument("--json", action="store_true", help="for scripts")
    p.add_argument(
        "--watch",
        type=_interval,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 2)",
    )

    p = sub.add_parser(
        "show",
        help="every field of one job and its rejected rows",
        formatter_class=_Formatter,
        epilog="example:\n  importd show 42\n  importd show 42 --errors > rejected.csv",
    )
    _add_common(p, "show")
    p.add_argument("id", type=_job_id)
    p.add_argument("--json", action="store_true", help="for scripts")
    p.add_argument(
        "--errors", action="store_true", help="list every rejected row (CSV, or JSON with --json)"
    )

    p = sub.add_parser(
        "retry",
        help="failed or cancelled jobs back to pending, attempts reset",
        formatter_class=_Formatter,
        epilog="examples:\n  importd retry 42 43\n  importd retry --failed --kind csv --since 2h",
    )
    _add_common(p, "retry")
    p.add_argument("ids", type=_job_id, nargs="*", metavar="ID")
    p.add_argument("--failed", action="store_true", help="every failed job (with the filters)")
    p.add_argument("--kind")
    p.add_argument("--queue")
    p.add_argument("--since", metavar="AGE", help="failed within AGE (90s, 15m, 2h, 7d)")

    p = sub.add_parser(
        "cancel",
        help="cancel pending or running jobs",
        formatter_class=_Formatter,
        epilog="example:\n  importd cancel 42",
    )
    _add_common(p, "cancel")
    p.add_argument("ids", type=_job_id, nargs="+", metavar="ID")

    p = sub.add_parser(
        "prune",
        help="delete old finished jobs, in small batches",
        formatter_class=_Formatter,
        epilog="example:\n  importd prune --older-than 7d --failed-older-than 30d",
    )
    _add_common(p, "prune")
    p.add_argument(
        "--older-than",
        default="7d",
        metavar="AGE",
        help="completed jobs finished longer ago than AGE (default 7d)",
    )
    p.add_argument(
        "--failed-older-than",
        metavar="AGE",
        help="failed and cancelled jobs (default: --older-than)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=1000, help="rows per transaction")

    p = sub.add_parser(
        "doctor",
        help="check the database, schema, trigger, LISTEN/NOTIFY and table health",
        formatter_class=_Formatter,
        epilog="example:\n  importd doctor   # exit 1 when any check is an error, "
        "4 when the schema is behind",
    )
    _add_common(p, "doctor")

    p = sub.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        formatter_class=_Formatter,
        epilog="example:\n  IMPORTD_CONCURRENCY=16 importd config --json",
    )
    _add_common(p, "config")
    p.add_argument("--json", action="store_true", help="as JSON instead of TOML")

    p = sub.add_parser(
        "web",
        help="the dashboard: a web page over the same database (needs importd[web])",
        formatter_class=_Formatter,
        epilog="examples:\n  importd web   # http://127.0.0.1:8080/\n"
        "  IMPORTD_WEB_TOKEN_FILE=/etc/importd/web_token importd web --listen 0.0.0.0:8080\n\n"
        "Off loopback, and for retry / cancel, it asks for web_token (IMPORTD_WEB_TOKEN).",
    )
    _add_common(p, "web")

    p = sub.add_parser(
        "enqueue",
        help="add one job and print its id",
        formatter_class=_Formatter,
        epilog="example:\n  importd enqueue csv --payload "
        '\'{"source": "file:///data/u.csv", "table": "users"}\'',
    )
    _add_common(p, "enqueue")
    p.add_argument("kind")
    p.add_argument("--payload", default="{}", help="the job's JSON object (default {})")
    p.add_argument(
        "--payloads",
        metavar="FILE",
        help="one job per line of FILE (NDJSON payloads; - for stdin), in "
        "batches of 1,000; prints how many",
    )
    p.add_argument("--queue", default=DEFAULT_QUEUE)
    p.add_argument("--priority", type=int, default=DEFAULT_PRIORITY, help="smaller runs first")
    p.add_argument("--run-at", help="ISO 8601 time to run at (default: now)")
    p.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt")
    p.add_argument("--dedup-key", help="no second unfinished job with this key")
    p.add_argument("--tenant", dest="tenant_id")
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip checking csv, ndjson and http payloads against their handler's rules",
    )
    return parser


_BIGINT_MAX = 2**63 - 1


def _job_id(text: str) -> int:
    """A job id as argparse reads it: an integer a bigint holds (no such job is exit 2
    later, never a database error)."""
    value = int(text)
    if not -_BIGINT_MAX - 1 <= value <= _BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not a job id (beyond bigint)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a count (0 or more)")
    return value


def _interval(text: str) -> float:
    """A refresh interval: finite seconds above 0 (0 or less would redraw without end)."""
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not an interval (seconds above 0)")
    return value


def _seconds(text: str) -> float:
    """A number of seconds: finite (nan and inf are refused)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds")
    return value


# argparse names the type in "invalid int value: 'x'".
_job_id.__name__ = _positive_int.__name__ = _count.__name__ = "int"
_seconds.__name__ = _interval.__name__ = "float"


def _settings(args: argparse.Namespace) -> config.Settings:
    flags = {f.name: getattr(args, f.name, None) for f in config.FIELDS}
    return config.load(flags, config_path=getattr(args, "config_path", None))


def _fail(message: str, code: ExitCode) -> int:
    print(f"importd: {redaction.redact(message)}", file=sys.stderr)
    return int(code)


# What a failed connection raises: the network's errors, and the database's and driver's.
_CANNOT_CONNECT: tuple[type[Exception], ...] = (OSError, TimeoutError, *db.ERRORS)


# The commands that only read: against a schema newer than this importd they warn on
# stderr and go on. Every other command refuses it (exit 4): an older importd could write
# rows that the newer daemons misread.
READ_ONLY = frozenset({"status", "show", "web (read-only)"})


async def _connect(settings: config.Settings, *, schema: bool = True, command: str = "") -> Any:
    """A connection for one command; exit 5 when the database cannot be reached (refused,
    unknown host, wrong password, no such database), 4 when its schema is behind, or
    ahead of this importd for a command that writes (one of ``READ_ONLY`` warns)."""
    dsn = settings.require_dsn()
    try:
        conn = await db.connect(dsn, statement_cache_size=0)
    except _CANNOT_CONNECT as exc:
        raise CliError(
            f"cannot connect to the database: {db.describe_db_error(exc)}",
            # (A DSN option the driver cannot read is the configuration's fault.)
            ExitCode.CONFIG if db.is_configuration_error(exc) else ExitCode.UNAVAILABLE,
        ) from exc
    if schema:
        try:
            state = await migrate.inspect(conn)
        except BaseException:
            await conn.close()
            raise
        if state.pending or (state.unknown and command not in READ_ONLY):
            await conn.close()
            raise CliError(state.describe(), ExitCode.SCHEMA)
        if state.unknown:
            print(f"importd: warning: {state.describe()}", file=sys.stderr)
    return conn


async def _migrate(settings: config.Settings, check: bool) -> int:
    conn = await _connect(settings, schema=False)
    try:
        if check:
            state = await migrate.inspect(conn)
            print(state.describe())
            for name in state.pending:
                print(f"pending: {name}")
            if state.unknown:
                return int(ExitCode.SCHEMA)  # newer than this importd: upgrade it
            return 0 if state.current else 1
        applied = await migrate.apply(conn)
        print(
            f"applied {len(applied)} migration(s)"
            + (f": {', '.join(applied)}" if applied else "; schema already current")
        )
        return 0
    finally:
        await conn.close()


def _run_at(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--run-at {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.astimezone()  # naive: local time


async def _enqueue_many(
    settings: config.Settings, args: argparse.Namespace, run_at: datetime | None
) -> int:
    # A CLI reading its own input: blocking reads are fine here.
    try:
        stream = sys.stdin if args.payloads == "-" else open(args.payloads, encoding="utf-8")  # noqa: SIM115, ASYNC230
    except OSError as exc:
        return _fail(f"--payloads: cannot read {args.payloads}: {exc.strerror}", ExitCode.USAGE)
    bar = Progress("enqueue", 0)
    try:
        conn = await _connect(settings, command="enqueue")
    except BaseException:
        if stream is not sys.stdin:
            stream.close()
        raise
    count = 0
    # The batch the server is inserting while the next one is read and checked: on two
    # cores the reading costs no time of its own. Batches still land one after another,
    # in file order, each in its own transaction.
    sent: asyncio.Task[list[int]] | None = None
    # The lines of the batch being stored (the one in ``sent``, or the last), for a
    # refusal's message: the database names no line of a batch.
    first, sent_lines, storing = 0, (0, 0), (0, 0)
    try:
        batch: list[NewJob] = []
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                payload = json.loads(line)
            except json.JSONDecodeError as exc:
                return _fail(f"{args.payloads}:{number}: not JSON: {exc}", ExitCode.USAGE)
            if not isinstance(payload, dict):
                return _fail(
                    f"{args.payloads}:{number}: a payload must be a JSON object", ExitCode.USAGE
                )
            if args.validate:
                try:
                    payloads.check(args.kind, payload, settings)
                except InvalidPayload as exc:
                    return _fail(f"{args.payloads}:{number}: {exc}", ExitCode.USAGE)
            if not batch:
                first = number
            batch.append(
                NewJob(
                    args.kind,
                    payload,
                    queue=args.queue,
                    priority=args.priority,
                    run_at=run_at,
                    max_attempts=args.max_attempts,
                    timeout=args.timeout,
                    tenant_id=args.tenant_id,
                )
            )
            if len(batch) == 1000:
                if sent is not None:
                    storing = sent_lines
                    done, sent = sent, None
                    count += len(await done)
                    bar.update(count, count)
                sent = asyncio.create_task(enqueue_many(conn, batch))
                sent_lines = (first, number)
                await asyncio.sleep(0)  # let it encode and send the batch
                batch = []
        if sent is not None:
            storing = sent_lines
            done, sent = sent, None
            count += len(await done)
        if batch:
            storing = (first, number)
            count += len(await enqueue_many(conn, batch))
        bar.done = bar.total = count  # finish() reports it, once
        bar.finish()
    except db.ERRORS as exc:
        if not _refused_value(exc):
            raise
        return _fail(
            f"{args.payloads}: lines {storing[0]}-{storing[1]}: the jobs cannot be stored: "
            f"{db.describe_db_error(exc)}; the {count} job(s) before them were enqueued",
            ExitCode.USAGE,
        )
    finally:
        if sent is not None:
            # A bad line ended the reading: the batch already sent still lands (or fails)
            # before the connection closes, as it did without the overlap.
            await sent
        await conn.close()
        if stream is not sys.stdin:
            stream.close()
    print(f"enqueued {count} job(s)")
    return 0


def _refused_value(exc: BaseException) -> bool:
    """Whether the database (or the driver) refused a value of the job itself: a data
    exception (a NUL in the payload, a number out of range), a CHECK (a kind too long, a
    timeout of 0), an argument the driver cannot encode: a bad argument, not a failure."""
    state = str(getattr(exc, "sqlstate", "") or "")
    return state.startswith("22") or state == "23514" or isinstance(exc, ValueError)


async def _enqueue(settings: config.Settings, args: argparse.Namespace) -> int:
    try:
        run_at = _run_at(args.run_at)
    except ValueError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    if args.payloads:
        if args.dedup_key is not None:
            # One key for many jobs would make them one job: refused, not dropped.
            return _fail(
                "--dedup-key names one job: give each its own key with --payload, "
                "not with --payloads",
                ExitCode.USAGE,
            )
        return await _enqueue_many(settings, args, run_at)
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        return _fail(f"--payload is not valid JSON: {exc}", ExitCode.USAGE)
    except RecursionError:
        return _fail("--payload nests too deep to read", ExitCode.USAGE)
    if not isinstance(payload, dict):
        return _fail('--payload must be a JSON object, e.g. \'{"table": "users"}\'', ExitCode.USAGE)
    if args.validate:
        try:
            payloads.check(args.kind, payload, settings)
        except InvalidPayload as exc:
            return _fail(f"{exc} (--no-validate enqueues it anyway)", ExitCode.USAGE)
    conn = await _connect(settings, command="enqueue")
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
    except db.ERRORS as exc:
        if not _refused_value(exc):
            raise
        return _fail(f"the job cannot be stored: {db.describe_db_error(exc)}", ExitCode.USAGE)
    finally:
        await conn.close()
    print(job_id)
    return 0


async def _operate(settings: config.Settings, args: argparse.Namespace) -> int:
    conn = await _connect(settings, command=args.command)
    try:
        await db.readable_timestamps(conn)
        if args.command == "status":
            while True:
                text = await ops.status(conn, as_json=args.json)
                if not args.watch:
                    print(text)
                    return 0
                # Clear the screen and draw again, like watch(1).
                print("\x1b[H\x1b[2J" + text, flush=True)
                await asyncio.sleep(args.watch)
        if args.command == "show":
            if args.errors:
                print(await ops.errors(conn, args.id, as_json=args.json))
            else:
                print(await ops.show(conn, args.id, as_json=args.json))
        elif args.command == "retry":
            if not args.ids and not args.failed:
                return _fail(
                    "retry: give job ids, or --failed (with --kind, --queue, --since)",
                    ExitCode.USAGE,
                )
            text, problems = await ops.retry(
                conn, args.ids or None, kind=args.kind, queue=args.queue, since=args.since
            )
            print(text)
            if problems:
                return _fail("retry: " + "; ".join(problems), ExitCode.USAGE)
        elif args.command == "cancel":
            text, problems = await ops.cancel(conn, args.ids)
            print(text)
            if problems:
                return _fail("cancel: " + "; ".join(problems), ExitCode.USAGE)
        elif args.command == "prune":
            completed = config.parse_duration(args.older_than)
            failed = config.parse_duration(args.failed_older_than or args.older_than)
            deleted, batches = await ops.prune(
                conn, completed_after=completed, failed_after=failed, batch=args.batch_size
            )
            print(f"deleted {deleted} job(s) in {batches} batch(es)")
        return 0
    except LookupError as exc:
        return _fail(str(exc.args[0]), ExitCode.USAGE)
    except ValueError as exc:
        return _fail(str(exc), ExitCode.USAGE)
    finally:
        await conn.close()


def _say_unserved(left: dict[str, int]) -> None:
    """drain's last line on the jobs it left pending for want of a handler (after its
    ``daemon_stopped`` summary and its last ``progress`` line)."""
    if left:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(left.items()))
        print(
            f"drain: left {sum(left.values()):,} pending job(s) of kinds no handler here "
            f"serves ({kinds}); add --handlers, or let a daemon that serves them run them",
            file=sys.stderr,
        )


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


def _web(settings: config.Settings) -> int:
    try:
        from . import web  # noqa: PLC0415 - an optional extra
    except ImportError as exc:
        return _fail(
            f"importd web needs the web extra: pip install 'importd[web]' ({exc})",
            ExitCode.CONFIG,
        )
    web.check_settings(settings)
    # The schema as for any other command: the dashboard's retry and cancel write (exit 4
    # against a schema this importd does not know); read-only, it warns and serves.
    reads_only = settings.web_read_only or not settings.web_token
    asyncio.run(_check_schema(settings, "web (read-only)" if reads_only else "web"))
    daemon.warn_unmaskable(settings)
    return web.serve(settings)


async def _check_schema(settings: config.Settings, command: str) -> None:
    """``_connect``'s checks, for a command that makes its own connections."""
    conn = await _connect(settings, command=command)
    await conn.close()


def _reader_gone() -> bool:
    """Whether whoever read our stdout has gone: a pipe whose reading end is closed
    (``importd status | head``) polls as an error. A broken pipe elsewhere (a database
    socket) is not this."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # no file (captured), or no poll()
        return False
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _output_closed() -> int:
    """End quietly, as grep or git do when their reader goes away: no message, status
    128 + SIGPIPE. What stdout still buffers goes to /dev/null, so that Python's flush at
    exit does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return int(ExitCode.OUTPUT_CLOSED)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``importd`` console script."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader gone shows here, not in Python's flush at exit
    except BrokenPipeError:
        if not _reader_gone():
            raise
        return _output_closed()
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except config.ConfigError as exc:
        return _fail(str(exc), ExitCode.CONFIG)
    # drain: a bar on a TTY, a line every 5 s otherwise; a line per job only at debug.
    quiet_per_job = args.command == "drain"
    logs.configure(
        settings.log_level,
        settings.log_format,
        per_job=frozenset({"job_completed"}) if quiet_per_job else frozenset(),
    )
    try:
        if args.command == "run" and args.embedded is not None:
            return daemon.run_embedded(settings, Path(args.embedded) if args.embedded else None)
        if args.command in ("run", "drain"):
            settings.require_dsn()
            settings.effective_listen_dsn  # noqa: B018 (checked now: exit 3, not a crash)
            drain = None
            # drain's report on what it left pending comes last, after its summary.
            unserved: dict[str, int] = {}
            if args.command == "drain":
                bar = Progress("drain", 0)
                drain = daemon.DrainOptions(
                    on_progress=bar.update,
                    on_unserved=unserved.update,
                    queues=args.queues,
                    kinds=args.kinds,
                    max_jobs=args.max_jobs,
                    timeout=args.timeout,
                )
            code = daemon.run(settings, drain)
            if drain is not None:
                bar.finish(exit_code=int(code))
                _say_unserved(unserved)
            return code
        if args.command == "migrate":
            return asyncio.run(_migrate(settings, args.check))
        if args.command == "enqueue":
            return asyncio.run(_enqueue(settings, args))
        if args.command == "config":
            print(_render_config(settings, as_json=args.json))
            return 0
        if args.command == "doctor":
            checks = asyncio.run(doctor.run(settings))
            print(doctor.render(checks))
            return doctor.exit_code(checks)
        if args.command in ("status", "show", "retry", "cancel", "prune"):
            return asyncio.run(_operate(settings, args))
        if args.command == "web":
            return _web(settings)
    except config.ConfigError as exc:
        return _fail(str(exc), ExitCode.CONFIG)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except migrate.SchemaMismatch as exc:
        return _fail(str(exc), ExitCode.SCHEMA)
    except db.ERRORS as exc:
        return _fail(f"database error: {db.describe_db_error(exc)}", ExitCode.ERROR)
    except (OSError, TimeoutError) as exc:  # the connection broke after it was made
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            return _output_closed()  # no: our reader went away
        return _fail(f"lost the database connection: {type(exc).__name__}: {exc}", ExitCode.ERROR)
    return _fail(f"unknown command {args.command}", ExitCode.USAGE)


def run_main() -> None:
    """``python -m importd``."""
    sys.exit(main())
