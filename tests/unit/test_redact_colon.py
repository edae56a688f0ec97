"""Sensitive keys before ":" (redact21): the value after a quoted sensitive key and a
colon in JSON or a Python repr (``{"access_token":"abc123"}``, ``'api_key': 'x'``), and
after a bare one in YAML or a header (``password: hunter2``, ``Authorization: Basic …``,
``X-Api-Key: abc``), is masked, the key kept; an unregistered secret an endpoint answered
(an HTTP error body in ``last_error``, a JSON answer over 64 KiB stored as text) leaked
before. The structured path (``redact_value``) calls the same keys sensitive."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd import redaction
from importd.redaction import MASK, Secrets


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # JSON, compact and as json.dumps writes it, and a Python repr.
        ('{"access_token":"abc123"}', '{"access_token":"***"}'),
        ('"password": "hunter2"', '"password": "***"'),
        ("'api_key': 'x'", "'api_key': '***'"),
        # An escaped quote inside the value is part of it.
        ('"password": "a\\"b"', '"password": "***"'),
        ('{"password": "a\\\\"}', '{"password": "***"}'),
        # Whatever whitespace after the colon, one blank before it.
        ('{"password":\n    "hunter2"}', '{"password":\n    "***"}'),
        ('{"password" : "hunter2"}', '{"password" : "***"}'),
        ('{"password":\t"hunter2"}', '{"password":\t"***"}'),
        # Non-string values: a number or a bare word; not null, true or false, and not
        # an object or an array (their own keys are judged one by one).
        ('"pin": 1234', '"pin": ***'),
        ('{"pin": 1234, "user": "bob"}', '{"pin": ***, "user": "bob"}'),
        ('{"pin":-12.5e3}', '{"pin":***}'),
        ('{"password": null, "token": true}', '{"password": null, "token": true}'),
        ('{"token": {"value": "abc"}}', '{"token": {"value": "abc"}}'),
        # Every key ending in a sensitive one, in any letter case; the others kept.
        (
            '{"access_token":"a1","token_type":"Bearer","expires_in":3600,"Refresh_Token":"r2"}',
            '{"access_token":"***","token_type":"Bearer","expires_in":3600,"Refresh_Token":"***"}',
        ),
        ('{"user": "bob", "PASSWORD": "hunter2", "id": 3}', '{"user": "bob", "PASSWORD": "***", "id": 3}'),
        ('{"tokens": "x", "password_hint": "y"}', '{"tokens": "x", "password_hint": "y"}'),
        ("{'client_secret': \"it's\"}", "{'client_secret': \"***\"}"),
        # JSON inside a JSON string (an error body quoted in a message): the value runs
        # to the end of the string around it (masked whole, the escapes with it).
        (
            '{"error": "{\\"password\\": \\"hunter2\\", \\"user\\": \\"bob\\"}", "code": 1}',
            '{"error": "{\\"password\\": \\"***", "code": 1}',
        ),
        # YAML and header style: the rest of the line, or of the JSON string it is in.
        ("api_key: abc", "api_key: ***"),
        ("password: hunter2", "password: ***"),
        ("password: correct horse battery\nuser: bob", "password: ***\nuser: bob"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ("Authorization: Token abc", "Authorization: Token ***"),
        ("authorization: abc", "authorization: ***"),
        ("Proxy-Authorization: Digest a=1, b=2\r\nHost: h", "Proxy-Authorization: Digest ***\r\nHost: h"),
        ("X-Api-Key: abc", "X-Api-Key: ***"),
        ("x-auth-token:abc\r\n", "x-auth-token:***\r\n"),
        ("password : hunter2", "password : ***"),
        ("password: 'hunter2' (kept)", "password: '***' (kept)"),
        ('{"detail":"Invalid token: abc123","code":"auth"}', '{"detail":"Invalid token: ***","code":"auth"}'),
        ('{"detail":"token: a\\"b c"}', '{"detail":"token: ***"}'),
        # Prose after a sensitive key and a colon cannot be told from a secret: masked.
        ("password: must be 8 characters", "password: ***"),
        # An exception's name that ends in a key, before its message: kept (importd's
        # own HttpToken among them): a word that starts with a capital.
        ("HttpToken: http_token is set, but", "HttpToken: http_token is set, but"),
        ("itsdangerous.exc.BadSignature: no match", "itsdangerous.exc.BadSignature: no match"),
        ("Error: InvalidToken: expired", "Error: InvalidToken: expired"),
        # A camelCase bare key (a YAML setting) is a key: masked, as quoted.
        ("apiToken: abc", "apiToken: ***"),
        ("db:\n  dbPassword: hunter2\n  user: bob", "db:\n  dbPassword: ***\n  user: bob"),
        ("clientSecret : s3cr3t", "clientSecret : ***"),
        ("self.apiKey: k1, next", "self.apiKey: ***"),
        ("_PrivateToken: x", "_PrivateToken: ***"),
        ("HttpToken: kept, apiToken: masked", "HttpToken: kept, apiToken: ***"),
        ('{"apiToken": "abc"}', '{"apiToken": "***"}'),
        ("X-Auth-Token: abc", "X-Auth-Token: ***"),
        ("\nToken: abc", "\nToken: ***"),
        # No colon right after the key: kept.
        ("column 'password' is not of type integer", "column 'password' is not of type integer"),
        ('null value in column "token" of relation "t"', 'null value in column "token" of relation "t"'),
        ("the password is wrong: try again", "the password is wrong: try again"),
        ("password:", "password:"),
        ('{"password": ""}', '{"password": ""}'),
    ],
)  # fmt: skip
def test_a_value_after_a_sensitive_key_and_a_colon_is_masked(text: str, shown: str) -> None:
    assert Secrets().redact(text) == shown


def test_an_authorization_header_keeps_its_scheme_and_masks_the_rest_of_the_line() -> None:
    # The bearer pass masks the token; the header's rest of the line goes with it.
    masked = Secrets().redact("401 from endpoint: Authorization: Bearer tok, retry\nnext")
    assert masked == "401 from endpoint: Authorization: Bearer ***\nnext"


def test_an_http_error_body_cut_inside_a_value_is_masked_to_the_cut() -> None:
    body = '{"error": "denied", "access_token": "' + "s3cr3t" * 100 + '"}'
    assert "s3cr3t" not in Secrets().head(body, 60)
    assert Secrets().head(body, 60).startswith('{"error": "denied", "access_token": "***')


def test_a_colon_credential_in_a_dense_text_is_masked() -> None:
    # A long text dense with places a credential could start is masked from the first:
    # where a key is, a ":" is one.
    text = '{"password": "hunter2"} token ' + "=" * redaction.DENSE_MIN
    assert Secrets().redact(text) == '{"password": ***'
    text = '{"password": "hunter2"} ' + '{"id": 1}' * (redaction.DENSE_MIN // 9)
    assert Secrets().redact(text) == '{"password": ***'
    text = "api_key: hunter2 " + "Bearer x " * (redaction.DENSE_MIN // 9)
    assert "hunter2" not in Secrets().redact(text)


# Keys as a producer may spell them: a sensitive key, in any ASCII letter case, after a
# prefix (db_password, X-Api-Key, csrftoken).
sensitive_key = st.builds(
    lambda prefix, key, cases: (
        prefix
        + "".join(
            c.upper() if up else c for c, up in zip(key, cases + [False] * len(key), strict=False)
        )
    ),
    st.sampled_from(["", "x-", "db_", "csrf", "X-", "client_", "my"]),
    st.sampled_from([*redaction.SENSITIVE_KEYS, "api-key", "authorization", "pin", "dsn"]),
    st.lists(st.booleans(), max_size=20),
)
# A value with markers that no key, JSON syntax or mask holds (M0K, M1K, …) between
# arbitrary pieces of text: one surviving stretch of it shows a marker.
marked_value = st.lists(
    st.text(st.characters(blacklist_characters="*", blacklist_categories=["Cs"]), max_size=8),
    min_size=1,
    max_size=4,
).map(lambda pieces: "".join(f"{piece}M{i}K" for i, piece in enumerate(pieces)))
other_key = st.sampled_from(["id", "user", "note", "error", "tokens", "password_hint", "a"])
other_value = st.one_of(st.text(max_size=10), st.integers(-999, 999), st.none(), st.booleans())
_MARKER = re.compile(r"M\d+K")
SPELLINGS = [
    {},
    {"ensure_ascii": False},
    {"separators": (",", ":")},
    {"separators": (",", ":"), "ensure_ascii": False},
    {"indent": 2},
    {"indent": "\t", "ensure_ascii": False},
    {"indent": 0},
    {"separators": (", ", " : ")},
]


@settings(max_examples=500, deadline=None)
@given(
    key=sensitive_key,
    value=marked_value | st.integers(10**6, 10**12).map(lambda n: -n if n % 3 else n),
    before=st.dictionaries(other_key, other_value, max_size=3),
    after=st.dictionaries(other_key, other_value, max_size=3),
    spelling=st.sampled_from(range(len(SPELLINGS))),
    wrap=st.sampled_from(["plain", "list", "nested", "twice", "repr", "prefixed"]),
)
def test_no_value_after_a_sensitive_key_survives_in_json_text(
    key: str,
    value: str | int,
    before: dict[str, object],
    after: dict[str, object],
    spelling: int,
    wrap: str,
) -> None:
    obj = {**{k: v for k, v in before.items() if k != key}, key: value}
    obj |= {k: v for k, v in after.items() if k != key and k not in obj}
    dumps = SPELLINGS[spelling]
    if wrap == "plain":
        text = json.dumps(obj, **dumps)  # type: ignore[arg-type]
    elif wrap == "list":
        text = json.dumps([1, obj, "x"], **dumps)  # type: ignore[arg-type]
    elif wrap == "nested":
        text = json.dumps({"data": {"items": [obj]}}, **dumps)  # type: ignore[arg-type]
    elif wrap == "twice":  # an error body quoted inside a JSON message
        text = json.dumps({"error": json.dumps(obj, **dumps)}, **dumps)  # type: ignore[arg-type]
    elif wrap == "repr":
        text = repr(obj)
    else:  # the start of an HTTP error body in last_error
        text = "HTTP 400 from https://api.example/v1: " + json.dumps(obj, **dumps)  # type: ignore[arg-type]
    masked = Secrets().redact(text)
    if isinstance(value, str):
        assert not _MARKER.search(masked), (text, masked)
    else:
        assert str(value) not in masked, (text, masked)
    # The structured path masks it too, and the other keys' values are kept there.
    structured = Secrets().redact_value(obj)
    assert structured[key] == MASK
    assert all(structured[k] == Secrets().redact_value(v) for k, v in obj.items() if k != key)


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=16)
    | sensitive_key
    | st.sampled_from(["api_\u212aey", "passwor", "token ", "tokens", "Pin", "spin", "dsn_x"]),
    value=st.integers(10**6, 10**9).map(lambda n: f"V{n}W"),
    spelling=st.sampled_from(range(len(SPELLINGS))),
)
def test_the_structured_path_and_the_text_path_agree_on_which_keys_are_sensitive(
    key: str, value: str, spelling: int
) -> None:
    if any(c in key for c in "*=:") or "bearer" in key.lower():
        return  # (keys that other patterns mask themselves)
    text = json.dumps({key: value}, **SPELLINGS[spelling])  # type: ignore[arg-type]
    masked_as_text = value not in Secrets().redact(text)
    masked_as_value = Secrets().redact_value({key: value})[key] == MASK
    assert masked_as_text == masked_as_value, (key, text)
    assert masked_as_value == redaction.is_sensitive_key(key)


# The reference for camelCase keys before ":": a word that ends in a sensitive key whose
# first letter is a capital after a lower-case letter or a digit, then ":" (one blank
# allowed between), is a setting's name unless the word starts with a capital.
_CAMEL_REFERENCE = re.compile(r"(?<![0-9A-Z_a-z])([0-9A-Z_a-z]{0,60}?[a-z0-9])([A-Z][a-z]+)[ \t]?:")


@settings(max_examples=400, deadline=None)
@given(
    head=st.sampled_from(["", "a", "db", "x9", "my_", "Http", "Bad", "Invalid", "X", "jwt.Bad"]),
    key=st.sampled_from(["Token", "Password", "Secret", "Key", "Signature", "Pin", "Passwd"]),
    blank=st.sampled_from(["", " ", "\t"]),
    value=st.integers(10**6, 10**9).map(lambda n: f"V{n}W"),
    before=st.sampled_from(["", "\n", "  ", "config:\n  ", "error: ", "(", "x."]),
)
def test_a_camel_case_key_is_masked_unless_its_word_is_a_class_name(
    head: str, key: str, blank: str, value: str, before: str
) -> None:
    text = f"{before}{head}{key}{blank}: {value} and more"
    masked = value not in Secrets().redact(text)
    word = head.rpartition(".")[2] + key
    sensitive = redaction.is_sensitive_key(key.lower())
    camel_tail = bool(head) and (head[-1].islower() or head[-1].isdigit())
    if not sensitive:
        assert not masked, text
    elif camel_tail:  # the case this pass judges: by the word's first letter
        assert masked == (not word[0].isupper()), text
        assert _CAMEL_REFERENCE.search(text) is not None
    else:  # a key alone, or after "_" or a capital: the bare pass's, masked
        assert masked, text


def test_a_text_with_many_camel_case_keys_masks_them_all() -> None:
    # Past the limit every such place is masked unjudged (more, never less).
    many = "".join(f"HttpToken: kept{n} apiToken: s{n}\n" for n in range(300))
    masked = Secrets().redact(many)
    assert all(f"s{n}\n" not in masked for n in range(300))
    few = "".join(f"HttpToken: kept{n}\napiToken: s{n}\n" for n in range(100))
    masked = Secrets().redact(few)
    assert all(f"kept{n}\n" in masked and f"s{n}\n" not in masked for n in range(100))


def test_past_the_limit_the_place_where_the_judging_stopped_is_masked_too() -> None:
    # (The rest was masked from the limit's ":" on, cut off from its key: that one place
    # was kept.) An audit's three texts.
    assert "LEAK" not in Secrets().redact("apiToken: a\n" * 256 + "apiToken: LEAK")
    assert "hunter2" not in Secrets().redact("HttpToken: m\n" * 256 + "dbPassword: hunter2")
    masked = Secrets().redact("".join(f"apiToken: s{n}\n" for n in range(300)))
    assert [n for n in range(300) if f"s{n}\n" in masked] == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("X-AuthToken: abc", "X-AuthToken: ***"),  # a header's name, not a class's
        ("\u00f1ApiToken: x", "\u00f1ApiToken: ***"),  # the word goes on before the A
        ("A" + "b" * 194 + "Token: kept", "A" + "b" * 194 + "Token: kept"),  # 200: a name
        ("A" + "b" * 195 + "Token: x", "A" + "b" * 195 + "Token: ***"),  # 201: not one
        (" A" + "b" * 195 + "Token: x", " A" + "b" * 195 + "Token: ***"),
        ("InvalidToken: apiToken: x", "InvalidToken: apiToken: ***"),
    ],
)
def test_what_is_read_as_a_class_name(text: str, shown: str) -> None:
    assert Secrets().redact(text) == shown


def test_a_line_of_class_names_is_read_once() -> None:
    """Each kept place's value was read to the end of its line, then read again from the
    next place: 256 class names and a megabyte on one line took 0.4 - 2.7 s (an audit's
    texts); a place's value is now read only where it is masked."""
    for tail in ("a", "x\\y", "\\\\", "\u5bc6"):
        text = "HttpToken: m " * 256 + tail * ((1 << 20) // len(tail))
        plain = "Http: m " * 256 + tail * ((1 << 20) // len(tail))
        best = min(_timed(Secrets().redact, text) for _ in range(3))
        reference = min(_timed(Secrets().redact, plain) for _ in range(3))
        assert best < 10 * reference + 0.02, (tail, best, reference)
        assert Secrets().redact(text).startswith("HttpToken: m HttpToken: m ")


def _timed(fn: Callable[[str], object], text: str) -> float:
    start = time.perf_counter()
    fn(text)
    return time.perf_counter() - start
