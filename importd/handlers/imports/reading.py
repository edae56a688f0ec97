"""Source → records → chunks: the bytes of a file or URL, split into records with their
source lines, cut into chunks of rows for COPY; and the columns a file's start fixes.

A CSV with LF line ends loaded directly into its table skips the split: ``raw_chunks``
cuts the bytes into chunks at record boundaries found by quote parity (``Cutter``), and
a chunk is split into records (``Chunk.records``) only when it cannot go to COPY as it
is (``Cutter.copyable``), when PostgreSQL rejected one of its rows, or after a chunk
with bad rows (see ``copying``)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from ...models import PermanentError
from .. import sources
from ..records import Records, Splitter, object_keys
from ..spec import is_file


class Chunk:
    """Consecutive records of the source and where the stream stands after them.

    A chunk cut from the raw bytes (``raw_chunks``) holds those bytes, and splits them
    into records only when asked (``records``): a chunk COPY takes as it is
    (``copyable``) is never split unless PostgreSQL rejects one of its rows."""

    __slots__ = ("_records", "_split", "copyable", "end_offset", "first_line", "next_line", "raw")

    def __init__(
        self,
        records: Records | None,
        end_offset: int,
        next_line: int,
        *,
        raw: bytes = b"",
        first_line: int = 0,
        split: Callable[[bytes, int, int], Records] | None = None,
        copyable: bool = False,
    ) -> None:
        self._records = records
        self.end_offset = end_offset
        self.next_line = next_line
        self.raw = raw
        self.first_line = first_line or (records.lines[0] if records else 0)
        self._split = split
        self.copyable = copyable

    @property
    def records(self) -> Records:
        """The chunk's records (split from its bytes on first use: CPU work, run it in
        a thread)."""
        if self._records is None:
            assert self._split is not None
            self._records = self._split(self.raw, self.first_line, self.end_offset - len(self.raw))
        return self._records


async def open_source(
    source: str,
    settings: Any,
    http: Any,
    remaining: float,
    offset: int,
    known: dict[str, Any] | None,
) -> sources.Opened:
    """Open ``source`` at ``offset`` (``known``: the fingerprint an earlier attempt saw)."""
    if is_file(source):
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
        self.origin = 0  # where splitting began (after a byte order mark)
        # The bytes split up to the first batch, kept until the next one is asked for
        # (``raw_chunks`` goes on from them).
        self.fed: list[bytes] = []

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
        self.origin = skip
        return head

    async def records(self, blocks: AsyncIterator[bytes]) -> AsyncGenerator[Records, None]:
        """The records of ``blocks``, a batch per block."""
        head = b""
        keep = True
        async for received in blocks:
            block = received
            if self.splitter is None:
                head += block
                if len(head) < _HEAD:
                    continue
                block, head = self._start(head), b""
            assert self.splitter is not None
            if keep:
                self.fed.append(block)
            # Off the event loop: a block of many lines that open or close quotes takes a
            # Python step per such line.
            found = await asyncio.to_thread(self.splitter.feed, block)
            if found:
                yield found
                keep, self.fed = False, []
        if self.splitter is None:  # a file shorter than the head
            rest = self._start(head)
            assert self.splitter is not None
            if keep:
                self.fed.append(rest)
            found = self.splitter.feed(rest)
            if found:
                yield found
                keep, self.fed = False, []
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


class Cutter:
    """Cuts CSV bytes (LF line ends) into chunks at record boundaries without splitting
    them into records: a line end ends a record where the quotes before it are even
    (the splitter's rule, counted over the whole chunk at C speed). A chunk has at most
    ``rows`` lines and ``size`` bytes, unless its first record alone is longer."""

    def __init__(
        self, quote: bytes, escape: bytes | None, rows: int, size: int, max_record: int
    ) -> None:
        self._quote = quote
        self._escape = escape if escape and escape != quote else None
        self.rows = rows
        self.size = size
        self.max_record = max_record
        # Bytes held at most while looking for the end of a record: past them the
        # record is too long, and the splitter (which skips it) takes over.
        self.hold = size + max_record
        self._width = 64.0  # bytes per line so far

    def quotes(self, data: bytes, start: int = 0, end: int | None = None) -> int:
        """The quotes of ``data[start:end]`` that open or close a quoted field."""
        if self._escape is None:
            return data.count(self._quote, start, len(data) if end is None else end)
        part = data[start:end]
        pair, escaped = self._escape + self._escape, self._escape + self._quote
        return part.replace(pair, b"").replace(escaped, b"").count(self._quote)

    def cut(self, buf: bytes, start: int, final: bool) -> int | None:
        """Where the chunk that starts at ``buf[start]`` (the start of a record) ends:
        just after a line end that ends a record; None when more bytes are needed."""
        limit = min(len(buf), start + self.size)
        end = _after_line(buf, start, self.rows, limit, self._width)
        if end:
            self._width = (end - start) / self.rows
        elif limit == len(buf):  # fewer lines than a chunk's
            return len(buf) if final else None
        else:  # the size is reached first
            end = buf.rfind(b"\n", start, limit) + 1
        if end > start:  # back to the last line end outside quotes ...
            odd = self.quotes(buf, start, end) & 1
            while odd and end > start:
                before = max(start, buf.rfind(b"\n", start, end - 1) + 1)
                odd ^= self.quotes(buf, before, end) & 1
                end = before
            if end > start:
                return end
        # ... or, when the first record goes past the limits, on to its end.
        pos, odd = start, 0
        while True:
            newline = buf.find(b"\n", pos)
            if newline < 0:
                return len(buf) if final else None
            odd ^= self.quotes(buf, pos, newline + 1) & 1
            pos = newline + 1
            if not odd:
                return pos

    def copyable(self, raw: bytes) -> bool:
        """Whether COPY may take ``raw`` as it is: no carriage return, no blank line
        (no record for importd, a row for COPY), no line ``\\.`` (the end of COPY data),
        no record that may be longer than max_record_bytes."""
        return (
            len(raw) <= self.max_record
            and b"\r" not in raw
            and not raw.startswith(b"\n")
            and b"\n\n" not in raw
            and not raw.startswith(b"\\.\n")
            and b"\n\\.\n" not in raw
            and raw != b"\\."
            and not raw.endswith(b"\n\\.")
        )


def _after_line(buf: bytes, start: int, n: int, limit: int, width: float) -> int:
    """The position just after the ``n``-th line end of ``buf[start:limit]``, or 0 when
    it has fewer: counted in steps sized by the lines' ``width`` so far (C speed), the
    last few line by line."""
    pos, count = start, 0  # count: the line ends of buf[start:pos]
    while count < n:
        left = n - count
        if left <= 16:
            newline = buf.find(b"\n", pos, limit)
            if newline < 0:
                return 0
            pos, count = newline + 1, count + 1
            continue
        end = min(limit, pos + max(64, int(left * width * 0.9)))
        got = buf.count(b"\n", pos, end)
        while got > left:  # too far: a shorter step
            end = pos + (end - pos) // 2
            got = buf.count(b"\n", pos, end)
        if not got and end == limit:
            return 0
        pos, count = end, count + got
    return buf.rfind(b"\n", start, pos) + 1


async def raw_chunks(
    blocks: AsyncIterator[bytes],
    pending: bytes,
    offset: int,
    line: int,
    cutter: Cutter,
    splitter: Callable[[int, int], Splitter],
) -> AsyncIterator[Chunk]:
    """The chunks of a CSV source with LF line ends, cut from its bytes (see
    ``Cutter``): ``pending`` and then ``blocks``, from stream ``offset`` and ``line``.
    ``splitter(line, offset)``: a splitter that takes over from a record longer than
    ``max_record_bytes`` to the end (it skips such records without holding them)."""

    def split(raw: bytes, first_line: int, start: int) -> Records:
        whole = splitter(first_line, start)
        records = whole.feed(raw)
        records.extend(whole.finish())
        return records

    buf, at, more = pending, 0, list[bytes]()  # not yet cut: buf[at:] + more
    held, lines = len(pending), pending.count(b"\n")
    final = False
    iterator = aiter(blocks)
    while True:
        if held and (final or held >= cutter.size or lines >= cutter.rows):
            buf, at, more = b"".join([buf[at:], *more]), 0, []
            while at < len(buf):
                end = cutter.cut(buf, at, final)
                if end is None:
                    break
                raw, at = buf[at:end], end
                after = line + raw.count(b"\n") + (not raw.endswith(b"\n"))
                offset += len(raw)
                yield Chunk(
                    None,
                    offset,
                    after,
                    raw=raw,
                    first_line=line,
                    split=split,
                    copyable=cutter.copyable(raw),
                )
                line = after
            held, lines = len(buf) - at, buf.count(b"\n", at)
            if held > cutter.hold:  # a record too long to hold: the splitter skips it
                rest = splitter(line, offset)
                async for chunk in _split_rest(buf[at:], iterator, rest, cutter):
                    yield chunk
                return
        if final:
            return
        try:
            block = await anext(iterator)
        except StopAsyncIteration:
            final = True
            continue
        more.append(block)
        held += len(block)
        lines += block.count(b"\n")


async def _split_rest(
    buf: bytes, blocks: AsyncIterator[bytes], splitter: Splitter, cutter: Cutter
) -> AsyncIterator[Chunk]:
    async def batches() -> AsyncIterator[Records]:
        yield await asyncio.to_thread(splitter.feed, buf)
        async for block in blocks:
            yield await asyncio.to_thread(splitter.feed, block)
        yield splitter.finish()

    async for chunk in chunks(Records(newline=b"\n"), batches(), 0, cutter.rows, cutter.size):
        yield chunk


def first_keys(first: Records) -> list[str]:
    """The keys of the first record that is a JSON object (NDJSON without a mapping)."""
    for data in first.datas:
        with contextlib.suppress(ValueError, RecursionError):
            keys = object_keys(data) if data else None
            if keys:
                return keys
    raise PermanentError(
        "NoColumns: the first lines hold no JSON object to take the "
        "columns from; give them with payload.columns"
    )


MAX_COLUMNS = 1600  # PostgreSQL's limit of a table's columns


def header_fields(data: bytes, spec: Any) -> list[str]:
    """The fields of a CSV header line."""
    try:
        text = data.decode(spec.encoding).lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise PermanentError(
            f"HeaderEncoding: the header line is not {spec.encoding}: {exc.reason}"
        ) from None
    if spec.quote not in text and spec.escape not in text:
        # Every delimiter ends a field: a header of more fields than a table can have
        # columns fails before millions of fields are made (and freed) holding the GIL.
        count = text.count(spec.delimiter) + 1
        if count > MAX_COLUMNS:
            raise PermanentError(
                f"HeaderMismatch: the header line has {count:,} fields; a PostgreSQL table "
                f"has at most {MAX_COLUMNS:,} columns"
            )
    dialect: dict[str, Any] = {"delimiter": spec.delimiter, "quotechar": spec.quote}
    if spec.escape != spec.quote:
        dialect.update(escapechar=spec.escape, doublequote=False)
    try:
        fields = next(csv.reader([text], **dialect), [])
    except csv.Error as exc:
        # Python's csv refuses a field over its limit (131,072 characters); no column
        # name is that long (PostgreSQL's are at most 63 bytes), so no retry can help.
        limit = csv.field_size_limit()
        if "field limit" in str(exc):
            raise PermanentError(
                f"HeaderMismatch: a header field is longer than {limit:,} characters; no "
                "column name is that long"
            ) from None
        raise PermanentError(f"HeaderMismatch: the header line is not CSV: {exc}") from None
    if not any(f.strip() for f in fields):
        raise PermanentError("HeaderMismatch: the header line is empty")
    return fields
