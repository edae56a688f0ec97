"""An independent reference for importd.urls: the URL check written again with only
``urllib.parse`` and RFC 3986's own algorithms, for the property tests to compare with."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, step by step, as the RFC writes it."""
    buffer, output = path, ""
    while buffer:
        if buffer.startswith("../"):
            buffer = buffer[3:]
        elif buffer.startswith("./"):
            buffer = buffer[2:]
        elif buffer.startswith("/./"):
            buffer = "/" + buffer[3:]
        elif buffer == "/.":
            buffer = "/"
        elif buffer.startswith("/../"):
            buffer = "/" + buffer[4:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif buffer == "/..":
            buffer = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif buffer in (".", ".."):
            buffer = ""
        else:
            start = 1 if buffer.startswith("/") else 0
            end = buffer.find("/", start)
            end = len(buffer) if end < 0 else end
            output += buffer[:end]
            buffer = buffer[end:]
    return output


def _climbs_above_root(path: str) -> bool:
    depth = 0
    for segment in path.split("/")[1:]:
        if segment == "..":
            if depth == 0:
                return True
            depth -= 1
        elif segment != ".":
            depth += 1
    return False


def reference_parts(url: str) -> tuple[str, str, int, list[str]] | None:
    """(scheme, host, port, path segments) by urllib, or None when the URL must be
    refused. Only for the URLs the strategies below generate."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        return None
    if "@" in parts.netloc:
        return None
    host = (parts.hostname or "").removesuffix(".")
    if not host:
        return None
    host = host.encode("idna").decode("ascii")  # the standard library's IDNA (2003)
    try:
        port = parts.port or {"https": 443, "http": 80}[parts.scheme]
    except ValueError:
        return None
    path = re.sub(
        "%([0-9A-Fa-f]{2})",
        lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in _UNRESERVED else m[0].upper(),
        parts.path or "/",
    )
    if _climbs_above_root(path):
        return None
    return parts.scheme, host, port, _remove_dot_segments(path).split("/")[1:]


def reference_accepts(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` lies under one of ``prefixes``, by the by-parts rule: same scheme,
    host and effective port, and the prefix's path segments begin the URL's."""
    mine = reference_parts(url)
    if mine is None:
        return False
    for prefix in prefixes:
        theirs = reference_parts(prefix)
        assert theirs is not None, prefix
        if mine[:3] != theirs[:3]:
            continue
        want, got = theirs[3], mine[3]
        if want[-1] == "":  # "/api/": a segment must follow "api" (possibly empty)
            if got[: len(want) - 1] == want[:-1] and len(got) >= len(want):
                return True
        elif got[: len(want)] == want:
            return True
    return False
