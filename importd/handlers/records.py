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
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Records:
    """Consecutive records of a stream, as parallel lists: the physical line each starts
    on (1-based), its bytes without the final newline, and the stream offset after it.
    Lists rather than an object per record: a million records cost a million list slots,
    not a million objects.

    A record longer than the splitter's limit is kept as ``b""`` (real records are never
    empty: blank lines are no records), its size in ``too_long`` by its line."""

    lines: list[int] = field(default_factory=list)
    datas: list[bytes] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    too_long: dict[int, tuple[int, int]] = field(default_factory=dict)  # line: size, next
    newline: bytes = b"\n"

    def __len__(self) -> int:
        return len(self.lines)

    def extend(self, other: Records) -> None:
        """Append ``other``."""
        self.lines.extend(other.lines)
        self.datas.extend(other.datas)
        self.ends.extend(other.ends)
        if other.too_long:
            self.too_long.update(other.too_long)
        self.newline = other.newline

    def split(self, count: int) -> tuple[Records, Records]:
        """The first ``count`` records and the rest."""
        return (
            Records(
                self.lines[:count],
                self.datas[:count],
                self.ends[:count],
                self.too_long,
                self.newline,
            ),
            Records(
                self.lines[count:],
                self.datas[count:],
                self.ends[count:],
                self.too_long,
                self.newline,
            ),
        )

    def next_line(self, index: int) -> int:
        """The physical line just after record ``index``."""
        data = self.datas[index]
        if not data:
            return self.too_long[self.lines[index]][1]
        return self.lines[index] + data.count(self.newline) + 1


class Splitter:
    """Feeds blocks of bytes, returns the records they complete.

    ``quote=None`` treats every line as a record (NDJSON). ``escape`` differing from
    ``quote`` (a backslash, say) makes ``escape + quote`` a literal quote. Blank lines are
    no records (as csv readers agree), though they count as lines. ``newline`` is the
    byte that ends a line (``\\n``, also for CRLF files, whose records keep their ``\\r``;
    ``\\r`` for old Mac files).

    A record longer than ``limit`` bytes is not kept: the splitter skips to its end
    (still tracking quotes and lines) and returns it as ``b""``, its size and extent in
    ``Records.too_long``. Memory stays within about ``limit`` plus a block.

    Work per block is C-speed (``split``, ``count``, ``accumulate``) except for one
    step per line with an odd number of quotes, where a quoted field opens or closes.
    """

    def __init__(
        self,
        quote: bytes | None = b'"',
        escape: bytes | None = None,
        first_line: int = 1,
        *,
        newline: bytes = b"\n",
        limit: int = 1 << 62,
        offset: int = 0,
    ) -> None:
        self._quote = quote
        self._escape = escape if escape and escape != quote else None
        self._nl = newline
        self._limit = limit
        self._pieces: list[bytes] = []  # lines of a record still inside quotes
        self._pieces_size = 0
        self._record_line = first_line  # where that record starts
        self._tail = b""  # the unfinished last line of the previous block
        self._line_offset = offset  # stream offset just after the last complete line
        self._skipping = False  # inside a record longer than the limit
        self._skip_open = False  # whether a quote is open where the skipped bytes end
        self._skip_size = 0
        self.line = first_line  # physical line number of the next line to read
        self.consumed = offset  # bytes belonging to completed records (a resume point)

    def _odd(self, parts: list[bytes]) -> list[int]:
        """Indexes of the lines with an odd number of (unescaped) quotes."""
        return odd_lines(parts, self._quote, self._escape)

    def feed(self, block: bytes) -> Records:
        """The records completed by ``block``."""
        out = Records(newline=self._nl)
        if not block:
            return out
        if self._skipping:
            rest = self._skip(block, out)
            if rest is None:
                return out
            block = rest
            if not block:
                return out
        parts = (self._tail + block).split(self._nl)
        self._tail = parts.pop()
        if parts:
            self._lines(parts, out)
        self._bound()
        return out

    def _lines(self, parts: list[bytes], out: Records) -> None:
        first, base = self.line, self._line_offset
        # ends[i]: the stream offset just after line i of this block.
        ends = list(
            map(operator.add, itertools.accumulate(map(len, parts)), itertools.count(base + 1))
        )
        self.line += len(parts)
        self._line_offset = ends[-1]
        odd = self._odd(parts)
        pos = 0
        if self._pieces:  # a quoted field is open since an earlier block
            if not odd:
                self._add_pieces(parts)
                return
            close = odd.pop(0)
            self._add_pieces(parts[: close + 1])
            self._emit(out, self._record_line, self._nl.join(self._pieces), ends[close])
            self._pieces, self._pieces_size = [], 0
            pos = close + 1
        for k in range(0, len(odd), 2):
            opening = odd[k]
            self._bulk(out, parts, ends, first, pos, opening)
            if k + 1 == len(odd):  # opens here, closes in a later block
                self._record_line = first + opening
                self._add_pieces(parts[opening:])
                return
            close = odd[k + 1]
            self._emit(out, first + opening, self._nl.join(parts[opening : close + 1]), ends[close])
            pos = close + 1
        self._bulk(out, parts, ends, first, pos, len(parts))

    def _add_pieces(self, parts: list[bytes]) -> None:
        self._pieces.extend(parts)
        self._pieces_size += sum(map(len, parts)) + len(parts)

    def _bound(self) -> None:
        """Start skipping when the open record (quoted lines and the unfinished line)
        outgrows the limit (by more than a byte: an unfinished line may end with the CR
        of its CRLF, no part of the record; the loader checks the exact size)."""
        if self._pieces_size + len(self._tail) <= self._limit + 1:
            return
        if not self._pieces:
            self._record_line = self.line
        self._skip_open = bool(self._pieces) ^ bool(self._odd([self._tail]))
        self._skip_size = self._pieces_size + len(self._tail)
        self._line_offset += len(self._tail)
        self._pieces, self._pieces_size, self._tail = [], 0, b""
        self._skipping = True

    def _skip(self, block: bytes, out: Records) -> bytes | None:
        """Consume ``block`` while skipping a long record: the bytes after the record's
        end, or None when it goes on past this block."""
        parts = block.split(self._nl)
        last = parts.pop()  # the unfinished line (maybe empty)
        odd = self._odd(parts)
        end: int | None
        if not self._skip_open:
            # Closed where the skipped bytes stop: the line ends the record, unless it
            # opens a quote; then the line that closes it does.
            end = 0 if parts and (not odd or odd[0] != 0) else (odd[1] if len(odd) > 1 else None)
        else:
            end = odd[0] if odd else None
        if end is None:
            self._skip_open ^= bool(len(odd) & 1) ^ bool(self._odd([last]))
            self._skip_size += len(block)
            self._line_offset += len(block)
            self.line += len(parts)
            return None
        used = sum(map(len, parts[: end + 1])) + end + 1
        self._skip_size += used - 1
        self._line_offset += used
        self.line += end + 1
        self.consumed = self._line_offset
        out.lines.append(self._record_line)
        out.datas.append(b"")
        out.ends.append(self._line_offset)
        out.too_long[self._record_line] = (self._skip_size, self.line)
        self._skipping, self._skip_size, self._skip_open = False, 0, False
        return block[used:]

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
        out = Records(newline=self._nl)
        if self._skipping:
            self.line += 1
            out.lines.append(self._record_line)
            out.datas.append(b"")
            out.ends.append(self._line_offset)
            out.too_long[self._record_line] = (self._skip_size, self.line)
            self._skipping = False
            self.consumed = self._line_offset
            return out
        if self._tail:
            if not self._pieces:
                self._record_line = self.line
            self._pieces.append(self._tail)
            self._line_offset += len(self._tail)
            self._tail = b""
            self.line += 1
        if self._pieces:
            data = self._nl.join(self._pieces)
            self._pieces, self._pieces_size = [], 0
            if data.strip(b"\r\n"):
                self._emit(out, self._record_line, data, self._line_offset)
        self.consumed = self._line_offset
        return out


def odd_lines(parts: list[bytes], quote: bytes | None, escape: bytes | None) -> list[int]:
    """Indexes of the lines ``parts`` with an odd number of quotes (``escape``, when it
    is not the quote, makes ``escape + quote`` a literal one): where a quoted field
    opens or closes, so a record spans the lines from one such line to the next."""
    if quote is None:
        return []
    if escape is None or escape == quote:
        # map/compress keep the per-line work in C: no Python step per line.
        counts = map(bytes.count, parts, itertools.repeat(quote))
        return list(
            itertools.compress(itertools.count(), map(operator.and_, counts, itertools.repeat(1)))
        )
    pair, escaped = escape + escape, escape + quote
    return [
        i
        for i, part in enumerate(parts)
        if part.replace(pair, b"").replace(escaped, b"").count(quote) & 1
    ]


class RowError(Exception):
    """A record rejected before it reached PostgreSQL (NDJSON decoding and mapping)."""


def _copy_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


class Number(str):
    """A JSON number as its source text: never through a float, so ``numeric`` gets it
    exactly, ``jsonb`` as written and ``text`` as written (``1E5`` stays ``1E5``)."""

    __slots__ = ()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _dump(value: Any) -> str:
    """``value`` (from ``json.loads`` with ``Number``) as JSON text, numbers as written."""
    if isinstance(value, Number):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_dump(k)}: {_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_dump, value)) + "]"
    return json.dumps(value)  # true, false, null


def loads(data: bytes | str) -> Any:
    """JSON with numbers kept as their text (``Number``); NaN and Infinity refused.

    A long text (over ``JSON_STEP``) is decoded with hooks written in Python: the C
    decoder holds the GIL for the whole call and calls a type (``Number``) without a
    Python frame, so a record of a million numbers, decoded in a worker thread, held
    the event loop for 1.2 s; a Python frame per number and per object is a point at
    which the interpreter hands the GIL over (every 5 ms), for about a third more time.
    What still holds it: the collector's walk of the million ``Number`` objects (tracked,
    as instances of any class written in Python are), 0.1 - 0.2 s."""
    if isinstance(data, bytes):
        data = utf8(data)
    if len(data) <= JSON_STEP:
        return json.loads(data, parse_float=Number, parse_int=Number, parse_constant=_no_constant)
    return _YIELDING.decode(data)


def utf8(data: bytes) -> str:
    """An NDJSON record's text: its bytes as UTF-8, strictly (UnicodeDecodeError else).

    Not ``json.loads`` of the bytes, nor ``json.detect_encoding``: they guess UTF-16 or
    UTF-32 from where NUL bytes are and drop a UTF-8 byte order mark, so a line of a
    UTF-8 file that holds a UTF-16 record, or starts with a BOM, loaded as good (a BOM
    at the file's start is the reader's to skip). Strict, not ``surrogatepass``: the
    bytes of a surrogate (``ED A0 80``) are not UTF-8, and are reported as such. A BOM
    is named (ValueError), as the decoders would only say they expected a value."""
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        raise ValueError(
            "the line starts with a byte order mark (BOM, U+FEFF): only the file's first line may"
        )
    return text


def _number(text: str) -> Number:
    return Number(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)


_DECODER = json.JSONDecoder(parse_float=Number, parse_int=Number, parse_constant=_no_constant)
# ``loads`` of a long text: the same values, a Python frame per number and object.
_YIELDING = json.JSONDecoder(
    parse_float=_number,
    parse_int=_number,
    parse_constant=_no_constant,
    object_pairs_hook=_object,
)
_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_BLANKS = b" \t\n\r"  # (JSON's whitespace; bytes.strip() would take \f and \v too)
# The decoder's C string scanner (absent from the type stubs): (text, after its end).
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
# Characters of JSON text one call into the C decoder parses at most in ``object_keys``
# (a millisecond or two): the GIL, which C code holds for the whole call, is free to
# another thread (the event loop) between two calls.
JSON_STEP = 1 << 15


def object_keys(data: bytes) -> list[str] | None:
    """The keys of the JSON object ``data`` as ``loads`` gives them (in order, each once),
    or None for another JSON value; ValueError when it is not JSON, RecursionError when
    it nests too deep. Unlike ``loads``, from a thread it never holds the GIL long,
    whatever ``data`` holds: a container with more than ``JSON_STEP`` characters after
    its start is walked value by value, each value decoded (checked) by one C call."""
    if len(data) <= JSON_STEP:
        obj = loads(data)
        return [str(key) for key in obj] if isinstance(obj, dict) else None
    text = utf8(data)
    pos = _skip_space(text, 0)
    keys: dict[str, None] = {}
    end = _walk_object(text, pos, keys) if text.startswith("{", pos) else _walk(text, pos)
    if _skip_space(text, end) != len(text):
        raise ValueError(f"Extra data: char {end}")
    return list(keys) if text.startswith("{", pos) else None


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # (it matches the empty string)
    return match.end()


def _walk(text: str, pos: int) -> int:
    """The end of the JSON value at ``pos`` (no space before it), checked."""
    if len(text) - pos <= JSON_STEP or not text.startswith(("[", "{"), pos):
        # A scalar is one linear scan (a long string is copied, not tokenised).
        return int(_DECODER.raw_decode(text, pos)[1])
    if text[pos] == "{":
        return _walk_object(text, pos, {})
    pos = _skip_space(text, pos + 1)
    if text.startswith("]", pos):
        return pos + 1
    while True:
        pos = _skip_space(text, _walk(text, pos))
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif text.startswith("]", pos):
            return pos + 1
        else:
            raise ValueError(f"Expecting ',' delimiter: char {pos}")


def _walk_object(
    text: str, pos: int, keys: dict[str, None], values: dict[str, str] | None = None
) -> int:
    """The end of the JSON object at ``pos``, checked; its keys added to ``keys``, and
    with ``values``, each key's value there as its text (the last one, for a key given
    twice, as ``json.loads`` keeps)."""
    pos = _skip_space(text, pos + 1)
    if text.startswith("}", pos):
        return pos + 1
    while True:
        if not text.startswith('"', pos):
            raise ValueError(f"Expecting property name enclosed in double quotes: char {pos}")
        key, pos = _scanstring(text, pos + 1, True)
        keys.setdefault(key, None)
        pos = _skip_space(text, pos)
        if not text.startswith(":", pos):
            raise ValueError(f"Expecting ':' delimiter: char {pos}")
        start = _skip_space(text, pos + 1)
        pos = _walk(text, start)
        if values is not None:
            values[key] = text[start:pos]
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif text.startswith("}", pos):
            return pos + 1
        else:
            raise ValueError(f"Expecting ',' delimiter: char {pos}")


class NdjsonRows:
    """Turns NDJSON records into COPY text rows for a fixed column list.

    A value for a ``json`` or ``jsonb`` column is its text: numbers as written, and for
    ``json`` (which keeps its text as given) the spacing too. A record longer than
    ``JSON_STEP``, and every record of an import into a ``json`` column (``verbatim``),
    is walked key by key (``_walked``): each value is checked by the C decoder and
    taken as the slice of text it is, so a long array of numbers never becomes a
    million Python objects (whose walk by the garbage collector held the event loop
    0.15 - 0.2 s for a 2.6 MB record) and a ``json`` column gets what the file says."""

    def __init__(
        self,
        mapping: dict[str, str],
        columns: Sequence[str],
        json_columns: Iterable[str],
        verbatim: Iterable[str] = (),
    ) -> None:
        self.columns = list(columns)
        self._index = {column: i for i, column in enumerate(self.columns)}
        self._mapping = mapping
        self._json = set(json_columns)
        self._walk_all = bool(set(verbatim) & set(self.columns))

    def _column(self, key: str) -> int:
        """The index of the column that field ``key`` goes to; RowError when none."""
        column = self._mapping.get(key, key if not self._mapping else None)
        if column is None and self._mapping:
            # (Named by the mapping's fields: "not among the columns (name)" of a field
            # called "name" read as a contradiction.)
            names = list(itertools.islice(self._mapping, 10))
            more = ", …" if len(self._mapping) > len(names) else ""
            raise RowError(
                f"field {key[:200]!r} is not among the fields payload.columns maps "
                f"({', '.join(n[:200] for n in names)}{more})"
            )
        if column is None or column not in self._index:
            raise RowError(
                f"field {key!r} is not among the import's columns ({', '.join(self.columns)})"
            )
        return self._index[column]

    def convert(self, data: bytes) -> bytes | None:
        """The COPY row for one NDJSON record; None for a blank line; RowError when bad."""
        text = data.strip(_JSON_BLANKS)
        if not text:
            return None
        try:
            if self._walk_all or len(text) > JSON_STEP:
                fields = self._walked(text)
            else:
                fields = self._decoded(loads(text))
        except UnicodeDecodeError as exc:
            raise RowError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise RowError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError as exc:
            raise RowError(f"invalid JSON: {exc}") from None
        except RecursionError:
            raise RowError("invalid JSON: nested too deeply") from None
        try:
            return ("\t".join(fields) + "\n").encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
            raise RowError(
                f"a string holds a lone surrogate ({bad}), which is not valid Unicode text"
            ) from None

    def _decoded(self, obj: Any) -> list[str]:
        """The COPY fields of a record decoded whole (``loads``)."""
        if not isinstance(obj, dict):
            raise RowError(f"expected a JSON object, got {_kind(obj)}")
        fields: list[str] = ["\\N"] * len(self.columns)
        for key, value in obj.items():
            index = self._column(key)
            fields[index] = self._field(key, self.columns[index], value)
        return fields

    def _walked(self, data: bytes) -> list[str]:
        """The COPY fields of a record walked key by key: each value checked by one C
        call (``_walk``; a long container value by pieces) and taken as its text."""
        text = utf8(data)
        pos = _skip_space(text, 0)
        if not text.startswith("{", pos):
            end = _walk(text, pos)
            if _skip_space(text, end) != len(text):
                raise ValueError(f"Extra data: char {end}")
            raise RowError(f"expected a JSON object, got {_raw_kind(text[pos])}")
        # Each key once, where it first appears, with its last value (as ``loads`` does).
        found: dict[str, str] = {}
        end = _walk_object(text, pos, {}, found)
        if _skip_space(text, end) != len(text):
            raise ValueError(f"Extra data: char {end}")
        fields: list[str] = ["\\N"] * len(self.columns)
        for key, raw in found.items():
            index = self._column(key)
            fields[index] = self._raw_field(key, self.columns[index], raw)
        return fields

    def _raw_field(self, key: str, column: str, raw: str) -> str:
        """The COPY field of one value given as its (checked) JSON text ``raw``."""
        if raw == "null":
            return "\\N"
        if column in self._json:
            lone = _lone_surrogate(raw)
            if lone is not None:
                raise RowError(
                    f"a string holds a lone surrogate ({lone}), which is not valid Unicode text"
                )
            return _copy_text(raw)
        if raw[0] in "[{":
            raise RowError(
                f"field {key!r} holds a nested value but column {column!r} is not json or jsonb"
            )
        if raw[0] == '"':
            return _copy_text(_no_nul(key, _scanstring(raw, 1, True)[0]))
        return raw  # a number as written, true or false

    def _field(self, key: str, column: str, value: Any) -> str:
        if value is None:
            return "\\N"
        if column in self._json:
            try:
                return _copy_text(_dump(value))
            except RecursionError:
                raise RowError(f"field {key!r} is nested too deeply") from None
        if isinstance(value, dict | list):
            raise RowError(
                f"field {key!r} holds a nested value but column {column!r} is not json or jsonb"
            )
        if isinstance(value, bool):
            return "true" if value else "false"
        return _copy_text(_no_nul(key, str.__str__(value)))


def _no_nul(key: str, text: str) -> str:
    """``text``, a string value going into a column that is not json: RowError when it
    holds U+0000 (``\\u0000`` in the file), which no PostgreSQL text value can hold.
    PostgreSQL's own refusal ("invalid byte sequence for encoding UTF8: 0x00") names
    neither the field nor the escape, and a byte the file does not hold."""
    if "\x00" in text:
        raise RowError(
            f"field {key[:200]!r} holds the character U+0000 (\\u0000 in the file), which "
            "PostgreSQL cannot store outside a json column"
        )
    return text


# An escape in JSON text: a surrogate's (its code in group 1), or any other.
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPE = re.compile(r"\\(?:u([dD][89a-fA-F][0-9a-fA-F]{2})|u[0-9a-fA-F]{4}|.)")


def _lone_surrogate(raw: str) -> str | None:
    """The first escape of a lone surrogate in the (checked) JSON text ``raw`` (a high
    one not followed at once by a low one, or a low one alone), or None. What decoding
    would find, without decoding: one C search, and a step per escape only when a
    surrogate's escape is there."""
    if _SURROGATE_HINT.search(raw) is None:
        return None
    high, after = None, -1  # a high surrogate's escape waiting for its low one
    for match in _ESCAPE.finditer(raw):
        code = match.group(1)
        if code is None or int(code, 16) < 0xDC00:
            if high is not None:
                return high
            if code is not None:
                high, after = match.group(0), match.end()
        elif high is not None and match.start() == after:
            high = None
        else:
            return match.group(0)
    return high


def _raw_kind(first: str) -> str:
    """What kind of JSON value starts with the character ``first``."""
    return {"[": "array", '"': "string", "t": "boolean", "f": "boolean", "n": "null"}.get(
        first, "number"
    )


def _kind(value: Any) -> str:
    if isinstance(value, Number):
        return "number"
    return {str: "string", list: "array", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
