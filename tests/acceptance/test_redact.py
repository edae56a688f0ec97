"""Redaction is total and linear: registered secrets are masked wherever they appear
(JSON keys too, with ':' and '@' inside), DSN passwords and sensitive parameters are
masked, and every path to a job row, the log and the CLI goes through it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import importd
from tests.helpers import importd_env, run_importd
from tests.unit.test_redact import TOKEN


def test_importd_config_masks_raw_at_passwords_and_sensitive_parameters() -> None:
    dsn = "postgresql://app:Pa@ss:w0rd@db.example/app?sslmode=require&sslpassword=KeyPass99"
    done = run_importd("config", "--json", "--dsn", dsn, env=importd_env())
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["dsn"] == "postgresql://app:***@db.example/app?sslmode=require&sslpassword=***"
    for part in ("Pa@ss", "w0rd", "KeyPass99"):
        assert part not in done.stdout


async def test_importd_show_of_a_huge_payload_prints_promptly(conn: Any, dsn: str) -> None:
    job_id = await importd.enqueue(conn, "noop", {"blob": "A1+.-" * 40_000})
    done = run_importd("show", str(job_id), "--dsn", dsn, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "A1+.-A1+.-" in done.stdout


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_secret_in_a_logged_traceback_is_masked(fmt: str) -> None:
    script = f"""
import structlog
from importd import config, logs
config.Settings(http_token={TOKEN!r})
logs.configure("info", {fmt!r})
try:
    raise RuntimeError("the endpoint refused " + {TOKEN!r})
except RuntimeError:
    structlog.get_logger("t").exception("handler_crashed")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=importd_env(),
    )
    assert (
        "handler_crashed" in done.stderr and "RuntimeError: the endpoint refused ***" in done.stderr
    )
    assert TOKEN not in done.stderr and "Tail-" not in done.stderr
