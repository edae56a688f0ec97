"""Redaction is total and linear: registered secrets are masked wherever they appear
(JSON keys too, with ':' and '@' inside), DSN passwords and sensitive parameters are
masked, and every path to a job row, the log and the CLI goes through it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd import redaction

TOKEN = "tok:Tail-" + "Zq7@x" * 5  # a ':' and an '@' inside, like the issue's token


@contextmanager
def only_secrets(*values: str) -> Iterator[None]:
    """Exactly ``values`` registered in the process's registry while the block runs."""
    saved = redaction.SECRETS.forms
    redaction.SECRETS.clear()
    try:
        for value in values:
            redaction.register_secret(value)
        yield
    finally:
        redaction.SECRETS.restore(saved)


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
        masked = redaction.redact(text)
        as_value = redaction.redact_value({text: [text, {"k": text}], "plain": text})
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
        assert redaction.redact(text) == text
        assert redaction.redact_value({text: [text]}) == {text: [text]}


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
        assert redaction.redact(dsn) == (
            f"postgresql://app:***@db.example:5432/app?{key}=***&sslmode=require"
        )
        assert redaction.redact(f"error: {dsn} refused") == (
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
        masked = redaction.redact(text)
    assert shown in masked, masked
    for part in hidden:
        assert part not in masked, masked


def test_a_token_as_a_json_key_and_under_sensitive_keys_is_masked() -> None:
    with only_secrets(TOKEN):
        masked = redaction.redact_value(
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
        assert redaction.redact("postgresql://u:pa%22ss%40word%2F1@h/d") == "postgresql://u:***@h/d"
        assert redaction.redact(json.dumps({"p": secret})) == '{"p": "***"}'
