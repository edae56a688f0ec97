"""Checking a payload before it is enqueued, against the rules its handler applies, so a
typo fails ``importd enqueue`` (exit 2, naming the field) instead of the job later."""

from __future__ import annotations

from typing import Any

from . import urls
from .config import Settings
from .handlers import spec
from .handlers.sources import check_url
from .models import InvalidPayload

# The command whose settings these checks use: a refusal names only the ways to change a
# setting that work for it (no --table flag: ``importd enqueue`` has none).
COMMAND = "enqueue"


def check(kind: str, payload: dict[str, Any], settings: Settings) -> None:
    """Raise ``InvalidPayload`` naming the field when the built-in handler of ``kind``
    would refuse ``payload``. Checks that depend on the daemon's own settings
    (the table allowlist, url_prefixes) apply only where this process has them set too;
    without url_prefixes a URL is checked for its own shape only (the daemon's prefixes
    decide the rest). Kinds other than csv, ndjson and http are not checked."""
    if kind in ("csv", "ndjson"):
        spec.parse(payload, kind, settings.tables or None, command=COMMAND)
        source = str(payload["source"])
        if not spec.is_file(source):
            _check_url(source, settings, "payload.source")
    elif kind == "http":
        if "url" in payload:
            url, field_name = payload["url"], "payload.url"
        elif settings.http_url is not None:
            url, field_name = settings.http_url, "http_url"
        else:
            return  # the daemon's http_url may supply it
        if not isinstance(url, str) or not url:
            raise InvalidPayload(f"{field_name}: a URL string (or set http_url)")
        _check_url(url, settings, field_name)


def _check_url(url: str, settings: Settings, field_name: str) -> None:
    if settings.url_prefixes:
        check_url(url, settings.url_prefixes, field_name, command=COMMAND)
    else:
        urls.well_formed(url, field_name)
