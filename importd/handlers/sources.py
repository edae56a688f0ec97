"""Where import files come from: ``file://`` paths under the import roots, and ``https://``
URLs under the allowed prefixes, streamed from a byte offset (resumption) with a
fingerprint that tells whether the source changed between attempts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .. import urls
from ..config import how_to_set
from ..models import InvalidPayload, PermanentError, RetryLater
from ..redaction import redact_head

BLOCK = 1 << 20


class SourceMissing(PermanentError):
    """The file or URL does not exist (or may not be read)."""


class SourceChanged(PermanentError):
    """The source differs from the one an earlier attempt read."""


@dataclass
class Opened:
    """An open source: its fingerprint and its bytes from the requested offset."""

    fingerprint: dict[str, Any]
    blocks: AsyncIterator[bytes]
    closers: list[Any] = field(default_factory=list)

    async def close(self) -> None:
        """Release the file or the HTTP response."""
        for closer in self.closers:
            with contextlib.suppress(Exception):
                result = closer()
                if asyncio.iscoroutine(result):
                    await result


def check_unchanged(before: dict[str, Any] | None, now: dict[str, Any], source: str) -> None:
    """Raise SourceChanged when a fingerprint field both attempts know differs."""
    if not before:
        return
    for key, old in before.items():
        new = now.get(key)
        if old is not None and new is not None and old != new:
            raise SourceChanged(
                f"SourceChanged: {source} changed since an earlier attempt read it "
                f"({key} was {old!r}, now {new!r}); enqueue a new job to load the new file"
            )


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolve_file(source: str, roots: tuple[str, ...]) -> str:
    """The real path of a ``file://`` source, refused unless inside an import root."""
    parts = urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise InvalidPayload(f"payload.source: file URLs name no host ({parts.netloc!r})")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidPayload("payload.source: a file URL needs an absolute path")
    if "\x00" in path or any(segment == ".." for segment in path.split("/")):
        raise InvalidPayload("payload.source: '..' and NUL bytes are not allowed in paths")
    if not roots:
        raise InvalidPayload(
            "payload.source: file sources are disabled (no import_roots configured); "
            f"allow a directory with {how_to_set('import_roots', os.path.dirname(path))}"
        )
    real = os.path.realpath(path)
    real_roots = [os.path.realpath(r) for r in roots]
    if not any(_under(real, r) for r in real_roots):
        target = f" (a symlink to {real})" if real != os.path.abspath(path) else ""
        raise InvalidPayload(
            f"payload.source: {path}{target} is outside the import roots "
            f"({', '.join(roots)}); allow its directory with "
            f"{how_to_set('import_roots', os.path.dirname(real), None, tuple(roots))}"
        )
    return real


def _open_checked(
    real: str, source: str, roots: tuple[str, ...], offset: int
) -> tuple[int, os.stat_result]:
    """Open ``real`` for reading at ``offset`` (blocking; run in a thread)."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SourceMissing(f"SourceMissing: {source} does not exist") from None
    except PermissionError:
        raise SourceMissing(f"SourceMissing: {source} is not readable by importd") from None
    except OSError as exc:
        raise SourceMissing(f"SourceMissing: cannot open {source}: {exc.strerror}") from None
    try:
        # The path was checked before opening; check what was opened too, in case a
        # directory on the path was swapped for a symlink in between.
        proc = f"/proc/self/fd/{fd}"
        opened_path = os.readlink(proc) if os.path.exists(proc) else real
        if not any(_under(opened_path, os.path.realpath(r)) for r in roots):
            raise InvalidPayload("payload.source: the file moved outside the import roots")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidPayload(f"payload.source: {source} is not a regular file")
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


async def open_file(source: str, roots: tuple[str, ...], offset: int) -> Opened:
    """Open a file source at ``offset``."""
    real = await asyncio.to_thread(resolve_file, source, roots)
    fd, info = await asyncio.to_thread(_open_checked, real, source, roots, offset)
    fingerprint = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "inode": info.st_ino}

    async def blocks() -> AsyncIterator[bytes]:
        position = offset
        while True:
            block = await asyncio.to_thread(os.read, fd, BLOCK)
            if not block:
                break
            position += len(block)
            yield block
        await asyncio.to_thread(_check_whole, fd, real, info, position, source)

    return Opened(fingerprint, blocks(), [lambda: os.close(fd)])


def _check_whole(fd: int, real: str, opened: os.stat_result, end: int, source: str) -> None:
    """At the end of the file: raise SourceChanged unless exactly the file that was opened
    was read, all of it (truncated, grown, rewritten or replaced while it was read)."""
    now = os.fstat(fd)
    why = None
    if end != opened.st_size:
        why = f"{end:,} bytes were read of the {opened.st_size:,} it had when it was opened"
    elif now.st_size != opened.st_size or now.st_mtime_ns != opened.st_mtime_ns:
        why = "it was written to while it was read"
    else:
        try:
            replaced = os.stat(real).st_ino != opened.st_ino
        except OSError:
            replaced = True
        if replaced:
            why = "another file took its place while it was read"
    if why:
        raise SourceChanged(
            f"SourceChanged: {source} changed while it was read ({why}); "
            "nothing past the last checkpoint was kept; enqueue a new job once the file "
            "is complete"
        )


def check_url(
    url: str,
    prefixes: tuple[str, ...],
    field_name: str = "payload.source",
    *,
    command: str | None = None,
) -> httpx.URL:
    """The URL to fetch for ``url``: normalised and under one of ``prefixes`` (compared
    by parts, see importd.urls), or an InvalidURL error whose advice names the ways to
    set url_prefixes that work for ``command`` (None: a daemon's)."""
    try:
        return urls.allowed(url, prefixes, field_name)
    except urls.InvalidURL as exc:
        raise urls.InvalidURL(_with_hint(str(exc), url, field_name, command)) from None


def _with_hint(message: str, url: str, field_name: str, command: str | None) -> str:
    """A refusal that also says how to allow the URL (the setting's flag where
    ``command`` has it, environment variable and file key) and, for a source, that
    file:// paths are accepted too."""
    if field_name == "payload.source" and "expected an https:// URL" in message:
        message = message.replace(
            "expected an https:// URL", "expected a file:///path or an https:// URL", 1
        )
    if "url_prefixes setting" not in message:
        return message
    try:
        normal = urls.normalise(url)
    except ValueError:
        return message
    default = urls.DEFAULT_PORTS[normal.scheme]
    port = "" if normal.port == default else f":{normal.port}"
    example = f"{normal.scheme}://{normal.host}{port}/"
    return f"{message}; add one with {how_to_set('url_prefixes', example, command)}"


RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), or None."""
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():  # (str.isdigit takes "²" too)
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        from datetime import UTC, datetime  # noqa: PLC0415
        from email.utils import parsedate_to_datetime  # noqa: PLC0415

        when = parsedate_to_datetime(value)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None


def status_error(response: httpx.Response, what: str, body: bytes = b"") -> Exception:
    """The exception for an unsuccessful HTTP status: retry for 408/429/5xx, else fail."""
    # (Cut after the redaction: a secret the cut falls inside is masked whole.)
    text = redact_head(body[:65536].decode("utf-8", "replace").strip(), 300)
    message = f"HTTP {response.status_code} from {what}" + (f": {text}" if text else "")
    if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
        delay = retry_after(response)
        if delay is not None:
            return RetryLater(message, delay)
        return RuntimeError(message)
    if response.status_code in (404, 410):
        return SourceMissing(f"SourceMissing: {message}")
    return PermanentError(message)


async def open_url(
    url: str,
    client: httpx.AsyncClient,
    prefixes: tuple[str, ...],
    offset: int,
    known: dict[str, Any] | None,
    timeout: float,
) -> Opened:
    """Stream ``url`` from ``offset`` (a Range request; skipping bytes if not honoured)."""
    target = check_url(url, prefixes)
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if known and known.get("etag"):
            headers["If-Range"] = str(known["etag"])
    request = client.build_request(
        "GET", target, headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 30))
    )
    response = await client.send(request, stream=True)
    try:
        if response.status_code not in (200, 206):
            body = b""
            with contextlib.suppress(httpx.HTTPError):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > 1000:
                        break
            raise status_error(response, str(target), body)
        length = response.headers.get("content-length")
        total: int | None = int(length) if length and length.isdigit() else None
        skip = 0
        if response.status_code == 206:
            content_range = response.headers.get("content-range", "")
            start, _, size = content_range.removeprefix("bytes ").partition("/")
            if not start.startswith(f"{offset}-"):
                raise RuntimeError(
                    f"the server answered range {content_range!r} to 'bytes={offset}-'"
                )
            total = int(size) if size.isdigit() else None
        else:
            skip = offset  # no range support (or the resource changed): read past it
        fingerprint = {
            "etag": response.headers.get("etag"),
            "size": total,
            "last_modified": response.headers.get("last-modified"),
        }
    except BaseException:
        await response.aclose()
        raise

    async def blocks() -> AsyncIterator[bytes]:
        remaining = skip
        position = offset - skip
        # As the bytes arrive: waiting for a full block would stall a slow download.
        async for received in response.aiter_bytes():
            position += len(received)
            if remaining >= len(received):
                remaining -= len(received)
                continue
            yield received[remaining:] if remaining else received
            remaining = 0
        if total is not None and position != total:
            raise SourceChanged(
                f"SourceChanged: {url} ended after {position:,} of its {total:,} bytes; "
                "enqueue a new job once the file is complete"
            )

    return Opened(fingerprint, blocks(), [response.aclose])
