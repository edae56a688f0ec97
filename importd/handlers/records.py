"""Splitting a byte stream into records, with source line numbers, without parsing fields.

A CSV record may hold quoted newlines; the splitter keeps them inside their record by
tracking quote parity line by line (C-speed ``split`` and ``count``), so records go to
PostgreSQL's COPY as the bytes they were in the file.
NDJSON lines are turned into COPY text rows here, since COPY cannot read JSON.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Records:
    """Consecutive records of a stream, as parallel lists: the physical line each starts
    on (1-based), its bytes without the final newline, and the stream offset after it.
    Lists rather than an object per record: a million records cost a million list slots,
    not a million objects."""

    lines: list[int] = field(default_factory=list)
    datas: list[bytes] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def extend(self, other: Records) -> None:
        """Append ``other``."""
        self.lines.extend(other.lines)
        self.datas.extend(other.datas)
        self.ends.extend(other.ends)

    def split(self, count: int) -> tuple[Records, Records]:
        """The first ``count`` records and the rest."""
        return (
            Records(self.lines[:count], self.datas[:count], self.ends[:count]),
            Records(self.lines[count:], self.datas[count:], self.ends[count:]),
        )

    def next_line(self, index: int) -> int:
        """The physical line just after record ``index``."""
        return self.lines[index] + self.datas[index].count(b"\n") + 1


class Splitter:
    """Feeds blocks of bytes, returns the records they complete.

    ``quote=None`` treats every line as a record (NDJSON). ``escape`` differing from
    ``quote`` (a backslash, say) makes ``escape + quote`` a literal quote. Blank lines are
    no records (as csv readers agree), though they count as lines.

    Work per block is C-speed (``split``, ``count``, ``accumulate``) except for one
    step per line with an odd number of quotes, where a quoted field opens or closes.
    """

    def __init__(
        self, quote: bytes | None = b'"', escape: bytes | None = None, first_line: int = 1
    ) -> None:
        self._quote = quote
        self._escape = escape if escape and escape != quote else None
        self._pieces: list[bytes] = []  # lines of a record still inside quotes
        self._record_line = first_line  # where that record starts
        self._tail = b""  # the unfinished last line of the previous block
        self._line_offset = 0  # stream offset just after the last complete line
        self.line = first_line  # physical line number of the next line to read
        self.consumed = 0  # bytes belonging to completed records (a resume point)

    def _odd(self, parts: list[bytes]) -> list[int]:
        """Indexes of the lines with an odd number of (unescaped) quotes."""
        quote = self._quote
        if quote is None:
            return []
        if self._escape is None:
            # map/compress keep the per-line work in C: no Python step per line.
            counts = map(bytes.count, parts, itertools.repeat(quote))
            return list(
                itertools.compress(
                    itertools.count(), map(operator.and_, counts, itertools.repeat(1))
                )
            )
        pair, escaped = self._escape + self._escape, self._escape + quote
        return [
            i
            for i, part in enumerate(parts)
            if part.replace(pair, b"").replace(escaped, b"").count(quote) & 1
        ]

    def feed(self, block: bytes) -> Records:
        """The records completed by ``block``."""
        if not block:
            return Records()
        parts = (self._tail + block).split(b"\n")
        self._tail = parts.pop()
        if not parts:
            return Records()
        first, base = self.line, self._line_offset
        # ends[i]: the stream offset just after line i of this block.
        ends = list(
            map(operator.add, itertools.accumulate(map(len, parts)), itertools.count(base + 1))
        )
        self.line += len(parts)
        self._line_offset = ends[-1]
        out = Records()
        odd = self._odd(parts)
        pos = 0
        if self._pieces:  # a quoted field is open since an earlier block
            if not odd:
                self._pieces.extend(parts)
                return out
            close = odd.pop(0)
            self._pieces.extend(parts[: close + 1])
            self._emit(out, self._record_line, b"\n".join(self._pieces), ends[close])
            self._pieces = []
            pos = close + 1
        for k in range(0, len(odd), 2):
            opening = odd[k]
            self._bulk(out, parts, ends, first, pos, opening)
            if k + 1 == len(odd):  # opens here, closes in a later block
                self._pieces = parts[opening:]
                self._record_line = first + opening
                return out
            close = odd[k + 1]
            self._emit(out, first + opening, b"\n".join(parts[opening : close + 1]), ends[close])
            pos = close + 1
        self._bulk(out, parts, ends, first, pos, len(parts))
        return out

    def _emit(self, out: Records, line: int, data: bytes, end: int) -> None:
        self.consumed = end
        if data and data != b"\r":
            out.lines.append(line)
            out.datas.append(data)
            out.ends.append(end)

    def _bulk(
        self, out: Records, parts: list[bytes], ends: list[int], first: int, lo: int, hi: int
    ) -> None:
        """Lines ``lo`` to ``hi`` of the block, each a record of its own."""
        if lo >= hi:
            return
        segment = parts[lo:hi]
        self.consumed = ends[hi - 1]
        if b"" in segment or b"\r" in segment:
            keep = [i for i, part in enumerate(segment, lo) if part and part != b"\r"]
            out.lines.extend(first + i for i in keep)
            out.datas.extend(parts[i] for i in keep)
            out.ends.extend(ends[i] for i in keep)
            return
        out.lines.extend(range(first + lo, first + hi))
        out.datas.extend(segment)
        out.ends.extend(ends[lo:hi])

    def finish(self) -> Records:
        """The last record when the stream does not end with a newline (or ends inside
        quotes: PostgreSQL then reports the unterminated field)."""
        out = Records()
        if self._tail:
            if not self._pieces:
                self._record_line = self.line
            self._pieces.append(self._tail)
            self._line_offset += len(self._tail)
            self._tail = b""
            self.line += 1
        if self._pieces:
            data = b"\n".join(self._pieces)
            self._pieces = []
            if data.strip(b"\r\n"):
                self._emit(out, self._record_line, data, self._line_offset)
        self.consumed = self._line_offset
        return out


class RowError(Exception):
    """A record rejected before it reached PostgreSQL (NDJSON decoding and mapping)."""


def _copy_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


class NdjsonRows:
    """Turns NDJSON records into COPY text rows for a fixed column list."""

    def __init__(
        self, mapping: dict[str, str], columns: Sequence[str], json_columns: Iterable[str]
    ) -> None:
        self.columns = list(columns)
        self._index = {column: i for i, column in enumerate(self.columns)}
        self._mapping = mapping
        self._json = set(json_columns)

    def convert(self, data: bytes) -> bytes | None:
        """The COPY row for one NDJSON record; None for a blank line; RowError when bad."""
        text = data.strip()
        if not text:
            return None
        try:
            obj = json.loads(text)
        except UnicodeDecodeError as exc:
            raise RowError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise RowError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise RowError(f"expected a JSON object, got {type(obj).__name__}")
        fields: list[str] = ["\\N"] * len(self.columns)
        for key, value in obj.items():
            column = self._mapping.get(key, key if not self._mapping else None)
            if column is None or column not in self._index:
                raise RowError(
                    f"field {key!r} is not among the import's columns ({', '.join(self.columns)})"
                )
            fields[self._index[column]] = self._field(key, column, value)
        return ("\t".join(fields) + "\n").encode("utf-8")

    def _field(self, key: str, column: str, value: Any) -> str:
        if value is None:
            return "\\N"
        if column in self._json:
            return _copy_text(json.dumps(value, ensure_ascii=False))
        if isinstance(value, dict | list):
            raise RowError(
                f"field {key!r} holds a nested value but column {column!r} is not json or jsonb"
            )
        if isinstance(value, bool):
            return "true" if value else "false"
        return _copy_text(str(value))
