"""Settings: one frozen object built from flags > environment > TOML file > defaults.

Each setting is declared once, as a field of ``Settings`` (its type is the annotation, the
rest is given to ``setting()``); ``FIELDS`` lists them for the CLI's flags, ``load``,
``importd config`` and the README's table (checked by tests/unit/test_settings.py).

Secrets (the DSNs, the tokens) may also come from files: ``IMPORTD_DSN_FILE`` or, under
systemd's ``LoadCredential=``, ``$CREDENTIALS_DIRECTORY/dsn``. They are never printed
unredacted.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import socket
import stat
import tomllib
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import urls
from .lanes import QueueSlots, RateLimit
from .redaction import (
    MIN_SECRET_LENGTH,
    hide_userinfo,
    redact,
    register_secret,
    secrets_in,
    url_password,
)

DEFAULT_CONFIG_PATH = Path("/etc/importd/importd.toml")

_T = TypeVar("_T")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says what to do."""


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _str_list(text: Any) -> tuple[str, ...]:
    if isinstance(text, list | tuple):
        return tuple(str(item) for item in text)
    return tuple(item.strip() for item in str(text).split(",") if item.strip())


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: Any) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{str(text)!r} is not a duration (like 90s, 15m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$", re.ASCII)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
}


def parse_bytes(text: Any) -> int:
    """Bytes in ``8388608``, ``8 MiB``, ``512KiB``, ``1.5 GiB`` (binary units: KiB, MiB,
    GiB), ``10 MB`` (decimal: kB, MB, GB) or ``100 B``; units in any letter case. A
    fraction must come to a whole number of bytes."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(
            f"{str(text)[:40]!r} is not a size (like 4194304, 512 KiB, 8 MiB, 1 GiB or 10 MB)"
        )
    number: str = match.group(1)
    whole, _, fraction = number.partition(".")
    scale: int = 10 ** len(fraction)
    numerator = (int(whole) * scale + int(fraction or "0")) * _SIZE_UNITS[unit]
    if numerator % scale:
        raise ValueError(f"{str(text)[:40]!r} is not a whole number of bytes")
    return numerator // scale


def _distinct(what: str, keys: list[str]) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError(what)


def _queue_list(items: tuple[str, ...]) -> None:
    _distinct("a queue is named twice", [QueueSlots.parse(item).name for item in items])


def _rate_list(items: tuple[str, ...]) -> None:
    keys = [RateLimit.parse(item).key for item in items]
    _distinct("two rate limits for the same queue or kind", keys)


def _url_prefix_list(items: tuple[str, ...]) -> None:
    for item in items:
        try:
            urls.parse_prefix(item)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None


def _proxy_list(items: tuple[str, ...]) -> None:
    for item in items:
        if item.strip() == "*":
            raise ValueError(
                "'*' would believe any client's X-Forwarded-Proto and X-Forwarded-For: name "
                "the proxy's own address (127.0.0.1 for one on this machine)"
            )
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
        if network.prefixlen < (8 if network.version == 4 else 32) and not network.is_private:
            # (0.0.0.0/0 is '*'; two /1 networks are too.)
            raise ValueError(
                f"{item!r} is too wide to name a proxy: like '*', it would believe the "
                "X-Forwarded-Proto and X-Forwarded-For of clients all over the internet; "
                "name the proxy's own address"
            )


def _root_list(roots: tuple[str, ...]) -> None:
    for root in roots:
        if not os.path.isabs(root):
            raise ValueError(f"{root!r} is a relative path: give the directory's absolute path")
        try:
            info = os.stat(root)
        except FileNotFoundError:
            raise ValueError(f"{root} does not exist") from None
        except OSError as exc:
            raise ValueError(f"{root}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"{root} is not a directory")


def _masked_dsn(dsn: str) -> str:
    """``dsn`` as ``importd config`` shows it: its host and database, every password
    masked. A URL's userinfo is read to its last "@" and the password from its first
    ":", so a password the redaction cannot read as a URL's (a raw "#", "/", "?" or a
    blank in it, which also keeps it from being registered) is masked whole too."""
    parts = url_password(dsn)
    return redact(dsn if parts is None else f"{parts[0]}***{parts[2]}")


def check_dsn(dsn: str, name: str) -> None:
    """A ConfigError, that quotes no part of ``dsn``, where the driver could not read it
    as a connection URL. Read as asyncpg reads it (urllib's parse, the userinfo up to the
    first "@", each host's port after its first ":", the query parsed strictly): its own
    errors quote what they could not read, which for a password holding "#", "/", "?",
    "@", "[" or "]" (not percent-encoded) is part of the password."""
    try:
        parsed = urllib.parse.urlparse(dsn)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"the {name} setting is not a postgresql:// URL (like postgresql://user@host:5432/db)"
        )
    try:
        if parsed is None:
            raise ValueError
        hosts = [parsed.netloc.partition("@")[2] if "@" in parsed.netloc else parsed.netloc]
        if parsed.query:
            query = urllib.parse.parse_qs(parsed.query, strict_parsing=True)
            hosts += query.get("host", [])[-1:]
            for ports in query.get("port", [])[-1:]:
                for port in ports.split(","):
                    int(port)
        for hostlist in filter(None, hosts):
            for spec in hostlist.split(","):
                if spec[0] == "[":
                    if not re.match(r"(?:\[([^\]]+)\])(?::([0-9]+))?", spec):
                        raise ValueError
                elif spec[0] != "/":
                    address, _, port = spec.partition(":")
                    number = int(urllib.parse.unquote(port)) if port else 0
                    # (A socket's port names its file; a TCP port past 65535 the driver
                    # reads, and the socket refuses.)
                    socket_path = urllib.parse.unquote(address).startswith("/")
                    if not socket_path and not 0 <= number <= 65535:
                        raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(
            f"the {name} setting cannot be read as a connection URL: a password that holds "
            '"#", "/", "?", "@", "[" or "]" must be percent-encoded in it (%23, %2F, %3F, '
            "%40, %5B, %5D)"
        ) from None


def format_duration(seconds: float) -> str:
    """``seconds`` as the largest whole unit ``parse_duration`` reads (``7d``, ``90s``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


# The commands whose flags a setting has (``importd config`` takes every setting's flag).
EVERY_COMMAND: tuple[str, ...] = ("*",)
DAEMON: tuple[str, ...] = ("run", "drain")

Masking = Literal["", "passwords", "whole"]
Unit = Literal["", "bytes", "duration"]
Kind = Literal["bool", "int", "float", "str", "list"]


@dataclass(frozen=True)
class Setting:
    """What a field of ``Settings`` declares besides its name, type and default (see
    ``setting``)."""

    help: str
    flag: str | None
    metavar: str | None
    commands: tuple[str, ...]
    masked: Masking
    also_env: tuple[str, ...]
    at_least: float | None
    above: float | None
    at_most: float | None
    choices: tuple[str, ...]
    unit: Unit
    check: Callable[[tuple[str, ...]], None] | None
    shown: str | None
    handler: bool


def setting(
    default: _T,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    commands: tuple[str, ...] = DAEMON,
    masked: Masking = "",
    also_env: tuple[str, ...] = (),
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    choices: tuple[str, ...] = (),
    unit: Unit = "",
    check: Callable[[tuple[str, ...]], None] | None = None,
    shown: str | None = None,
    handler: bool = False,
) -> _T:
    """Declare one setting, as a field of ``Settings`` whose annotation is its type.

    ``help`` is its line in ``--help``. ``flag`` is its command-line flag when not
    ``--<name>`` (``--no-<name>`` for a switch that is on by default), taken by the
    ``commands`` named. ``masked`` makes it a secret: ``"passwords"`` for a DSN (its
    passwords are masked), ``"whole"`` for a token; a secret may also come from
    ``IMPORTD_<NAME>_FILE`` or ``$CREDENTIALS_DIRECTORY/<name>``. ``also_env`` names
    environment variables read after ``IMPORTD_<NAME>``. ``at_least``, ``above`` and
    ``at_most`` bound a number, ``choices`` a string, ``check`` a list (it raises
    ValueError). ``unit`` says how a number is read and shown (``duration``: 90s, 15m,
    12h, 7d; ``bytes``: 8388608, 512 KiB, 8 MiB, 10 MB, shown in MiB). ``shown`` is how
    the default reads when its value says little (``None`` meaning "computed").
    ``handler`` puts it in the handlers' part, ``context.HandlerSettings`` (never a DSN:
    a handler gets no connection string)."""
    if handler and masked == "passwords":
        raise ValueError("a DSN is never a handler setting")
    declared = Setting(
        help=help,
        flag=flag,
        metavar=metavar,
        commands=commands,
        masked=masked,
        also_env=also_env,
        at_least=at_least,
        above=above,
        at_most=at_most,
        choices=choices,
        unit=unit,
        check=check,
        shown=shown,
        handler=handler,
    )
    return dataclasses.field(default=default, metadata={_KEY: declared})


_KEY = "importd.setting"


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one importd process: one field per setting, each
    declared once (type, default, flag, secrecy, help); flags, the environment, the TOML
    file, ``importd config``, validation and the README's table all follow from it."""

    dsn: str | None = setting(
        None,
        "PostgreSQL connection string",
        commands=EVERY_COMMAND,
        masked="passwords",
        also_env=("DATABASE_URL",),
    )
    listen_dsn: str | None = setting(
        None,
        "direct connection for LISTEN when dsn goes through a pooler",
        commands=("run", "doctor", "web"),
        masked="passwords",
        shown="dsn",
    )
    concurrency: int = setting(
        8,
        "handlers running at once (also the slots of each --queue given without =SLOTS)",
        at_least=1,
    )
    poll_interval: float = setting(10.0, "seconds between polls without notifications", above=0)
    listen: bool = setting(
        True,
        "LISTEN for notifications; off (--no-listen): poll only, for setups that cannot LISTEN",
        commands=("run", "doctor"),
    )
    shutdown_grace: float = setting(
        30.0, "seconds running jobs get to finish after SIGTERM", at_least=0
    )
    lease_margin: float = setting(
        30.0, "seconds a lease outlasts the job's timeout (crash detection delay)", above=0
    )
    heartbeat_interval: float = setting(
        1.0, "seconds between progress / lease writes of a running job", above=0
    )
    loop_block_warn: float = setting(
        1.0,
        "seconds the event loop may stall before loop_blocked is logged (a blocking handler)",
        above=0,
    )
    rescue_interval: float = setting(5.0, "seconds between rescues of expired leases", above=0)
    probe_interval: float = setting(
        5.0, "seconds between the listener's self-NOTIFY health probes", above=0
    )
    backoff_base: float = setting(1.0, "first retry delay in seconds", above=0)
    backoff_max: float = setting(600.0, "retry delay cap in seconds", above=0)
    backoff_jitter: float = setting(
        0.5, "fraction of each retry delay that is randomised", at_least=0, at_most=1
    )
    handlers: tuple[str, ...] = setting(
        (), "extra modules to import for their @importd.handler kinds", metavar="MODULE"
    )
    queues: tuple[str, ...] = setting(
        (),
        "queues to serve, each NAME or NAME=SLOTS with slots of its own (none: every "
        "queue, sharing concurrency)",
        flag="--queue",
        metavar="NAME[=SLOTS]",
        check=_queue_list,
        shown="all",
    )
    fair: bool = setting(
        True,
        "claim round-robin across tenants within a priority; off (--no-fair): priority, run_at, id",
    )
    tenant_concurrency: int | None = setting(
        None,
        "running jobs per tenant at most, counted over every daemon",
        metavar="K",
        at_least=1,
        shown="off",
    )
    rate_limits: tuple[str, ...] = setting(
        (),
        "job starts over every daemon: QUEUE=10/s, kind:KIND=600/min, optional :BURST",
        flag="--rate-limit",
        metavar="LIMIT",
        check=_rate_list,
    )
    import_roots: tuple[str, ...] = setting(
        (),
        "directories file:// sources may be read from, absolute paths (none: file "
        "sources are refused)",
        flag="--import-root",
        metavar="DIR",
        commands=(*DAEMON, "doctor"),
        check=_root_list,
        handler=True,
    )
    url_prefixes: tuple[str, ...] = setting(
        (),
        "URL prefixes https:// sources and http jobs may reach, compared by scheme, host, "
        "port and whole path segments (none: refused)",
        flag="--url-prefix",
        metavar="URL",
        commands=(*DAEMON, "doctor"),
        check=_url_prefix_list,
        handler=True,
    )
    tables: tuple[str, ...] = setting(
        (),
        "tables imports may write: table, schema.table or schema.* (none: every import refused)",
        flag="--table",
        metavar="NAME",
        commands=(*DAEMON, "doctor"),
        handler=True,
    )
    http_url: str | None = setting(
        None,
        "default endpoint of http jobs without payload.url",
        metavar="URL",
        commands=(*DAEMON, "doctor"),
        handler=True,
    )
    http_token: str | None = setting(
        None,
        "bearer token sent by http jobs",
        commands=(*DAEMON, "doctor"),
        masked="whole",
        handler=True,
    )
    http_token_prefixes: tuple[str, ...] = setting(
        (),
        "URL prefixes http_token may be sent to, compared like url_prefixes (none: the "
        "scheme, host and port of http_url only)",
        flag="--http-token-prefix",
        metavar="URL",
        commands=(*DAEMON, "doctor"),
        check=_url_prefix_list,
        handler=True,
    )
    copy_chunk_rows: int = setting(
        20_000, "rows per COPY chunk (and checkpoint)", at_least=1, handler=True
    )
    copy_chunk_bytes: int = setting(
        8 * 2**20,
        "bytes per COPY chunk at most: a number, or with a unit (KiB, MiB, GiB; kB, MB, GB)",
        at_least=1,
        unit="bytes",
        handler=True,
    )
    copy_streams: int = setting(
        1,
        "connections one import COPYs over at once (direct and atomic imports)",
        at_least=1,
        handler=True,
    )
    max_record_bytes: int = setting(
        4 * 2**20,
        "longest CSV/NDJSON record accepted, in bytes or with a unit like copy_chunk_bytes; a "
        "longer one is a row error (memory stays flat)",
        at_least=1,
        unit="bytes",
        handler=True,
    )
    retention_completed: float = setting(
        7 * 86400.0,
        "completed jobs older than this are pruned by the daemon (7d, 12h, ...)",
        metavar="AGE",
        unit="duration",
    )
    retention_failed: float = setting(
        30 * 86400.0,
        "failed and cancelled jobs older than this are pruned by the daemon",
        metavar="AGE",
        unit="duration",
    )
    metrics_address: str | None = setting(
        None,
        "host:port for /metrics, /healthz and /readyz",
        metavar="HOST:PORT",
        shown="off",
    )
    statement_cache_size: int = setting(
        100,
        "asyncpg prepared statement cache (0 behind a transaction-mode pooler)",
        commands=(*DAEMON, "doctor", "web"),
        at_least=0,
    )
    pool_size: int | None = setting(
        None,
        "connections for handlers (an import holds one per COPY stream, an atomic one one "
        "more for its mover)",
        at_least=1,
        shown="(copy_streams + 1) × slots + 2",  # noqa: RUF001 - the README's sign
    )
    worker_name: str | None = setting(
        None,
        "the start of this daemon's name in locked_by: each process adds ':' and 6 random hex "
        "digits",
        shown="host:pid",
    )
    log_level: str = setting(
        "info", "log level", commands=EVERY_COMMAND, choices=("debug", "info", "warning", "error")
    )
    log_format: str = setting(
        "auto",
        "log format (auto: console on a TTY, JSON otherwise and under systemd)",
        commands=EVERY_COMMAND,
        choices=("auto", "json", "console"),
    )
    # importd web: the dashboard.
    web_listen: str | None = setting(
        "127.0.0.1:8080",
        "host:port of importd web (any address but loopback needs web_token)",
        flag="--listen",
        metavar="HOST:PORT",
        commands=("web",),
    )
    web_token: str | None = setting(
        None,
        "token importd web asks for (needed off loopback, and for retry / cancel)",
        commands=("web",),
        masked="whole",
    )
    web_read_only: bool = setting(
        False, "importd web without retry / cancel", flag="--read-only", commands=("web",)
    )
    web_proxies: tuple[str, ...] = setting(
        (),
        "addresses (or networks) of the reverse proxies in front of importd web whose "
        "X-Forwarded-Proto and X-Forwarded-For it believes, a TLS proxy's say (none: no one's)",
        flag="--proxy",
        metavar="ADDRESS",
        commands=("web",),
        check=_proxy_list,
    )

    def __post_init__(self) -> None:
        # Whoever builds settings (the CLI, a test, an embedding program), their secrets
        # are masked in every redacted text from then on.
        for f in FIELDS:
            value = getattr(self, f.name)
            if not f.secret or not isinstance(value, str):
                continue
            if f.declared.masked == "passwords":
                # Its passwords, not the whole string: `importd config` and logs still
                # show which host and database are meant.
                for secret in secrets_in(value):
                    register_secret(secret)
            else:
                register_secret(value)

    def too_short_to_mask(self) -> list[str]:
        """The secret settings holding a value (a DSN: a password) shorter than
        ``MIN_SECRET_LENGTH``, which redaction cannot mask in free text: their names only."""
        short = []
        for f in FIELDS:
            value = getattr(self, f.name)
            if not f.secret or not isinstance(value, str) or not value:
                continue
            found = secrets_in(value) if f.declared.masked == "passwords" else [value]
            if any(len(secret) < MIN_SECRET_LENGTH for secret in found):
                short.append(f.name)
        return short

    def require_dsn(self) -> str:
        """The DSN, or a ConfigError that says how to give one."""
        if not self.dsn:
            f = _BY_NAME["dsn"]
            raise ConfigError(
                f"no database given: pass {f.option}, or set "
                f"{' or '.join((f.env, *f.declared.also_env))} (e.g. postgresql://user@host/db)"
            )
        check_dsn(self.dsn, "dsn")
        return self.dsn

    @property
    def effective_listen_dsn(self) -> str:
        """The DSN of the LISTEN connection."""
        if self.listen_dsn:
            check_dsn(self.listen_dsn, "listen_dsn")
        return self.listen_dsn or self.require_dsn()

    @property
    def effective_pool_size(self) -> int:
        """Connections of the handlers' pool: an atomic import holds one per COPY stream
        and one for its mover, plus a couple for the rest."""
        return self.pool_size or (self.copy_streams + 1) * self.total_slots + 2

    @property
    def total_slots(self) -> int:
        """Handlers this daemon may run at once, over all its queues."""
        specs = self.queue_slots
        if not specs:
            return self.concurrency
        return sum(q.slots or self.concurrency for q in specs)

    @property
    def queue_slots(self) -> tuple[QueueSlots, ...]:
        """The queues to serve with their slots (empty: every queue)."""
        return tuple(QueueSlots.parse(item) for item in self.queues)

    @property
    def parsed_rate_limits(self) -> tuple[RateLimit, ...]:
        """The rate limits, parsed."""
        return tuple(RateLimit.parse(item) for item in self.rate_limits)

    @property
    def worker_id(self) -> str:
        """The start of the name written to ``locked_by``: each daemon process adds
        ``:`` and 6 random hex digits, so that two given one name never share a lease."""
        return self.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def redacted(self) -> dict[str, Any]:
        """Every setting, secrets with their passwords masked."""
        out: dict[str, Any] = {}
        for f in FIELDS:
            value = getattr(self, f.name)
            if f.secret and isinstance(value, str):
                # A DSN shows its host and database with every password masked; any
                # other secret (the bearer token) is masked whole.
                value = _masked_dsn(value) if f.declared.masked == "passwords" else "***"
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"


@dataclass(frozen=True)
class Field:
    """One setting as the rest of importd sees it: the field of ``Settings`` (name, type,
    default) with its declaration, and what follows from them."""

    name: str
    kind: Kind
    optional: bool  # None is a value (unset)
    default: Any
    declared: Setting

    @property
    def option(self) -> str:
        """The command-line flag that sets it."""
        if self.declared.flag:
            return self.declared.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.default is True else f"--{dashed}"

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "IMPORTD_" + self.name.upper()

    @property
    def help(self) -> str:
        """Its line of help."""
        return self.declared.help

    @property
    def secret(self) -> bool:
        """Whether it is masked (and may come from a file)."""
        return bool(self.declared.masked)

    def takes_flag_in(self, command: str) -> bool:
        """Whether ``importd COMMAND`` has its flag (``importd config`` has every one)."""
        commands = self.declared.commands
        return command == "config" or commands == EVERY_COMMAND or command in commands

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` and the README show it."""
        default = self.default
        if self.declared.shown is not None:
            return self.declared.shown
        if default is None or default == ():
            return "—"
        if isinstance(default, bool):
            return "true" if default else "false"
        if self.declared.unit == "bytes" and default % 2**20 == 0:
            return f"{default // 2**20} MiB"
        if self.declared.unit == "duration":
            return format_duration(default)
        if isinstance(default, float):
            return f"{default:g}"
        return str(default)

    def parse(self, raw: Any) -> Any:
        """The value of ``raw`` (a flag's, environment variable's or file's); ValueError
        or TypeError saying what is wrong with it."""
        d = self.declared
        if self.optional and (raw is None or raw == ""):
            return None
        if self.kind == "bool":
            return _bool(raw)
        if self.kind == "list":
            items = _str_list(raw)
            if d.check is not None:
                d.check(items)
            return items
        if self.kind == "str":
            text = str(raw)
            if d.choices:
                text = text.lower()
                if text not in d.choices:
                    raise ValueError(f"must be one of {', '.join(d.choices)}")
            return text
        if self.optional and str(raw).strip().lower() in ("0", "off", "none"):
            return None  # an optional number: 0, off or none leave it unset
        if isinstance(raw, bool):
            raise ValueError("must be a number")  # TOML's true is no count
        number: float
        if d.unit == "duration":
            number = parse_duration(raw)
        elif d.unit == "bytes":
            number = parse_bytes(raw)
        elif self.kind == "int":
            # Through its text: 3.5 in the file is refused as "3.5" on the command line is.
            number = int(str(raw))
        else:
            number = float(raw)
        _check_range(number, d)
        return number


def _check_range(number: float, d: Setting) -> None:
    # Written so that NaN is out of every range.
    if d.at_least is not None and d.at_most is not None:
        if not d.at_least <= number <= d.at_most:
            raise ValueError(f"must be between {d.at_least:g} and {d.at_most:g}")
    elif d.at_least is not None and not number >= d.at_least:
        raise ValueError(f"must be at least {d.at_least:g}")
    elif d.at_most is not None and not number <= d.at_most:
        raise ValueError(f"must be at most {d.at_most:g}")
    if d.above is not None and not number > d.above:
        raise ValueError(f"must be greater than {d.above:g}")


def _field(f: dataclasses.Field[Any], annotation: Any) -> Field:
    declared = f.metadata.get(_KEY)
    if not isinstance(declared, Setting):
        raise TypeError(f"Settings.{f.name}: declare it with config.setting()")
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = len(args) < len(typing.get_args(annotation))
    base = args[0] if optional and len(args) == 1 else annotation
    kinds: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", str: "str"}
    kind = "list" if base == tuple[str, ...] else kinds.get(base)
    if kind is None:
        raise TypeError(f"Settings.{f.name}: a setting cannot be of type {annotation}")
    return Field(f.name, kind, optional, f.default, declared)


_HINTS = typing.get_type_hints(Settings)
FIELDS: tuple[Field, ...] = tuple(_field(f, _HINTS[f.name]) for f in dataclasses.fields(Settings))
_BY_NAME = {f.name: f for f in FIELDS}


def how_to_set(
    name: str, example: str, command: str | None = None, current: tuple[str, ...] = ()
) -> str:
    """How to set ``name`` to ``example`` (add it, for a list: ``current`` are the values
    it holds now, which the variable and the file key must keep): its flag, its
    environment variable and its key in the config file, for refusals that point at the
    setting. The flag only where ``importd COMMAND`` takes it (None: the flag of
    whichever command has it, for the daemon's refusals: ``run`` has the flags they
    name). For a setting that takes a value (a switch's flag takes none)."""
    f = _BY_NAME[name]
    if f.kind == "bool":
        raise ValueError(f"{name} is a switch: {f.option}, {f.env}=true/false")
    values = [*current, example]
    in_file = json.dumps(values if f.kind == "list" else example)
    env_value = ",".join(values) if f.kind == "list" else example
    flag = f"{f.option} {example}, " if command is None or f.takes_flag_in(command) else ""
    return (
        f"the '{name}' setting: {flag}{f.env}={env_value}, or {name} = {in_file} in the config file"
    )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    # Keys may stand at the top level, under [importd], or both (a line added above the
    # table of the shipped file): one set of settings, each given once.
    merged = {key: value for key, value in data.items() if key != "importd"}
    section = data.get("importd", {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [importd] must be a table")
    for key, value in section.items():
        if key in merged:
            raise ConfigError(
                f"config file {path}: {key!r} is set both at the top level and under "
                "[importd]; keep one"
            )
        merged[key] = value
    return merged


def _read_secret_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} from {path}: {exc.strerror}") from exc


def load(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_path: str | Path | None = None,
) -> Settings:
    """Build the settings. ``flags`` holds only what was given on the command line."""
    env = os.environ if environ is None else environ
    given = {k: v for k, v in (flags or {}).items() if v is not None}

    path: Path | None
    if config_path is not None:
        path = Path(config_path)
    elif env.get("IMPORTD_CONFIG"):
        path = Path(env["IMPORTD_CONFIG"])
    else:
        path = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None
    from_file = _read_file(path) if path is not None else {}
    for key in from_file:
        if key not in _BY_NAME:
            near = difflib.get_close_matches(key, list(_BY_NAME), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}")

    values: dict[str, Any] = {}
    for f in FIELDS:
        source, raw = "default", None
        if f.name in given:
            source, raw = f.option, given[f.name]
        elif f.env in env:
            source, raw = f.env, env[f.env]
        elif any(env.get(name) for name in f.declared.also_env):
            source = next(name for name in f.declared.also_env if env.get(name))
            raw = env[source]
        elif f.secret and env.get(f.env + "_FILE"):
            source = f.env + "_FILE"
            raw = _read_secret_file(Path(env[f.env + "_FILE"]), f.name)
        elif (
            f.secret
            and env.get("CREDENTIALS_DIRECTORY")
            and (Path(env["CREDENTIALS_DIRECTORY"]) / f.name).is_file()
        ):
            source = "$CREDENTIALS_DIRECTORY/" + f.name
            raw = _read_secret_file(Path(env["CREDENTIALS_DIRECTORY"]) / f.name, f.name)
        elif f.name in from_file:
            source, raw = f"{path}: {f.name}", from_file[f.name]
        if source == "default":
            continue
        try:
            values[f.name] = f.parse(raw)
        except (TypeError, ValueError) as exc:
            shown = "***" if f.secret else repr(raw)
            # (The reason may quote the value again: a URL's userinfo hidden in both.)
            raise ConfigError(hide_userinfo(f"{source}: bad value {shown}: {exc}")) from None
    return Settings(**values)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes`` applied."""
    return dataclasses.replace(settings, **changes)
