"""The credential patterns of importd.redaction as they were before their per-credential
cost was cut (issue 12), kept as the reference the new ones must agree with: built
another way (a trie of look-behinds from the key's last character back, optional
parts as possessive repetitions), they mask exactly the same text.

Only what changed is here; the rest (registered secrets) is importd's own. The URL
pattern, a quoted value and the masking after a kept head are the forms they had before
the dense shapes of the audit were made faster.
"""

from __future__ import annotations

import operator
import re
from itertools import repeat

from importd.redaction import (
    _KEY_SUFFIXES,
    MASK,
    Secrets,
    _anycase,
    _ascii_lower,
    _trie,
)

_URL_SPLIT = re.compile(r"(://[^:/?#\s]*+:)[^/?#\s@]*+@(?:[^/?#\s@]*+@)*+")
_VALUE = r"[ \t]*+(?P<pw>[^\s&'\"]++|'(?:[^'\\]|\\.)*+'?)"


def _mask_after_heads(pattern: re.Pattern[str], text: str, mask: str) -> str:
    pieces = pattern.split(text)
    pieces[1::2] = map(operator.add, pieces[1::2], repeat(mask))
    return "".join(pieces)


def _ends_before_equals(words: list[str], depth: int = 1) -> str:
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


_LAST_LETTERS = "".join(sorted({k[-1] + k[-1].upper() for k in _KEY_SUFFIXES}))
KEY_BEFORE = rf"(?<=[{_LAST_LETTERS} ]=)" + _ends_before_equals(
    [k + space for k in _KEY_SUFFIXES for space in ("", " ")]
)
_KEY_AHEAD = _trie(_KEY_SUFFIXES, _anycase)
_VALUE_NC = _VALUE.replace("?P<pw>", "?:")
_SENSITIVE_KV_RUN = re.compile(
    "=" + KEY_BEFORE + _VALUE_NC + rf"(?:[ \t&]++{_KEY_AHEAD} ?=[ \t]*+[^\s&'\"]++)*+"
)
_ANY_KEY = re.compile(_trie(_KEY_SUFFIXES))
_CREDENTIAL_TAIL = r"[ \t]++[^\s\"'<>,;]++" + f"(?: ={KEY_BEFORE}{_VALUE_NC})?+"
_BEARER_WORD = _anycase("bearer")
_BEARER_RUN = (
    rf"{_CREDENTIAL_TAIL}(?:(?:[ \t]++{_BEARER_WORD}|(?<={_BEARER_WORD})){_CREDENTIAL_TAIL})*+"
)
_BEARER_SPELLINGS = {
    word: re.compile(word + _BEARER_RUN) for word in ("Bearer", "bearer", "BEARER")
}
_BEARER_SPLIT = re.compile(f"({_BEARER_WORD}){_BEARER_RUN}")


def _mask_bearer(text: str, lowered: str) -> str:
    total = lowered.count("bearer")
    if not total:
        return text
    for word, pattern in _BEARER_SPELLINGS.items():
        if word in text:
            found = text.count(word)
            text = pattern.sub(word + " " + MASK, text)
            total -= found
    if total > 0:
        text = _mask_after_heads(_BEARER_SPLIT, text, " " + MASK)
    return text


def _mask_sensitive_values(text: str, lowered: str) -> str:
    equals = text.count("=")
    if not equals or (equals > len(text) >> 6 and not _ANY_KEY.search(lowered)):
        return text
    return _SENSITIVE_KV_RUN.sub("=" + MASK, text)


def redact(secrets: Secrets, text: str) -> str:
    """What ``secrets.redact(text)`` returned before."""
    text = secrets.mask(text)
    if "://" in text and "@" in text:
        text = _mask_after_heads(_URL_SPLIT, text, MASK + "@")
    if not ("=" in text or "b" in text or "B" in text):
        return text
    lowered = _ascii_lower(text)
    return _mask_sensitive_values(_mask_bearer(text, lowered), lowered)
