"""The screen: which records of a chunk are known to convert, judged in Python by the
shape of their values, so that only the others need PostgreSQL's row-by-row check.

A record is *known good* when every field has a shape its column's type surely accepts:
an ``integer`` of at most nine digits, a ``numeric(12,2)`` with at most ten digits before
the point and two after it, an ISO date whose day exists in every year, a ``text``
field of any kind, the NULL marker; anything else (a word in an ``int`` column, but also
a ten-digit integer, the 29th of February, a ``jsonb`` value) is a *suspect*. The shapes
are conservative on purpose, and a property test checks them against the server's own
COPY (``tests/integration/test_screening.py``); but the loader's exactness does not rest
on them (see ``copying.Copier._screened``): a suspect is converted by PostgreSQL itself,
and a record wrongly called good only makes the chunk's COPY fail, which sends the chunk
down the set-based and then the row-by-row path as before.

Why in Python and not a regular expression in SQL: PostgreSQL's ``~`` took about 5 µs a
value on the benchmark's columns (half a second for a 20,000-row chunk, more than the
per-row exception blocks it would spare), and the staged text table it would read costs
half a COPY by itself. One compiled pattern per record, matched here, costs 0.5 to 3 µs
a record and keeps the good rows on the path they take in a clean file: one COPY.

A chunk's bytes, as a direct CSV import sends them to COPY, are screened without being
split into records (``Screen.spans``): one search over the whole chunk finds the lines
whose start is not known good up to the last watched column, and only those are looked
at, record by record (2.8 ms for a 20,000-line chunk of the benchmark with one watched
column, where splitting it into records and matching each took 7 + 9 ms).

Types screened (by ``format_type``'s name): ``smallint``, ``integer``, ``bigint``,
``numeric``/``numeric(p,s)``, ``real``, ``double precision``, ``boolean``, ``date``,
``timestamp``/``timestamptz`` (any precision), ``uuid``, ``text``, ``character
varying``/``character`` with or without a length; ``json``/``jsonb`` (``_json``: JSON
nested at most four deep, whose strings hold no control character and only escapes
every server takes, whose numbers fit ``numeric``), an enum (``Labels``: exactly one of
its labels), a one-dimensional array of numbers, booleans, dates, uuids or plain words
(``_array``), and a domain without constraints (screened as its base type:
``tables.Column.screen_type``). A value of those written some other way (pretty-printed
JSON with a tab, an array with spaces) is a suspect like any other, converted by
PostgreSQL. A column of any other type (a composite, a range, a domain with a CHECK) is
left to COPY: the screen vouches for the other columns only, and a bad value in that
column makes the COPY of the chunk without its suspects fail, which takes the set-based
check; once such a column held a bad value the screen is off for the import (its chunks
take the path they took before).

Bad shapes (``Screen.verdict``): a record with a field too many, one with too few whose
fields present surely convert, and one whose bytes are not UTF-8 (in a UTF-8 file, on a
UTF-8 server) are judged here, with PostgreSQL's own message, by PostgreSQL's own order
of checks (the record's bytes, then a field too many, then each column in turn, a
missing field an error in its turn); the set-based check could not take them (its COPY
would fail on them, and the whole chunk went COPY by COPY: 10 - 40x the clean file). A
short record with a field in doubt is checked with NULL for its missing fields. The bytes
screen finds records that are not UTF-8 by decoding the chunk at C speed, and, once a
record with a wrong count of fields was seen, matches whole lines (``whole``: about
10 ms a 2 MB chunk, against 1 - 5 ms for the search up to the last watched column).
Property tests compare with PostgreSQL COPYing each record alone
(``tests/integration/test_screening_shapes.py``).

Rows a NOT NULL refuses: once the target refused a row for a NULL in a column, the NULL
marker alone in that column's field is a suspect too (``refuse_null``), and the check of
the suspects finds the refusal with PostgreSQL's message (``CheckTable.convert``'s
``refusals``); the chunk's COPY then goes without those rows, where finding them
otherwise takes a second COPY of every chunk (``CheckTable.find_refused``). The same for
a CHECK that compares one numeric column with numbers (``bounds``), once it refused a
row: a value out of its bound is a suspect (``bounds``); a CHECK of any other form is
still found by that second COPY.
"""

from __future__ import annotations

import codecs
import heapq
import itertools
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ...tables import Column

_INT = {"smallint": 4, "integer": 9, "bigint": 18}  # digits that always fit
_FLOAT = rb"[-+]?[0-9]{1,30}(?:\.[0-9]{1,30})?"  # far from float4's range at both ends
_YEAR = rb"[1-9][0-9]{3}"
# A month and a day that exist in every year (the 29th of February is a suspect).
_MONTH_DAY = (
    rb"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    rb"|(?:0[13-9]|1[0-2])-(?:29|30)"
    rb"|(?:0[13578]|1[02])-31)"
)
_DATE = _YEAR + rb"-" + _MONTH_DAY
_TIME = rb"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_ZONE = rb"(?:Z|[-+](?:0[0-9]|1[0-4])(?::?[0-5][0-9])?)"
_TIMESTAMP = _DATE + rb"(?:[T ]" + _TIME + _ZONE + rb"?)?"
_UUID = rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_BOOL = rb"(?i:t|f|y|n|true|false|yes|no|on|off|1|0)"
_NUMERIC = re.compile(r"numeric\((\d+),(-?\d+)\)")
_TIMESTAMP_TYPE = re.compile(r"timestamp(?:\(\d\))? with(?:out)? time zone")
_LENGTH = re.compile(r"(?:character varying|character)\((\d+)\)")
ANY = b""  # a type that takes any text: the field's own syntax is the only check
# A record longer than this is a suspect without being matched: one match of a pattern
# is one C call that holds the GIL, and a 4 MB JSON value took 0.2 s (the event loop
# waited that long). PostgreSQL converts it, as any suspect.
LONGEST = 1 << 16


def shape(type_name: str) -> bytes | None:
    """A pattern of values that type ``type_name`` (as ``format_type`` writes it) always
    accepts; ``ANY`` for any text; None for a type not screened."""
    if type_name in _INT:
        return rb"[-+]?[0-9]{1,%d}" % _INT[type_name]
    if type_name in ("text", "character varying", "bpchar"):
        return ANY
    if type_name == "numeric":
        return rb"[-+]?[0-9]{1,1000}(?:\.[0-9]{1,1000})?"
    if type_name in ("real", "double precision"):
        return _FLOAT
    if type_name == "boolean":
        return _BOOL
    if type_name == "date":
        return _DATE
    if type_name == "uuid":
        return _UUID
    if _TIMESTAMP_TYPE.fullmatch(type_name):
        return _TIMESTAMP
    found = _NUMERIC.fullmatch(type_name)
    if found:
        precision, scale = int(found.group(1)), int(found.group(2))
        if not 0 <= scale < precision:
            return None
        # No rounding: at most ``scale`` digits after the point, so the value is kept
        # as written and needs ``precision - scale`` digits before it at most.
        whole = rb"[-+]?[0-9]{1,%d}" % (precision - scale)
        return whole + (rb"(?:\.[0-9]{1,%d})?" % scale if scale else b"")
    return None


@dataclass(frozen=True)
class Labels:
    """An enum type, by its labels (in their order): its values are exactly these, case
    and spaces included."""

    labels: tuple[str, ...]


# A column's type for the screen: its name as ``format_type`` writes it, or an enum's
# labels (``value_type``).
ValueType = str | Labels


def value_type(column: Column) -> ValueType:
    """How the screen judges the values of ``column``: an enum by its labels, a domain
    without constraints as its base type, any other as its type."""
    if column.labels is not None:
        return Labels(column.labels)
    return column.screen_as or column.type


# JSON as PostgreSQL's json and jsonb read it, conservatively: a number whose digits fit
# ``numeric`` at both ends (at most 100 before and after the point, an exponent of two
# digits: numeric refuses one past 1000), ``true``/``false``/``null``, strings without a
# control character (JSON wants them escaped) and with the escapes every server takes
# (``\u`` only below U+0080 and not U+0000, which jsonb refuses, as it refuses a lone
# surrogate; past U+007F a server not in UTF-8 may refuse it), arrays and objects nested
# at most ``_JSON_DEPTH`` deep.
_JSON_NUMBER = rb"-?(?:0|[1-9][0-9]{0,99})(?:\.[0-9]{1,100})?(?:[eE][-+]?[0-9]{1,2})?"
_JSON_DEPTH = 4
_JSON_ESCAPES = rb"(?:%s|%s|[/bfnrt]|u00(?:0[1-9a-fA-F]|[1-7][0-9a-fA-F]))"
# The plain words of an array of text: what ``array_in`` takes unquoted as it is (no
# brace, comma, quote, backslash or white space; "NULL" is a NULL element, which text
# takes).
_ARRAY_WORD = rb"[^{},\"\\\s\0%s]++"
# The element types of arrays screened (those whose shapes hold no character
# ``array_in`` reads its own way), and the text types.
_ARRAY_ELEMENTS = {
    *_INT,
    "numeric",
    "real",
    "double precision",
    "boolean",
    "date",
    "uuid",
}
_TEXT = ("text", "character varying", "bpchar")


def _json(quote: bytes, backslash: bytes, plain: bytes, space: bytes) -> bytes:
    """The pattern of JSON values as they stand in a field: ``quote`` and ``backslash``
    the patterns of one JSON quote and backslash there (a CSV quote doubled, a text
    format backslash doubled), ``plain`` the class of the other characters of a string,
    ``space`` of white space between tokens."""
    escape = backslash + _JSON_ESCAPES % (quote, backslash)
    string = quote + rb"(?:%s|%s)*+" % (plain, escape) + quote
    value = rb"(?:%s|%s|true|false|null)" % (_JSON_NUMBER, string)
    ws = space + b"*+"
    for _ in range(_JSON_DEPTH):
        # Each member is followed by a comma that some member follows, or by the end.
        array = rb"\[%s(?:%s%s(?:,(?!%s\])%s|(?=\])))*+\]" % (ws, value, ws, ws, ws)
        member = rb"%s%s:%s%s%s" % (string, ws, ws, value, ws)
        obj = rb"\{%s(?:%s(?:,(?!%s\})%s|(?=\})))*+\}" % (ws, member, ws, ws)
        value = rb"(?:%s|%s|%s|%s|true|false|null)" % (_JSON_NUMBER, string, array, obj)
    return value


def _array(element: bytes, delimiter: bytes | None) -> bytes:
    """The pattern of a one-dimensional array literal of ``element`` (or NULL)
    elements; with ``delimiter`` (a CSV field's, unquoted), of at most one element when
    that is the array's comma too."""
    item = rb"(?:%s|(?i:NULL))" % element
    if delimiter == b",":
        return rb"\{%s?\}" % item
    return rb"\{(?:%s(?:,%s)*)?\}" % (item, item)  # (not possessive: "f" or "false")


def forms(
    value_type: ValueType, fmt: str, quote: bytes = b'"', delimiter: bytes = b","
) -> tuple[bytes, bytes] | None:
    """The patterns of values of ``value_type`` that are not a plain ``shape``: for a
    CSV field, unquoted and inside quotes; for the text format, the field twice. None
    when the type is not screened so."""
    if isinstance(value_type, Labels):
        return _labels(value_type.labels, fmt, quote, delimiter)
    if value_type in ("json", "jsonb"):
        if fmt == "text":
            text = _json(b'"', rb"\\\\", rb'[^"\\\x00-\x1f]', b"[ ]")
            return text, text
        # Unquoted, a JSON value can hold no quote: a number, true, false or null.
        bare = rb"(?:%s|true|false|null)" % _JSON_NUMBER
        if quote == b'"':
            inside = _json(b'""', rb"\\", rb'[^"\\\x00-\x1f]', rb"[ \t\n]")
        else:
            plain = rb'[^"\\\x00-\x1f%s]' % re.escape(quote)
            inside = _json(b'"', rb"\\", plain, rb"[ \t\n]")
        return bare, inside
    if not isinstance(value_type, str) or not value_type.endswith("[]"):
        return None
    element_type = value_type[:-2]
    if element_type in _TEXT:
        word = _ARRAY_WORD % b""
        if fmt == "text":
            return _array(word, None), _array(word, None)
        outside = _ARRAY_WORD % re.escape(quote + delimiter)
        inside = _ARRAY_WORD % re.escape(quote)
        return _array(outside, delimiter), _array(inside, None)
    element = shape(element_type)
    base = _NUMERIC.sub("numeric", element_type)
    if element is None or element == ANY or base not in _ARRAY_ELEMENTS:
        return None
    if fmt == "text":
        return _array(element, None), _array(element, None)
    return _array(element, delimiter), _array(element, None)


def _labels(
    labels: tuple[str, ...], fmt: str, quote: bytes, delimiter: bytes
) -> tuple[bytes, bytes] | None:
    """``forms`` for an enum: one of its labels, as the field writes it. Labels a field
    writes some other way (quoted only, or escaped) are left out: their values are
    suspects."""
    encoded = [label.encode() for label in labels]
    if fmt == "text":
        plain = [e for e in encoded if not any(c in e for c in (b"\\", b"\t", b"\n", b"\r"))]
        if not plain:
            return None
        text = b"(?:%s)" % b"|".join(map(re.escape, plain))
        return text, text
    bare = [e for e in encoded if e and not any(c in e for c in (quote, delimiter, b"\r", b"\n"))]
    inside = [e.replace(quote, quote + quote) for e in encoded if b"\r" not in e]
    if not inside:
        return None
    outside = b"(?:%s)" % b"|".join(map(re.escape, bare)) if bare else rb"(?!)"
    return outside, b"(?:%s)" % b"|".join(map(re.escape, inside))


def screens(value_type: ValueType) -> bool:
    """Whether the screen can check values of ``value_type`` (else it leaves them to
    COPY: see ``Screen.build``'s ``watch``)."""
    if isinstance(value_type, Labels):
        return bool(value_type.labels)
    return (
        shape(value_type) is not None
        or _length(value_type) is not None
        or forms(value_type, "csv") is not None
    )


def _length(type_name: str) -> int | None:
    found = _LENGTH.fullmatch(type_name)
    return int(found.group(1)) if found else None


def _field(
    fmt: str,
    pattern: bytes | None,
    length: int | None,
    anything: bytes,
    marks: dict[bytes, bytes],
    null_marker: bytes,
    both: tuple[bytes, bytes] | None = None,
) -> bytes:
    """The pattern of one field of format ``fmt`` whose value has ``pattern`` (or is
    text of at most ``length`` characters, or has the ``forms`` ``both``)."""
    if both is not None:
        if fmt == "csv":
            bare, inside = both
            return rb"(?:%s|%s%s%s|%s)" % (bare, marks[b"q"], inside, marks[b"q"], null_marker)
        return rb"(?:%s|%s)" % (both[0], null_marker)
    if length is not None:
        # At most ``length`` bytes (so characters) of plain text, or NULL.
        if fmt == "csv":
            field = (
                rb"(?:%(q)s(?:[^%(q)s\0]|%(q)s%(q)s){0,%(n)s}%(q)s"
                rb"|[^%(d)s%(q)s\r\n\0]{0,%(n)s})"
            )
            return field % {**marks, b"n": b"%d" % length}
        return rb"(?:[^\t\\\0]{0,%(n)s}|\\N)" % {b"n": b"%d" % length}
    assert pattern is not None
    if pattern == ANY:
        return anything % marks if fmt == "csv" else anything
    if fmt == "csv":
        return rb"(?:%s|%s%s%s|%s)" % (pattern, marks[b"q"], pattern, marks[b"q"], null_marker)
    return rb"(?:%s|%s)" % (pattern, null_marker)


def invalid_at(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Where the first byte PostgreSQL refuses in UTF-8 text lies in ``data[start:end]``
    (a byte sequence that is not UTF-8, or a NUL byte, which no text may hold), as an
    index of ``data``; -1 if none. Python's strict decoder and PostgreSQL's
    ``pg_utf8_islegal`` refuse the same sequences (RFC 3629: no overlong forms, no
    surrogates, nothing past U+10FFFF), and both stop at the first byte of the first bad
    one."""
    end = len(data) if end is None else end
    try:
        codecs.utf_8_decode(memoryview(data)[start:end], "strict", True)
        at = -1
    except UnicodeDecodeError as exc:
        at = start + exc.start
    nul = data.find(b"\0", start, at if at >= 0 else end)
    return nul if nul >= 0 else at


def _invalid_lines(data: bytes) -> Iterator[int]:
    """The start of each line of ``data`` that holds a byte PostgreSQL refuses in UTF-8
    text (``invalid_at``), ascending: decoded at C speed in windows that double while
    they hold no bad byte (a decoding error copies the rest of its input: a window, not
    the rest of the chunk)."""
    view, size = memoryview(data), len(data)
    at, window = 0, 4096
    while at < size:
        end = min(size, at + window)
        try:
            used = codecs.utf_8_decode(view[at:end], "strict", end == size)[1]
            bad = data.find(b"\0", at, at + used)
        except UnicodeDecodeError as exc:
            bad = data.find(b"\0", at, at + exc.start)
            if bad < 0:
                bad = at + exc.start
        if bad < 0:
            at, window = at + used, min(2 * window, 1 << 20)
            continue
        yield data.rfind(b"\n", 0, bad) + 1
        newline = data.find(b"\n", bad)
        if newline < 0:
            return
        at, window = newline + 1, 4096


def bad_utf8(record: bytes) -> str | None:
    """PostgreSQL's message for ``record`` (the bytes COPY reads for one record, with its
    line end) when it is not valid UTF-8; None when it is. As ``report_invalid_encoding``
    writes it: the bytes from the bad one on, as many as its first byte says the
    character has (``pg_utf_mblen``), at most to the end of the record, at most 8."""
    at = invalid_at(record)
    if at < 0:
        return None
    lead = record[at]
    size = (
        2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
    )
    shown = record[at : at + size]
    return 'invalid byte sequence for encoding "UTF8": ' + " ".join(f"0x{b:02x}" for b in shown)


def _nothing(data: bytes) -> Iterator[re.Match[bytes]]:
    return iter(())


class _Shapes:
    """The count of a CSV record's fields, and the pattern of its first fields each
    known to convert (for ``Screen.verdict``)."""

    def __init__(
        self, delimiter: bytes, quote: bytes, null: bytes, strict: list[bytes | None]
    ) -> None:
        self.delimiter, self.quote, self.null, self.strict = delimiter, quote, null, strict
        self._present: dict[int, re.Pattern[bytes]] = {}

    def count(self, body: bytes) -> int | None:
        """The fields of record ``body`` as PostgreSQL splits them: one more than its
        delimiters outside quotes (a quote opens or closes a quoted part wherever it
        stands, a doubled one twice); None when its quotes do not close."""
        parts = body.split(self.quote)
        if not len(parts) % 2:
            return None
        return 1 + sum(part.count(self.delimiter) for part in parts[::2])

    def present(self, count: int) -> re.Pattern[bytes]:
        """The records whose ``count`` first fields are each known to convert (a
        pattern that matches nothing when a column's type is not screened)."""
        found = self._present.get(count)
        if found is None:
            fields = self.strict[:count]
            if any(f is None for f in fields):
                found = re.compile(rb"(?!)")
            else:
                found = re.compile(re.escape(self.delimiter).join(f for f in fields if f))
            self._present[count] = found
        return found


class Screen:
    """Splits a chunk's COPY bodies into known good records and suspects, for one
    import's columns and COPY format (``csv`` with the quote as its own escape, or
    ``text`` as NDJSON is sent)."""

    def __init__(
        self, pattern: re.Pattern[bytes], start: bytes | None = None, quote: bytes = b'"'
    ) -> None:
        self._match = pattern.fullmatch
        self._shapes: _Shapes | None = None  # CSV: fields counted (``verdict``)
        self._utf8 = False  # records that are not UTF-8 are suspects
        # CSV only (``spans``): the start of a record whose watched fields are known
        # good, up to the last of them; and the line ends not followed by such a start.
        self._start: Callable[[bytes, int], re.Match[bytes] | None] | None = None
        self._doubted: Callable[[bytes], Iterator[re.Match[bytes]]] | None = None
        self._quote = quote
        if start is not None:
            self._start = re.compile(start).match
            # (No field checked: no line is doubted for its fields, only for its bytes.)
            self._doubted = re.compile(rb"\n(?!%s)" % start).finditer if start else _nothing

    @classmethod
    def build(
        cls,
        types: Sequence[ValueType],
        fmt: str,
        delimiter: str,
        quote: str,
        escape: str,
        null: str,
        watch: Collection[int] | None = None,
        whole: bool = False,
        utf8: bool = False,
        refuse_null: Collection[int] = (),
        bounds: Mapping[int, bytes] | None = None,
    ) -> Screen | None:
        """The screen for columns of ``types``; None when a type or the format is not
        screened (an escape other than the quote: PostgreSQL's quote tracking may then
        differ from the splitter's, and records are not cut the same way).

        ``watch``: the indexes of the columns whose values are checked (None: all); the
        others need only be fields. A record called good then surely converts in the
        watched columns only (see ``copying.Copier.copy_chunk`` for why). A column of a
        type not screened may be left out of ``watch``: its values are then any field.

        ``whole``: the bytes screen (``spans``) looks at every field of a line, not only
        those up to the last watched column, so that a record with a field too few or
        too many is found (costlier: set once such a record was seen). ``utf8``: the
        data is UTF-8 for COPY, and a record that is not valid UTF-8 is a suspect.

        ``refuse_null``: the indexes of columns whose NULL the target refuses (a NOT
        NULL): their NULL marker is a suspect too, and they are watched. (Only the
        check of the values says so: ``strict``, which judges what COPY converts before
        any constraint, keeps NULL good.)

        ``bounds``: by column index, the pattern of the values a CHECK of the target
        surely admits (``bounds.Bound``): it stands for the type's shape in that
        column, which is watched; a value out of it is a suspect (its NULL is not: a
        CHECK admits NULL)."""
        if not types:
            return None
        if fmt == "csv":
            if escape != quote or len(delimiter.encode()) != 1 or len(quote.encode()) != 1:
                return None
            marks = {b"d": re.escape(delimiter.encode()), b"q": re.escape(quote.encode())}
            # A quoted field (doubled quotes inside, line breaks allowed) or an unquoted
            # one (no delimiter, quote or line break: PostgreSQL would read those
            # otherwise). The NULL marker counts only unquoted, as in COPY. No NUL byte
            # anywhere: PostgreSQL's text never holds one.
            anything = (
                rb"(?:%(q)s[^%(q)s\0]*+(?:%(q)s%(q)s[^%(q)s\0]*+)*+%(q)s|[^%(d)s%(q)s\r\n\0]*+)"
            )
            null_marker = re.escape(null.encode())
            separator = marks[b"d"]
        elif fmt == "text":
            marks = {}
            anything = rb"[^\t\0]*+"
            null_marker = rb"\\N"
            separator = rb"\t"
        else:
            return None
        fields: list[bytes] = []
        strict: list[bytes | None] = []  # each column's field checked, watched or not
        for index, type_name in enumerate(types):
            pattern = shape(type_name) if isinstance(type_name, str) else None
            length = _length(type_name) if isinstance(type_name, str) else None
            both = None
            if pattern is None and length is None:
                both = forms(type_name, fmt, quote.encode(), delimiter.encode())
            if pattern is None and length is None and both is None:
                if watch is None or index in watch:
                    return None
                # An unknown type left to COPY: only its watched neighbours are vouched
                # for (see ``copying.Copier._build_screen``).
                strict.append(None)
                fields.append(anything % marks if fmt == "csv" else anything)
                continue
            strict.append(
                _field(fmt, pattern, length, anything, marks, null_marker, both)
                if fmt == "csv"
                else None
            )
            if bounds and index in bounds:
                pattern, length, both = bounds[index], None, None
            elif watch is not None and index not in watch and index not in refuse_null:
                pattern, length, both = ANY, None, None
            field = _field(fmt, pattern, length, anything, marks, null_marker, both)
            if index in refuse_null:
                # Anything but the NULL marker alone in its field.
                field = rb"(?!%s(?:%s|\n|\Z))%s" % (null_marker, separator, field)
            fields.append(field)
        start = None
        if fmt == "csv":
            # The fields up to the last one checked, and what follows it; with ``whole``,
            # every field and the line end (a field too few or too many is a suspect).
            checked = [i for i, f in enumerate(fields) if f != anything % marks]
            if whole:
                checked.append(len(fields) - 1)
            last = checked[-1] if checked else -1
            after = separator if last + 1 < len(fields) else rb"(?:\n|\Z)"
            start = separator.join(fields[: last + 1]) + after if checked else b""
        screen = cls(re.compile(separator.join(fields)), start, quote.encode())
        if fmt == "csv":
            screen._shapes = _Shapes(delimiter.encode(), quote.encode(), null.encode(), strict)
        screen._utf8 = utf8
        return screen

    def good(self, body: bytes) -> bool:
        """Whether the record ``body`` (without its newline) is known to convert."""
        if len(body) > LONGEST:
            return False
        return self._match(body) is not None and not (self._utf8 and invalid_at(body) >= 0)

    def suspects(self, bodies: Sequence[bytes]) -> list[int]:
        """The indexes of the records of ``bodies`` not known good."""
        if bodies and max(map(len, bodies)) > LONGEST:
            return [i for i, body in enumerate(bodies) if not self.good(body)]
        # ``map`` calls the compiled pattern without a Python step per record.
        found = [i for i, hit in enumerate(map(self._match, bodies)) if hit is None]
        if self._utf8 and invalid_at(b"\n".join(bodies)) >= 0:  # (one pass at C speed)
            found = sorted({*found, *(i for i, body in enumerate(bodies) if invalid_at(body) >= 0)})
        return found

    def fields(self, body: bytes) -> int | None:
        """The count of fields of CSV record ``body`` (None: its quotes do not close, or
        not CSV)."""
        return None if self._shapes is None else self._shapes.count(body)

    def verdict(
        self, record: bytes, body: bytes, names: Sequence[str], utf8: bool
    ) -> str | bytes | None:
        """PostgreSQL's verdict on the suspect ``body`` (a CSV record without its line
        end; ``record``: the bytes COPY reads for it, with its line end) where it is
        certain without PostgreSQL (``utf8``: the file and the server are UTF-8): the
        message of its error (a ``str``); or the record
        with NULL fields for its missing ones (``bytes``: PostgreSQL converts the fields
        present; when they convert, the message is ``missing data for column`` and the
        name in ``names`` of the first missing one); or None
        (PostgreSQL converts the record as it is).

        COPY (PostgreSQL 15, ``NextCopyFrom``) checks a record in this order: its line
        (a carriage return, an end-of-data marker: records with either are left to it),
        its bytes in the file's encoding (the whole record with its line end, before any field is
        split), its count of fields when there are too many, then each column in turn,
        where a missing field is an error of its own after the columns before it
        converted."""
        if b"\r" in body or b"\\." in body:
            return None  # (PostgreSQL reads such a line its own way, before the rest)
        if utf8:
            message = bad_utf8(record)
            if message is not None:
                return message
        elif not record.isascii() or b"\0" in record:
            return None  # (bytes another encoding, or its conversion, may refuse)
        shapes = self._shapes
        if shapes is None:
            return None
        count = shapes.count(body)
        if count is None or count == len(shapes.strict):
            return None
        if count > len(shapes.strict):
            return "extra data after last expected column"
        if shapes.present(count).fullmatch(body) is not None:
            return f'missing data for column "{names[count]}"'
        return body + (shapes.delimiter + shapes.null) * (len(shapes.strict) - count)

    def spans(self, data: bytes) -> list[tuple[int, int]] | None:
        """Where the suspects of CSV data ``data`` lie: the start and the end (after its
        line end) of each record not known good, without splitting the data into
        records. None when the format is not CSV.

        ``data``: whole records with LF line ends (the last one's may be missing), no
        blank line, the quote its own escape: a chunk COPY takes as it is
        (``reading.Cutter.copyable``). Its records are then cut as the splitter and
        PostgreSQL cut them: a line end ends a record where the quotes before it, from
        the start of ``data``, are even.

        One search at C speed finds the lines whose start does not have known good
        fields up to the last watched column (``_doubted``): every record the screen
        doubts, when its fields up to there are well formed, and some lines that start
        no record (inside a quoted field) or whose record is good after all. Each such
        line is then checked: it starts a record when the quotes before it are even;
        the record ends at the first line end after an even number of its own quotes,
        and is a suspect when the screen does not call it good. With ``utf8`` the lines
        with bytes that are not UTF-8 are looked at too (None when such a line lies inside
        a quoted field: its record starts before it, and the caller splits the chunk
        instead). A record the search misses (without ``whole``: its fields up to the
        last watched column look good but it has a field too many or too few) stays in
        the data and makes its COPY fail, which the caller handles as any failing chunk:
        exactness never rests on the search, only on the spans being whole records."""
        start, doubted = self._start, self._doubted
        if start is None or doubted is None:
            return None
        quote, good = self._quote, self._match
        found: list[tuple[int, int]] = []
        lines: Iterator[tuple[int, bool]]
        size = len(data)
        # Quotes counted up to ``counted``: an even count there means a record starts.
        counted, odd = 0, 0
        done = 0  # the end of the last suspect found: lines before it are taken
        first = [] if start(data, 0) else [(0, False)]
        lines = itertools.chain(first, ((line.start() + 1, False) for line in doubted(data)))
        if self._utf8:
            # Lines with bytes that are not UTF-8: their records are suspects too.
            lines = heapq.merge(lines, ((at, True) for at in _invalid_lines(data)))
        for at, forced in lines:
            if at < done or at >= size:
                continue
            odd ^= data.count(quote, counted, at) & 1
            counted = at
            if odd:
                if forced:
                    return None  # (its record starts on a line before: split the chunk)
                continue  # inside a quoted field: no record starts here
            end, inside = at, 0  # the record's line end, after an even count of quotes
            while True:
                newline = data.find(b"\n", end)
                if newline < 0:
                    end = size
                    break
                inside ^= data.count(quote, end, newline) & 1
                end = newline + 1
                if not inside:
                    break
            body = data[at : end - 1] if data[end - 1 : end] == b"\n" else data[at:end]
            if good(body) is None or (self._utf8 and invalid_at(data, at, end) >= 0):
                found.append((at, end))
            done = end
            odd ^= data.count(quote, counted, end) & 1
            counted = end
        return found
