"""Audit 17: a registered secret "escaped as in a JSON string" was masked only in Python's
own spelling of it (``json.dumps``). Other encoders spell the same JSON string otherwise,
and an endpoint's error body (kept as text in ``last_error``) is written by them: PHP's
``json_encode`` writes ``/`` as ``\\/``; Go's ``encoding/json`` writes ``<``, ``>`` and
``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026``; JavaScript's ``JSON.stringify`` and Go
leave non-ASCII characters as they are while escaping ``"`` and ``\\``.

Not expected (documented): an encoder that escapes arbitrary ASCII letters
(``\\u0041``), base64 or other encodings of a secret; those have too many spellings.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from importd.redaction import Secrets

SECRET = 'Pa/ss<w>&"rd-é-42'


def _php(value: str) -> str:
    return json.dumps(value)[1:-1].replace("/", "\\/")


def _go(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)[1:-1]
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _javascript(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


@pytest.mark.parametrize("spell", [_php, _go, _javascript])
def test_a_secret_as_other_json_encoders_spell_it_is_masked(spell: Callable[[str], str]) -> None:
    secrets = Secrets([SECRET])
    body = '{"error": "bad credentials", "got": "' + spell(SECRET) + '"}'
    assert json.loads(body)["got"] == SECRET  # the same JSON string, spelt otherwise
    redacted = secrets.redact(body)
    assert spell(SECRET) not in redacted, redacted
    assert redacted == '{"error": "bad credentials", "got": "***"}'
