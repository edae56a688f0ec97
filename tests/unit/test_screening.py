"""The screen of bad-row chunks (importd/handlers/imports/screening.py) on its own: it
vouches for the values users write and for nothing doubtful; tables with a type it does
not know are not screened; and the COPY data of a chunk without some rows is exactly that
of the others. Against the server's own COPY: tests/integration/test_screening.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importd.handlers.imports.copying import Batch, _join
from importd.handlers.imports.screening import Screen


@pytest.mark.parametrize(
    ("type_name", "good", "suspect"),
    [
        ("integer", ["0", "-123", "+999999999", ""], ["1234567890", "1.0", "acct1", " 1"]),
        ("smallint", ["9999"], ["32767", "1e3"]),
        ("bigint", ["-999999999999999999"], ["9223372036854775807"]),
        ("numeric", ["-3.14159", "10"], ["1e5", "NaN", "1."]),
        ("numeric(12,2)", ["-1234567890.12", "5"], ["12345678901", "1.005"]),
        ("double precision", ["0.251583", "-5"], ["1e300", "Infinity"]),
        ("boolean", ["t", "FALSE", "yes", "0"], ["maybe", "tr"]),
        ("date", ["2024-01-31", "2023-12-30"], ["2024-02-29", "2024-04-31", "31/01/2024"]),
        (
            "timestamp with time zone",
            ["2024-01-01T00:00:37+00:00", "2024-06-30 12:00:00.123456", "2024-01-01"],
            ["2024-01-01 24:00", "2024-01-01T00:00:37 PST"],
        ),
        ("uuid", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"], ["a0eebc999c0b4ef8bb6d6bb9bd380a11"]),
        ("character varying(3)", ["abc", '"a""b"'], ["abcd"]),
    ],
)
def test_the_screen_vouches_for_common_values_only(
    type_name: str, good: list[str], suspect: list[str]
) -> None:
    screen = Screen.build(["text", type_name], "csv", ",", '"', '"', "")
    assert screen is not None
    for value in good:
        assert screen.good(b"x," + value.encode()), value
    for value in suspect:
        assert not screen.good(b"x," + value.encode()), value


def test_tables_with_an_unscreened_type_are_not_screened() -> None:
    assert Screen.build(["integer", "jsonb"], "csv", ",", '"', '"', "") is None
    assert Screen.build(["integer", "numeric(5,-2)"], "csv", ",", '"', '"', "") is None
    assert Screen.build(["integer"], "csv", ",", '"', "\\", "") is None  # another escape


@given(
    bodies=st.lists(st.binary(max_size=6).filter(lambda b: b"\n" not in b), max_size=12),
    prefix=st.sampled_from([b"", b"%d,", b"%d\t"]),
    data=st.data(),
)
def test_a_batch_without_some_rows_is_the_copy_data_of_the_others(
    bodies: list[bytes], prefix: bytes, data: Any
) -> None:
    lines = [3 * i + 1 for i in range(len(bodies))]
    batch = Batch(lines, bodies, bodies, _join(prefix, lines, bodies), prefix)
    gone = sorted(
        data.draw(st.sets(st.sampled_from(range(len(bodies)))) if bodies else st.just(set()))
    )
    kept = [i for i in range(len(bodies)) if i not in gone]
    expected = _join(prefix, [lines[i] for i in kept], [bodies[i] for i in kept])
    assert batch.without(gone) == expected
    assert batch.subset(kept).payload == expected
