"""Settings: one frozen object built from flags > environment > TOML file > defaults.

Secrets (the DSNs) may also come from files: ``IMPORTD_DSN_FILE`` or, under systemd's
``LoadCredential=``, ``$CREDENTIALS_DIRECTORY/dsn``. They are never printed unredacted.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import urls
from .lanes import QueueSlots, RateLimit
from .redaction import redact, register_secret, secrets_in

DEFAULT_CONFIG_PATH = Path("/etc/importd/importd.toml")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says what to do."""


def _positive_int(text: Any) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(text: Any) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_float(text: Any) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


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
        raise ValueError(f"{text!r} is not a duration (like 90s, 15m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _optional_positive_int(text: Any) -> int | None:
    if text in (None, "", 0, "0", "off", "none"):
        return None
    return _positive_int(text)


def _queue_list(text: Any) -> tuple[str, ...]:
    items = _str_list(text)
    names = [QueueSlots.parse(item).name for item in items]
    if len(set(names)) != len(names):
        raise ValueError("a queue is named twice")
    return items


def _rate_list(text: Any) -> tuple[str, ...]:
    items = _str_list(text)
    keys = [RateLimit.parse(item).key for item in items]
    if len(set(keys)) != len(keys):
        raise ValueError("two rate limits for the same queue or kind")
    return items


def _url_prefix_list(text: Any) -> tuple[str, ...]:
    items = _str_list(text)
    for item in items:
        try:
            urls.parse_prefix(item)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
    return items


def _root_list(text: Any) -> tuple[str, ...]:
    roots = _str_list(text)
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
    return roots


def how_to_set(name: str, example: str) -> str:
    """How to add ``example`` to the list setting ``name``: its flag, its environment
    variable and its key in the config file, for refusals that point at the setting."""
    f = _BY_NAME[name]
    return (
        f"the '{name}' setting: {f.option} {example}, {f.env}={example}, or "
        f'{name} = ["{example}"] in the config file'
    )


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        value = str(text).lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _optional_str(text: Any) -> str | None:
    return str(text) if text not in (None, "") else None


@dataclass(frozen=True)
class Field:
    """One setting: its parser, default, and the line of help the CLI and README show."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False
    flag: str | None = None  # the command-line flag, when not --<name>

    @property
    def option(self) -> str:
        """The command-line flag that sets it."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "IMPORTD_" + self.name.upper()


FIELDS: tuple[Field, ...] = (
    Field("dsn", _optional_str, None, "PostgreSQL connection string (also DATABASE_URL)", True),
    Field(
        "listen_dsn",
        _optional_str,
        None,
        "direct connection for LISTEN when the pool goes through a pooler",
        True,
    ),
    Field(
        "concurrency",
        _positive_int,
        8,
        "handlers running at once (also the slots of each --queue given without =SLOTS)",
    ),
    Field("poll_interval", _positive_float, 10.0, "seconds between polls without notifications"),
    Field("listen", _bool, True, "LISTEN for notifications (false: poll only)"),
    Field(
        "shutdown_grace",
        _non_negative_float,
        30.0,
        "seconds running jobs get to finish after SIGTERM",
    ),
    Field(
        "lease_margin",
        _positive_float,
        30.0,
        "seconds a lease outlasts the job's timeout (crash detection delay)",
    ),
    Field(
        "heartbeat_interval",
        _positive_float,
        1.0,
        "seconds between progress / lease writes of a running job",
    ),
    Field(
        "loop_block_warn",
        _positive_float,
        1.0,
        "seconds the event loop may stall before loop_blocked is logged (a blocking handler)",
    ),
    Field("rescue_interval", _positive_float, 5.0, "seconds between rescues of expired leases"),
    Field(
        "probe_interval",
        _positive_float,
        5.0,
        "seconds between the listener's self-NOTIFY health probes",
    ),
    Field("backoff_base", _positive_float, 1.0, "first retry delay in seconds"),
    Field("backoff_max", _positive_float, 600.0, "retry delay cap in seconds"),
    Field(
        "backoff_jitter",
        _non_negative_float,
        0.5,
        "fraction of each retry delay that is randomised (0-1)",
    ),
    Field("handlers", _str_list, (), "extra modules to import for their @importd.handler kinds"),
    Field(
        "queues",
        _queue_list,
        (),
        "queues to serve, each NAME or NAME=SLOTS with slots of its own (empty: every "
        "queue, sharing concurrency)",
        flag="--queue",
    ),
    Field(
        "fair",
        _bool,
        True,
        "claim round-robin across tenants within a priority (false: priority, run_at, id)",
    ),
    Field(
        "tenant_concurrency",
        _optional_positive_int,
        None,
        "running jobs per tenant at most, over every daemon (default: no cap)",
    ),
    Field(
        "rate_limits",
        _rate_list,
        (),
        "job starts per second over every daemon: QUEUE=10/s, kind:KIND=600/min, optional :BURST",
        flag="--rate-limit",
    ),
    Field(
        "import_roots",
        _root_list,
        (),
        "directories file:// sources may be read from (repeatable; none: file sources are refused)",
        flag="--import-root",
    ),
    Field(
        "url_prefixes",
        _url_prefix_list,
        (),
        "URL prefixes https:// sources and http jobs may reach, compared by scheme, host, "
        "port and whole path segments (none: refused)",
        flag="--url-prefix",
    ),
    Field(
        "tables",
        _str_list,
        (),
        "a table imports may write: table, schema.table or schema.* (repeatable; none: "
        "every import refused)",
        flag="--table",
    ),
    Field("http_url", _optional_str, None, "default endpoint of http jobs without payload.url"),
    Field("http_token", _optional_str, None, "bearer token sent by http jobs", True),
    Field("copy_chunk_rows", _positive_int, 20_000, "rows per COPY chunk (and checkpoint)"),
    Field("copy_chunk_bytes", _positive_int, 8 * 2**20, "bytes per COPY chunk at most"),
    Field(
        "copy_streams",
        _positive_int,
        1,
        "connections one import COPYs over at once (direct and atomic imports)",
    ),
    Field(
        "max_record_bytes",
        _positive_int,
        4 * 2**20,
        "longest CSV/NDJSON record accepted; a longer one is a row error (memory stays flat)",
    ),
    Field(
        "retention_completed",
        parse_duration,
        7 * 86400.0,
        "completed jobs older than this are pruned by the daemon (7d, 12h, ...)",
    ),
    Field(
        "retention_failed",
        parse_duration,
        30 * 86400.0,
        "failed and cancelled jobs older than this are pruned by the daemon",
    ),
    Field(
        "metrics_address",
        _optional_str,
        None,
        "host:port for /metrics, /healthz and /readyz (off when unset)",
    ),
    Field(
        "statement_cache_size",
        int,
        100,
        "asyncpg prepared statement cache (0 behind a transaction-mode pooler)",
    ),
    Field(
        "pool_size",
        lambda t: _positive_int(t) if t not in (None, "", 0) else None,
        None,
        "connections for handlers (default: (copy_streams + 1) x concurrency + 2)",
    ),
    Field("worker_name", _optional_str, None, "this daemon's name in locked_by (default host:pid)"),
    Field("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Field(
        "log_format",
        _choice("auto", "json", "console"),
        "auto",
        "log format (auto: console on a TTY, JSON otherwise and under systemd)",
    ),
    # importd web: the dashboard.
    Field(
        "web_listen",
        _optional_str,
        "127.0.0.1:8080",
        "host:port of importd web (any address but loopback needs web_token)",
        flag="--listen",
    ),
    Field(
        "web_token",
        _optional_str,
        None,
        "token importd web asks for (needed off loopback, and for retry / cancel)",
        True,
    ),
    Field("web_read_only", _bool, False, "importd web without retry / cancel", flag="--read-only"),
)
_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one importd process."""

    dsn: str | None = None
    listen_dsn: str | None = None
    concurrency: int = 8
    poll_interval: float = 10.0
    listen: bool = True
    shutdown_grace: float = 30.0
    lease_margin: float = 30.0
    heartbeat_interval: float = 1.0
    loop_block_warn: float = 1.0
    rescue_interval: float = 5.0
    probe_interval: float = 5.0
    backoff_base: float = 1.0
    backoff_max: float = 600.0
    backoff_jitter: float = 0.5
    handlers: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    fair: bool = True
    tenant_concurrency: int | None = None
    rate_limits: tuple[str, ...] = ()
    import_roots: tuple[str, ...] = ()
    url_prefixes: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    http_url: str | None = None
    http_token: str | None = None
    copy_chunk_rows: int = 20_000
    copy_chunk_bytes: int = 8 * 2**20
    copy_streams: int = 1
    max_record_bytes: int = 4 * 2**20
    retention_completed: float = 7 * 86400.0
    retention_failed: float = 30 * 86400.0
    metrics_address: str | None = None
    statement_cache_size: int = 100
    pool_size: int | None = None
    worker_name: str | None = None
    log_level: str = "info"
    log_format: str = "auto"
    web_listen: str | None = "127.0.0.1:8080"
    web_token: str | None = None
    web_read_only: bool = False

    def __post_init__(self) -> None:
        # Whoever builds settings (the CLI, a test, an embedding program), their secrets
        # are masked in every redacted text from then on.
        for f in FIELDS:
            value = getattr(self, f.name)
            if not f.secret or not isinstance(value, str):
                continue
            if f.name in ("dsn", "listen_dsn"):
                # Its passwords, not the whole string: `importd config` and logs still
                # show which host and database are meant.
                for secret in secrets_in(value):
                    register_secret(secret)
            else:
                register_secret(value)

    def require_dsn(self) -> str:
        """The DSN, or a ConfigError that says how to give one."""
        if not self.dsn:
            raise ConfigError(
                "no database given: pass --dsn, or set IMPORTD_DSN or DATABASE_URL "
                "(e.g. postgresql://user@host/db)"
            )
        return self.dsn

    @property
    def effective_listen_dsn(self) -> str:
        """The DSN of the LISTEN connection."""
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
        """The name written to ``locked_by``."""
        return self.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def redacted(self) -> dict[str, Any]:
        """Every setting, secrets with their passwords masked."""
        out: dict[str, Any] = {}
        for f in FIELDS:
            value = getattr(self, f.name)
            if f.secret and isinstance(value, str):
                # A DSN shows its host and database with every password masked; any
                # other secret (the bearer token) is masked whole.
                value = redact(value) if f.name in ("dsn", "listen_dsn") else "***"
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("importd", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [importd] must be a table")
    return section


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
            raise ConfigError(f"config file {path}: unknown setting {key!r}")

    values: dict[str, Any] = {}
    for f in FIELDS:
        source, raw = "default", None
        if f.name in given:
            source, raw = f.option, given[f.name]
        elif f.env in env:
            source, raw = f.env, env[f.env]
        elif f.name == "dsn" and env.get("DATABASE_URL"):
            source, raw = "DATABASE_URL", env["DATABASE_URL"]
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
            raise ConfigError(f"{source}: bad value {shown}: {exc}") from None
    settings = Settings(**values)
    if settings.backoff_jitter > 1:
        raise ConfigError("backoff_jitter: must be between 0 and 1")
    return settings


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes`` applied."""
    return dataclasses.replace(settings, **changes)
