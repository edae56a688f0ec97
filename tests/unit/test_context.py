"""What a handler's settings hold: the handlers' part of ``Settings``, no DSN."""

from __future__ import annotations

import importd
from importd.config import Settings
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
