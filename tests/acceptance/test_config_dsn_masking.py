"""`importd config` masks every password a DSN holds in a form the
database driver (asyncpg) or libpq actually reads as a password."""

from __future__ import annotations

import json

import pytest

from tests.helpers import importd_env, run_importd


@pytest.mark.parametrize(
    "dsn",
    [
        # asyncpg decodes query keys: %70assword is "password" (checked with
        # asyncpg.connect_utils._parse_connect_dsn_and_args).
        "postgresql://app@db.example/app?%70assword=Hunter2Secret",
        # libpq's key=value form allows blanks around "=".
        "host=db.example dbname=app password  =  Hunter2Secret",
        "host=db.example dbname=app password\t=\tHunter2Secret",
    ],
)
def test_importd_config_masks_passwords_asyncpg_or_libpq_would_read(dsn: str) -> None:
    done = run_importd("config", "--json", "--dsn", dsn, env=importd_env())
    assert done.returncode == 0, done.stderr
    assert "Hunter2Secret" not in json.loads(done.stdout)["dsn"]


BAD = "postgresql://postgres:Sup3r/Secr#et@127.0.0.1/x"  # a raw "/" and "#": not a URL's


@pytest.mark.parametrize(
    "dsn",
    [
        BAD,
        "postgresql://app:Pa@ss:w0rd@db.example/app",
        "postgresql://u:sec ret-and-more@db.example/app",
    ],
)
def test_importd_config_masks_a_password_the_url_grammar_cannot_hold(dsn: str) -> None:
    """An audit: a password with a raw "/", "#" or a blank was shown whole (the URL pattern
    stops at them, and nothing was registered)."""
    done = run_importd("config", "--json", "--dsn", dsn, env=importd_env())
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["dsn"]
    assert ":***@" in shown
    for part in ("Sup3r", "Secr#et", "w0rd", "sec ret"):
        assert part not in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        [BAD],  # a DSN given as the command
        ["show", BAD],  # as a job id
        ["run", "--concurrency", BAD],  # as another setting's value
        ["drain", "--dsn", "postgresql://u@h/d", "--listen-dsn", BAD],  # to drain, which has none
    ],
)
def test_an_echoed_argument_shows_no_password(argv: list[str]) -> None:
    done = run_importd(*argv, env=importd_env())
    assert done.returncode in (2, 3), done.stderr
    assert "postgresql://***@127.0.0.1/x" in done.stderr, done.stderr
    assert "Sup3r" not in done.stderr and "Secr" not in done.stderr


def test_a_missing_value_says_so() -> None:
    # (Redacted whole, "argument --dsn: expected one argument" showed as "--dsn: ***".)
    done = run_importd("drain", "--dsn", env=importd_env())
    assert done.returncode == 2
    assert "argument --dsn: expected one argument" in done.stderr, done.stderr
