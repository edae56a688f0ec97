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
half a COPY by itself. One compiled pattern per record, matched here, costs 1 to 3 µs a
record and keeps the good rows on the path they take in a clean file: one COPY.

Types screened (by ``format_type``'s name): ``smallint``, ``integer``, ``bigint``,
``numeric``/``numeric(p,s)``, ``real``, ``double precision``, ``boolean``, ``date``,
``timestamp``/``timestamptz`` (any precision), ``uuid``, ``text``, ``character
varying``/``character`` with or without a length. A table with a column of any other
type (``jsonb``, an enum, a domain, an array) is not screened at all: its chunks take the
path they took before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

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


def _length(type_name: str) -> int | None:
    found = _LENGTH.fullmatch(type_name)
    return int(found.group(1)) if found else None


class Screen:
    """Splits a chunk's COPY bodies into known good records and suspects, for one
    import's columns and COPY format (``csv`` with the quote as its own escape, or
    ``text`` as NDJSON is sent)."""

    def __init__(self, pattern: re.Pattern[bytes], record: bytes | None = None) -> None:
        self._match = pattern.fullmatch
        # CSV only: runs of known good records, each with its line end, matched in one
        # call (``spans``); and any record that splits into fields, to step over one
        # that is not known good.
        self._run: Callable[[bytes, int], re.Match[bytes] | None] | None = None
        self._record: Callable[[bytes, int], re.Match[bytes] | None] | None = None
        if record is not None:
            self._run = re.compile(rb"(?:%s(?:\n|\Z))*+" % pattern.pattern).match
            self._record = re.compile(record).match

    @classmethod
    def build(
        cls,
        types: Sequence[str],
        fmt: str,
        delimiter: str,
        quote: str,
        escape: str,
        null: str,
        watch: Collection[int] | None = None,
    ) -> Screen | None:
        """The screen for columns of ``types``; None when a type or the format is not
        screened (an escape other than the quote: PostgreSQL's quote tracking may then
        differ from the splitter's, and records are not cut the same way).

        ``watch``: the indexes of the columns whose values are checked (None: all); the
        others need only be fields. A record called good then surely converts in the
        watched columns only (see ``copying.Copier.copy_chunk`` for why)."""
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
            field_ = anything % marks
            # Any record that splits into fields (as many as it has), to its line end.
            record: bytes | None = rb"%s(?:%s%s)*+(?:\n|\Z)" % (field_, separator, field_)
        elif fmt == "text":
            anything = rb"[^\t\0]*+"
            null_marker = rb"\\N"
            separator = rb"\t"
            record = None
        else:
            return None
        fields = []
        for index, type_name in enumerate(types):
            pattern = shape(type_name)
            length = _length(type_name)
            if pattern is None and length is None:
                return None
            if watch is not None and index not in watch:
                pattern, length = ANY, None
            if length is not None:
                # At most ``length`` bytes (so characters) of plain text, or NULL.
                if fmt == "csv":
                    field = (
                        rb"(?:%(q)s(?:[^%(q)s\0]|%(q)s%(q)s){0,%(n)s}%(q)s"
                        rb"|[^%(d)s%(q)s\r\n\0]{0,%(n)s})"
                    )
                else:
                    field = rb"(?:[^\t\\\0]{0,%(n)s}|\\N)"
                field %= {**marks, b"n": b"%d" % length} if fmt == "csv" else {b"n": b"%d" % length}
            elif pattern == ANY:
                field = anything % marks if fmt == "csv" else anything
            elif fmt == "csv":
                field = rb"(?:%s|%s%s%s|%s)" % (
                    pattern,
                    marks[b"q"],
                    pattern,
                    marks[b"q"],
                    null_marker,
                )
            else:
                field = rb"(?:%s|%s)" % (pattern, null_marker)
            fields.append(field)
        return cls(re.compile(separator.join(fields)), record)

    def good(self, body: bytes) -> bool:
        """Whether the record ``body`` (without its newline) is known to convert."""
        return self._match(body) is not None

    def suspects(self, bodies: Sequence[bytes]) -> list[int]:
        """The indexes of the records of ``bodies`` not known good."""
        # ``map`` calls the compiled pattern without a Python step per record.
        return [i for i, found in enumerate(map(self._match, bodies)) if found is None]

    def spans(self, data: bytes) -> list[tuple[int, int]] | None:
        """Where the suspects of CSV data ``data`` lie: the start and the end (after its
        line end) of each record not known good, found at C speed over the whole data,
        without splitting it into records (one call of the compiled pattern per run of
        good records, one per suspect). None when a record does not split into fields
        (a quote inside an unquoted field, a NUL byte, a carriage return) or the format
        is not CSV: the caller then splits the data into records.

        ``data``: whole records with LF line ends (the last one's may be missing), no
        blank line: a chunk COPY takes as it is (``reading.Cutter.copyable``). A record
        ends, as for the splitter, at the first line end after an even number of quotes:
        every field either quoted (its quotes paired) or without quotes."""
        run, record = self._run, self._record
        if run is None or record is None:
            return None
        found: list[tuple[int, int]] = []
        at, size = 0, len(data)
        while True:
            good = run(data, at)
            assert good is not None  # (a repeat matches at least nothing)
            at = good.end()
            if at >= size:
                return found
            suspect = record(data, at)
            if suspect is None or suspect.end() <= at or data[at : at + 1] == b"\n":
                return None
            found.append((at, suspect.end()))
            at = suspect.end()
