"""Source → records → chunks: the bytes of a file or URL, split into records with their
source lines, cut into chunks of rows for COPY; and the columns a file's start fixes."""

from __future__ import annotations

import asyncio
import contextlib
import csv
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from ...models import PermanentError
from .. import sources
from ..records import Records, Splitter, loads


@dataclass
class Chunk:
    """Consecutive records of the source and where the stream stands after them."""

    records: Records
    end_offset: int
    next_line: int


async def open_source(
    source: str,
    settings: Any,
    http: Any,
    remaining: float,
    offset: int,
    known: dict[str, Any] | None,
) -> sources.Opened:
    """Open ``source`` at ``offset`` (``known``: the fingerprint an earlier attempt saw)."""
    if source.startswith("file:"):
        return await sources.open_file(source, settings.import_roots, offset)
    if http is None:
        raise PermanentError("no HTTP client in this daemon")
    return await sources.open_url(
        source, http, settings.url_prefixes, offset, known, max(remaining, 1.0)
    )


BOM = b"\xef\xbb\xbf"
_HEAD = 1 << 16  # bytes looked at before the first record: the BOM and the line end


class Reader:
    """Turns the source's blocks into records: drops a UTF-8 byte order mark at the start
    of the file, finds the line end (LF, CRLF or CR) there, and splits.

    ``newline``: the line end an earlier attempt found (resuming), or None to look."""

    def __init__(
        self,
        quote: bytes | None,
        escape: bytes | None,
        first_line: int,
        newline: bytes | None,
        limit: int,
        *,
        at_start: bool,
        utf8: bool,
    ) -> None:
        self._args = (quote, escape, first_line)
        self.newline = newline
        self._limit = limit
        self._at_start = at_start
        self._utf8 = utf8
        self.splitter: Splitter | None = None

    def _start(self, head: bytes) -> bytes:
        skip = 0
        if self._at_start and self._utf8 and head.startswith(BOM):
            skip = len(BOM)
        head = head[skip:]
        if self.newline is None:
            cr, lf = head.find(b"\r"), head.find(b"\n")
            bare_cr = cr >= 0 and (lf < 0 or cr < lf) and head[cr + 1 : cr + 2] != b"\n"
            self.newline = b"\r" if bare_cr else b"\n"
        quote, escape, first_line = self._args
        self.splitter = Splitter(
            quote, escape, first_line, newline=self.newline, limit=self._limit, offset=skip
        )
        return head

    async def records(self, blocks: AsyncIterator[bytes]) -> AsyncGenerator[Records, None]:
        """The records of ``blocks``, a batch per block."""
        head = b""
        async for received in blocks:
            block = received
            if self.splitter is None:
                head += block
                if len(head) < _HEAD:
                    continue
                block, head = self._start(head), b""
            assert self.splitter is not None
            # Off the event loop: a block of many lines that open or close quotes takes a
            # Python step per such line.
            found = await asyncio.to_thread(self.splitter.feed, block)
            if found:
                yield found
        if self.splitter is None:  # a file shorter than the head
            rest = self._start(head)
            assert self.splitter is not None
            found = self.splitter.feed(rest)
            if found:
                yield found
        last = self.splitter.finish()
        if last:
            yield last


async def chunks(
    leftover: Records,
    batches: AsyncIterator[Records],
    start: int,
    chunk_rows: int,
    chunk_bytes: int,
) -> AsyncIterator[Chunk]:
    """Chunks of at most ``chunk_rows`` records (and about ``chunk_bytes`` bytes)."""
    pending = leftover
    size = sum(map(len, pending.datas))

    def cut(count: int) -> Chunk:
        nonlocal pending, size
        taken, pending = pending.split(count)
        size -= sum(map(len, taken.datas))
        return Chunk(taken, start + taken.ends[-1], taken.next_line(len(taken) - 1))

    def full() -> bool:
        return len(pending) >= chunk_rows or (size >= chunk_bytes and bool(pending))

    while full():
        yield cut(min(len(pending), chunk_rows))
    async for batch in batches:
        pending.extend(batch)
        size += sum(map(len, batch.datas))
        while full():
            yield cut(min(len(pending), chunk_rows))
    if pending:
        yield cut(len(pending))


def first_keys(first: Records) -> list[str]:
    """The keys of the first record that is a JSON object (NDJSON without a mapping)."""
    for data in first.datas:
        with contextlib.suppress(ValueError, RecursionError):
            obj = loads(data) if data else None
            if isinstance(obj, dict) and obj:
                return [str(key) for key in obj]
    raise PermanentError(
        "NoColumns: the first lines hold no JSON object to take the "
        "columns from; give them with payload.columns"
    )


def header_fields(data: bytes, spec: Any) -> list[str]:
    """The fields of a CSV header line."""
    try:
        text = data.decode(spec.encoding).lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise PermanentError(
            f"HeaderEncoding: the header line is not {spec.encoding}: {exc.reason}"
        ) from None
    dialect: dict[str, Any] = {"delimiter": spec.delimiter, "quotechar": spec.quote}
    if spec.escape != spec.quote:
        dialect.update(escapechar=spec.escape, doublequote=False)
    fields = next(csv.reader([text], **dialect), [])
    if not any(f.strip() for f in fields):
        raise PermanentError("HeaderMismatch: the header line is empty")
    return fields
