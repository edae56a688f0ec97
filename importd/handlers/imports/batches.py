"""The rows of a chunk on their way to COPY: a ``Batch`` (records split out, each with its
source line and its COPY body) and a ``Screened`` chunk (its source bytes as they are,
with the suspects the screen found in them); the COPY data of rows (``join_rows``), and
which row PostgreSQL means by a COPY line number (``locate``). Pure data: no database."""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from ...repository import RowFailure
from .common import Row


@dataclass
class Batch:
    """The rows of a chunk that go to COPY: source lines, source bytes, COPY bodies
    (without the line prefix and the newline), and the COPY data of them all."""

    lines: list[int]
    raws: list[bytes]
    bodies: list[bytes]
    payload: bytes
    prefix: bytes  # b"%d," : the source line, first in a staged row; b"" when direct
    # The indexes of the rows the screen could not vouch for, when the chunk was screened
    # before its COPY (see ``Copier.copy_chunk``); None when it was not.
    suspects: list[int] | None = None
    # PostgreSQL's verdict on the suspects, when another connection already checked them
    # (``ahead.check``): the message of each bad one by its line.
    verdicts: dict[int, str] | None = None
    # Set once the check ahead that sets ``verdicts`` put its findings here (or found
    # none): ``ahead.check``.
    ahead: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def without(self, indexes: list[int]) -> bytes:
        """The COPY data of the rows but those at ``indexes`` (ascending): slices of
        ``payload`` around them, not a join of every row again."""
        # Where row i starts: the bodies before it, a newline each, and their prefixes
        # (the prefix's text plus the digits of their lines, ascending: counted by
        # ranges of equal length, not row by row).
        ends = list(itertools.accumulate(map(len, self.bodies)))
        extra = len(self.prefix % 0) if self.prefix else 1  # "%d," → "," + "\n"

        def start(i: int) -> int:
            if not i:
                return 0
            offset = ends[i - 1] + i * extra
            if self.prefix:
                lo = 0
                while lo < i:
                    digits = len(str(self.lines[lo]))
                    hi = bisect.bisect_left(self.lines, 10**digits, lo, i)
                    offset += digits * (hi - lo)
                    lo = hi
            return offset

        view = memoryview(self.payload)
        parts, begin = [], 0
        for index in indexes:
            parts.append(view[begin : start(index)])
            begin = start(index + 1)
        parts.append(view[begin:])
        return b"".join(parts)

    def subset(self, indexes: list[int]) -> Batch:
        """The rows at ``indexes`` (ascending), with the COPY data of them alone."""
        lines = [self.lines[i] for i in indexes]
        bodies = [self.bodies[i] for i in indexes]
        return Batch(
            lines,
            [self.raws[i] for i in indexes],
            bodies,
            join_rows(self.prefix, lines, bodies),
            self.prefix,
        )

    def rows(self) -> list[Row]:
        """One Row per record (for isolating bad rows)."""
        if self.prefix:
            heads = [self.prefix % line for line in self.lines]
            return [
                Row(line, raw, head + body + b"\n")
                for line, raw, head, body in zip(
                    self.lines, self.raws, heads, self.bodies, strict=True
                )
            ]
        return [
            Row(line, raw, body + b"\n")
            for line, raw, body in zip(self.lines, self.raws, self.bodies, strict=True)
        ]


@dataclass
class Screened:
    """A chunk's source bytes screened as they are (``Copier.screen_raw``, CSV loaded
    directly): its suspects as rows of their own, and where each lies in the bytes. The
    rest is never split into records: it goes to COPY as slices of the bytes."""

    data: bytes
    rows: Batch  # the suspects (each record without its line end)
    spans: list[tuple[int, int]]  # where each suspect starts and ends (after its line end)
    lines: int  # the line ends of ``data``: its records, or more
    first_line: int  # the source line of its first record
    # PostgreSQL's verdict on the suspects, when another connection already checked them
    # (``ahead.check``), and the task that sets it, as for a ``Batch``.
    verdicts: dict[int, str] | None = None
    ahead: asyncio.Future[None] | None = None
    # What the verdicts make of the chunk (``Copier.settle_screened``), worked out by the
    # check ahead too, off the loader's way: the bad suspects' indexes, their rows as
    # rejected, and the bytes without them.
    settled: tuple[list[int], list[RowFailure], bytes] | None = None
    # After a chunk with rows the target refused (``Copier.refusing``), the rows its NOT
    # NULL and CHECK refuse, found ahead too (``CheckTable.find_refused``).
    refused: Refused | None = None

    def without(self, indexes: list[int]) -> bytes:
        """The bytes but the suspects at ``indexes`` (ascending)."""
        view = memoryview(self.data)
        parts, begin = [], 0
        for index in indexes:
            start, end = self.spans[index]
            parts.append(view[begin:start])
            begin = end
        parts.append(view[begin:])
        return b"".join(parts)


@dataclass
class Refused:
    """The rows of a chunk that the target's NOT NULL and CHECK refuse: how many rows
    the chunk has but its bad suspects (``total``), and PostgreSQL's message and the
    source record of each refused one, by its line."""

    total: int
    messages: dict[int, str]
    raws: dict[int, bytes]


class ChunkLines:
    """The lines of a chunk's bytes ``data`` (whole records, a newline after each line,
    no carriage return or blank line: ``reading.Cutter.copyable``) and where a record
    spans several: from one line with an odd number of quotes to the next (``odd``:
    ``records.odd_lines``), as the splitter has it; every other line is a record.
    C-speed passes (``split``, ``count``): about 3 ms for 2 MB. Built once (in a thread,
    while the COPY that numbers the rows runs), asked by ``place``."""

    def __init__(self, data: bytes, odd: Callable[[list[bytes]], list[int]]) -> None:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        opened = odd(lines)
        self.lines = lines
        self.whole = not len(opened) & 1  # (no quoted field left open)
        self.spans = list(zip(opened[::2], opened[1::2], strict=False))  # (first, last line)
        self.records = len(lines) - sum(last - first for first, last in self.spans)

    def place(
        self, first_line: int, gone: list[tuple[int, int]], total: int, places: list[int]
    ) -> list[tuple[int, bytes]] | None:
        """The source line and the record of the rows at ``places`` (1 for the first)
        among the ``total`` rows COPY read from the data, which starts at source line
        ``first_line`` and had the records ``gone`` taken out (each one's source line and
        how many lines it spans, ascending). None when the lines make other than
        ``total`` records (a guard: the caller then splits the records to tell them)."""
        if not self.whole or self.records != total:
            return None
        if any(not 0 < place <= total for place in places):
            return None
        lines, spans = self.lines, self.spans
        found = []
        merged = 0  # the lines of the records before, past their first
        at_span = at_gone = shift = 0
        for place in sorted(places):
            index = place - 1 + merged
            while at_span < len(spans) and spans[at_span][0] < index:
                merged += spans[at_span][1] - spans[at_span][0]
                index = place - 1 + merged
                at_span += 1
            end = index + 1
            if at_span < len(spans) and spans[at_span][0] == index:
                end = spans[at_span][1] + 1
            line = first_line + index + shift
            while at_gone < len(gone) and gone[at_gone][0] <= line:  # (a record gone before)
                line += gone[at_gone][1]
                shift += gone[at_gone][1]
                at_gone += 1
            found.append((line, b"\n".join(lines[index:end])))
        return found


def place_rows(
    data: bytes,
    first_line: int,
    gone: list[tuple[int, int]],
    total: int,
    places: list[int],
    odd: Callable[[list[bytes]], list[int]],
) -> list[tuple[int, bytes]] | None:
    """``ChunkLines(data, odd).place(first_line, gone, total, places)``."""
    return ChunkLines(data, odd).place(first_line, gone, total, places)


def join_rows(prefix: bytes, lines: list[int], bodies: list[bytes]) -> bytes:
    """The COPY data of rows ``bodies`` at source ``lines``, each after ``prefix``."""
    if not bodies:
        return b""
    if not prefix:
        return b"\n".join(bodies) + b"\n"
    heads = map(prefix.__mod__, lines)
    return b"".join(itertools.chain.from_iterable(zip(heads, bodies, itertools.repeat(b"\n"))))


def locate(rows: list[Row], line: int | None, csv: bool) -> int | None:
    """The index of the row PostgreSQL means by COPY line ``line``, or None."""
    if line is None or line < 1:
        return None
    if not csv:
        index = line - 1
    else:
        weights = [1 + rows[0].payload.count(b"\r")] if rows else []
        weights.extend(row.payload.count(b"\n") for row in rows[1:])
        index = bisect.bisect_left(list(itertools.accumulate(weights)), line)
    return index if index < len(rows) else None
