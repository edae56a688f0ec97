"""What a CHECK on one numeric column surely admits, as a pattern for the screen.

A target whose CHECK refuses rows (``CHECK (account > 0)``) used to cost every chunk
after the first refusal a second COPY of its own, to find the refused rows
(``CheckTable.find_refused``): a refusal is no matter of a value's shape, so the screen
(``screening.Screen``) could not call those rows suspects. For the CHECKs most tables
have, it can: a comparison of the column with a number, or several joined by AND and
OR, admits the values of a few ranges, and a value whose digits say it lies inside one
surely passes. Once such a CHECK refused a row (``watching.Watch``), the column's field
pattern becomes ``pattern``'s: the values outside it are suspects, which PostgreSQL
converts and tries against the target's tests (``CheckTable.convert``'s ``refusals``),
and the chunk's COPY goes without them, as for a NOT NULL.

The CHECK is read as PostgreSQL deparses it (``pg_get_expr`` of the constraint, one
that reads this column only: ``sql/queries/describe_table.sql``), in the few forms that
deparse writes for such comparisons (``(account > 0)``, ``(b >= '-5'::integer)``,
``(amount > (0)::numeric)``, ``((e >= 1) AND (e <= 10))``,
``(lat >= ('-90'::integer)::double precision)``); anything else (a function, a cast of
the column, NOT, IN) gives None and the CHECK is left to the COPY as before. A constant
is taken as PostgreSQL casts it (``_cast``: a float's binary value exactly; a cast that
rounds to an integer, or fails, gives None).
Exactness never rests on this: a value called good in error makes the chunk's COPY
fail, which takes the exact path; a good value called a suspect is only checked.

The pattern is conservative, by type (``format_type``'s names):

- integers (``smallint``, ``integer``, ``bigint``): exactly the numerals of the integers
  in range, without leading zeros, at most as many digits as ``screening``'s shape takes;
- ``numeric`` and ``numeric(p,s)``: a value whose integer part ``I`` puts every number
  from ``I`` to ``I + 1`` (or from ``-I - 1`` to ``-I``) in range, whatever its fraction
  (``numeric(p,s)`` takes at most ``s`` fraction digits here, so nothing is rounded
  onto a bound), and at an integral end the values that whole units leave out
  (``> 0``: 0.5; ``<= 100``: 100.0);
- ``real`` and ``double precision``: the same with the ends made integers (which the
  type holds exactly: at most 6 or 15 integer digits) and one unit more at an end that
  is out, since a value rounded to the type may land on it; rounding keeps order, so an
  end that is in needs none. Between 0 and 1 (``> 0``, ``>= 0 AND < 1``) a fraction
  that is not all zeros is taken too, of at most 15 digits (6 for ``real``): none rounds
  to 0 or to 1. (Found by a helper's audit: before, such a CHECK made every value of a
  probability column a suspect.)
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

_INT_DIGITS = {"smallint": 4, "integer": 9, "bigint": 18}  # as screening's shapes
_FLOAT_DIGITS = {"real": 6, "double precision": 15}
# The fraction digits of a number from 0 to 1 that never round to 0 or 1 in the type.
_FLOAT_FRACTION = {"real": 6, "double precision": 15}
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_MOST_RANGES = 8  # a CHECK of more ranges than this is left to COPY
_MOST_DIGITS = 30  # the same for a constant of more digits

# A number as deparse writes it: bare when positive, quoted when negative, cast to the
# column's type or wrapped in a cast of numeric text.
_NUMBER = rf"[0-9]{{1,{_MOST_DIGITS}}}(?:\.[0-9]{{1,{_MOST_DIGITS}}})?"
_SIGNED = r"-?" + _NUMBER
_TYPE = r"(?:smallint|integer|bigint|numeric|double precision|real)"


def _const(name: str) -> str:
    """The pattern of a constant, in one of four forms: its text in group ``name`` + 1
    to 4, by form; the type it is cast to in that group's name + ``t`` (forms 2 to 4),
    and a first cast in ``name`` + ``4i`` (a negative integer on a ``numeric`` or float
    column: ``('-1'::integer)::numeric``)."""
    return (
        rf"(?:(?P<{name}1>{_NUMBER})"
        rf"|\((?P<{name}2>{_NUMBER})\)::(?P<{name}2t>{_TYPE})"
        rf"|'(?P<{name}3>{_SIGNED})'::(?P<{name}3t>{_TYPE})"
        rf"|\('(?P<{name}4>{_SIGNED})'::(?P<{name}4i>{_TYPE})\)::(?P<{name}4t>{_TYPE}))"
    )


# The integers each integer type holds (a cast of a constant out of them fails on every
# row: no bound).
_INT_RANGE = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}


def _cast(value: Decimal, type_name: str | None) -> Decimal | None:
    """``value`` as a cast to ``type_name`` makes it, exactly (None: no cast); None
    when the cast rounds it to an integer or fails: such a CHECK gives no bound."""
    if type_name is None or type_name == "numeric":
        return value
    if type_name in _INT_RANGE:
        limit = _INT_RANGE[type_name]
        return value if value == int(value) and -limit <= value < limit else None
    try:
        if type_name == "real":
            return Decimal(struct.unpack("f", struct.pack("f", float(value)))[0])
        return Decimal(float(value))  # double precision: the binary value, exactly
    except OverflowError:
        return None


def _constant(found: re.Match[str]) -> Decimal | None:
    """The value of the constant ``found`` (by ``_const('c')``) as PostgreSQL casts it."""
    for k in "1234":
        text = found[f"c{k}"]
        if text is not None:
            value = _cast(Decimal(text), found[f"c{k}i"] if k == "4" else None)
            outer = found[f"c{k}t"] if k != "1" else None
            return None if value is None else _cast(value, outer)
    return None


_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_OP = r"(?P<op>>=|<=|<>|=|<|>)"
# (Only this column's name can stand there: the CHECK reads no other.)
_COLUMN_FIRST = re.compile(rf"\({_IDENT} {_OP} {_const('c')}\)")
_CONSTANT_FIRST = re.compile(rf"\({_const('c')} {_OP} {_IDENT}\)")
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "<>": "<>"}


@dataclass(frozen=True)
class Range:
    """The numbers from ``lo`` to ``hi`` (None: no end), each end in or out."""

    lo: Decimal | None = None
    lo_in: bool = False
    hi: Decimal | None = None
    hi_in: bool = False

    def __and__(self, other: Range) -> Range | None:
        lo, lo_in = self.lo, self.lo_in
        if other.lo is not None and (lo is None or other.lo > lo):
            lo, lo_in = other.lo, other.lo_in
        elif other.lo is not None and other.lo == lo:
            lo_in = lo_in and other.lo_in
        hi, hi_in = self.hi, self.hi_in
        if other.hi is not None and (hi is None or other.hi < hi):
            hi, hi_in = other.hi, other.hi_in
        elif other.hi is not None and other.hi == hi:
            hi_in = hi_in and other.hi_in
        if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_in and hi_in))):
            return None
        return Range(lo, lo_in, hi, hi_in)


@dataclass(frozen=True)
class Bound:
    """What the screen can tell of one column's CHECKs: the pattern of the values they
    all surely admit (``pattern``), and the names of those constraints."""

    pattern: bytes
    constraints: tuple[str, ...]


def of_column(type_name: str, checks: Sequence[tuple[str, str]]) -> Bound | None:
    """The ``Bound`` of a column of type ``type_name`` (``format_type``'s name) under
    ``checks`` (each CHECK's name and deparsed expression), from those that are
    comparisons with numbers; None when none is, or the type is not bounded so."""
    admitted, names = [Range()], []
    for name, expr in checks:
        found = ranges(expr)
        if found is None:
            continue
        admitted = [r for a in admitted for b in found if (r := a & b) is not None]
        names.append(name)
    if not names or len(admitted) > _MOST_RANGES:
        return None
    values = pattern(type_name, admitted)
    return None if values is None else Bound(values, tuple(names))


def ranges(expr: str) -> list[Range] | None:
    """The ranges of numbers CHECK ``expr`` (as ``pg_get_expr`` deparses it) admits,
    or None when it is not a comparison of the column with numbers, or such
    comparisons joined by AND or OR (at most ``_MOST_RANGES`` ranges)."""
    found = _parse(expr, 0)
    return found if found is not None and len(found) <= _MOST_RANGES else None


def _parse(expr: str, depth: int) -> list[Range] | None:
    if depth > 8:
        return None
    for pattern, flip in ((_COLUMN_FIRST, False), (_CONSTANT_FIRST, True)):
        found = pattern.fullmatch(expr)
        if found is not None:
            value = _constant(found)
            if value is None:
                return None
            op = _FLIP[found["op"]] if flip else found["op"]
            return _compare(op, value)
    if not (expr.startswith("(") and expr.endswith(")")):
        return None
    parts, joiner = _split(expr[1:-1])
    if len(parts) < 2:
        return None
    result: list[Range] | None = None
    for part in parts:
        admitted = _parse(part, depth + 1)
        if admitted is None:
            return None
        if result is None:
            result = admitted
        elif joiner == "OR":
            result = result + admitted
        else:
            result = [r for a in result for b in admitted if (r := a & b) is not None]
        if len(result) > _MOST_RANGES:
            return None
    return result


def _split(inner: str) -> tuple[list[str], str]:
    """The parts of ``inner`` joined at its top level by one of AND and OR (deparse
    puts parentheses around each part), and which; ``[inner]`` when neither (or both)."""
    parts: list[str] = []
    joiners: set[str] = set()
    depth, quote, start, i = 0, "", 0, 0
    while i < len(inner):
        char = inner[i]
        if quote:
            quote = "" if char == quote else quote  # (a doubled quote: out and in again)
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            joiner = next((j for j in (" AND ", " OR ") if inner.startswith(j, i)), None)
            if joiner is not None:
                parts.append(inner[start:i])
                joiners.add(joiner.strip())
                i = start = i + len(joiner)
                continue
        i += 1
    parts.append(inner[start:])
    if len(joiners) != 1:
        return [inner], ""
    return parts, joiners.pop()


def _compare(op: str, value: Decimal) -> list[Range]:
    if op == ">":
        return [Range(lo=value)]
    if op == ">=":
        return [Range(lo=value, lo_in=True)]
    if op == "<":
        return [Range(hi=value)]
    if op == "<=":
        return [Range(hi=value, hi_in=True)]
    if op == "=":
        return [Range(value, True, value, True)]
    return [Range(hi=value), Range(lo=value)]  # <>


def pattern(type_name: str, admitted: list[Range]) -> bytes | None:
    """The pattern of values of type ``type_name`` (``format_type``'s name) that surely
    lie in one of ``admitted`` (see the module's docstring); None for a type not
    bounded so. A pattern that matches nothing when no value surely does."""
    scale, floats = 0, False  # (the fraction digits a value may have)
    if type_name in _INT_DIGITS:
        digits = _INT_DIGITS[type_name]
    elif type_name in _FLOAT_DIGITS:
        digits, scale, floats = _FLOAT_DIGITS[type_name], 30, True
    elif type_name == "numeric":
        digits, scale = 1000, 1000
    elif found := _NUMERIC.fullmatch(type_name):
        precision, scale = int(found[1]), int(found[2])
        if not 0 <= scale < precision:
            return None
        digits = precision - scale
    else:
        return None
    largest = 10**digits - 1
    units: list[str] = []
    edges: list[bytes] = []
    for admitted_range in admitted:
        # The non-negative numerals, and the negative ones by their magnitude.
        if not scale:
            positive, negative = _integers(admitted_range)
        else:
            if floats:
                admitted_range = _integral(admitted_range)  # noqa: PLW2901
            positive, negative = _units(admitted_range, floats)
            edges += _edges(admitted_range, scale, _FLOAT_FRACTION.get(type_name), largest)
        first, last = max(positive[0], 0), min(positive[1], largest)
        if first <= last:
            units += [r"\+?" + a for a in _between(first, last)]
        first, last = max(negative[0], 0 if scale else 1), min(negative[1], largest)
        if first <= last:
            units += ["-" + a for a in _between(first, last)]
    parts = list(edges)
    if units:
        fraction = rb"(?:\.[0-9]{1,%d})?" % scale if scale else b""
        parts.insert(0, b"(?:%s)%s" % ("|".join(units).encode(), fraction))
    if not parts:
        return rb"(?!)"
    return parts[0] if len(parts) == 1 else b"(?:%s)" % b"|".join(parts)


def _integral(admitted: Range) -> Range:
    """``admitted`` narrowed to integral ends, each out where it moved (for floats:
    an integer of at most 15 digits is exact in a ``double precision``, and one of at
    most 6 in a ``real``, so a value rounded to the type stays on its side of it)."""
    lo, lo_in, hi, hi_in = admitted.lo, admitted.lo_in, admitted.hi, admitted.hi_in
    if lo is not None and lo != int(lo):
        lo, lo_in = Decimal(math.floor(lo) + 1), False
    if hi is not None and hi != int(hi):
        hi, hi_in = Decimal(math.ceil(hi) - 1), False
    return Range(lo, lo_in, hi, hi_in)


_FAR = 10**1001  # past any value's digits: an end that is not there
Span = tuple[int, int]  # the least and the greatest of some integers (``_FAR``: no end)


def _integers(admitted: Range) -> tuple[Span, Span]:
    """The non-negative integers in ``admitted``, and the magnitudes of the negative
    ones."""
    low, high = -_FAR, _FAR
    if admitted.lo is not None:
        low = math.ceil(admitted.lo) if admitted.lo_in else math.floor(admitted.lo) + 1
    if admitted.hi is not None:
        high = math.floor(admitted.hi) if admitted.hi_in else math.ceil(admitted.hi) - 1
    return (low, high), (-high, -low)


def _units(admitted: Range, floats: bool) -> tuple[Span, Span]:
    """The integer parts ``I`` of non-negative numerals whose numbers (from ``I`` to
    ``I + 1``, that one out) all lie in ``admitted``, and the magnitudes ``M`` of negative
    ones whose numbers (from ``-M - 1``, out, to ``-M``) do.

    ``floats``: the value is rounded to a float first, which may land on ``I + 1`` (or
    ``-M - 1``); the ends are integers a float holds exactly (``_integral``), and
    rounding keeps order, so only an end that is out needs one unit more there."""
    positive, negative = (-_FAR, _FAR), (-_FAR, _FAR)
    if admitted.lo is not None:
        lo, lo_in = admitted.lo, admitted.lo_in
        # I > lo, or I = lo when lo is in; -M - 1 >= lo (-M - 1 > lo for a float when
        # lo is out).
        positive = (math.ceil(lo) if lo_in else math.floor(lo) + 1, positive[1])
        negative = (negative[0], math.floor(-lo) - 1 - (floats and not lo_in))
    if admitted.hi is not None:
        hi, hi_in = admitted.hi, admitted.hi_in
        # I + 1 <= hi (< hi for a float when hi is out); -M < hi, or -M = hi when hi
        # is in.
        positive = (positive[0], math.floor(hi) - 1 - (floats and not hi_in))
        negative = (math.ceil(-hi) if hi_in else math.floor(-hi) + 1, negative[1])
    return positive, negative


def _edges(admitted: Range, scale: int, fraction: int | None, largest: int) -> list[bytes]:
    """The values at an integral end of ``admitted`` that ``_units`` may leave out. Past
    an end ``c`` of 0 or more (``> 0``, ``>= 0 AND < 1``: 0.5), the numbers from ``c``
    to ``c + 1`` with a fraction not all zeros, when the other end is a unit away at
    least; the same below an end of 0 or less (``< 0``: -0.5). For a float (``fraction``:
    the digits of such a fraction that never round to a whole number, 15 for ``double
    precision``, 6 for ``real``) only at 0: none of them rounds to 0 either. And an end
    that is in, the integer itself (``<= 100``: 100, 100.0)."""
    out = []
    lo, hi = admitted.lo, admitted.hi
    floats = fraction is not None
    tail = rb"\.(?=[0-9]*[1-9])[0-9]{1,%d}" % (scale if fraction is None else fraction)
    if (
        lo is not None
        and lo == int(lo)
        and 0 <= lo <= largest
        and (not floats or lo == 0)
        and (hi is None or hi >= lo + 1)
    ):
        out.append(rb"\+?%d%s" % (int(lo), tail))
    if (
        hi is not None
        and hi == int(hi)
        and -largest <= hi <= 0
        and (not floats or hi == 0)
        and (lo is None or lo <= hi - 1)
    ):
        out.append(rb"-%d%s" % (-int(hi), tail))
    for end, inside in ((lo, admitted.lo_in), (hi, admitted.hi_in)):
        if end is not None and inside and end == int(end) and abs(end) <= largest:
            sign = rb"\+?" if end >= 0 else b"-"
            out.append(sign + rb"%d(?:\.0{1,%d})?" % (abs(int(end)), scale))
    return out


def _between(a: int, b: int) -> list[str]:
    """Alternatives that match exactly the numerals of the integers ``a`` to ``b``
    (``0 <= a <= b``), written without leading zeros."""
    out = []
    if a == 0:
        out.append("0")
        a = 1
        if b < 1:
            return out
    low, high = str(a), str(b)
    if len(low) == len(high):
        return out + _same_length(low, high)
    full_first = low == "1" + "0" * (len(low) - 1)
    full_last = high == "9" * len(high)
    first_length = len(low) if full_first else len(low) + 1
    last_length = len(high) if full_last else len(high) - 1
    if not full_first:
        out += _same_length(low, "9" * len(low))
    if first_length <= last_length:
        out.append(_any_of_lengths(first_length, last_length))
    if not full_last:
        out += _same_length("1" + "0" * (len(high) - 1), high)
    return out


def _any_of_lengths(shortest: int, longest: int) -> str:
    if shortest == longest:
        return "[1-9]" + _digits(shortest - 1)
    return f"[1-9][0-9]{{{shortest - 1},{longest - 1}}}"


def _same_length(low: str, high: str) -> list[str]:
    """The numerals from ``low`` to ``high``, of the same length (leading zeros
    allowed past the first place of either)."""
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    if i == len(low):
        return [low]
    prefix, rest = low[:i], len(low) - i - 1
    tail_low, tail_high = low[i + 1 :], high[i + 1 :]
    if tail_low == "0" * rest and tail_high == "9" * rest:
        return [prefix + _class(low[i], high[i]) + _digits(rest)]
    out = [prefix + low[i] + t for t in _at_least(tail_low)]
    if int(low[i]) + 1 <= int(high[i]) - 1:
        out.append(prefix + _class(str(int(low[i]) + 1), str(int(high[i]) - 1)) + _digits(rest))
    out += [prefix + high[i] + t for t in _at_most(tail_high)]
    return out


def _at_least(low: str) -> list[str]:
    """Strings of digits as long as ``low``, read as numbers at least ``low``."""
    if low == "0" * len(low):
        return [_digits(len(low))]
    out = [low[0] + t for t in _at_least(low[1:])]
    if low[0] != "9":
        out.append(_class(str(int(low[0]) + 1), "9") + _digits(len(low) - 1))
    return out


def _at_most(high: str) -> list[str]:
    """Strings of digits as long as ``high``, read as numbers at most ``high``."""
    if high == "9" * len(high):
        return [_digits(len(high))]
    out = []
    if high[0] != "0":
        out.append(_class("0", str(int(high[0]) - 1)) + _digits(len(high) - 1))
    return out + [high[0] + t for t in _at_most(high[1:])]


def _class(first: str, last: str) -> str:
    return first if first == last else f"[{first}-{last}]"


def _digits(count: int) -> str:
    return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"
