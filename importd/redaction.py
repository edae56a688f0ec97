"""Redaction: secrets masked in every text importd writes (job rows, log lines, the CLI).

Pure: no database, no asyncpg. :class:`Secrets` is a registry of secret values and the
redaction that masks them together with what looks like a credential whatever its value
(a URL's password, the value of a sensitive key, a bearer token).

Linear and fast on any text: every pattern starts with a literal or a small set of
characters, so the regex engine skips ahead at C speed; no unbounded run is followed by
something that can fail and make the engine retry the run from the next character; each
pass runs only when a cheap test says it can match; and no pass does Python work per
match (constant replacements, or ``re.split`` whose pieces are put back together by
``map`` and ``str.join`` in C). Dense hostile text (a credential every few characters)
costs about what ``json.dumps`` of it costs a few times over: adjacent credentials on one
line are masked as one run (``password=*** token=***`` shows as ``password=***``), which
keeps the engine inside one match instead of starting a new one for each.
"""

from __future__ import annotations

import json
import operator
import re
import traceback
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"

# Values of sensitive keys, in libpq's "key=value" form and in URL query strings. A key
# that ends in one of these counts (csrftoken=, db_password=): masking too much is the
# safe side.
SENSITIVE_KEYS = (
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
)
_SENSITIVE_NAMES = frozenset((*SENSITIVE_KEYS, "authorization", "dsn"))


def _anycase(word: str) -> str:
    # Character classes rather than re.IGNORECASE: the engine then scans for the first
    # character at C speed instead of trying every position.
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _trie(words: Iterable[str], char: Callable[[str], str] = re.escape) -> str:
    """A pattern that matches exactly ``words``, as a trie: the engine tries one
    alternative per character instead of one per word."""
    by_first: dict[str, list[str]] = {}
    for word in sorted(set(words)):
        if word:
            by_first.setdefault(word[0], []).append(word[1:])
    alternatives = [char(first) + _trie(rests, char) for first, rests in by_first.items()]
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return f"(?:{body})?" if "" in words else body


# A URL's password: from "://user:" to the last "@" before the host (the authority ends
# at the first "/", "?", "#" or whitespace, as asyncpg and urllib read it), so a raw "@"
# inside the password is masked too. (A password already masked as a registered secret
# is skipped.)
_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/?#\s]*+:)(?!\*\*\*@)(?P<pw>[^/?#\s]*)(?P<at>@)")
# The same for masking: the "@"-ended segments are taken possessively (no backtracking
# on a head without "@"), and only the head is captured: re.split keeps it. (A password
# masked already is masked again, to the same text: cheaper than a test for it.)
_URL_SPLIT = re.compile(r"(://[^:/?#\s]*+:)[^/?#\s@]*+@(?:[^/?#\s@]*+@)*+")

# Keys that end in another key are covered by it (a key that ends in "token" counts).
_KEY_SUFFIXES = tuple(
    sorted({k for k in SENSITIVE_KEYS if not any(k != o and k.endswith(o) for o in SENSITIVE_KEYS)})
)


def _ends_before_equals(words: list[str], depth: int = 1) -> str:
    """Look-behinds that hold at an "=" right after one of ``words`` (in any letter
    case), as a trie from the last character back: one more character at each level,
    so the engine tries a few look-behinds per "=" instead of one per word."""
    by_char: dict[str, list[str]] = {}
    for word in words:
        by_char.setdefault(word[-depth].lower(), []).append(word)
    alternatives = []
    for group in sorted(by_char.values(), key=len, reverse=True):
        if len(group) == 1:
            alternatives.append(f"(?<={_anycase(group[0])}=)")
            continue
        inner = [""] if any(len(w) == depth for w in group) else []
        longer = [w for w in group if len(w) > depth]
        if longer:
            inner.append(_ends_before_equals(longer, depth + 1))
        head = f"(?<={_anycase(group[0][-depth:])}=)"
        alternatives.append(head + (inner[0] if len(inner) == 1 else f"(?:{'|'.join(inner)})"))
    return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"


# A match starts at "=", a literal the engine finds fast, and looks back for the key; it
# is replaced by the constant "=***" (a replacement without group references stays in
# C: a template costs a Python call per match on Python 3.11). A first look-behind for
# the keys' last letters (or the one space allowed before "=") turns most "=" away
# cheaply.
_LAST_LETTERS = "".join(sorted({k[-1] + k[-1].upper() for k in _KEY_SUFFIXES}))
_KEY_BEFORE = rf"(?<=[{_LAST_LETTERS} ]=)" + _ends_before_equals(
    [k + space for k in _KEY_SUFFIXES for space in ("", " ")]
)
_VALUE = r"[ \t]*+(?P<pw>[^\s&'\"]++|'(?:[^'\\]|\\.)*+'?)"
_SENSITIVE_KV = re.compile("=" + _KEY_BEFORE + _VALUE)
# For masking: a run of such pairs on one line (separated by blanks or "&", each later
# key exactly a sensitive one, each later value unquoted) is one match, masked as one.
# (A pair the run stops before is a match of its own; so is a value that ends in a key
# followed by " =": the look-behind reads the text as it was before this pass.)
_KEY_AHEAD = _trie(_KEY_SUFFIXES, _anycase)
_VALUE_NC = _VALUE.replace("?P<pw>", "?:")
_SENSITIVE_KV_RUN = re.compile(
    "=" + _KEY_BEFORE + _VALUE_NC + rf"(?:[ \t&]++{_KEY_AHEAD} ?=[ \t]*+[^\s&'\"]++)*+"
)
# Whether a text holds a key at all (searched in its lower-cased copy).
_ANY_KEY = re.compile(_trie(_KEY_SUFFIXES))

# "Bearer <token>": everything up to whitespace, a quote or a delimiter is the token; a
# run of them on one line is masked as one. The usual spellings are each replaced by a
# constant (the pattern starts with a literal the engine finds fast); any other
# spelling (BeArEr) by a pass that keeps the word as written.
# (A token masked already is masked again, to the same text.) A token that ends in a
# sensitive key followed by " =" takes the value too (masked first, the token would take
# the key the value's pass looks back for), and one that ends in "bearer" is followed
# by the next token in the run (its own match could not start inside this one).
_CREDENTIAL_TAIL = r"[ \t]++[^\s\"'<>,;]++" + f"(?: ={_KEY_BEFORE}{_VALUE_NC})?+"
_BEARER_WORD = _anycase("bearer")
_BEARER_RUN = (
    rf"{_CREDENTIAL_TAIL}(?:(?:[ \t]++{_BEARER_WORD}|(?<={_BEARER_WORD})){_CREDENTIAL_TAIL})*+"
)
_BEARER_SPELLINGS = {
    word: re.compile(word + _BEARER_RUN) for word in ("Bearer", "bearer", "BEARER")
}
_BEARER_SPLIT = re.compile(f"({_BEARER_WORD}){_BEARER_RUN}")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    """``text`` with A-Z lower-cased, every character where it was (str.lower() may
    change the length of non-ASCII text)."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def _mask_after_heads(pattern: re.Pattern[str], text: str, mask: str) -> str:
    """``text`` with every match of ``pattern`` (whose one group is the head to keep)
    replaced by its head and ``mask``; in C whatever the number of matches."""
    pieces = pattern.split(text)
    if len(pieces) == 1:
        return text
    pieces[1::2] = map(operator.add, pieces[1::2], repeat(mask))
    return "".join(pieces)


def _mask_urls(text: str) -> str:
    if "://" not in text or "@" not in text:
        return text
    return _mask_after_heads(_URL_SPLIT, text, MASK + "@")


def _mask_bearer(text: str, lowered: str) -> str:
    total = lowered.count("bearer")
    if not total:
        return text
    for word, pattern in _BEARER_SPELLINGS.items():
        if word in text:
            found = text.count(word)
            text = pattern.sub(word + " " + MASK, text)
            total -= found
    if total > 0:  # a rarer spelling (BeArEr) is there too
        text = _mask_after_heads(_BEARER_SPLIT, text, " " + MASK)
    return text


def _mask_sensitive_values(text: str, lowered: str) -> str:
    equals = text.count("=")
    # Text dense with "=" is searched for a key first (each "=" costs the engine a try).
    if not equals or (equals > len(text) >> 6 and not _ANY_KEY.search(lowered)):
        return text
    return _SENSITIVE_KV_RUN.sub("=" + MASK, text)


# Shorter secret values are not masked in free text (they would mask innocent words);
# the daemon warns at start-up about a setting whose secret is that short.
MIN_SECRET_LENGTH = 6


class Secrets:
    """The secret values a process knows (passwords, tokens), and the redaction that
    masks them in any text together with what looks like a credential.

    Registering is for ever: a value once registered is masked in every text redacted
    from then on, also percent-encoded and as escaped inside a JSON string. Values
    shorter than 6 characters are ignored (they would mask innocent words), and a
    secret that contains "*" cannot be guaranteed masked (the mask is made of stars).
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._forms: frozenset[str] = frozenset()
        # Longest first: a secret that holds another is masked whole.
        self._ordered: tuple[str, ...] = ()
        for value in values:
            self.register(value)

    def register(self, value: str | None) -> None:
        """Mask ``value`` (and its encoded forms) in every redacted text from now on."""
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        forms = {value, unquote(value), quote(value, safe=""), json.dumps(value)[1:-1]}
        self._set(self._forms | {form for form in forms if len(form) >= MIN_SECRET_LENGTH})

    def clear(self) -> None:
        """Forget every registered value."""
        self._set(frozenset())

    @property
    def forms(self) -> frozenset[str]:
        """Every string masked as a registered secret (values and their encodings)."""
        return self._forms

    def restore(self, forms: Iterable[str]) -> None:
        """Mask exactly ``forms`` (as :attr:`forms` gave them) from now on."""
        self._set(frozenset(forms))

    def _set(self, forms: frozenset[str]) -> None:
        # One assignment each, so a redaction in another thread sees one state or the
        # other (an ordering that misses a form it has not seen yet is harmless).
        self._ordered = tuple(sorted(forms, key=lambda s: (-len(s), s)))
        self._forms = forms

    def mask(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        # Each secret that occurs at all (the ``in`` tests run at C speed; most texts
        # hold none), longest first, replaced by str.replace: linear, and total: a
        # replacement only inserts "***", so it cannot make a secret (one without "*")
        # appear, and an occurrence left whole after a pass would have been replaced.
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def redact(self, text: str) -> str:
        """``text`` with every registered secret, connection-string passwords, values of
        sensitive keys (``SENSITIVE_KEYS``) and bearer tokens replaced by ``***``; for
        log lines, error messages and job rows alike. Linear in the length of
        ``text``."""
        text = _mask_urls(self.mask(text))
        if not ("=" in text or "b" in text or "B" in text):
            return text
        lowered = _ascii_lower(text)
        return _mask_sensitive_values(_mask_bearer(text, lowered), lowered)

    def redact_value(self, value: Any) -> Any:
        """``value`` with :meth:`redact` applied to every string inside it, keys of
        objects included, and the string under a sensitive key masked whole."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self.redact_value(item) for item in value]
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                masked = self.redact(key) if isinstance(key, str) else key
                while masked in out:  # two keys masked alike: keep both values
                    masked = f"{masked}#"
                sensitive = isinstance(key, str) and key.lower() in _SENSITIVE_NAMES
                out[masked] = (
                    MASK if sensitive and isinstance(item, str) else self.redact_value(item)
                )
            return out
        return value


# The process's registry. Module-level because what it protects is the process's: the
# settings' secrets (whoever builds them: the CLI, an embedding program, a test) must be
# masked in every line structlog writes, every traceback, every job row and every page,
# and most of those places (log processors, exception formatting, a handler's result)
# have no settings object at hand to ask; one process holds one set of credentials.
# Code that wants a registry of its own (a test) builds a ``Secrets()``.
SECRETS = Secrets()


def register_secret(value: str | None) -> None:
    """Register ``value`` with the process's registry (:data:`SECRETS`)."""
    SECRETS.register(value)


def redact(text: str) -> str:
    """:meth:`Secrets.redact` with the process's registry."""
    return SECRETS.redact(text)


def redact_value(value: Any) -> Any:
    """:meth:`Secrets.redact_value` with the process's registry."""
    return SECRETS.redact_value(value)


def secrets_in(dsn: str) -> list[str]:
    """The passwords in a connection string: the URL's password (percent-decoded too)
    and the values of sensitive keys, in URL or ``key=value`` form."""
    found = [m["pw"] for m in _PASSWORD_IN_URL.finditer(dsn)]
    # libpq's key=value form: the value may be quoted with backslash escapes.
    for match in _SENSITIVE_KV.finditer(dsn):
        value = match["pw"]
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:].removesuffix("'"))
        found.append(value)
    return [form for value in found for form in (value, unquote(value)) if form]


# How much of an error text a job row keeps.
MAX_STORED_ERROR = 4000


def clean_text(text: str, limit: int = MAX_STORED_ERROR) -> str:
    """``text`` fit for a text column and a log line: secrets masked, NUL characters
    removed (PostgreSQL text cannot hold them), lone surrogates replaced, at most
    ``limit`` characters (the cut marked with an ellipsis)."""
    text = redact(text.replace("\x00", ""))
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def traceback_text(exc: BaseException) -> str:
    """``exc``'s traceback, redacted: for the ``exception`` key of a log line about a
    job, whose handler's messages may hold anything (a token an endpoint echoed), even
    where structlog was never configured to redact (importd used as a library)."""
    return redact("".join(traceback.format_exception(exc)))
