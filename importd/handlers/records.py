"""Splitting a byte stream into records, with source line numbers, without parsing fields.

A CSV record may hold quoted newlines; the splitter keeps them inside their record by
tracking quote parity line by line (C-speed ``split`` and ``count``, one Python step per
physical line), so records go to PostgreSQL's COPY as the bytes they were in the file.
NDJSON lines are turned into COPY text rows here, since COPY cannot read JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Record:
    """One record: the physical line it starts on (1-based) and its bytes, newline included."""

    line: int
    data: bytes
    end: int = 0  # bytes of the stream consumed once this record is read

    @property
    def next_line(self) -> int:
        """The physical line number just after this record."""
        return self.line + max(self.data.count(b"\n"), 1)


class Splitter:
    """Feeds blocks of bytes, returns the records they complete.

    ``quote=None`` treats every line as a record (NDJSON). ``escape`` differing from
    ``quote`` (a backslash, say) makes ``escape + quote`` a literal quote.
    """

    def __init__(
        self, quote: bytes | None = b'"', escape: bytes | None = None, first_line: int = 1
    ) -> None:
        self._quote = quote
        self._escape = escape if escape and escape != quote else None
        self._pieces: list[bytes] = []  # lines of the record being read
        self._in_quote = False
        self._tail = b""  # the unfinished last line of the previous block
        self.line = first_line  # physical line number of the next line to read
        self._record_line = first_line
        self.consumed = 0  # bytes belonging to completed records

    def _quotes(self, line: bytes) -> int:
        assert self._quote is not None
        if self._escape is not None and self._escape in line:
            line = line.replace(self._escape + self._escape, b"").replace(
                self._escape + self._quote, b""
            )
        return line.count(self._quote)

    def feed(self, block: bytes) -> list[Record]:
        """Records completed by ``block``."""
        if not block:
            return []
        lines = (self._tail + block).split(b"\n")
        self._tail = lines.pop()
        out: list[Record] = []
        quote = self._quote
        for raw in lines:
            line = raw + b"\n"
            if not self._pieces:
                self._record_line = self.line
            self.line += 1
            if quote is not None and quote in line and self._quotes(line) % 2:
                self._in_quote = not self._in_quote
            if self._in_quote:
                self._pieces.append(line)
                continue
            if self._pieces:
                self._pieces.append(line)
                line = b"".join(self._pieces)
                self._pieces.clear()
            self.consumed += len(line)
            if len(line) <= 2 and not line.strip(b"\r\n"):
                continue  # a blank line is no record (csv readers agree)
            out.append(Record(self._record_line, line, self.consumed))
        return out

    def finish(self) -> list[Record]:
        """The last record when the stream does not end with a newline (or ends inside
        quotes: PostgreSQL then reports the unterminated field)."""
        if self._tail:
            if not self._pieces:
                self._record_line = self.line
            self._pieces.append(self._tail)
            self._tail = b""
            self.line += 1
        rest = b"".join(self._pieces)
        self._pieces.clear()
        self.consumed += len(rest)
        if not rest.strip(b"\r\n"):
            return []
        data = rest if rest.endswith(b"\n") else rest + b"\n"
        return [Record(self._record_line, data, self.consumed)]

    @property
    def pending(self) -> int:
        """Bytes read but not yet part of a completed record."""
        return len(self._tail) + sum(len(p) for p in self._pieces)


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

    def convert(self, record: Record) -> bytes | None:
        """The COPY row for ``record``; None for a blank line; RowError when it is bad."""
        text = record.data.strip()
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
                raise RowError(f"field {key!r} is not among the import's columns "
                               f"({', '.join(self.columns)})")
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
