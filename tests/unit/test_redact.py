"""Redaction is total and linear: registered secrets are masked wherever they appear
(JSON keys too, with ':' and '@' inside), DSN passwords and sensitive parameters are
masked, and every path to a job row, the log and the CLI goes through it."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import importd
from importd import redaction

from . import redaction_v2

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
        # (Each key and value, not their JSON text: an escape such as "\u0000" before
        # "00" spells "000000" in JSON text only.)
        assert not [s for s in strings(as_value) if secret in s]


def strings(value: object) -> Iterator[str]:
    """Every string in ``value``, keys of mappings included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


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


# Dense and hostile text: credentials a few characters apart, keys in any letter case,
# and filler that looks like the start of one ("=", "://u:", "Bear"). Every planted value
# is unique and marked (Q...Z), so "absent from the output" means "masked".
planted = st.builds(
    lambda digits, extra: f"Q{digits:06d}{extra}Z",
    st.integers(0, 10**6),
    st.text(alphabet="0123456789:@.-_+", max_size=8),
)
sensitive_key = st.builds(
    lambda prefix, key, upper, space: (prefix + (key.upper() if upper else key)) + space,
    st.sampled_from(["", "csrf", "db_"]),
    st.sampled_from(redaction.SENSITIVE_KEYS),
    st.booleans(),
    st.sampled_from(["", " "]),
)
bearer_word = st.sampled_from(["Bearer", "bearer", "BEARER", "BeArEr", "bEARER"])
# Filler that must come through unchanged (no secret, no key, no credential).
filler = st.sampled_from(
    ["kept=1", "dbname=app", "=", "==", "a://u:", "://", "Bear", "word", "x@y"]
)


@st.composite
def hostile_items(draw: Any) -> list[tuple[str, str, str | None]]:
    """(text, as redacted alone, the value it hides) for each of a few dozen items."""
    items: list[tuple[str, str, str | None]] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["kv", "bearer", "url", "secret", "filler"]))
        value = draw(planted)
        if kind == "kv":
            key = draw(sensitive_key)
            items.append((f"{key}={value}", f"{key}={redaction.MASK}", value))
        elif kind == "bearer":
            word = draw(bearer_word)
            items.append((f"{word} {value}", f"{word} {redaction.MASK}", value))
        elif kind == "url":
            url = f"postgresql://app:{value}@db.example/app"
            items.append((url, "postgresql://app:***@db.example/app", value))
        elif kind == "secret":
            items.append((f"s{value}s", f"s{redaction.MASK}s", value))
        else:
            word = draw(filler)
            items.append((word, word, None))
    return items


def _registry_for(items: list[tuple[str, str, str | None]]) -> redaction.Secrets:
    return redaction.Secrets(text[1:-1] for text, masked, _ in items if masked == "s***s")


@settings(max_examples=300, deadline=None)
@given(items=hostile_items(), separator=st.sampled_from(["\n", " \n", "\t\n"]))
def test_hostile_items_one_a_line_are_each_masked_as_alone(
    items: list[tuple[str, str, str | None]], separator: str
) -> None:
    secrets = _registry_for(items)
    text = separator.join(item for item, _, _ in items)
    assert secrets.redact(text) == separator.join(masked for _, masked, _ in items)


@settings(max_examples=300, deadline=None)
@given(items=hostile_items(), separators=st.lists(st.sampled_from([" ", "&", "  ", " & ", "\t"])))
def test_hostile_items_packed_on_one_line_leave_no_value_and_keep_the_filler(
    items: list[tuple[str, str, str | None]], separators: list[str]
) -> None:
    secrets = _registry_for(items)
    before = [separators[i % len(separators)] if separators else " " for i in range(len(items))]
    text = "".join(sep + item for sep, (item, _, _) in zip(before, items, strict=True))
    masked = secrets.redact(text)
    for item, _, value in items:
        if value is not None:
            assert value not in masked, (value, masked)
        elif not any("&" in sep for sep in before):
            # (With "&" between them, filler may be part of a bearer token or, after
            # "a://u:", of a URL's password: "&" ends neither.)
            assert item in masked, (item, masked)


@pytest.mark.parametrize(
    ("piece", "shown"),
    [
        ("password=x ", "password=***"),
        ("Bearer x ", "Bearer ***"),
        ("a://u:p@", "a://***"),
        ("=", "=" * 2**20),
        ("a://u:", "a://***"),
        ("token=x&", "token=***"),
        ("Bearer h =", "Bearer ***"),
        ("&hpwd=x@", "&hpwd=***"),
    ],
)
def test_a_megabyte_of_one_hostile_piece_is_masked(piece: str, shown: str) -> None:
    # So dense that it is masked from its first credential on (redaction.DENSE_MIN):
    # what the user sees is the text before it and one mask.
    text = piece * (2**20 // len(piece))
    masked = redaction.Secrets().redact(text)
    assert masked == shown


@pytest.mark.parametrize("spacing", [redaction.DENSE_SPACING - 4, redaction.DENSE_SPACING + 4])
def test_a_long_text_just_under_or_over_the_dense_spacing(spacing: int) -> None:
    """A credential every ``spacing`` characters over 512 KiB: past the dense spacing,
    masked from the first on; below it, each masked alone, the words between kept."""
    piece = ("password=x " + "w" * spacing)[: spacing - 1] + "\n"
    text = piece * ((2**19) // len(piece))
    masked = redaction.Secrets().redact(text)
    if spacing < redaction.DENSE_SPACING:
        assert masked == "password=***"
    else:
        assert masked == redaction.Secrets().redact(piece) * ((2**19) // len(piece))
        assert "=x" not in masked


def test_credentials_side_by_side_on_one_line_are_masked_as_one() -> None:
    secrets = redaction.Secrets()
    assert secrets.redact("password=a token=b&SIG=c dbname=app") == "password=*** dbname=app"
    assert secrets.redact("Bearer a Bearer b, next") == "Bearer ***, next"
    # On lines of their own, each keeps its key.
    assert secrets.redact("password=a\ntoken=b") == "password=***\ntoken=***"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # A bearer token and the next after a comma or semicolon; a token and key=value
        # pairs right after it (the value running into the next bearer word).
        ("Bearer a, Bearer b; bearer c, next", "Bearer ***, next"),
        ("Bearer a password=b&token=c next", "Bearer *** next"),
        ("Bearer a pwd =bBearer c, d", "Bearer ***, d"),
        # Quoted values, after blanks or tabs, and right after the closing quote.
        ("password ='a b' token='c' dbname=app", "password =*** dbname=app"),
        ("pwd=\t'a'xpwd=\t'b' next", "pwd=*** next"),
        # "&"-joined pairs, with parameters without a value between them.
        ("token=a&y&z sig=b&page=2", "token=***&page=2"),
        # A URL's password up to the next URL's, with nothing but a host between.
        ("x@y://a:b@h://c:d@e/f", "x@y://a:***@e/f"),
    ],
)
def test_credentials_that_follow_one_another_are_masked_as_one(text: str, shown: str) -> None:
    assert redaction.Secrets().redact(text) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # A word between them (prose, or a key that is not sensitive), a line break, a
        # path: each credential masked on its own, what lies between kept.
        ("Bearer a, and Bearer b", "Bearer ***, and Bearer ***"),
        ("Bearer a then password=b", "Bearer *** then password=***"),
        ("Bearer a,token=b", "Bearer ***,token=***"),
        ("password='a' and token='b'", "password=*** and token=***"),
        ("token=a&y z sig=b", "token=***&y z sig=***"),
        ("token=a&y=1&sig=b", "token=***&y=1&sig=***"),
        ("Bearer a\nBearer b", "Bearer ***\nBearer ***"),
        ("https://u:a@h/ https://v:b@h/", "https://u:***@h/ https://v:***@h/"),
        ("x@y://a:b@h:5432://c:d@e", "x@y://a:***@h:5432://c:***@e"),
    ],
)
def test_credentials_with_anything_else_between_them_are_masked_each_alone(
    text: str, shown: str
) -> None:
    assert redaction.Secrets().redact(text) == shown


def test_a_registry_of_its_own_is_independent_of_the_processs() -> None:
    own = redaction.Secrets([TOKEN])
    with only_secrets():
        assert own.redact(f"got {TOKEN}") == "got ***"
        assert redaction.redact(f"got {TOKEN}") == f"got {TOKEN}"
    assert TOKEN not in redaction.SECRETS.forms or TOKEN in own.forms


def test_redaction_is_pure_and_config_and_logs_do_not_import_the_database_module() -> None:
    root = Path(importd.__file__).parent
    imported = {
        name: {
            (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(ast.parse((root / f"{name}.py").read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        for name in ("redaction", "config", "logs")
    }
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in imported["redaction"] if m)
    assert "__future__" in imported["redaction"]
    assert not any(m == "db" or m.endswith(".db") for m in imported["config"] | imported["logs"])


@pytest.mark.parametrize(
    ("text", "shown", "hidden"),
    [
        (
            # (The header's rest of the line is masked with it since redact21.)
            f"401 from endpoint: Authorization: Bearer {TOKEN}, retry",
            "401 from endpoint: Authorization: Bearer ***",
            ["Tail-", "Zq7", "retry"],
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


# Text made of the pieces the credential patterns look at, in any order: keys in several
# spellings, words that end in one, blanks, delimiters, quotes, escapes, "=" alone and
# after a blank, bearer words in any case and tokens that end in one.
credential_piece = st.sampled_from(
    [
        "Bearer",
        "bearer",
        "BEARER",
        "BeArEr",
        "xbearer",
        "Bear",
        "password",
        "PASSWORD",
        "Password",
        "token",
        "TOKEN",
        "csrftoken",
        "sig",
        "signature",
        "api_key",
        "APIKEY",
        "secret",
        "pwd",
        "passwd",
        "db_password",
        "x-amz-signature",
        "kept",
        " =",
        "=",
        "==",
        " ",
        "  ",
        "\t",
        "&",
        "'",
        '"',
        ",",
        ";",
        "<",
        ">",
        "\n",
        "\\",
        "x",
        "y",
        "a",
        "b",
        "r",
        "er",
        "://",
        "u:",
        "@",
        "/",
        "?",
        "#",
        "1",
        "é",
        "\u212a",
        "\xa0",
        "\u2028",
        "*",
        "***",
        "Bearer x",
        " Bearer y",
        " bearer z ",
        "BeArEr w",
        "password=x",
        " token=y",
        "&sig=1",
        " pwd =v",
        "password='a b' ",
        # The dense shapes of bench.redact, and pieces of them.
        "x@y://a:b",
        "x@://u:",
        "a:",
        "pwd=  'x",
        "pwd=\t'x",
        " ='x' ",
        "\\'",
        "Bearer x password =y",
        "BeArEr x, ",
        "token=x&y ",
    ]
)
credential_text = st.lists(credential_piece, max_size=40).map("".join)


def _masks_at_least_as_much(new: str, old: str) -> bool:
    """Whether ``new`` is ``old`` with more of it masked: ``old`` with stretches (each
    holding some of its masks, or none) replaced by "***" each, the text between them
    kept. For texts without "*" other than the masks': the kept pieces of ``new`` are
    found in ``old`` in order, each as early as it can be (which leaves the most room
    for the rest), the first at its start, the last at its end, and at least one
    character masked between two of them."""
    kept = new.split(redaction.MASK)
    if len(kept) == 1:
        return new == old
    if not old.startswith(kept[0]):
        return False
    at = len(kept[0])
    for piece in kept[1:-1]:
        at = old.find(piece, at + 1)
        if at < 0:
            return False
        at += len(piece)
    return old.endswith(kept[-1]) and len(old) - len(kept[-1]) > at


@pytest.mark.parametrize(
    ("new", "old", "covers"),
    [
        ("a=***", "a=***", True),
        ("a=***", "a=*** b=***", True),
        ("a=*** b=***", "a=***", False),
        ("a=*** c", "a=*** b c", True),
        ("x *** y", "x ab y", True),
        ("x *** y", "x ab z", False),
        ("*** b ***", "a b b c", True),
        ("b *** b", "b b", False),
    ],
)
def test_the_rule_for_masking_at_least_as_much(new: str, old: str, covers: bool) -> None:
    assert _masks_at_least_as_much(new, old) is covers


# Ordinary words, which may stand between credentials and must not be masked when they do.
ordinary_piece = st.sampled_from(
    [" the", " job", " failed", " at", " row", " and", " then", ", ", ". ", " (see", ")"]
)


@settings(max_examples=1000, deadline=None)
@given(
    text=st.lists(
        credential_piece.filter(lambda piece: "*" not in piece) | ordinary_piece, max_size=40
    ).map("".join),
    secrets=st.lists(
        st.sampled_from(["hunter22", "Bearer xyz", "pass word", "a=b&c=d"]), max_size=2
    ),
)
def test_credentials_are_masked_at_least_where_they_were_before_runs(
    text: str, secrets: list[str]
) -> None:
    # Credentials that follow one another are masked as one run, the text between them
    # with them: never less than before (the module as it was, redaction_v2). A key's
    # name and "=" between two masks count as masked: no secret, and where a pair ends a
    # bearer run before it (its value ends in "\\") it is masked as a pair of its own,
    # its name shown, where the code before hid it inside a run ("Bearer x password =y
    # token=y\\": "Bearer *** token=***" against "Bearer *** password =***").
    new = _KEY_BETWEEN_MASKS.sub(redaction.MASK, redaction.Secrets(secrets).redact(text))
    old = redaction_v2.Secrets(secrets).redact(text)
    assert _masks_at_least_as_much(new, old), (new, old)


_KEY_BETWEEN_MASKS = re.compile(r"\*\*\*[ \t&]*[A-Za-z_]+ ?=\*\*\*")


# Credentials each standing alone, and prose of at least 40 characters between them,
# with a word in it (blanks and "&" alone are what a run's pairs are separated by:
# "password=a & & token=b" was one run before too).
lone_credential = st.sampled_from(
    [
        "password=v1",
        "PASSWORD = v2",
        "db_pwd ='v 3' ",
        "pwd=\t'v4'",
        "token=v5&y",
        "sig=v6 ",
        "Bearer v7",
        "bearer v8,",
        "BeArEr v9;",
        "postgresql://app:v10@db/app",
        "x@y://a:v11@h",
        "https://u:v12@h/",
        "hunter22",
    ]
)
prose_words = st.lists(
    st.sampled_from(
        ["the", "job", "failed", "kept=1", "Bear", "x@y", "a://u:", "=", ",", "&", "'", "row"]
    ),
    min_size=1,
)
prose = prose_words.filter(lambda words: any(word.isalpha() for word in words)).map(" ".join)


@settings(max_examples=500, deadline=None)
@given(
    items=st.lists(
        st.tuples(lone_credential, prose, st.sampled_from([" ", "\n", "\t"])), max_size=8
    )
)
def test_credentials_far_apart_are_masked_exactly_as_before_runs(
    items: list[tuple[str, str, str]],
) -> None:
    text = "".join(
        f"{credential} {(words + ' ') * (40 // len(words) + 1)}{end}"
        for credential, words, end in items
    )
    new = redaction.Secrets(["hunter22"]).redact(text)
    assert new == redaction_v2.Secrets(["hunter22"]).redact(text)


def _ends_in_a_sensitive_key(before: str) -> bool:
    """The rule the look-behind implements, written plainly: the text before "=" ends
    in a sensitive key, in any ASCII letter case, or in one and a space."""
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in before)
    return any(lowered.endswith((key, key + " ")) for key in redaction.SENSITIVE_KEYS)


@settings(max_examples=500, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [*redaction.SENSITIVE_KEYS, "PassWord", "TOKEN", "k", "K", "\u212a", "\u017f"]
        )
        | st.text(alphabet="pPaAsSwWoOrRdDtTkKeEnNyYiIgGcC_- =x", max_size=6),
        max_size=8,
    ).map("".join)
)
def test_the_key_look_behind_holds_exactly_after_a_sensitive_key(text: str) -> None:
    at_key = re.compile("=" + redaction._KEY_BEFORE)
    for i, char in enumerate(text):
        if char == "=":
            assert (at_key.match(text, i) is not None) == _ends_in_a_sensitive_key(text[:i]), text[
                :i
            ]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("pwd =x", "pwd =***"),  # a key and a space at the very start
        ("x=1&sig=2&Token=3 rest", "x=1&sig=*** rest"),
        ("api_\u212aey=x", "api_\u212aey=x"),  # the Kelvin sign is not a "k"
        ("password=a y token=b", "password=*** y token=***"),
        ("Bearer xbearer y, z", "Bearer ***, z"),  # a token that ends in "bearer"
        ("Bearer Bearer y, z", "Bearer ***, z"),
        ("Bearer apassword =x y", "Bearer *** y"),  # a token that ends in a key
        ("Bearer a, Bearer b; bearer c\nBEARER d", "Bearer ***\nBEARER ***"),
        ("Bearer a Bearer b bearer c, d", "Bearer ***, d"),  # a run of three
        ("password=a token=b&SIG=c pwd=d e", "password=*** e"),
    ],
)
def test_credentials_in_the_corners_of_the_patterns_are_masked(text: str, shown: str) -> None:
    assert redaction.Secrets().redact(text) == shown


@pytest.mark.parametrize(
    "piece", ["password=x y ", "Bearer x and ", "TOKEN=x y ", "bearer x, y ", "https://u:x@h/ "]
)
def test_a_long_text_of_credentials_with_words_between_them_is_masked(piece: str) -> None:
    # (Long, but under redaction.DENSE_MIN: each masked alone, as in a short text.)
    text = piece * (redaction.DENSE_MIN // 2 // len(piece))
    masked = redaction.Secrets().redact(text)
    assert "x" not in masked
    assert masked.count(redaction.MASK) == text.count("x")


# The dense shapes an audit of issue 12 found slow (bench.redact measures them), as a
# user sees them masked: three pieces in a row and 128 KiB of them alike, as one run
# (a value or a URL's password runs into the next piece, so each piece's credential
# follows the one before with nothing else between them).
@pytest.mark.parametrize(
    ("piece", "shown"),
    [
        # The first "x@y" is no password, the last "b" neither (no "@" after it).
        ("x@y://a:b", "x@y://a:***@y://a:b"),
        ("x@://u:", "x@://u:***@://u:"),
        # The value of "password =" is the next key (no blank between them); the last
        # "=" has no value.
        ("password =", "password =*** ="),
        ("PASSWORD =", "PASSWORD =*** ="),
        # A quoted value runs to the next quote, the next piece's: the "x" after the
        # last one is left.
        ("pwd=  'xpwd=  'x", "pwd=***x"),
        ("pwd=\t'xpwd=\t'x", "pwd=***x"),
        ("password ='x' ", "password =*** "),
        ("pwd='a\\'b' ", "pwd=*** "),
        ("Bearer x password =y", "Bearer ***"),
        ("Bearer x pwd =y", "Bearer ***"),
        ("Bearer x, ", "Bearer ***, "),
        ("BEARER x, ", "BEARER ***, "),
        ("BeArEr x, ", "BeArEr ***, "),
        ("token=x&y ", "token=***&y "),
        ("password=x ", "password=*** "),
        ("Bearer x ", "Bearer *** "),
    ],
)
def test_dense_hostile_shapes_are_masked_as_one_run(piece: str, shown: str) -> None:
    secrets = redaction.Secrets()
    for count in (3, redaction.DENSE_MIN // 2 // len(piece)):
        assert secrets.redact(piece * count) == shown


def test_a_secret_is_masked_also_where_its_rarest_character_occurs_elsewhere_first() -> None:
    # The registry looks for a secret's rarest character before the secret itself.
    secret = "pa@ss-word"
    registry = redaction.Secrets([secret])
    assert registry.redact(f"a@b {secret} c") == "a@b *** c"
    assert registry.redact("pa ss-word and @") == "pa ss-word and @"


def test_the_whitespace_written_out_is_exactly_what_backslash_s_reads() -> None:
    # The patterns spell \s out as a class (one table look-up per character): over
    # every code point, the same characters.
    spelled = re.compile(f"[{redaction._SPACES}]")
    every = map(chr, range(sys.maxunicode + 1))
    assert [c for c in every if bool(spelled.fullmatch(c)) != bool(re.fullmatch(r"\s", c))] == []


@pytest.mark.parametrize(
    ("chars", "spaces"),
    [
        (":/?#", True),
        (":/?#@", True),
        (",}]\"'", True),
        ("'\\", False),
        ('"\\', False),
        ('"\\\r\n', False),
        ("", True),
        ("\x00]^-\\\U0010ffff", False),
    ],
)
def test_a_run_of_all_but_some_characters_reads_what_the_negated_class_reads(
    chars: str, spaces: bool
) -> None:
    # The patterns read such runs by a positive class of the first 256 code points first
    # (faster): over every code point, the same runs as "[^...]*+", for each run they
    # use and for the characters a class body must escape.
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    negated = re.compile("[^" + re.escape(chars) + (redaction._SPACES if spaces else "") + "]*+")
    for least_one in (False, True):
        run = re.compile(redaction._run_of(chars, spaces, least_one))
        assert run.findall(every) == [r for r in negated.findall(every) if r or not least_one]
    excluded = len({*chars}) + (
        sum(last - first + 1 for first, last in redaction._SPACE_RANGES) if spaces else 0
    )
    assert len("".join(negated.findall(every))) == len(every) - excluded


def test_the_patterns_replaced_whole_capture_nothing() -> None:
    # They are replaced by joining what re.split leaves between matches: a group
    # would put its text back among the pieces.
    patterns = [
        redaction._SENSITIVE_KV_RUN,
        *map(redaction._bearer_pattern, redaction._BEARER_SPELLINGS),
        redaction._bearer_pattern(""),
    ]
    assert [pattern.groups for pattern in patterns] == [0] * len(patterns)


@settings(max_examples=2000, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            ["BeArEr", "bearer", "Bearer", "BEARER", "bEaReR", " ", "\t", "\n", ",", ";", "x",
             "tok", "pwd =", "=y", "password=", "'", '"', "\\", "&", "***", "abearer", "r "]
        ),
        max_size=30,
    ).map("".join)
)  # fmt: skip
def test_the_rare_bearer_pass_tried_word_by_word_is_the_pattern_over_the_text(
    text: str,
) -> None:
    # The reference: the pattern searched over the whole text, every blank tried. The
    # text as drawn (words dense: the pattern over the text) and padded with blanks
    # around it (words sparse: tried word by word).
    blanks = " " * (64 * (text.lower().count("bearer") + 1))
    padded = blanks + text + blanks
    for each in (text, padded):
        whole = redaction._replace_all(redaction._bearer_pattern(""), each, " " + redaction.MASK)
        assert redaction._mask_any_spelling(each) == whole, each


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from([*redaction._ANY_KEY_WORDS, "e", "w", "k", "-", "_", "pa", "sig", "x:"])
        | st.text(alphabet="abcdegiknoprstwyz-_", max_size=8),
        max_size=60,
    ),
    limit=st.sampled_from([0, 1, 3, 8000]),
)
def test_the_key_search_finds_exactly_the_words(pieces: list[str], limit: int) -> None:
    # Past 4 KiB (where the one pattern looks), word by word: at each place of its
    # rarest character while that is rare (``_FIND_LIMIT``), else as a substring; both
    # against Python's own substring test.
    lowered = " " * 4096 + "".join(pieces)
    saved = redaction._FIND_LIMIT
    try:
        redaction._FIND_LIMIT = limit
        found = redaction._has_key(lowered)
    finally:
        redaction._FIND_LIMIT = saved
    assert found == any(key in lowered for key in redaction._ANY_KEY_WORDS)


def test_the_bearer_patterns_are_compiled_when_first_needed() -> None:
    # Each takes the compiler about 0.1 s: a CLI command that meets no bearer word (most)
    # does not pay for them; ``warm`` compiles them all ahead (the daemon, the web).
    code = (
        "from importd import redaction as r\n"
        "print(r._bearer_pattern.cache_info().currsize)\n"
        "print(r.redact('no such word here, password=x'))\n"
        "print(r._bearer_pattern.cache_info().currsize)\n"
        "print(r.redact('Authorization: Bearer abc.def'))\n"
        "print(r._bearer_pattern.cache_info().currsize)\n"
        "r.warm()\n"
        "print(r._bearer_pattern.cache_info().currsize)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "0",
        "no such word here, password=***",
        "0",
        "Authorization: Bearer ***",
        "1",
        "4",
    ]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # A "token" that ends in ":" is a label: the token is the word after it (an
        # audit: "bearer token: abc123" kept abc123, the label masked).
        ("using bearer token: abc123", "using bearer ***"),
        ("Invalid Bearer token: abc123 (expired)", "Invalid Bearer *** (expired)"),
        ("BeArEr token: abc", "BeArEr ***"),
        ("BEARER key:\tabc, next", "BEARER ***, next"),
        ("the bearer token:\nnext line", "the bearer ***\nnext line"),
        ("Bearer abc next", "Bearer *** next"),
        # A key=value pair after the label is the key pass's (the property test below
        # found the pair's value kept when the label rule took its key as the token).
        ("Bearer thex@://u: thepwd=  'x", "Bearer *** thepwd=***"),
        # (What the README says is left: a word with "=" after the label is not taken.)
        ("bearer token: abc==", "bearer *** abc=="),
    ],
)
def test_a_bearer_label_before_its_token_is_masked_with_it(text: str, shown: str) -> None:
    assert redaction.Secrets().redact(text) == shown
