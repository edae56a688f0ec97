"""The values a CHECK on one numeric column surely admits (``bounds``): read from the
comparisons PostgreSQL deparses, and turned into a pattern of numerals. Checked against
an independent reference: Python's ``Decimal`` (and ``float`` and a 32-bit float for
``double precision`` and ``real``) evaluating the same comparisons. PostgreSQL's own
verdict is ``tests/integration/test_bounds_checks.py``'s."""

from __future__ import annotations

import re
import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd.handlers.imports import bounds
from importd.handlers.imports.bounds import Range

OPS = [">", ">=", "<", "<=", "=", "<>"]
TYPES = ["smallint", "integer", "bigint", "numeric", "numeric(12,2)", "numeric(5,1)"]
FLOATS = ["real", "double precision"]


def constant(value: Decimal, type_name: str) -> str:
    """``value`` as deparse writes a constant compared with a column of ``type_name``."""
    text = str(value)
    integral = value == value.to_integral_value() and "." not in text
    if type_name in ("smallint", "integer", "bigint") and integral:
        return text if value >= 0 else f"'{text}'::integer"
    if type_name in FLOATS:
        if value >= 0:
            return f"({text})::double precision"
        inner = "integer" if integral else "numeric"
        return f"('{text}'::{inner})::double precision"
    if integral:
        return f"({text})::numeric" if value >= 0 else f"('{text}'::integer)::numeric"
    return text if value >= 0 else f"'{text}'::numeric"


def holds(op: str, left: Decimal | float, right: Decimal | float) -> bool:
    return {
        ">": left > right,
        ">=": left >= right,
        "<": left < right,
        "<=": left <= right,
        "=": left == right,
        "<>": left != right,
    }[op]


# A CHECK: comparisons joined by AND or OR, one level deep or two.
Comparison = tuple[str, Decimal]
CONSTANTS = st.one_of(
    st.integers(-120, 120).map(Decimal),
    st.decimals(-120, 120, places=1, allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            Decimal(0),
            Decimal("0.5"),
            Decimal("1.5"),
            Decimal("99.5"),
            Decimal("-0.5"),
            Decimal(10**9),
        ]
    ),
)
COMPARISONS = st.tuples(st.sampled_from(OPS), CONSTANTS)
CHECKS = st.one_of(
    COMPARISONS.map(lambda c: ("ONE", [c])),
    st.tuples(st.sampled_from(["AND", "OR"]), st.lists(COMPARISONS, min_size=2, max_size=3)),
)


def deparse(check: tuple[str, list[Comparison]], type_name: str, column: str = "v") -> str:
    joiner, comparisons = check
    parts = [f"({column} {op} {constant(value, type_name)})" for op, value in comparisons]
    return parts[0] if joiner == "ONE" else "(" + f" {joiner} ".join(parts) + ")"


def admits(check: tuple[str, list[Comparison]], value: Decimal | float, floats: bool) -> bool:
    joiner, comparisons = check
    results = [holds(op, value, float(c) if floats else c) for op, c in comparisons]
    return any(results) if joiner == "OR" else all(results)


NUMERALS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.integers(-130, 130).map(str),
    st.decimals(-130, 130, places=2, allow_nan=False, allow_infinity=False).map(str),
    st.decimals(-130, 130, places=1, allow_nan=False, allow_infinity=False).map(str),
    # Nines that a float rounds up to the next integer (a bound, maybe).
    st.builds(lambda i, n: f"{i}.{'9' * n}", st.integers(-130, 130), st.integers(7, 25)),
    st.sampled_from(["+5", "-0", "007", "0.5", "-0.5", "1e3", "99.95", "9.999", "+0"]),
)


def near(check: tuple[str, list[Comparison]]) -> list[str]:
    """Numerals at each constant of ``check`` and a hair off it either way, where a
    float's rounding lands on the constant."""
    out = []
    for _, c in check[1]:
        whole = int(c)
        for i in (whole - 2, whole - 1, whole, whole + 1):
            out += [str(i), f"{i}.{'9' * 20}", f"{i}.{'0' * 20}1", f"{i}.{'0' * 14}1", f"{i}.5"]
            out += [f"{i}.{'9' * n}" for n in (6, 7, 8, 15, 16, 17)]
    return out


def as_stored(text: str, type_name: str) -> Decimal | float | None:
    """The number PostgreSQL compares for ``text`` in a column of ``type_name`` (None:
    the column would not take it)."""
    if not re.fullmatch(r"[-+]?[0-9]+(\.[0-9]+)?", text):
        return None
    if type_name in FLOATS:
        value = float(text)
        if type_name == "real":
            value = struct.unpack("f", struct.pack("f", value))[0]
        return value
    number = Decimal(text)
    if type_name in ("smallint", "integer", "bigint"):
        return number if "." not in text else None
    found = re.fullmatch(r"numeric\((\d+),(\d+)\)", type_name)
    if found:
        return number.quantize(Decimal(1).scaleb(-int(found[2])))
    return number


@settings(max_examples=400, deadline=None)
@given(
    check=CHECKS,
    type_name=st.sampled_from(TYPES + FLOATS),
    numerals=st.lists(NUMERALS, min_size=1, max_size=30),
)
def test_a_numeral_the_pattern_takes_passes_the_check(
    check: tuple[str, list[Comparison]], type_name: str, numerals: list[str]
) -> None:
    found = bounds.of_column(type_name, [("c", deparse(check, type_name))])
    assert found is not None
    pattern = re.compile(found.pattern)
    for text in [*numerals, *near(check)]:
        if pattern.fullmatch(text.encode()) is None:
            continue
        value = as_stored(text, type_name)
        assert value is not None, text  # (the type takes it: the shape is the type's too)
        assert admits(check, value, type_name in FLOATS), (text, deparse(check, type_name))


@settings(max_examples=300, deadline=None)
@given(
    check=CHECKS,
    type_name=st.sampled_from(["smallint", "integer", "bigint"]),
    values=st.lists(st.integers(-3000, 3000), min_size=1, max_size=40),
)
def test_an_integer_the_check_admits_is_taken_written_plainly(
    check: tuple[str, list[Comparison]], type_name: str, values: list[int]
) -> None:
    """Integers are exact: the pattern takes every integer the CHECK admits (written
    without leading zeros, within the shape's digits), and no other."""
    found = bounds.of_column(type_name, [("c", deparse(check, type_name))])
    assert found is not None
    pattern = re.compile(found.pattern)
    for value in values:
        taken = pattern.fullmatch(str(value).encode()) is not None
        assert taken == admits(check, Decimal(value), False), (value, deparse(check, type_name))


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(0, 10**7),
    size=st.integers(0, 10**7),
    probes=st.lists(st.integers(0, 2 * 10**7), max_size=30),
)
def test_the_numerals_between_two_integers_are_exactly_those(
    low: int, size: int, probes: list[int]
) -> None:
    high = low + size
    pattern = re.compile("|".join(bounds._between(low, high)))
    for n in [low, high, low - 1, high + 1, *probes]:
        if n >= 0:
            assert (pattern.fullmatch(str(n)) is not None) == (low <= n <= high), n
    assert pattern.fullmatch("0" + str(max(low, 1))) is None  # (no leading zero)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("(account > 0)", [Range(lo=Decimal(0))]),
        ("(0 < j)", [Range(lo=Decimal(0))]),
        ("((b >= '-5'::integer) AND (b < 100))", [Range(Decimal(-5), True, Decimal(100))]),
        ("(c > (0)::numeric)", [Range(lo=Decimal(0))]),
        ("(d <= (1.5)::double precision)", [Range(hi=Decimal("1.5"), hi_in=True)]),
        ("(\"F g\" > '-3'::integer)", [Range(lo=Decimal(-3))]),
        ("(c > ('-1.5'::numeric)::double precision)", [Range(lo=Decimal("-1.5"))]),
        ("(h <> 0)", [Range(hi=Decimal(0)), Range(lo=Decimal(0))]),
        ("((e > 1) OR (e < '-1'::integer))", [Range(lo=Decimal(1)), Range(hi=Decimal(-1))]),
        ("((m > 1) AND (m > 2) AND (m < 5))", [Range(lo=Decimal(2), hi=Decimal(5))]),
        ("((m > 5) AND (m < 5))", []),
        # Not a comparison of the column with a number: left to COPY.
        ("(NOT (g < 0))", None),
        ("((i)::numeric > (5)::numeric)", None),
        ("(k = ANY (ARRAY[1, 2]))", None),
        ("(length(t) > 0)", None),
        ("((a > 1) AND (b > 2) OR (c > 3))", None),
        ("(a > 1e5)", None),
    ],
)
def test_the_forms_deparse_writes_are_read(expr: str, expected: list[Range] | None) -> None:
    assert bounds.ranges(expr) == expected


def test_a_check_of_no_comparison_and_a_type_not_bounded_give_none() -> None:
    assert bounds.of_column("integer", [("c", "(length((v)::text) > 2)")]) is None
    assert bounds.of_column("text", [("c", "(v > 0)")]) is None
    # Of two CHECKs, the one that is a comparison counts, and names the bound.
    found = bounds.of_column("integer", [("a", "(v > 0)"), ("b", "((v % 2) = 0)")])
    assert found is not None and found.constraints == ("a",)


def test_a_check_nothing_passes_makes_every_value_a_suspect() -> None:
    found = bounds.of_column("integer", [("a", "((v > 5) AND (v < 6))")])
    assert found is not None
    assert re.fullmatch(found.pattern, b"5") is None and re.fullmatch(found.pattern, b"6") is None


def test_huge_ranges_make_short_patterns() -> None:
    """An open end makes one alternative per length class, not one per digit."""
    found = bounds.of_column("numeric", [("a", "(v >= (0)::numeric)")])
    assert found is not None and len(found.pattern) < 120
    assert re.fullmatch(found.pattern, b"9" * 1000 + b".5")


@pytest.mark.parametrize("type_name", TYPES + FLOATS)
def test_every_comparison_with_constants_near_zero_and_halves(type_name: str) -> None:
    """Each operator against constants where the ends are delicate (0, halves, a float's
    rounding onto an integer), with the numerals around them: whatever the pattern
    takes, the comparison admits."""
    constants = [
        Decimal(c) for c in ("0", "0.5", "1.5", "-0.5", "-1.5", "5", "-5", "99", "-99", "99.5")
    ]
    for op in OPS:
        for value in constants:
            check = ("ONE", [(op, value)])
            found = bounds.of_column(type_name, [("c", deparse(check, type_name))])
            assert found is not None
            pattern = re.compile(found.pattern)
            for text in [*near(check), "-0.5", "0.3", "+0.7", "-0.0001"]:
                if pattern.fullmatch(text.encode()) is None:
                    continue
                stored = as_stored(text, type_name)
                assert stored is not None, text
                assert admits(check, stored, type_name in FLOATS), (text, op, value)


def assert_taken(type_name: str, expr: str, taken: list[str], suspect: list[str]) -> None:
    """The bound of CHECK ``expr`` on a column of ``type_name`` takes every numeral of
    ``taken`` and none of ``suspect``."""
    found = bounds.of_column(type_name, [("c", expr)])
    assert found is not None
    for text in taken:
        assert re.fullmatch(found.pattern, text.encode()), text
    for text in suspect:
        assert not re.fullmatch(found.pattern, text.encode()), text


@pytest.mark.parametrize(
    ("type_name", "expr", "taken", "suspect"),
    [
        ("double precision", "(r >= (0)::double precision)", ["0.5", "0", "7.25"], ["-0.5"]),
        ("double precision", "(r > (0)::double precision)", ["0.5", "1"], ["0", "-1"]),
        ("real", "(r <= (100)::double precision)", ["100", "99.9", "-3"], ["100.5"]),
        ("numeric(12,2)", "(p > (0)::numeric)", ["0.99", "0.01", "12.50"], ["0.00", "0"]),
        ("numeric", "(p < (0)::numeric)", ["-0.5", "-12"], ["0", "-0.0"]),
        ("integer", "((n >= 1) AND (n <= 10))", ["1", "10", "+7"], ["0", "11", "010"]),
    ],
)
def test_common_values_of_common_checks_are_taken(
    type_name: str, expr: str, taken: list[str], suspect: list[str]
) -> None:
    """The values most files hold under the CHECKs most tables have are not suspects
    (each suspect costs a conversion in PostgreSQL)."""
    assert_taken(type_name, expr, taken, suspect)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # A cast that rounds the constant, or fails on every row: no bound.
        ("(a < (2.4)::integer)", None),
        ("(a > (99.5)::smallint)", None),
        ("(a < ('-0.6'::numeric)::integer)", None),
        ("(a <> (40000)::smallint)", None),
        # A cast to a float: the binary value, exactly.
        ("(a >= (123456789)::real)", [Range(lo=Decimal(123456792), lo_in=True)]),
        ("(a <= (16777217)::real)", [Range(hi=Decimal(16777216), hi_in=True)]),
        ("(a > (0.5)::double precision)", [Range(lo=Decimal("0.5"))]),
        (
            "(a > (0.1)::double precision)",
            [Range(lo=Decimal("0.1000000000000000055511151231257827021181583404541015625"))],
        ),
        # Negative integers on numeric and float columns, as deparse writes them.
        ("(n >= ('-1'::integer)::numeric)", [Range(lo=Decimal(-1), lo_in=True)]),
        (
            "((lat >= ('-90'::integer)::double precision) AND (lat <= (90)::double precision))",
            [Range(Decimal(-90), True, Decimal(90), True)],
        ),
    ],
)
def test_a_cast_constant_is_read_as_postgresql_casts_it(
    expr: str, expected: list[Range] | None
) -> None:
    assert bounds.ranges(expr) == expected


@pytest.mark.parametrize(
    ("type_name", "expr", "taken", "suspect"),
    [
        (
            "double precision",
            "((p > (0)::double precision) AND (p < (1)::double precision))",
            ["0.5", "0.123456789012345", "0.999999999999999"],
            ["0", "1", "0.9999999999999999999", "1.5", "-0.5"],
        ),
        (
            "real",
            "((p >= (0)::double precision) AND (p < (1)::double precision))",
            ["0", "0.5", "0.999999"],
            ["0.9999999", "1"],
        ),
        (
            "double precision",
            "((p > (0)::double precision) AND (p <= (1)::double precision))",
            ["0.25", "1", "1.0"],
            ["1.5", "0"],
        ),
        (
            "numeric(6,4)",
            "((p > (0)::numeric) AND (p < (1)::numeric))",
            ["0.5000", "0.0001", "0.9999"],
            ["0.0000", "1.0000", "1"],
        ),
        (
            "double precision",
            "((lat >= ('-90'::integer)::double precision) AND (lat <= (90)::double precision))",
            ["-89.5", "0", "45.123", "90", "-90"],
            ["90.5", "-90.5"],
        ),
    ],
)
def test_fractions_between_zero_and_one_are_taken(
    type_name: str, expr: str, taken: list[str], suspect: list[str]
) -> None:
    """Probabilities, shares and coordinates: the values such CHECKs admit are not
    suspects (a helper's audit found every one was, before)."""
    assert_taken(type_name, expr, taken, suspect)
