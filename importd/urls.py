"""URLs importd may fetch: parsed, normalised and compared with the ``url_prefixes``
setting by parts, never as strings.

A URL is normalised once, and the normalised text is both what is checked and what is
fetched: httpx gets an ``httpx.URL`` built from it that is verified to say exactly the same
thing (httpx would otherwise resolve ``..`` segments *after* the check).

The rules (also in the README):

- Only ``https`` (and ``http`` where a prefix says ``http://``); scheme and host are
  compared case-insensitively, the host IDNA-encoded (``bücher.example`` is
  ``xn--bcher-kva.example``) without a trailing dot, the port as the effective port (443 or
  80 when none is written). A host matches only itself: ``api.example.com`` does not match
  ``api.example.com.evil.net``, and port 6443 does not match 64430.
- The path is normalised (RFC 3986): percent-escapes of unreserved characters are decoded
  (``%2e`` is ``.``), other escapes upper-cased, other characters percent-encoded as UTF-8,
  and ``.`` / ``..`` segments resolved (a path that climbs above the root is refused).
  The prefix's path then matches on segment boundaries: ``/api`` and ``/api/`` admit
  ``/api/x`` but never ``/apix`` or ``/private.csv``.
- Refused outright: control characters (below 0x20, 0x7f), whitespace, backslashes,
  user names and passwords, ``%2F`` / ``%5C`` / control bytes encoded in the path, and
  ``..;`` style segments.
- The fragment is dropped (it is never sent).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import httpx
import idna

from .models import InvalidPayload

DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_URL_CHARS = 8192

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")
_PATH_SAFE = _UNRESERVED | _SUB_DELIMS | frozenset(":@/")
_QUERY_SAFE = _PATH_SAFE | frozenset("?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")
_NUMERIC_HOST = re.compile(r"(?i)^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$")
# Encoded bytes refused inside a path: a slash or backslash a server may decode into a
# separator after the check, and control bytes.
_PATH_BYTES_REFUSED = frozenset([0x2F, 0x5C, 0x7F, *range(0x20)])


class InvalidURL(InvalidPayload):
    """A URL that is malformed or not under an allowed prefix (permanent: retrying the
    same URL cannot help)."""


@dataclass(frozen=True)
class NormalURL:
    """A URL by its parts, normalised. ``path`` starts with ``/``; ``query`` is None when
    the URL has none."""

    scheme: str
    host: str  # IDNA / ASCII, lower-case, no trailing dot; IPv6 in brackets
    port: int  # the effective port
    path: str
    query: str | None = None

    def __str__(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        query = "" if self.query is None else "?" + self.query
        return f"{self.scheme}://{self.host}{port}{self.path}{query}"

    def under(self, prefix: NormalURL) -> bool:
        """Whether this URL lies under ``prefix``: same scheme, host and port, and a path
        that is the prefix's path or continues it after a ``/``."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        base = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
        return self.path == prefix.path or self.path.startswith(base)


def _refuse_characters(text: str) -> None:
    for index, char in enumerate(text):
        if ord(char) < 0x20 or ord(char) == 0x7F or char.isspace():
            raise ValueError(
                f"control character or whitespace {char!r} at position {index} (percent-encode it)"
            )
        if char == "\\":
            raise ValueError(f"backslash at position {index} (percent-encode it as %5C)")


def _host(text: str) -> str:
    if not text:
        raise ValueError("no host")
    if text.startswith("["):
        if not text.endswith("]") or "%" in text:
            raise ValueError(f"bad IPv6 address {text!r}")
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
        except ValueError:
            raise ValueError(f"bad IPv6 address {text!r}") from None
    if "%" in text or any(c in text for c in "[]"):
        raise ValueError(f"bad host {text!r}")
    host = text.lower()
    if host.endswith("."):
        host = host[:-1]
    if _NUMERIC_HOST.match(host):
        # 127.1, 0x7f.0.0.1 and 2130706433 all reach 127.0.0.1: only the dotted quad
        # is accepted, so that one address has one spelling.
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"write the IPv4 address {text!r} as four decimal numbers") from None
        if str(address) != host:
            raise ValueError(f"write the IPv4 address {text!r} as four decimal numbers")
        return host
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"bad international host name {text!r}: {exc}") from None
    labels = host.split(".")
    if len(host) > 253 or not all(len(label) <= 63 and _LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"bad host name {text!r}")
    return host


def _port(text: str, scheme: str) -> int:
    if text == "":
        return DEFAULT_PORTS[scheme]
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def _encode(text: str, safe: frozenset[str], *, in_path: bool) -> str:
    """Percent-escapes normalised: unreserved characters decoded, other escapes
    upper-cased, characters outside ``safe`` encoded as UTF-8."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            match = _ESCAPE.match(text, i)
            if match is None:
                raise ValueError(f"a '%' that starts no escape at position {i}")
            byte = int(match.group(1), 16)
            if chr(byte) in _UNRESERVED:
                out.append(chr(byte))
            elif in_path and byte in _PATH_BYTES_REFUSED:
                raise ValueError(f"the encoded byte %{byte:02X} in the path")
            else:
                out.append(f"%{byte:02X}")
            i += 3
            continue
        if char in safe:
            out.append(char)
        else:
            try:
                encoded = char.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"a lone surrogate at position {i}") from None
            out.append("".join(f"%{b:02X}" for b in encoded))
        i += 1
    return "".join(out)


def _resolve(path: str) -> str:
    """``path`` (normalised escapes) without ``.`` and ``..`` segments."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment.startswith((".;", "..;")):
            raise ValueError(f"the path segment {segment!r} (a dot segment with parameters)")
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if not out:
                raise ValueError("the path climbs above the root with '..'")
            out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalise(url: str) -> NormalURL:
    """The normalised parts of ``url``; ValueError says what is wrong with it."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"longer than {MAX_URL_CHARS} characters")
    _refuse_characters(url)
    scheme_match = _SCHEME.match(url)
    if scheme_match is None or url[scheme_match.end() : scheme_match.end() + 3] != "://":
        raise ValueError("expected an https:// URL")
    scheme = scheme_match.group(0).lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"expected an https:// URL, not {scheme}://")
    rest = url[scheme_match.end() + 3 :]
    rest = rest.split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:end], rest[end:]
    if "@" in authority:
        raise ValueError("credentials (user@ or user:password@) are not allowed in URLs")
    if authority.startswith("["):
        close = authority.find("]")
        host_text, port_text = authority[: close + 1], authority[close + 1 :]
        if close < 0 or (port_text and not port_text.startswith(":")):
            raise ValueError(f"bad host {authority!r}")
        port_text = port_text[1:]
    else:
        host_text, _, port_text = authority.partition(":")
    host = _host(host_text)
    port = _port(port_text, scheme)
    path, has_query, query = rest.partition("?")
    if not path:
        path = "/"
    path = _resolve(_encode(path, _PATH_SAFE, in_path=True))
    return NormalURL(
        scheme,
        host,
        port,
        path,
        _encode(query, _QUERY_SAFE, in_path=False) if has_query else None,
    )


def parse_prefix(text: str) -> NormalURL:
    """A ``url_prefixes`` entry, normalised; ValueError when it is not a usable prefix."""
    if "?" in text or "#" in text:
        raise ValueError("a URL prefix has no query or fragment")
    return normalise(text)


def token_allowed(url: httpx.URL, prefixes: tuple[str, ...], home: str | None) -> tuple[bool, str]:
    """Whether a credential may go with a request to ``url`` (one ``allowed`` returned):
    under one of ``prefixes`` when there are any, else at the scheme, host and port of
    ``home`` (the endpoint it was given for), else nowhere. With what that scope is, for
    a refusal's message."""
    normal = normalise(str(url))
    if prefixes:
        scope = ", ".join(str(parse_prefix(p)) for p in prefixes)
        return any(normal.under(parse_prefix(p)) for p in prefixes), scope
    if home:
        try:
            root = origin(home)
        except ValueError:
            return False, "nowhere (http_url is not a valid URL)"
        return normal.under(root), str(root)
    return False, "nowhere"


def origin(url: str) -> NormalURL:
    """The scheme, host and port of ``url`` as a prefix (its root path): what lies under
    it is what goes to the same server. ValueError when ``url`` is not a usable URL."""
    normal = normalise(url)
    return NormalURL(normal.scheme, normal.host, normal.port, "/")


def well_formed(url: object, field_name: str) -> NormalURL:
    """``url`` normalised, checked for its own shape only (a URL string, https:// or
    http://, no credentials, no control characters, a host, a path that stays under the
    root), for a process that does not know the daemon's ``url_prefixes``: InvalidURL
    naming ``field_name`` otherwise."""
    if not isinstance(url, str) or not url:
        raise InvalidURL(f"InvalidURL: {field_name}: expected an https:// URL")
    try:
        return normalise(url)
    except ValueError as exc:
        raise InvalidURL(
            f"InvalidURL: {field_name}: {exc}; a URL must be https:// (http:// only where a "
            "prefix says so)"
        ) from None


def allowed(url: str, prefixes: tuple[str, ...], field_name: str) -> httpx.URL:
    """The ``httpx.URL`` to fetch for ``url``: normalised, under one of ``prefixes``, and
    exactly what was checked. Raises InvalidURL (a permanent error) otherwise."""
    if not isinstance(url, str) or not url:
        raise InvalidURL(f"InvalidURL: {field_name}: expected an https:// URL")
    try:
        normal = normalise(url)
    except ValueError as exc:
        raise InvalidURL(
            f"InvalidURL: {field_name}: {exc}; a URL must be https:// (http:// only where a "
            "prefix says so) and lie under the url_prefixes setting"
        ) from None
    if not prefixes:
        raise InvalidURL(
            f"InvalidURL: {field_name}: URLs are disabled (the url_prefixes setting is empty)"
        )
    parsed = [parse_prefix(p) for p in prefixes]
    if not any(normal.under(p) for p in parsed):
        hint = ""
        if normal.scheme == "http" and not any(p.scheme == "http" for p in parsed):
            hint = "; plain http:// is refused unless a prefix says http://"
        raise InvalidURL(
            f"InvalidURL: {field_name}: {str(normal)[:200]} is not under an allowed prefix "
            f"(the url_prefixes setting: {', '.join(str(p) for p in parsed)}){hint}"
        )
    text = str(normal)
    fetched = httpx.URL(text)
    # httpx normalises on its own (and resolves dot segments): make sure it has nothing
    # left to change, so the request goes exactly where the check said.
    target = normal.path + ("" if normal.query is None else "?" + normal.query)
    if (
        str(fetched) != text
        or fetched.raw_path != target.encode("ascii")
        or fetched.scheme != normal.scheme
        or (fetched.port or DEFAULT_PORTS[normal.scheme]) != normal.port
    ):
        raise InvalidURL(f"InvalidURL: {field_name}: {text[:200]} cannot be fetched as written")
    return fetched
