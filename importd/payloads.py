"""Checking a payload before it is enqueued, against the rules its handler applies, so a
typo fails ``importd enqueue`` (exit 2, naming the field) instead of the job later."""

from __future__ import annotations

from typing import Any

from .config import Settings
from .handlers import spec
from .handlers.sources import check_url
from .models import InvalidPayload


def check(kind: str, payload: dict[str, Any], settings: Settings) -> None:
    """Raise ``InvalidPayload`` naming the field when the built-in handler of ``kind``
    would refuse ``payload``. Checks that depend on the daemon's own settings
    (the table allowlist, url_prefixes) apply only where this process has them set too;
    kinds other than csv, ndjson and http are not checked."""
    if kind in ("csv", "ndjson"):
        spec.parse(payload, kind, settings.tables or None)
        source = str(payload["source"])
        if not source.startswith("file:") and settings.url_prefixes:
            check_url(source, settings.url_prefixes)
    elif kind == "http":
        url = payload.get("url", settings.http_url)
        if url is None:
            return  # the daemon's http_url may supply it
        if not isinstance(url, str) or not url:
            raise InvalidPayload("payload.url: a URL string (or set http_url)")
        # Without url_prefixes here, still the scheme and no credentials: every URL is
        # under the empty prefix.
        check_url(url, settings.url_prefixes or ("",), "payload.url")
