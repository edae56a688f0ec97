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
