"""One source for each setting: its declaration on ``config.Settings`` makes its flag, its
environment variable, its file key, its validation, its line in ``importd config`` and
its row in the README. (The flags and variables through a real ``importd config``:
tests/acceptance/test_settings.py.)"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from importd import cli, config, daemon
from tests.helpers import ROOT

FIELDS = config.FIELDS

# A value for each list setting that its check accepts ("" stands for a directory that
# exists, made by the test).
LIST_SAMPLES = {
    "handlers": "tests.jobs",
    "queues": "imports=3",
    "rate_limits": "webhooks=10/s",
    "import_roots": "",
    "url_prefixes": "https://example.com/api/",
    "http_token_prefixes": "https://example.com/functions/",
    "tables": "public.customers",
    "web_proxies": "127.0.0.1",
}


def sample(field: config.Field, directory: Path) -> tuple[str, Any]:
    """A text a user could give for ``field`` and the value ``importd config --json``
    shows for it (not the default, so that it shows the text was read)."""
    if field.kind == "bool":
        return ("false" if field.default else "true"), not field.default
    if field.kind == "int":
        return "3", 3
    if field.kind == "float":
        return "0.25", 0.25
    if field.kind == "list":
        assert field.name in LIST_SAMPLES, f"add a sample {field.name} to LIST_SAMPLES"
        text = LIST_SAMPLES[field.name] or str(directory)
        return text, [text]
    if field.declared.choices:
        choice = [c for c in field.declared.choices if c != field.default][-1]
        return choice, choice
    if field.declared.masked == "passwords":
        return "postgresql://app:sample-pw@db/app", "postgresql://app:***@db/app"
    if field.declared.masked == "whole":
        return "sample-secret-1234567890", "***"
    return "sample.example:8123", "sample.example:8123"


def _empty(directory: Path) -> Path:
    """An empty config file: what a test loads is not what /etc/importd holds."""
    path = directory / "empty.toml"
    path.write_text("")
    return path


def test_every_setting_has_its_own_name_flag_and_environment_variable() -> None:
    names = [f.name for f in FIELDS]
    options = [f.option for f in FIELDS]
    envs = [f.env for f in FIELDS]
    assert len(set(names)) == len(names)
    assert len(set(options)) == len(options), "two settings share a flag"
    assert len(set(envs)) == len(envs)
    for f in FIELDS:
        assert re.fullmatch(r"--[a-z][a-z-]+", f.option), f.name
        assert f.env == "IMPORTD_" + f.name.upper()
        assert f.help, f.name
        assert f.parse(f.default) == f.default, f"{f.name}: its default is out of bounds"


def test_importd_config_toml_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    environ = {}
    for f in FIELDS:
        if not f.secret:
            environ[f.env] = sample(f, tmp_path)[0]
    chosen = config.load({}, environ=environ, config_path=_empty(tmp_path))
    text = cli._render_config(chosen, as_json=False)
    assert [
        line.split(" ")[1 if line.startswith("#") else 0] for line in text.splitlines()[1:]
    ] == [f.name for f in FIELDS]
    path = tmp_path / "importd.toml"
    path.write_text(text)
    assert config.load({}, environ={}, config_path=path) == chosen
    assert chosen != config.Settings()


@pytest.fixture
def no_outside_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CLI reads besides its flags is not this machine's: no IMPORTD_*
    variables, no /etc/importd/importd.toml."""
    for name in list(os.environ):
        if name.startswith("IMPORTD_") or name in ("DATABASE_URL", "CREDENTIALS_DIRECTORY"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


# The flags of the settings before they were made from the declarations: a script or a
# unit file may use any of them, so none may change its name or what it sets.
_EVERYWHERE = "--dsn --log-level --log-format "
_DAEMON = (
    _EVERYWHERE + "--concurrency --poll-interval --shutdown-grace --lease-margin "
    "--heartbeat-interval --loop-block-warn --rescue-interval --probe-interval --backoff-base "
    "--backoff-max --backoff-jitter --max-record-bytes --metrics-address "
    "--statement-cache-size --pool-size --worker-name --handlers --rate-limit "
    "--tenant-concurrency --import-root --table --url-prefix --no-fair --queue"
)
EARLIER_FLAGS = {
    "run": _DAEMON + " --listen-dsn --no-listen",
    "drain": _DAEMON,
    "doctor": _EVERYWHERE + "--listen-dsn --no-listen --import-root --table --url-prefix",
    "web": _EVERYWHERE + "--listen --read-only",
    **{
        c: _EVERYWHERE
        for c in ["migrate", "status", "show", "retry", "cancel", "prune", "config", "enqueue"]
    },
}


def test_earlier_flags_keep_their_names_and_settings(
    tmp_path: Path, no_outside_settings: None
) -> None:
    parser = cli.build_parser()
    for command, flags in EARLIER_FLAGS.items():
        for flag in flags.split():
            f = next(f for f in FIELDS if f.option == flag)
            text, _ = sample(f, tmp_path)
            argv = [command, flag] if f.kind == "bool" else [command, flag, text]
            argv += {"enqueue": ["csv"], "show": ["1"], "cancel": ["1"]}.get(command, [])
            loaded = cli._settings(parser.parse_args(argv))
            assert getattr(loaded, f.name) == f.parse(text), (command, flag)


def test_how_to_set_gives_advice_that_works(tmp_path: Path, no_outside_settings: None) -> None:
    for f in FIELDS:
        if f.kind == "bool":
            continue
        text, _ = sample(f, tmp_path)
        advice = config.how_to_set(f.name, text)
        match = re.fullmatch(
            rf"the '{f.name}' setting: (--\S+) (.+), (IMPORTD_\w+)=(.+), or "
            rf"{f.name} = (.+) in the config file",
            advice,
        )
        assert match, advice
        flag, flag_value, env, env_value, in_file = match.groups()
        by_flag = cli._settings(cli.build_parser().parse_args(["config", flag, flag_value]))
        by_env = config.load({}, environ={env: env_value}, config_path=_empty(tmp_path))
        path = tmp_path / "importd.toml"
        path.write_text(f"{f.name} = {in_file}\n")
        by_file = config.load({}, environ={}, config_path=path)
        expected = config.load({f.name: text}, environ={}, config_path=_empty(tmp_path))
        assert getattr(expected, f.name) != f.default
        for way in (by_flag, by_env, by_file):
            assert getattr(way, f.name) == getattr(expected, f.name), (f.name, advice)


def _readme_table() -> list[list[str]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| setting | environment | flag | default | meaning |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|", 4)])
    return rows


def test_the_readme_table_lists_each_setting_as_declared() -> None:
    rows = _readme_table()

    def code(cell: str) -> str:
        found = re.match(r"`([^`]+)`", cell)
        return found.group(1) if found else cell

    assert [code(row[0]) for row in rows] == [f.name for f in FIELDS]
    for row, f in zip(rows, FIELDS, strict=True):
        assert code(row[1]) == f.env, f.name
        assert code(row[2]) == f.option, f.name
        assert row[3].replace("`", "") == f.shown_default, f.name
        assert row[4], f.name


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"IMPORTD_CONCURRENCY": "0"}, "IMPORTD_CONCURRENCY: bad value '0': must be at least 1"),
        ({"IMPORTD_POLL_INTERVAL": "0"}, "must be greater than 0"),
        ({"IMPORTD_POLL_INTERVAL": "nan"}, "must be greater than 0"),
        ({"IMPORTD_SHUTDOWN_GRACE": "nan"}, "must be at least 0"),
        ({"IMPORTD_BACKOFF_JITTER": "1.5"}, "IMPORTD_BACKOFF_JITTER: bad value '1.5': must be"),
        ({"IMPORTD_LOG_LEVEL": "loud"}, "must be one of debug, info, warning, error"),
        ({"IMPORTD_FAIR": "maybe"}, "IMPORTD_FAIR: bad value 'maybe': must be true or false"),
        ({"IMPORTD_RETENTION_FAILED": "3 days"}, "is not a duration"),
        ({"IMPORTD_WEB_TOKEN": "x", "IMPORTD_STATEMENT_CACHE_SIZE": "-1"}, "at least 0"),
        ({"IMPORTD_QUEUES": "a,a=2"}, "a queue is named twice"),
    ],
)
def test_a_bad_value_is_refused_naming_where_it_came_from(
    given: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({}, environ=given, config_path=_empty(tmp_path))
    assert message in str(caught.value)


def test_edges_of_the_ranges_are_accepted(tmp_path: Path) -> None:
    loaded = config.load(
        {},
        environ={
            "IMPORTD_SHUTDOWN_GRACE": "0",
            "IMPORTD_BACKOFF_JITTER": "1",
            "IMPORTD_STATEMENT_CACHE_SIZE": "0",
            "IMPORTD_TENANT_CONCURRENCY": "off",
            "IMPORTD_POOL_SIZE": "0",
            "IMPORTD_RETENTION_COMPLETED": "12h",
        },
        config_path=_empty(tmp_path),
    )
    assert loaded.shutdown_grace == 0 and loaded.backoff_jitter == 1
    assert loaded.statement_cache_size == 0
    assert loaded.tenant_concurrency is None and loaded.pool_size is None
    assert loaded.retention_completed == 12 * 3600


NUMBERS = [f for f in FIELDS if f.kind in ("int", "float")]


def _outcome(load: Any) -> tuple[str, Any]:
    try:
        return "ok", load()
    except config.ConfigError as exc:
        where, _, what = str(exc).partition(": bad value ")
        return "refused", (where, what)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(NUMBERS),
    number=st.one_of(
        st.integers(-3, 10**7),
        st.floats(allow_nan=True, allow_infinity=False, width=32),
        st.sampled_from([0, 1, -1, 0.5, 1.5, 3.0]),
    ),
)
def test_a_number_means_the_same_from_a_flag_the_environment_and_the_file(
    field: config.Field, number: float
) -> None:
    """Whichever way it comes (a flag's text, the environment's, a TOML number), a number
    is accepted as the same value, or refused for the same reason naming that way; what
    is accepted lies within the bounds the setting declares."""
    text = str(number)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "importd.toml"
        path.write_text(f"{field.name} = {text}\n")
        none = _empty(Path(directory))
        ways = {
            field.option: _outcome(lambda: config.load({field.name: text}, config_path=none)),
            field.env: _outcome(
                lambda: config.load({}, environ={field.env: text}, config_path=none)
            ),
            f"{path}: {field.name}": _outcome(
                lambda: config.load({}, environ={}, config_path=path)
            ),
        }
    results = set()
    for where, (status, detail) in ways.items():
        if status == "refused":
            assert detail[0] == where
            results.add(("refused", detail[1].split(": ", 1)[1]))
        else:
            results.add(("ok", getattr(detail, field.name)))
    assert len(results) == 1, (field.name, text, ways)
    status, value = results.pop()
    if status == "ok" and value is not None:
        d = field.declared
        assert not math.isnan(value)
        assert d.at_least is None or value >= d.at_least
        assert d.above is None or value > d.above
        assert d.at_most is None or value <= d.at_most


def test_keys_at_the_top_level_and_under_importd_are_read_together(tmp_path: Path) -> None:
    """The README's pooler line written above the shipped file's [importd] table."""
    path = tmp_path / "importd.toml"
    shipped = (ROOT / "systemd" / "importd.toml").read_text()
    assert shipped.lstrip().splitlines()[3] == "[importd]"  # the case the README leads to
    path.write_text("statement_cache_size = 0\n" + shipped.replace("/srv/uploads", str(tmp_path)))
    loaded = config.load({}, environ={}, config_path=path)
    assert loaded.statement_cache_size == 0  # top level
    assert loaded.tables == ("public.customers",)  # under [importd]
    assert loaded.import_roots == (str(tmp_path),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "concurrency = 4\n[importd]\nconcurrency = 8\n",
            "'concurrency' is set both at the top level and under [importd]",
        ),
        (
            "concurency = 4\n[importd]\nconcurrency = 8\n",
            "unknown setting 'concurency' (did you mean 'concurrency'?)",
        ),
        ("[importd]\nconcurrency = 8\n[other]\nx = 1\n", "unknown setting 'other'"),
        ("importd = 3\n", "[importd] must be a table"),
    ],
)
def test_a_key_given_twice_or_unknown_in_the_file_is_one_line_exit_3(
    text: str, message: str, tmp_path: Path, no_outside_settings: None
) -> None:
    path = tmp_path / "importd.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load({}, environ={}, config_path=path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(path) in str(caught.value)
    assert cli.main(["config", "--config", str(path)]) == 3


BYTES = [f for f in FIELDS if f.declared.unit == "bytes"]
# The units by their definitions (IEC 80000-13 binary prefixes, SI decimal ones).
UNIT_SIZES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 1000**2}
UNIT_SIZES["GB"] = 1000**3


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(BYTES),
    whole=st.integers(0, 5000),
    tenths=st.one_of(st.none(), st.integers(0, 9)),
    unit=st.sampled_from([*UNIT_SIZES, ""]),
    space=st.sampled_from(["", " ", "  "]),
    upper=st.booleans(),
)
def test_a_byte_size_with_a_unit_means_its_bytes_from_every_source(
    field: config.Field, whole: int, tenths: int | None, unit: str, space: str, upper: bool
) -> None:
    """``8 MiB`` (what --help and the README show), ``4MiB``, ``1.5 GiB``, ``10 MB``: the
    same bytes from a flag, the environment or the file, or the same refusal; the bytes
    computed here with fractions, independently of the parser's integer arithmetic."""
    number = f"{whole}" if tenths is None else f"{whole}.{tenths}"
    text = f"{number}{space}{unit.upper() if upper else unit}"
    exact = Fraction(number) * UNIT_SIZES.get(unit, 1)
    expected = int(exact) if exact.denominator == 1 and exact >= 1 else None
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "importd.toml"
        path.write_text(f"{field.name} = {json.dumps(text)}\n")
        none = _empty(Path(directory))
        ways: dict[str, Callable[[], config.Settings]] = {
            "flag": lambda: config.load({field.name: text}, environ={}, config_path=none),
            "env": lambda: config.load({}, environ={field.env: text}, config_path=none),
            "file": lambda: config.load({}, environ={}, config_path=path),
        }
        for way, load in ways.items():
            if expected is None:
                with pytest.raises(config.ConfigError) as caught:
                    load()
                assert "bad value" in str(caught.value), (way, text)
            else:
                assert getattr(load(), field.name) == expected, (way, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8 MiBs", "'8 MiBs' is not a size (like 4194304, 512 KiB, 8 MiB, 1 GiB or 10 MB)"),
        ("eight", "is not a size"),
        ("8 M", "is not a size"),
        ("-1 MiB", "is not a size"),
        ("1e6", "is not a size"),
        ("0.5", "is not a whole number of bytes"),
        ("0 MiB", "must be at least 1"),
    ],
)
def test_a_bad_byte_size_is_refused_saying_what_a_size_looks_like(
    text: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({}, environ={"IMPORTD_MAX_RECORD_BYTES": text}, config_path=_empty(tmp_path))
    assert str(caught.value).startswith("IMPORTD_MAX_RECORD_BYTES: bad value")
    assert message in str(caught.value)


def test_the_shown_default_of_a_byte_size_reads_back_as_the_default() -> None:
    for f in BYTES:
        assert f.shown_default.endswith(" MiB")
        assert f.parse(f.shown_default) == f.default
        assert f.parse(f.shown_default.replace(" ", "")) == f.default


def test_refusals_name_only_the_flags_the_command_has(
    tmp_path: Path, no_outside_settings: None
) -> None:
    """Whatever command gives the advice, each way it names works for that command."""
    parser = cli.build_parser()
    for command in EARLIER_FLAGS:
        for f in FIELDS:
            if f.kind == "bool":
                continue
            text, _ = sample(f, tmp_path)
            advice = config.how_to_set(f.name, text, command)
            assert f"{f.env}={text}" in advice, advice
            flag = re.match(rf"the '{f.name}' setting: (--\S+) ", advice)
            assert (flag is not None) == f.takes_flag_in(command), (command, advice)
            if flag is None:
                continue
            argv = [command, flag.group(1), text]
            argv += {"enqueue": ["csv"], "show": ["1"], "cancel": ["1"]}.get(command, [])
            assert getattr(cli._settings(parser.parse_args(argv)), f.name) == f.parse(text)


def test_the_dsn_comes_from_the_first_source_in_the_readmes_order(tmp_path: Path) -> None:
    """--dsn, IMPORTD_DSN, DATABASE_URL, IMPORTD_DSN_FILE, $CREDENTIALS_DIRECTORY/dsn, the
    file's dsn key: each wins over every one after it. So a DATABASE_URL in the unit's
    environment file overrides the LoadCredential= file."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "dsn").write_text("postgresql://u@credential/db\n")
    (tmp_path / "dsn_file").write_text("postgresql://u@dsn-file/db\n")
    path = tmp_path / "importd.toml"
    path.write_text('dsn = "postgresql://u@config-file/db"\n')
    sources: list[tuple[str, str | None, str]] = [
        ("flag", None, "postgresql://u@flag/db"),
        ("IMPORTD_DSN", "postgresql://u@importd-dsn/db", "postgresql://u@importd-dsn/db"),
        ("DATABASE_URL", "postgresql://u@database-url/db", "postgresql://u@database-url/db"),
        ("IMPORTD_DSN_FILE", str(tmp_path / "dsn_file"), "postgresql://u@dsn-file/db"),
        ("CREDENTIALS_DIRECTORY", str(credentials), "postgresql://u@credential/db"),
    ]
    for first in range(len(sources) + 1):
        given = sources[first:]
        flags = {"dsn": sources[0][2]} if first == 0 else {}
        environ = {name: value for name, value, _ in given if value is not None}
        loaded = config.load(flags, environ=environ, config_path=path)
        expected = given[0][2] if given else "postgresql://u@config-file/db"
        assert loaded.dsn == expected, [name for name, _, _ in given]
    # An empty DATABASE_URL is passed over; an empty IMPORTD_DSN means no DSN.
    environ = {"DATABASE_URL": "", "IMPORTD_DSN_FILE": str(tmp_path / "dsn_file")}
    assert config.load({}, environ=environ, config_path=path).dsn == "postgresql://u@dsn-file/db"
    environ = {"IMPORTD_DSN": "", "DATABASE_URL": "postgresql://u@database-url/db"}
    assert config.load({}, environ=environ, config_path=path).dsn is None


def test_secrets_too_short_to_mask_are_named_once_at_start_never_shown() -> None:
    short = config.Settings(
        dsn="postgresql://importd:pw1@db.example/jobs",
        http_token="tok9",
        web_token="a-long-enough-web-token",
    )
    with capture_logs() as lines:
        daemon.warn_unmaskable(short)
    (line,) = lines
    assert line["event"] == "secret_too_short_to_mask" and line["log_level"] == "warning"
    assert line["settings"] == ["dsn", "http_token"]
    assert "pw1" not in json.dumps(line) and "tok9" not in json.dumps(line)

    long_enough = config.Settings(
        dsn="postgresql://importd:long-password@db.example/jobs", http_token="tok-long-1"
    )
    with capture_logs() as lines:
        daemon.warn_unmaskable(long_enough)
    assert lines == []


def test_a_choice_means_the_same_from_a_flag_and_the_environment(
    no_outside_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README: a bad value is a one-line error naming where it came from, exit 3;
    a flag with a fixed set of values (--log-level, --log-format) is read like its
    variable (any letter case), not refused by argparse as a usage error (exit 2)."""
    assert cli.main(["config", "--log-level", "verbose"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "importd: --log-level: bad value 'verbose': must be one of debug, info, warning, error"
    ]
    args = cli.build_parser().parse_args(["config", "--log-level", "DEBUG", "--log-format", "JSON"])
    settings = cli._settings(args)
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    # --help still shows the values to choose from.
    usage = cli._commands(cli.build_parser())["run"].format_usage()
    assert "--log-level {debug,info,warning,error}" in usage
    assert "--log-format {auto,json,console}" in usage


def test_doctor_and_web_take_the_flags_of_every_setting_they_read() -> None:
    """The README: the flags of a command are the settings it uses. doctor checks where
    http_token may go (http_url, http_token) and the statement cache behind a pooler;
    importd web reads listen_dsn and statement_cache_size."""
    commands = cli._commands(cli.build_parser())
    reads = {
        "doctor": ("--http-url", "--http-token", "--statement-cache-size", "--listen-dsn"),
        "web": ("--listen-dsn", "--statement-cache-size"),
    }
    for command, flags in reads.items():
        options = {o for a in commands[command]._actions for o in a.option_strings}
        for flag in flags:
            assert flag in options, (command, flag)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgres://app:p%23w%2Fd@db.example:5432/app",
        "postgresql://h1:5432,h2:5433/db",
        "postgresql://u@[::1]:5432/db",
        "postgresql://u@[::1]/db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u@%2Fvar%2Frun%2Fpostgresql/db",
        "POSTGRESQL://u@h/db",
    ],
)
def test_a_dsn_the_driver_reads_passes_the_check(dsn: str) -> None:
    config.check_dsn(dsn, "dsn")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:hunter2#x@db.example/app",
        # The driver reads the userinfo to the first "@": "w0rd@db.example" as a port.
        "postgresql://app:Pa@ss:w0rd@db.example/app?sslmode=require",
        # An audit's passwords: urllib, the query's strict parse, an empty host.
        "postgresql://postgres:p[secretpart]w@127.0.0.1/db",
        "postgresql://postgres:p@q:secretrest@127.0.0.1/db",
        "postgresql://postgres:2024?Winter!@127.0.0.1/postgres",
        "postgresql://postgres:p]w@127.0.0.1/db",
        "postgresql://u@,h/db",
        "postgresql://u@h,/db",
        "postgresql://u@h/db?port=x",
        "postgresql://app:hun/ter2@db.example/app",
        "postgresql://app:a?b@db.example/app",
        "postgresql://u@h:notaport/db",
        "postgresql://u@h:99999/db",
        "postgres://u:p@[::1",
        "notadsn",
        "mysql://u@h/d",
        "host=db user=app",
    ],
)
def test_a_dsn_the_driver_cannot_read_is_refused_without_quoting_it(dsn: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.check_dsn(dsn, "dsn")
    for part in ("hunter2", "hun", "notaport", "99999", "host=db", "secret", "Winter", "w0rd"):
        if part in dsn:
            assert part not in str(refused.value)


def _driver_reads(dsn: str) -> bool:
    """Whether asyncpg's own DSN parser reads ``dsn`` (the reference for check_dsn; its
    signature varies by version, so every argument but the DSN is given as None)."""
    import inspect  # noqa: PLC0415

    from asyncpg import connect_utils  # noqa: PLC0415

    parse = getattr(connect_utils, "_parse_connect_dsn_and_args")  # noqa: B009 (not in the stubs)
    kwargs: dict[str, object] = dict.fromkeys(inspect.signature(parse).parameters)
    kwargs.update(dsn=dsn, direct_tls=False)
    try:
        addrs = parse(**kwargs)[0]
    except (ValueError, IndexError):
        return False
    # (A socket is a path; a host and port a pair, its port not yet checked by the driver.)
    return all(not isinstance(addr, tuple) or 0 <= addr[1] <= 65535 for addr in addrs)


_DSN_PART = st.lists(
    st.sampled_from([*"ab9:@/?#[]%,.=&-_ ", "%40", "%2F", "%5B", "::1", "5432", "99999"]),
    max_size=8,
).map("".join)


@settings(max_examples=2000, deadline=None)
@given(
    user=_DSN_PART,
    password=_DSN_PART,
    hosts=st.lists(_DSN_PART, min_size=1, max_size=3),
    path=_DSN_PART,
    query=_DSN_PART,
)
def test_check_dsn_agrees_with_the_driver(
    user: str, password: str, hosts: list[str], path: str, query: str
) -> None:
    dsn = f"postgresql://{user}:{password}@{','.join(hosts)}/{path}" + (
        f"?{query}" if query else ""
    )
    try:
        config.check_dsn(dsn, "dsn")
        checked = True
    except config.ConfigError:
        checked = False
    assert checked == _driver_reads(dsn), dsn
