"""Redaction: secrets masked in every text importd writes (job rows, log lines, the CLI).

Pure: no database, no asyncpg. :class:`Secrets` is a registry of secret values and the
redaction that masks them together with what looks like a credential whatever its value
(a URL's password, the value of a sensitive key, a bearer token).

Credentials that follow one another with nothing between them but what cannot be
ordinary prose are masked as one run, the text between them with them: key=value pairs
separated by blanks or "&" (each later key exactly a sensitive one), or by nothing after
a closing quote, and "&"-parameters without a value between two pairs (``password=a
token='b' sig=c`` and ``token=a&y sig=b`` show as ``password=***`` and ``token=***``);
a bearer token and the next after blanks, a comma or a semicolon, and the key=value pairs
right after a token (``Bearer a, Bearer b pwd=c`` shows as ``Bearer ***``); a URL's
password and the next URL's when only a host lies between its "@" and the next "://"
(``x@y://a:b@h://c:d@e`` shows as ``x@y://a:***@e``). A word, a line break, a "/" or any
other character between two credentials keeps them apart, each masked alone; a run
never masks less than its credentials would alone (a unit test compares with the
module as it was before runs, ``tests/unit/redaction_v2.py``). A long text (256 KiB or
more) dense with places a credential could start is masked from the first on, in one
piece (``DENSE_MIN``): no shape of text then costs more than about 16 ms a megabyte.
A run of characters but a few is read by a positive class first (``_run_of``): the
engine reads it three times faster than ``[^...]``.

Linear and fast on any text: every pattern starts with a literal or a small set of
characters, so the regex engine skips ahead at C speed; no unbounded run is followed by
something that can fail and make the engine retry the run from the next character; each
pass runs only when a cheap test says it can match; and no pass does Python work per
match (constant replacements, or ``re.split`` whose pieces are laid out by slice
assignments and put back together by ``str.join``, in C). A run is one match, and the
engine's cost of a match (on Python 3.11, measured with callgrind, about 1,700
instructions for the simplest bearer pattern, a fourth of them allocating and freeing
the engine's stack, against about 800 for a literal) is what dense hostile text costs:
a run costs about 60 - 150 ns per credential in it, about what a match costs, so dense
runs cost 8 - 18 ms a megabyte here, and credentials a few characters apart with a word
between them (each its own match) 10 - 20 ms, which ``DENSE_SPACING`` bounds. The
patterns keep the work per credential near that: a look-behind per key, alternatives
that each start with a character or a class the engine skips them by, a look-ahead
before a run's next pair.
"""

from __future__ import annotations

import functools
import json
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote

MASK = "***"

# Values of sensitive keys: in libpq's "key=value" form and in URL query strings, after
# a colon (JSON, a Python repr, YAML, an HTTP header), and under a key of a structured
# value (``redact_value``), all by the same rule (``is_sensitive_key``). A key that ends
# in one of these counts (csrftoken=, db_password, X-Api-Key: , "listen_dsn":): masking
# too much is the safe side.
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
    "api-key",
    "pin",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
    "authorization",
    "dsn",
)


def _anycase(word: str) -> str:
    # Character classes rather than re.IGNORECASE: the engine then scans for the first
    # character at C speed instead of trying every position.
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _trie_branches(words: Iterable[str], char: Callable[[str], str] = re.escape) -> list[str]:
    """The alternatives of :func:`_trie`'s pattern for ``words`` (the empty word aside),
    one for each first character, each starting with it."""
    by_first: dict[str, list[str]] = {}
    for word in sorted(set(words)):
        if word:
            by_first.setdefault(word[0], []).append(word[1:])
    return [char(first) + _trie(rests, char) for first, rests in by_first.items()]


def _trie(words: Iterable[str], char: Callable[[str], str] = re.escape) -> str:
    """A pattern that matches exactly ``words``, as a trie: the engine tries one
    alternative per character instead of one per word."""
    words = list(words)
    alternatives = _trie_branches(words, char)
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return f"(?:{body})?" if "" in words else body


# Whitespace as ``\s`` reads it in a str pattern (str.isspace(), a unit test compares
# them over every code point), as code point ranges, and written out as a class's
# body: ``\s`` is a category the engine tests after a class's other items, for every
# character of every run.
_SPACE_RANGES = (
    (0x09, 0x0D),
    (0x1C, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)


def _class_body(ranges: Iterable[tuple[int, int]]) -> str:
    """The body of a character class (what goes between "[" and "]") holding the code
    points of ``ranges`` (first, last)."""
    return "".join(
        _class_char(first) if first == last else f"{_class_char(first)}-{_class_char(last)}"
        for first, last in ranges
    )


def _class_char(code: int) -> str:
    """The code point ``code`` as it stands in a class: an ASCII letter or digit as it
    is, anything else as an escape."""
    char = chr(code)
    if char.isascii() and char.isalnum():
        return char
    if code < 0x100:
        return rf"\x{code:02x}"
    return rf"\u{code:04x}" if code < 0x10000 else rf"\U{code:08x}"


_SPACES = _class_body(_SPACE_RANGES)


def _none_of(chars: str, spaces: bool = True) -> str:
    """One character that is none of ``chars`` (nor whitespace, unless ``spaces`` is
    false): ``[^...]``."""
    return f"[^{re.escape(chars)}{_SPACES if spaces else ''}]"


def _run_of(chars: str, spaces: bool = True, least_one: bool = False) -> str:
    """A run (possessive: never given back) of characters none of which is in ``chars``
    (nor whitespace, unless ``spaces`` is false), at least one with ``least_one``.

    Written as a run of the first 256 code points, by a positive class, and then a run of
    any such character: the engine tests a negated class by trying each of its items and
    failing them all, three to four times slower than a positive class it reads in one
    table look-up (6 against 1.8 ms a megabyte for a value's run of letters). A positive
    class of every other code point would need ranges up to U+10FFFF, whose compilation
    took 5 s of every start; and a repetition of the two classes as alternatives cost a
    short run (a value dense with escapes) three times its time. Text past U+00FF goes by
    the negated class from its first such character on, as fast as before. (A unit test
    compares the run with ``[^...]*+`` over every code point.)"""
    excluded = {ord(c) for c in chars} | {
        code
        for first, last in (_SPACE_RANGES if spaces else ())
        for code in range(first, min(last, 0xFF) + 1)
    }
    fast: list[tuple[int, int]] = []
    for code in range(0x100):
        if code in excluded:
            continue
        if fast and fast[-1][1] == code - 1:
            fast[-1] = (fast[-1][0], code)
        else:
            fast.append((code, code))
    other = _none_of(chars, spaces)
    return f"{f'(?={other})' if least_one else ''}[{_class_body(fast)}]*+{other}*+"


# A URL's password: from "://user:" to the last "@" before the host (the authority ends
# at the first "/", "?", "#" or whitespace, as asyncpg and urllib read it), so a raw "@"
# inside the password is masked too. (A password already masked as a registered secret
# is skipped.)
_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/?#\s]*+:)(?!\*\*\*@)(?P<pw>[^/?#\s]*)(?P<at>@)")
# The same for masking: the password runs to the last "@" before the end of the
# authority (the engine takes the run and steps back to its last "@", within the run), and
# only "://" and the user are captured: re.split keeps them, and ``_mask_after`` puts the
# mask and "@" after them. (A password masked already is masked again, to the same
# text: cheaper than a test for it.) A run of them is one match: after the "@", a host
# (no ":", "/", "?", "#", "@" or whitespace) and the next "://user:password@" are masked
# with it, as often as they follow; an "@" followed by anything else costs one failed
# branch. A failed match, or a run's failed next URL, reads no further than the next
# "/", so no text is read more than twice.
_URL_USERINFO = f"{_run_of(':/?#')}:{_none_of('/?#')}*@"
_URL_NEXT = f"{_run_of(':/?#@')}://{_URL_USERINFO}"
_URL_SPLIT = re.compile(
    f"(://{_run_of(':/?#')}:){_none_of('/?#')}*@(?:{_URL_NEXT}(?:{_URL_NEXT})*+|)"
)

# Keys that end in another key are covered by it (a key that ends in "token" counts).
_KEY_SUFFIXES = tuple(
    sorted({k for k in SENSITIVE_KEYS if not any(k != o and k.endswith(o) for o in SENSITIVE_KEYS)})
)


def _key_ends_here(
    keys: Iterable[str], camel_tail: bool = True, *, only_camel: bool = False
) -> str:
    """A pattern one character wide that holds where the text up to and including it
    ends with one of ``keys`` (in any ASCII letter case).

    Meant for the inside of a look-behind: it reads the key's last character as a
    character class, so the engine's alternation skips every group whose last
    character differs without entering it (it does so for alternatives that start
    with a character class, not for ones that start with a look-behind), and only
    then looks back for the whole key. A key thus costs one look-behind, where a
    trie of look-behinds from the last character back (the previous form) cost one
    per level, four or five for ``password``: per "=" of dense text, that was a
    third of the time. ``camel_tail=False``: not where the key is the capitalised
    tail of a longer word (``HttpToken``), checked after the key's own look-behind
    only (a check of every key's per match cost 350 ns). ``only_camel``: there only."""
    by_last: dict[str, list[str]] = {}
    for key in keys:
        by_last.setdefault(key[-1].lower(), []).append(key)
    alternatives = []
    for last, group in sorted(by_last.items(), key=lambda item: (-len(item[1]), item[0])):
        # (?ai:) is ASCII-only case folding, exactly [pP][aA]...: no Kelvin sign for k.
        whole = [
            f"(?<=[a-z0-9]{key[0].upper()}(?ai:{re.escape(key[1:])}))"
            if only_camel
            else f"(?<=(?ai:{re.escape(key)}))"
            + ("" if camel_tail else f"(?<![a-z0-9]{key[0].upper()}(?ai:{re.escape(key[1:])}))")
            for key in sorted(group, key=len, reverse=True)
        ]
        body = whole[0] if len(whole) == 1 else f"(?:{'|'.join(whole)})"
        alternatives.append(_anycase(last) + body)
    return f"(?:{'|'.join(alternatives)})"


# A match starts at "=", a literal the engine finds fast, and looks back for the key; it
# is replaced by the constant "=***" (a replacement without group references stays in
# C: a template costs a Python call per match on Python 3.11). One look-behind of two
# characters holds the key's last character (or the one space allowed before "="), so
# an "=" after anything else fails at once. The space is tried first: a literal the
# engine skips at once where it is absent, where the key's alternatives, tried first,
# cost " =" a fifth of the pass (dense "password =" text).
_KEY_HERE = _key_ends_here(_KEY_SUFFIXES)
_KEY_BEFORE = rf"(?<=(?:\ (?<={_KEY_HERE}\ )|{_KEY_HERE})=)"
_QUOTED = r"'[^'\\]*+(?:\\.[^'\\]*+)*+'?"
_VALUE = rf"[ \t]*+(?P<pw>[^\s&'\"]++|{_QUOTED})"
_SENSITIVE_KV = re.compile("=" + _KEY_BEFORE + _VALUE)
# For masking: a run of such pairs on one line is one match, masked as one. A later
# pair follows a blank (then more blanks or "&", and a key exactly a sensitive one, or
# " =" after a value that ends in a key), an "&" (the same, or a key right after it, or
# parameters without a value and one blank or "&" before the key), or a closing quote
# (any sensitive key right after it). (A pair the run stops before is a match of its
# own; the look-behind reads the text as it was before this pass.)
# The value as _VALUE reads it, with the usual cases (no blank before the value) tried
# first: one alternation whose branches each start with a character or a class the
# engine skips them by, instead of a repetition and an alternation.
# A run's next pairs only after a look-ahead for a blank, "&", "=" or a key's first
# letter, or a character of a key (after a quote): a failing look-ahead costs less than
# a failing alternation, and dense text with a word between its pairs ("password=x y ")
# fails it at every pair. The alternatives after a blank are the trie's first letters,
# each a branch of its own, so a letter that starts no key is skipped at once.
# (Values and tokens by negated classes, not ``_run_of``: the bearer patterns hold them
# dozens of times over, and compiling runs there cost 0.2 s more of every start.)
_VALUE_FAST = rf"(?:[^{_SPACES}&'\"]++|{_QUOTED}|[ \t]++(?:[^{_SPACES}&'\"]++|{_QUOTED}))"
_KEY_AHEAD = _trie(_KEY_SUFFIXES, _anycase)
_WORD = "[-.%+0-9A-Z_a-z]"
_PAIR_AFTER_BLANK = [
    f"={_KEY_BEFORE}",
    *(f"{key} ?=" for key in _trie_branches(_KEY_SUFFIXES, _anycase)),
    rf"[ \t&][ \t&]*+{_KEY_AHEAD} ?=",
]
_PAIR_AFTER_AMP = (
    rf"&(?:[ \t&]*+{_KEY_AHEAD} ?=|{_WORD}*+(?: ?={_KEY_BEFORE}"
    rf"|(?!=)(?:&{_WORD}*+(?!=))*+[ \t&]{_KEY_AHEAD} ?=))"
)
_PAIR_AFTER_QUOTE = rf"{_WORD}{_WORD}*+ ?={_KEY_BEFORE}"
_NEXT_PAIR = (
    rf"(?:[ \t](?:{'|'.join(_PAIR_AFTER_BLANK)})|{_PAIR_AFTER_AMP}|{_PAIR_AFTER_QUOTE})"
    + _VALUE_FAST
)
_KEY_FIRST = "".join(sorted({c for key in _KEY_SUFFIXES for c in (key[0], key[0].upper())}))
_PAIRS = rf"(?:(?=[ \t&]*+[={_KEY_FIRST}]|[-.%+0-9A-Z_a-z&])(?:{_NEXT_PAIR})++|)"
_SENSITIVE_KV_RUN = re.compile("=" + _KEY_BEFORE + _VALUE_FAST + _PAIRS)
# Whether a text holds a key at all (searched in its lower-cased copy).
_ANY_KEY = re.compile(_trie(_KEY_SUFFIXES))
# The keys none of which holds another, for a search as substrings.
_ANY_KEY_WORDS = tuple(
    k for k in _KEY_SUFFIXES if not any(o != k and o in k for o in _KEY_SUFFIXES)
)


def is_sensitive_key(name: str) -> bool:
    """Whether ``name`` is a sensitive key: it ends in one of ``SENSITIVE_KEYS`` in any
    ASCII letter case (the Kelvin sign is no "k"), as the text patterns read a key."""
    return _ascii_lower(name).endswith(_KEY_SUFFIXES)


def _has_key(lowered: str) -> bool:
    """Whether the lower-cased text holds a sensitive key anywhere: by one pattern over
    its first 4 KiB (a key is most often there, found at once), then word by word (the
    pattern over all of it took 22 ms over "papapa…=", every "pa" a key begun). A word
    is looked for only where each of its characters is (a test for one character runs
    at memchr speed); then at each place of its rarest character, where that character
    is rare in the text (a find and a comparison each), else as a substring. A substring
    search costs 0.5 - 2.5 ms a megabyte, the most over text made of the word's other
    letters ("eee…" for "secret", "token" and the three "api" words): a header holding
    every key letter once and a megabyte of "e" with a ":" every 63 characters took
    24 - 30 ms when every word was searched as a substring."""
    if _ANY_KEY.search(lowered, 0, 4096) is not None:
        return True
    common: set[str] = set()  # (characters found more than ``_FIND_LIMIT`` times)
    for key, chars, places in _KEY_WORDS_CHARS:
        if not all(char in lowered for char in chars):
            continue
        rarest = chars[0]
        if rarest not in common:
            at, tries = lowered.find(rarest), 0
            while at >= 0 and tries < _FIND_LIMIT:
                for place in places:
                    if at >= place and lowered.startswith(key, at - place):
                        return True
                at, tries = lowered.find(rarest, at + 1), tries + 1
            if at < 0:
                continue
            common.add(rarest)
        if key in lowered:
            return True
    return False


# How many places of a word's rarest character ``_has_key`` tries one by one (about
# 0.3 µs each) before it searches for the word as a substring instead.
_FIND_LIMIT = 100


# "Bearer <token>": everything up to whitespace, a quote or a delimiter is the token; a
# run of them on one line is masked as one, and so are key=value pairs right after a
# token (a pair as a run of pairs would take it, with its own next pairs). The usual
# spellings are each replaced by a constant (the pattern starts with a literal the
# engine finds fast); any other spelling (BeArEr) by a pass that keeps the word as
# written. (A token masked already is masked again, to the same text.) A token that ends
# in a sensitive key followed by " =" takes the value too (masked first, the token would
# take the key the value's pass looks back for), and one that ends in "bearer" is
# followed by the next token in the run (its own match could not start inside this one).
# A run's next token follows blanks and a bearer word, a comma or a semicolon, one blank
# at most and a bearer word, or (the token before ended in "bearer") blanks.
# The items of a run as alternatives that each start with a character or a class the
# engine skips them by without entering them, the first item out of a repetition (so a
# token followed by anything else leaves at once). A pair's value in a run never ends
# in a backslash: the bearer pass runs first, and such a value masked away would leave
# the quote after it unescaped, to end a quoted value around it early.
_CREDENTIAL_CHARS = rf"[^{_SPACES}\"'<>,;]++"
_BEARER_WORD = _anycase("bearer")
_VALUE_IN_RUN = _VALUE_FAST + r"(?<!\\)"
_NEXT_BEARER = rf"{_BEARER_WORD}[ \t]++{_CREDENTIAL_CHARS}"
_AFTER_BLANK = "|".join(
    [
        _NEXT_BEARER,
        f"={_KEY_BEFORE}{_VALUE_FAST}",
        *(pair + _VALUE_IN_RUN for pair in _PAIR_AFTER_BLANK[1:]),
        rf"[ \t][ \t]*+{_NEXT_BEARER}",
        rf"(?<={_BEARER_WORD}[ \t])[ \t]*+{_CREDENTIAL_CHARS}",
    ]
)
_ITEM_BRANCHES = [
    rf"[ \t](?:{_AFTER_BLANK})",
    rf"[,;][ \t]?{_NEXT_BEARER}",
    _PAIR_AFTER_AMP + _VALUE_IN_RUN,
    _PAIR_AFTER_QUOTE + _VALUE_IN_RUN,
]
_NEXT_ITEM = f"(?:{'|'.join(_ITEM_BRANCHES)})"
_ITEMS = "(?:" + "|".join(f"{b}(?:{_NEXT_ITEM})*+" for b in _ITEM_BRANCHES) + "|)"
# A token that ends in ":" is a label ("invalid bearer token: abc123"): the word after it
# is the token, masked with it, unless it holds an "=", a ":" or a backslash (a key=value
# pair, a key before ":", an escape: what follows is the runs' and the key passes', which
# would not see the key, or would see the quote unescaped, were it masked here).
_BEARER_TOKEN = rf"{_CREDENTIAL_CHARS}(?:(?<=:)[ \t]++[^{_SPACES}\"'<>,;=:\\]++(?![=:\\]))?"
_BEARER_RUN = rf"[ \t]++{_BEARER_TOKEN}{_ITEMS}"
_BEARER_SPELLINGS = ("Bearer", "bearer", "BEARER")


@functools.cache
def _bearer_pattern(word: str) -> re.Pattern[str]:
    """The pattern of a token run after ``word`` (one of ``_BEARER_SPELLINGS``), or, for
    "", after the blank that follows the word in any spelling (``_mask_any_spelling``).
    Compiled when first needed: each takes the engine's compiler about 0.1 s, which every
    start of the CLI paid while most never meet the word (``warm`` compiles them ahead,
    as the daemon and ``importd web`` start)."""
    if word:
        return re.compile(word + _BEARER_RUN)
    return re.compile(rf"[ \t](?<={_BEARER_WORD}[ \t])[ \t]*+{_BEARER_TOKEN}{_ITEMS}")


def warm() -> None:
    """Compile the patterns ``redact`` compiles when first needed (``_bearer_pattern``),
    so that no text redacted later waits for them: for a long-running process, in a
    thread of its own."""
    for word in (*_BEARER_SPELLINGS, ""):
        _bearer_pattern(word)


def _ascii_lower(text: str) -> str:
    """``text`` with A-Z lower-cased, every character where it was (str.lower() may
    change the length of non-ASCII text)."""
    if text.isascii():
        return text.lower()
    # (bytes.lower() changes A-Z only, at C speed; str.translate looks up every
    # character of non-ASCII text in a table: 64 against 6 ms for 1 MiB of Japanese.)
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


def _replace_all(pattern: re.Pattern[str], text: str, replacement: str) -> str:
    """``pattern.sub(replacement, text)`` for a pattern without groups, a few percent
    faster: split's list holds the pieces only, sub's the replacements too."""
    return replacement.join(pattern.split(text))


def _mask_after(pattern: re.Pattern[str], text: str, after: str) -> str:
    """``text`` with every match of ``pattern`` (whose one group, at its start, is the
    part to keep) replaced by that part and ``after``; in C whatever the number of
    matches. The pieces are laid out in one list by slice assignments and joined once:
    a concatenation per match cost a string per match, three times the time of the
    join."""
    pieces = pattern.split(text)
    matches = len(pieces) >> 1
    if not matches:
        return text
    out: list[str] = [after] * (3 * matches + 1)
    out[0::3] = pieces[0::2]
    out[1::3] = pieces[1::2]
    return "".join(out)


def _mask_urls(text: str) -> str:
    # "@" first: a test for one character runs at memchr speed, one for "://" about
    # twenty times slower (most text that holds neither pays nothing then).
    if "@" not in text or "://" not in text:
        return text
    return _mask_after(_URL_SPLIT, text, MASK + "@")


def _mask_bearer(text: str, lowered: str) -> str:
    # ``total`` counts the word in any spelling; each pass's count is taken before it
    # runs and can only be smaller than the text's first count (a pass removes tokens,
    # which may hold the word, and adds none), so once the passes' counts add up to
    # ``total`` no other spelling is left: the remaining searches are skipped (a search
    # for a word that is absent reads the whole text).
    total = lowered.count("bearer")
    for word in _BEARER_SPELLINGS:
        if total <= 0:
            return text
        found = text.count(word)
        if found:
            text = _replace_all(_bearer_pattern(word), text, word + " " + MASK)
            total -= found
    if total > 0:  # a rarer spelling (BeArEr) is there too
        text = _mask_any_spelling(text)
    return text


def _mask_any_spelling(text: str) -> str:
    """``_bearer_pattern("")``'s matches replaced by " ***", as ``_replace_all`` would, found by
    trying the pattern only at the blank after each bearer word where such words are
    few (at most one every 64 characters): the pattern searched over the whole text
    tries every blank (a megabyte of blanks and one ``BeArEr x`` took 22 - 25 ms). A
    match starts nowhere else: its first character is the blank its look-behind reads
    the word before."""
    lowered = _ascii_lower(text)
    pattern = _bearer_pattern("")
    if lowered.count("bearer") * 64 > len(text):
        return _replace_all(pattern, text, " " + MASK)
    pieces: list[str] = []
    kept_to = 0
    at = lowered.find("bearer")
    while at >= 0:
        match = pattern.match(text, at + 6) if at + 6 >= kept_to else None
        if match is not None:
            pieces += (text[kept_to : match.start()], " " + MASK)
            kept_to = match.end()
        at = lowered.find("bearer", at + 1)
    pieces.append(text[kept_to:])
    return "".join(pieces)


def _mask_sensitive_values(text: str, lowered: str | None, has_key: bool | None) -> str:
    """``lowered``: the text lower-cased before the bearer pass, if it ran (it removed
    no key that was not in this copy, so a key absent from it is absent from ``text``);
    ``has_key``: whether a key is in the text, if known. The values after "=" and after
    ":" masked."""
    equals, colons = text.count("="), text.count(":")
    if not (equals or colons):
        return text
    # Text dense with "=" or ":" is searched for a key first (each costs the engine a
    # try), once for both passes.
    dense = max(equals, colons) > len(text) >> 6
    if dense and has_key is None:
        has_key = _has_key(_ascii_lower(text) if lowered is None else lowered)
    if has_key is False:
        return text
    if equals:
        text = _replace_all(_SENSITIVE_KV_RUN, text, "=" + MASK)
    # The values after ":" last: a pass before them only masks, so they never see a
    # key the text did not hold, and what they mask no other pass reads again.
    return _mask_colon_values(text) if colons else text


# Sensitive keys before ":": JSON and Python reprs (``"access_token": "…"``, ``'api_key':
# '…'``, an endpoint's answer kept as text), YAML and HTTP headers (``password: …``,
# ``Authorization: Basic …``, ``X-Api-Key: …``). The key is kept, the value masked:
#
# - after a quoted key (``"key":``, ``'key':``, or ``\"key\":`` in JSON inside a JSON
#   string), and whatever whitespace after the colon: a quoted value's content, the
#   quotes kept (``"password": "***"``), to its closing quote, escaped quotes inside it
#   skipped (``"a\"b"``); unclosed (a cut answer), to the end of the text. A value opened
#   by an escaped quote (``\"password\": \"x\"``) runs to the first quote that is not
#   escaped, the end of the JSON string around it: more than the value, never less. Any
#   other value but an object, an array, ``null``, ``true`` or ``false`` (and their
#   Python spellings): to the next blank, ",", "}", "]" or quote (``"pin": ***``). An
#   object or an array is left to its own keys, as ``redact_value`` does.
# - after a bare key (YAML, a header, prose): the rest of the line, up to a quote that is
#   not escaped (in JSON text, the end of the string the line is in: a JSON answer kept
#   as text keeps what follows), or a quoted value's content. A header's scheme is kept
#   (``Authorization: Basic ***``). Prose cannot be told from a secret here ("password:
#   must be 8 characters" and "password: correct horse battery" look alike), so prose
#   after a key and a colon is masked too; text with no colon right after the key
#   ("column 'password' is not …") is kept. What this leaves: a YAML or header value
#   holding a raw double quote shows what follows the quote (Digest's quoted
#   parameters after the first), and a key followed by more than one blank before the
#   colon (no encoder writes that) is not read as one.
#
# A match starts at ":", a literal the engine skips to, and looks back for the key (one
# look-behind of the key's last character, then the key, as for "="), so a ":" after
# anything else costs one failed class test; two patterns (the value's end depends on
# whether the key was quoted), each one group (":" and what is kept after it) before
# the value, replaced by ``_mask_after``.
_AUTH_SCHEMES = (
    "basic",
    "bearer",
    "digest",
    "dpop",
    "gnap",
    "hoba",
    "mutual",
    "negotiate",
    "ntlm",
    "oauth",
    "token",
    "apikey",
    "aws4-hmac-sha256",
)
_OPEN_QUOTE = r"(?:\\?[\"'])"
# A quoted value's content (not empty), after its opening quote.
_IN_QUOTES = _run_of("'\\", spaces=False)
_IN_DOUBLE_QUOTES = _run_of('"\\', spaces=False)
_QUOTED_CONTENT = (
    rf"(?:(?<=\")(?=[^\"]){_IN_DOUBLE_QUOTES}(?:\\(?s:.){_IN_DOUBLE_QUOTES})*+"
    rf"|(?<=')(?=[^']){_IN_QUOTES}(?:\\(?s:.){_IN_QUOTES})*+)"
)
# A quote closing a key (or an escaped one, ``\"``), the key before it.
_KEY_QUOTE = rf"[\"'](?<=(?:{_KEY_HERE}|\\(?<={_KEY_HERE}\\))[\"'])"
_QUOTED_KEY_BEFORE = rf"(?<=(?:{_KEY_QUOTE}|[ \t](?<={_KEY_QUOTE}[ \t])):)"
# A bare key that is the capitalised tail of a longer word (``HttpToken:``,
# ``apiToken:``) is left to a pass of its own (_CAMEL_KEY_VALUE, below): it may be an
# exception's or a class's name before its message (the form of every error text,
# importd's own among them), whose message is kept, or a camelCase setting.
_BARE_KEY_HERE = _key_ends_here(_KEY_SUFFIXES, camel_tail=False)
_BARE_KEY_BEFORE = rf"(?<=(?:{_BARE_KEY_HERE}|[ \t](?<={_BARE_KEY_HERE}[ \t])):)"
# A scalar's characters: up to a blank, ",", "}", "]" or a quote; its first is no "{" or
# "[" either (an object or an array is left to its own keys).
_IN_SCALAR = _run_of(",}]\"'")
_SCALAR_CHAR = _none_of(",}]\"'")
_SCALAR_START = _none_of(",}]\"'{[")
_LITERAL = rf"[nNtTfF](?:(?<=n)ull|(?<=N)one|(?<=[tT])rue|(?<=[fF])alse)(?!{_SCALAR_CHAR})"
# (The bare value first, behind one look-behind: a quoted value fails it at once, where a
# bare one failed the quoted value's two look-behinds; the literals behind a class.)
_QUOTED_KEY_VALUE = re.compile(
    rf"(:{_QUOTED_KEY_BEFORE}[{_SPACES}]*+{_OPEN_QUOTE}?)"
    rf"(?:(?<![\"'])(?!{_LITERAL}){_SCALAR_START}{_IN_SCALAR}"
    rf"|{_QUOTED_CONTENT})"
)
# A bare value's characters: up to a quote, a backslash or the end of the line.
_IN_LINE = _run_of('"\\\r\n', spaces=False)
# (The scheme behind a look-ahead for its first letter, and the bare value tried before
# a quoted one: one class test each for the usual value, where the trie's branches and
# the quoted value's look-behinds took a third of the cost of a match.)
_SCHEME_FIRST = "".join(sorted({c for s in _AUTH_SCHEMES for c in (s[0], s[0].upper())}))
_BARE_VALUE = (
    rf"[{_SPACES}]*+"
    rf"(?:{_OPEN_QUOTE}|(?=[{_SCHEME_FIRST}]){_trie(_AUTH_SCHEMES, _anycase)}[ \t]++)?)"
    rf"(?:(?<![\"'])(?=[^\"\r\n]){_IN_LINE}(?:\\.{_IN_LINE})*+|{_QUOTED_CONTENT})"
)
_BARE_KEY_VALUE = re.compile(rf"(:{_BARE_KEY_BEFORE}" + _BARE_VALUE)
# The keys the pattern above leaves, a key that is the capitalised tail of a longer word
# (``apiToken:``, ``HttpToken:``), in a pass of their own: each match is then judged by
# the whole word, which a look-behind cannot read (its width is fixed). A word that
# starts with a capital is a class's name (``HttpToken``, ``jwt.InvalidSignature``: an
# exception before its message), kept; any other is a setting's camelCase name
# (``apiToken: x``, ``dbPassword: x`` in YAML), masked. Past _CAMEL_LIMIT such places
# in one text, every one is masked, unjudged (more is masked, never less): a Python
# call per place is then bounded whatever the text.
_CAMEL_KEY_HERE = _key_ends_here(_KEY_SUFFIXES, only_camel=True)
_CAMEL_KEY_BEFORE = rf"(?<=(?:{_CAMEL_KEY_HERE}|[ \t](?<={_CAMEL_KEY_HERE}[ \t])):)"
# The places (a ":" after such a key), found without reading their values: a kept
# place's value is then never read, so a line of class names costs one pass; the value
# is matched at a place that is masked (_CAMEL_VALUE_AT), or by _CAMEL_KEY_VALUE past
# the limit.
_CAMEL_PLACE = re.compile(":" + _CAMEL_KEY_BEFORE)
_CAMEL_VALUE_AT = re.compile("(:" + _BARE_VALUE)
_CAMEL_KEY_VALUE = re.compile(f"(:{_CAMEL_KEY_BEFORE}" + _BARE_VALUE)
_CAMEL_LIMIT = 256
# What the key's look-behind reads before a ":": the longest key, its letter or digit
# before, and a blank.
_CAMEL_CONTEXT = max(map(len, _KEY_SUFFIXES)) + 2
_WORD_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_LONGEST_CLASS_NAME = 200


def _class_name_before(text: str, colon: int) -> bool:
    """Whether the word before ``text[colon]`` (one blank between them allowed) is a
    class's name: it starts with a capital, is at most _LONGEST_CLASS_NAME characters
    long, and follows neither a "-" (a header's name: ``X-AuthToken``) nor a letter or a
    digit outside ASCII (the word goes on: ``ñApiToken``)."""
    start = max(0, colon - _LONGEST_CLASS_NAME - 2)
    before = text[start:colon]
    if before[-1:] in (" ", "\t"):
        before = before[:-1]
    stem = before.rstrip(_WORD_CHARS)  # in C: the word's length, whatever it is
    if len(before) - len(stem) > _LONGEST_CLASS_NAME or (not stem and start > 0):
        return False  # longer than a name (or it goes on before what was read)
    if stem and (stem[-1] == "-" or stem[-1].isalnum()):
        return False
    return "A" <= before[len(stem) : len(stem) + 1] <= "Z"


def _mask_colon_values(text: str) -> str:
    """The values after sensitive keys and ":" masked (the quoted keys' pass only where
    a quote is)."""
    if '"' in text or "'" in text:
        text = _mask_after(_QUOTED_KEY_VALUE, text, MASK)
    text = _mask_after(_BARE_KEY_VALUE, text, MASK)
    place = _CAMEL_PLACE.search(text)
    return text if place is None else _mask_camel_values(text, place.start())


def _mask_camel_values(text: str, colon: int) -> str:
    """The values after camelCase keys and ":" masked, from the place at ``colon`` on;
    those after a class's name kept (and read on from its ":": ``HttpToken: x,
    apiToken: y``). Past _CAMEL_LIMIT places, the rest masked unjudged."""
    pieces: list[str] = []
    done = 0  # the text before this is in pieces
    for _ in range(_CAMEL_LIMIT):
        if not _class_name_before(text, colon):
            value = _CAMEL_VALUE_AT.match(text, colon)
            if value is not None:
                pieces += (text[done : value.end(1)], MASK)
                done = value.end()
        place = _CAMEL_PLACE.search(text, max(done, colon + 1))
        if place is None:
            break
        colon = place.start()
    else:
        # Cut where the key's look-behind still reads the whole key (no ":" is in it),
        # after every place judged already.
        cut = max(done, colon - _CAMEL_CONTEXT, text.rfind(":", done, colon) + 1)
        pieces += (text[done:cut], _mask_after(_CAMEL_KEY_VALUE, text[cut:], MASK))
        return "".join(pieces)
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


# A long text (DENSE_MIN characters or more) where a credential could start more often
# than every DENSE_SPACING characters on average (a "://", a "bearer" in any case, an "="
# or a ":" when a sensitive key is there at all) is masked from just after the first such place
# (and the blanks after it) to its end, not credential by credential: what each place
# costs the patterns (up to 450 ns where a key is tried and fails, "Bearer h =") would
# take a megabyte of such text past 20 ms, and only hostile or broken text is that
# dense. (More is masked, never less: every credential starts after such a place.)
# Below the spacing, the patterns' cost stays under 20 ms a megabyte whatever the text
# (``bench.redact``'s "just under the spacing" shapes: 9 - 15 ms at 64, 12 - 25 at 32,
# where those with a value or a key before ":" passed 20); a shorter text takes a few ms.
# A ":" counts since keys before ":" are masked (a value after a key and ":" costs 300 -
# 450 ns, a ":" after a key's last letter and no key about 100: a megabyte of JSON pairs
# took 30 - 50 ms): so a JSON text this long that holds a sensitive key anywhere is masked
# from its first ":". Such texts are rare where importd redacts whole texts (an
# endpoint's answer is cut to 64 KiB first, a log line is one event); a shorter JSON
# text is masked pair by pair.
DENSE_MIN = 1 << 18
DENSE_SPACING = 64


def _dense_from(text: str) -> tuple[int | None, bool | None, str | None]:
    """Where a dense text's mask starts (see ``DENSE_MIN``), or None when it is not
    dense; whether a sensitive key is in it (None: not looked for); and the text
    lower-cased (``_ascii_lower``), where it was (None: it was not: the caller need not
    lower-case it again, 4 ms a MiB of non-ASCII text). C-speed counts and finds; the
    text lower-cased only when it holds a "b", an "=" or a ":", and searched for a key
    only when its "=" and ":" could make it dense."""
    lowered = _ascii_lower(text) if "b" in text or "B" in text or "=" in text else text
    places = [(text, "://"), (lowered, "bearer")]
    counts = [within.count(mark) for within, mark in places]
    equals, colons = text.count("="), text.count(":")
    if (sum(counts) + equals + colons) * DENSE_SPACING <= len(text):
        return None, None, lowered
    if colons and lowered is text:
        lowered = _ascii_lower(text)
    has_key = bool(equals or colons) and _has_key(lowered)
    if has_key:  # (an "=" or a ":" is a place a credential may start, and may come first)
        places += [(text, "="), (text, ":")]
        counts += [equals, colons]
    if sum(counts) * DENSE_SPACING <= len(text):
        return None, has_key, lowered
    start = min(
        within.find(mark) + len(mark)
        for (within, mark), count in zip(places, counts, strict=True)
        if count
    )
    return len(text) - len(text[start:].lstrip(" \t")), has_key, lowered  # (after the blanks)


# Characters from the most to the least frequent in log lines, error messages and
# JSON (roughly; it only orders the tests in ``Secrets.mask``, whose result does not
# depend on it). A character not listed counts as rarer than all of them.
_BY_FREQUENCY = ' etaoinsrhldcumfpgwybvkxjqz"_:,.-0123456789/=ETAOINSRHLDCUMFPGWYBVKXJQZ{}[]()'


def _rarity(char: str) -> int:
    """How rare ``char`` is in a text, by ``_BY_FREQUENCY`` (higher: rarer)."""
    return _BY_FREQUENCY.find(char) % (len(_BY_FREQUENCY) + 1)


def _rarest(secret: str) -> str:
    """The character of ``secret`` least likely to be in a text."""
    return max(secret, key=_rarity)


# The words ``_has_key`` searches for, each with its distinct characters, the rarest
# first: a text that lacks one of them cannot hold the word, and a test for one
# character (memchr speed, about 0.05 ms a megabyte where it is absent, at once where
# it is near the start) costs far less than a search for the word over text rich in one
# of its letters (2 ms a megabyte of "w" for "password"); and the places of the rarest
# within the word, where ``_has_key`` compares the word at each of its places.
_KEY_WORDS_CHARS = tuple(
    (key, chars, [i for i, char in enumerate(key) if char == chars[0]])
    for key in _ANY_KEY_WORDS
    for chars in [sorted(set(key), key=_rarity, reverse=True)]
)

# Shorter secret values are not masked in free text (they would mask innocent words);
# the daemon warns at start-up about a setting whose secret is that short.
MIN_SECRET_LENGTH = 6
# A URL's user and ":" with no "@" after them before the end of the text (a head cut
# inside the password): ``Secrets.head`` masks the rest.
_OPEN_PASSWORD = re.compile(r"(://[^:/?#\s]*+:)(?!\*\*\*$)[^/?#\s@]+$")
# Characters past a cut that ``Secrets.head`` redacts with the text before it, at least.
HEAD_MARGIN = 512
_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")


def _json_spellings(value: str) -> set[str]:
    """``value`` inside a JSON string as common encoders write it: Python's json.dumps
    (non-ASCII as ``\\u`` escapes), JavaScript's JSON.stringify (non-ASCII as it is), PHP's
    json_encode (``/`` as ``\\/`` too) and Go's encoding/json (``<``, ``>``, ``&``, U+2028
    and U+2029 as ``\\u`` escapes). An encoder that escapes other characters at will has
    too many spellings to register: not masked."""
    python = json.dumps(value)[1:-1]
    raw = json.dumps(value, ensure_ascii=False)[1:-1]
    go = raw
    for char in "<>&\u2028\u2029":
        go = go.replace(char, f"\\u{ord(char):04x}")
    return {python, raw, python.replace("/", "\\/"), raw.replace("/", "\\/"), go}


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
        self._longest = 0
        # Longest first: a secret that holds another is masked whole.
        self._ordered: tuple[tuple[str, str], ...] = ()
        for value in values:
            self.register(value)

    def register(self, value: str | None) -> None:
        """Mask ``value`` (and its encoded forms) in every redacted text from now on."""
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        encoded = quote(value, safe="")
        forms = {
            value,
            unquote(value),
            encoded,
            _LOWER_HEX.sub(lambda m: m.group().lower(), encoded),  # as some echo it
            quote_plus(value, safe=""),
            *_json_spellings(value),
        }
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
        self._ordered = tuple(
            (form, _rarest(form)) for form in sorted(forms, key=lambda s: (-len(s), s))
        )
        self._forms = forms
        self._longest = max(map(len, forms), default=0)

    def head(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text`` redacted as the whole text would be:
        the redaction runs over a margin past the cut (the longest registered secret, and
        room for a URL's or a key's credential to end), so that a secret the cut falls
        inside is masked whole rather than left as its head."""
        head = self.redact(text[: limit + max(self._longest, HEAD_MARGIN)])[:limit]
        # A URL's password whose "@" lies past the margin: its head masked to the cut.
        return _OPEN_PASSWORD.sub(r"\1" + MASK, head)

    def mask(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        # Each secret that occurs at all (the ``in`` tests run at C speed; most texts
        # hold none), longest first, replaced by str.replace: linear, and total: a
        # replacement only inserts "***", so it cannot make a secret (one without "*")
        # appear, and an occurrence left whole after a pass would have been replaced.
        # A secret's rarest character is looked for first: a search for one character
        # runs at memchr speed, one for a string several times slower, and a text
        # without the character cannot hold the secret.
        for secret, rarest in self._ordered:
            if rarest in text and secret in text:
                text = text.replace(secret, MASK)
        return text

    def redact(self, text: str) -> str:
        """``text`` with every registered secret, connection-string passwords, values of
        sensitive keys (``SENSITIVE_KEYS``) and bearer tokens replaced by ``***``; for
        log lines, error messages and job rows alike. Linear in the length of
        ``text``."""
        text = self.mask(text)
        has_key = None
        known = None  # (the text lower-cased, where ``_dense_from`` did it)
        if len(text) >= DENSE_MIN:
            dense, has_key, known = _dense_from(text)
            if dense is not None:
                # (A value after a key and ":" may start before the first place counted.)
                return text[:dense] + MASK
        urls = _mask_urls(text)
        # The lower-cased copy only where a pass needs it: text without a "b" has no
        # bearer to count, and text with few "=" needs no search for a key. (The one
        # ``_dense_from`` made, if it made one, while the text is as it was then.)
        lowered = known if urls is text and known is not text else None
        text = urls
        if "b" in text or "B" in text:
            if lowered is None:
                lowered = _ascii_lower(text)
            text = _mask_bearer(text, lowered)
        if has_key is False:  # (no key in the text: none after the passes either)
            return text
        return _mask_sensitive_values(text, lowered, has_key)

    def redact_value(self, value: Any) -> Any:
        """``value`` with :meth:`redact` applied to every string inside it, keys of
        objects included, and the string or number under a sensitive key
        (:func:`is_sensitive_key`, the keys the text patterns read as sensitive) masked
        whole; an object or a list under one is left to its own keys, as in text."""
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
                sensitive = isinstance(key, str) and is_sensitive_key(key)
                scalar = isinstance(item, str | int | float) and not isinstance(item, bool)
                out[masked] = MASK if sensitive and scalar else self.redact_value(item)
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


def redact_head(text: str, limit: int) -> str:
    """:meth:`Secrets.head` with the process's registry."""
    return SECRETS.head(text, limit)


def redact_value(value: Any) -> Any:
    """:meth:`Secrets.redact_value` with the process's registry."""
    return SECRETS.redact_value(value)


def mask(text: str) -> str:
    """:meth:`Secrets.mask` with the process's registry: the registered secrets only, the
    rest of ``text`` as it was (for data such as a rejected record, where a ``token=``
    of the user's own is not a credential of importd's)."""
    return SECRETS.mask(text)


_USERINFO = re.compile(r"\b([A-Za-z][-+.0-9A-Za-z]*://)[^\s'\"]*@")


def hide_userinfo(text: str) -> str:
    """``text`` with every URL's userinfo (from "://" to the last "@" of the word) hidden,
    for text that echoes what a user typed: a DSN whose password the redaction cannot
    read as a URL's (a raw "#" or "/" in it) is shown without it."""
    return _USERINFO.sub(r"\1***@", text) if "://" in text else text


def url_password(dsn: str) -> tuple[str, str, str] | None:
    """A URL's password read the widest way, as (what comes before it, it, what comes
    after it): the userinfo to the last "@", the password from its first ":". None when
    there is none."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return None
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}:", password, f"@{after}"


def secrets_in(dsn: str) -> list[str]:
    """The passwords in a connection string: the URL's password (percent-decoded too)
    and the values of sensitive keys, in URL or ``key=value`` form."""
    found = [m["pw"] for m in _PASSWORD_IN_URL.finditer(dsn)]
    if "://" in dsn:
        # One that holds a raw "#", "/", "?" or a blank, which the pattern above stops at.
        parts = url_password(dsn)
        if parts is not None and not found:
            found.append(parts[1])
        # A URL's query, its keys percent-decoded as the drivers read them (?%70assword=).
        query = dsn.split("?", 1)[1].split("#", 1)[0] if "?" in dsn else ""
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key.lower() in SENSITIVE_KEYS:
                found += [value, quote(value, safe="")]
    else:
        # libpq's key=value form: blanks allowed around "=", the value may be quoted
        # with backslash escapes.
        for key, written in _LIBPQ_PAIR.findall(dsn):
            if key.lower() in SENSITIVE_KEYS:
                quoted = written.startswith("'")
                found.append(
                    re.sub(r"\\(.)", r"\1", written[1:].removesuffix("'")) if quoted else written
                )
    return [form for value in found for form in (value, unquote(value)) if form]


# A key=value pair of a libpq connection string (a key, blanks, "=", blanks, a value).
_LIBPQ_PAIR = re.compile(r"([A-Za-z_]+)[ \t\n\r]*=[ \t\n\r]*('(?:[^'\\]|\\.)*'?|[^\s']\S*)")

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
