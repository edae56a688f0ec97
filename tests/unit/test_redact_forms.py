"""A registered secret echoed percent-encoded with lower-case hex
digits (RFC 3986: the same octets; .NET's HttpUtility.UrlEncode writes them so) is
masked like the upper-case form already is."""

from __future__ import annotations

from urllib.parse import quote

from importd.redaction import Secrets

TOKEN = "tok:Tail-" + "Zq7@x" * 5


def test_a_secret_percent_encoded_in_lower_case_hex_is_masked() -> None:
    secrets = Secrets([TOKEN])
    upper = quote(TOKEN, safe="")
    lower = upper.replace("%3A", "%3a")
    assert TOKEN not in secrets.redact(f"callback?next={upper}")  # masked today
    shown = secrets.redact(f"callback?next={lower}")
    assert "Zq7%40x" not in shown, shown
