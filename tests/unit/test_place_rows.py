"""Where a refused row lies: ``batches.place_rows`` turns a row's place in a chunk's data
(PostgreSQL numbers the rows a COPY reads, 1, 2, …) into its source line and record,
where the chunk's bad rows were taken out before the COPY and quoted fields may span
lines. Checked against records written by Python's ``csv`` module, each kept with its
source line from the start."""

from __future__ import annotations

import csv
import functools
import io

from hypothesis import given
from hypothesis import strategies as st

from importd.handlers.imports.batches import place_rows
from importd.handlers.records import odd_lines

_odd = functools.partial(odd_lines, quote=b'"', escape=b'"')

# A record: its fields (quotes, commas and newlines among their characters), and
# whether it was taken out before the COPY (a bad row the check found).
_field = st.text(alphabet='ab,"\n1 ', max_size=6)
_record = st.tuples(st.lists(_field, min_size=1, max_size=3), st.booleans())


def _written(fields: list[str]) -> bytes:
    """One record as csv writes it, without its line end."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue().encode()[:-1]


def _chunk(
    records: list[tuple[list[str], bool]], first_line: int
) -> tuple[bytes, list[tuple[int, int]], list[tuple[int, bytes]]]:
    """The data COPY reads (the records kept), the records gone (line, lines spanned),
    and the reference: each kept record's source line and bytes, in order."""
    line = first_line
    gone: list[tuple[int, int]] = []
    kept: list[tuple[int, bytes]] = []
    for fields, is_gone in records:
        body = _written(fields)
        if not body:  # (a blank line is no record: never in a chunk COPY takes as is)
            continue
        spans = body.count(b"\n") + 1
        if is_gone:
            gone.append((line, spans))
        else:
            kept.append((line, body))
        line += spans
    data = b"".join(body + b"\n" for _, body in kept)
    return data, gone, kept


@given(
    st.lists(_record, min_size=1, max_size=40),
    st.integers(min_value=1, max_value=10**6),
    st.data(),
)
def test_a_place_gives_the_rows_source_line_and_record(
    records: list[tuple[list[str], bool]], first_line: int, data: st.DataObject
) -> None:
    chunk, gone, kept = _chunk(records, first_line)
    places = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(len(kept), 1)))))
    if not kept:
        places = []
    found = place_rows(chunk, first_line, gone, len(kept), places, _odd)
    assert found == [kept[p - 1] for p in places]


@given(st.lists(_record, min_size=1, max_size=20), st.integers(min_value=1, max_value=100))
def test_a_count_that_disagrees_gives_no_answer_never_a_wrong_line(
    records: list[tuple[list[str], bool]], first_line: int
) -> None:
    """Told more or fewer rows than the data holds (COPY and the splitter disagree):
    no answer, and the caller splits the records itself."""
    chunk, gone, kept = _chunk(records, first_line)
    for total in (len(kept) - 1, len(kept) + 1):
        if total >= 0:
            assert place_rows(chunk, first_line, gone, total, [], _odd) is None


def test_places_out_of_range_and_lines_that_span() -> None:
    data = b'a,1\n"b\nb",2\nc,3\n'
    assert place_rows(data, 10, [], 3, [4], _odd) is None
    assert place_rows(data, 10, [], 3, [0], _odd) is None
    assert place_rows(data, 10, [], 3, [1, 2, 3], _odd) == [
        (10, b"a,1"),
        (11, b'"b\nb",2'),
        (13, b"c,3"),
    ]
    # A record of two lines gone between the first and the second.
    assert place_rows(data, 10, [(11, 2)], 3, [2, 3], _odd) == [(13, b'"b\nb",2'), (15, b"c,3")]
    # A last record without its line end is a row too.
    assert place_rows(b"a,1\nb,2", 1, [], 2, [2], _odd) == [(2, b"b,2")]
