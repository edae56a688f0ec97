"""What a handler's settings hold: the handlers' part of ``Settings``, no DSN."""

from __future__ import annotations

import dataclasses
import typing

import pytest

import importd
from importd.config import FIELDS, Settings, setting
from importd.context import HandlerSettings


def test_handler_settings_hold_no_dsn_and_hide_the_token() -> None:
    settings = Settings(
        dsn="postgresql://u:dsn-pw-1@h/db",
        listen_dsn="postgresql://u:dsn-pw-2@h/db",
        http_token="tok-hidden-3",
        tables=("public.t",),
        max_record_bytes=123,
    )
    mine = HandlerSettings.of(settings)
    assert not hasattr(mine, "dsn") and not hasattr(mine, "listen_dsn")
    assert (mine.tables, mine.max_record_bytes, mine.http_token) == (
        ("public.t",),
        123,
        "tok-hidden-3",
    )
    assert "tok-hidden-3" not in repr(mine) and "dsn-pw" not in repr(mine)
    assert HandlerSettings.defaults() == HandlerSettings.of(Settings())
    assert importd.HandlerSettings is HandlerSettings


def test_handler_settings_are_exactly_the_settings_declared_for_handlers() -> None:
    """``HandlerSettings`` repeats names and types of ``Settings`` for mypy; the
    declarations (``setting(..., handler=True)``) are the one source, this keeps them in
    step: same names, same types, and no default of its own (they come from Settings)."""
    declared = {f.name for f in FIELDS if f.declared.handler}
    fields = {f.name: f for f in dataclasses.fields(HandlerSettings)}
    assert set(fields) == declared
    mine, theirs = typing.get_type_hints(HandlerSettings), typing.get_type_hints(Settings)
    assert {name: mine[name] for name in fields} == {name: theirs[name] for name in fields}
    for f in fields.values():
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    defaults = HandlerSettings.defaults()
    assert {n: getattr(defaults, n) for n in fields} == {
        f.name: f.default for f in FIELDS if f.name in declared
    }


def test_no_connection_string_or_daemon_internal_is_a_handler_setting() -> None:
    handlers = {f.name for f in FIELDS if f.declared.handler}
    internals = {
        "dsn",
        "listen_dsn",
        "worker_name",
        "concurrency",
        "queues",
        "lease_margin",
        "shutdown_grace",
        "pool_size",
        "statement_cache_size",
        "web_token",
    }
    assert not handlers & internals
    assert not [f.name for f in FIELDS if f.declared.handler and f.declared.masked == "passwords"]
    with pytest.raises(ValueError, match="DSN"):
        setting(None, "a DSN", masked="passwords", handler=True)
