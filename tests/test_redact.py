"""Redaction is total and linear: registered secrets are masked wherever they appear
(JSON keys too, with ':' and '@' inside), DSN passwords and sensitive parameters are
masked, and every path to a job row, the log and the CLI goes through it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import importd
from importd import db, ops

from .helpers import importd_env, run_importd
from .httpserver import Reply, Server

TOKEN = "tok:Tail-" + "Zq7@x" * 5  # a ':' and an '@' inside, like the issue's token


@contextmanager
def only_secrets(*values: str) -> Iterator[None]:
    """Exactly ``values`` registered while the block runs (the registry is global)."""
    saved = set(db._SECRETS)
    db._SECRETS.clear()
    try:
        for value in values:
            db.register_secret(value)
        yield
    finally:
        db._SECRETS.clear()
        db._SECRETS.update(saved)


# A secret never contains "*" (the mask is "***", so a secret made of stars could
# reappear around a mask); anything else goes, ':' '@' '"' whitespace and non-ASCII too.
secret_text = st.text(
    st.characters(blacklist_characters="*", blacklist_categories=["Cs"]), min_size=6, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=300),
    secrets=st.lists(secret_text, min_size=1, max_size=4),
    places=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1)), max_size=8),
)
def test_no_secret_survives_wherever_it_was_put(
    text: str, secrets: list[str], places: list[tuple[int, float]]
) -> None:
    for which, where in places:
        secret = secrets[which % len(secrets)]
        at = int(where * len(text))
        text = text[:at] + secret + text[at:]
    with only_secrets(*secrets):
        masked = db.redact(text)
        as_value = db.redact_value({text: [text, {"k": text}], "plain": text})
    for secret in secrets:
        assert secret not in masked
        assert secret not in json.dumps(as_value, ensure_ascii=False)


# Text that no pattern can touch: no '=' (key=value), no ':' ("://", and the secrets below
# all hold one), no 'b' (bearer).
plain_text = st.text(
    st.characters(blacklist_characters="=:bB", blacklist_categories=["Cs"]), max_size=500
)


@settings(max_examples=200, deadline=None)
@given(text=plain_text, secrets=st.lists(st.tuples(secret_text, secret_text), max_size=3))
def test_text_without_secrets_is_unchanged(text: str, secrets: list[tuple[str, str]]) -> None:
    with only_secrets(*(f"{a}:{b}" for a, b in secrets)):
        assert db.redact(text) == text
        assert db.redact_value({text: [text]}) == {text: [text]}


# A URL's password may hold anything but the characters that end the authority (and
# whitespace); a query value anything but "&", quotes and whitespace.
url_password = st.text(
    st.characters(blacklist_characters="/?#", blacklist_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]),
    min_size=1,
    max_size=30,
)
query_value = st.text(
    st.characters(blacklist_characters="&'\"", blacklist_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    password=url_password,
    key_password=query_value,
    key=st.sampled_from(["password", "sslpassword", "PASSWORD", "access_token"]),
)
def test_a_dsns_passwords_are_masked_whatever_they_hold(
    password: str, key_password: str, key: str
) -> None:
    dsn = f"postgresql://app:{password}@db.example:5432/app?{key}={key_password}&sslmode=require"
    with only_secrets():  # nothing registered: the patterns alone
        assert db.redact(dsn) == (
            f"postgresql://app:***@db.example:5432/app?{key}=***&sslmode=require"
        )
        assert db.redact(f"error: {dsn} refused") == (
            f"error: postgresql://app:***@db.example:5432/app?{key}=***&sslmode=require refused"
        )


@pytest.mark.parametrize(
    ("text", "shown", "hidden"),
    [
        (
            f"401 from endpoint: Authorization: Bearer {TOKEN}, retry",
            "Bearer ***, retry",
            ["Tail-", "Zq7"],
        ),
        (
            f"echo: bearer   {TOKEN[:10]}:unregistered-tail",
            "echo: bearer ***",
            ["unregistered", "tok:"],
        ),
        (
            "postgresql://app:p@ss:w@rd@db.example:5432/app",
            "postgresql://app:***@db.example:5432/app",
            ["p@ss", "w@rd", "ss:w"],
        ),
        (
            "postgres://app:hunter2@db/app?sslmode=require&sslpassword=keypass1&x=1",
            "postgres://app:***@db/app?sslmode=require&sslpassword=***&x=1",
            ["hunter2", "keypass1"],
        ),
        (
            "host=db user=app password='a b\\' c' dbname=app",
            "password=*** dbname=app",
            ["a b", "' c'"],
        ),
        (
            "https://bucket.example/x.csv?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA",
            "X-Amz-Signature=***&",
            ["deadbeef"],
        ),
        ("token BeArEr abc.def; next", "BeArEr ***; next", ["abc.def"]),
        ("PASSWORD = Swordfish1 next", "PASSWORD =*** next", ["Swordfish1"]),
    ],
)
def test_the_issues_leaks_are_masked(text: str, shown: str, hidden: list[str]) -> None:
    with only_secrets(TOKEN):
        masked = db.redact(text)
    assert shown in masked, masked
    for part in hidden:
        assert part not in masked, masked


def test_a_token_as_a_json_key_and_under_sensitive_keys_is_masked() -> None:
    with only_secrets(TOKEN):
        masked = db.redact_value(
            {
                TOKEN: 1,
                f"x{TOKEN}y": [TOKEN],
                "password": "short",
                "nested": {"Token": "abc", "list": [{TOKEN: TOKEN}]},
            }
        )
    assert TOKEN not in json.dumps(masked)
    assert masked["***"] == 1 and masked["x***y"] == ["***"]
    assert masked["password"] == "***" and masked["nested"]["Token"] == "***"


def test_percent_encoded_and_json_escaped_forms_are_masked_too() -> None:
    secret = 'pa"ss@word/1'
    with only_secrets(secret):
        assert db.redact("postgresql://u:pa%22ss%40word%2F1@h/d") == "postgresql://u:***@h/d"
        assert db.redact(json.dumps({"p": secret})) == '{"p": "***"}'


def test_importd_config_masks_raw_at_passwords_and_sensitive_parameters() -> None:
    dsn = "postgresql://app:Pa@ss:w0rd@db.example/app?sslmode=require&sslpassword=KeyPass99"
    done = run_importd("config", "--json", "--dsn", dsn, env=importd_env())
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["dsn"] == "postgresql://app:***@db.example/app?sslmode=require&sslpassword=***"
    for part in ("Pa@ss", "w0rd", "KeyPass99"):
        assert part not in done.stdout


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server().start()
    yield srv
    srv.stop()


async def test_secrets_echoed_by_an_endpoint_reach_no_row_no_log_and_no_show(
    conn: Any, drain: Any, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn_password = "Db@Pass:word9"
    echo = json.dumps(
        {
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            TOKEN: "as a key",
            "note": f"got {TOKEN} and postgresql://app:{dsn_password}@db/app",
        }
    )
    ok = server.route("/echo", Reply(200, echo.encode(), {"Content-Type": "application/json"}))
    text = server.route("/text", Reply(200, f"Authorization: Bearer {TOKEN}".encode()))
    denied = server.route("/denied", Reply(403, f"bad token {TOKEN}".encode()))
    # 100 KB of letters: redaction is linear, so the answer is stored within the timeout
    # (quadratic redaction held the event loop for ~26 s on this).
    letters = server.route("/letters", Reply(200, b"a" * 100_000))
    jobs = [
        await importd.enqueue(conn, "http", {"url": url}, timeout=20, max_attempts=1)
        for url in (ok, text, denied, letters)
    ]
    failing = await importd.enqueue(
        conn, "fail", {"message": f"cannot use {TOKEN} or {dsn_password}"}, max_attempts=1
    )
    assert (
        await drain(
            url_prefixes=(server.url + "/",),
            http_token=TOKEN,
            listen_dsn=f"postgresql://app:{dsn_password}@127.0.0.1:1/none",
        )
        == 10
    )
    rows = await conn.fetch(
        "SELECT * FROM import_jobs WHERE id = ANY($1) ORDER BY id", [*jobs, failing]
    )
    # (The producer put the secrets in the failing job's payload itself; everything
    # importd wrote is checked.)
    stored = json.dumps([{k: str(v) for k, v in dict(r).items() if k != "payload"} for r in rows])
    for part in (TOKEN, "Tail-", dsn_password, "Pass:word"):
        assert part not in stored
    by_id = {r["id"]: r for r in rows}
    echoed = (
        json.loads(by_id[jobs[0]]["result"])
        if isinstance(by_id[jobs[0]]["result"], str)
        else by_id[jobs[0]]["result"]
    )
    assert echoed["body"]["***"] == "as a key"
    assert echoed["body"]["headers"]["Authorization"] == "***"
    assert by_id[jobs[2]]["status"] == "failed" and "bad token ***" in by_id[jobs[2]]["last_error"]
    assert by_id[jobs[3]]["status"] == "completed"
    assert by_id[failing]["last_error"] == "RuntimeError: cannot use *** or *** (attempt 1/1)"
    for job_id in (*jobs, failing):
        shown = await ops.show(conn, job_id) + await ops.show(conn, job_id, as_json=True)
        assert TOKEN not in shown and dsn_password not in shown
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and dsn_password not in out.out + out.err


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
