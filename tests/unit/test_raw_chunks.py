"""The raw cut of CSV sources (``reading.raw_chunks``): chunks cut from the bytes at
record boundaries by counting quotes, checked against Python's csv module (pure
functions, no database; the loads are in test_imports_exact.py and
test_imports_properties.py)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from importd.handlers.imports.reading import Chunk, Cutter, raw_chunks
from importd.handlers.records import Records, Splitter

FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n é\\.')), max_size=8)


def cut(data: bytes, block: int, rows: int, size: int, limit: int) -> list[Chunk]:
    """The chunks of ``data`` fed in blocks of ``block`` bytes."""

    async def blocks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), block):
            yield data[i : i + block]

    def splitter(line: int, at: int) -> Splitter:
        return Splitter(b'"', b'"', line, newline=b"\n", limit=limit, offset=at)

    async def run() -> list[Chunk]:
        cutter = Cutter(b'"', b'"', rows, min(size, limit), limit)
        return [chunk async for chunk in raw_chunks(blocks(), b"", 0, 1, cutter, splitter)]

    return asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(FIELD, min_size=1, max_size=3), min_size=1, max_size=40),
    blank=st.sets(st.integers(0, 40), max_size=3),
    block=st.integers(1, 64),
    chunk_rows=st.integers(1, 12),
    size=st.integers(8, 200),
    limit=st.integers(8, 400),
    broken=st.booleans(),
)
def test_chunks_hold_exactly_the_records_csv_finds_each_whole(
    rows: list[list[str]],
    blank: set[int],
    block: int,
    chunk_rows: int,
    size: int,
    limit: int,
    broken: bool,
) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    for i, row in enumerate(rows):
        writer.writerow(row)
        if i in blank:
            out.write("\n")
    clean = out.getvalue()
    data = (clean + ('9,"never closed\n' if broken else "")).encode()
    expected = []  # (start line, fields) per record
    reader = csv.reader(io.StringIO(clean, newline=""))
    start = 1
    for record in reader:
        if record:
            expected.append((start, record))
        start = reader.line_num + 1
    chunks = cut(data, block, chunk_rows, size, limit)
    # Every byte once, in order; each chunk ends where the stream stands after it.
    assert b"".join(c.raw for c in chunks if c.raw) == data[: len(b"".join(c.raw for c in chunks))]
    offset, line = 0, 1
    got = Records()
    for chunk in chunks:
        records = chunk.records
        if chunk.raw:
            assert chunk.first_line == line
            offset += len(chunk.raw)
            # A chunk has at most chunk_rows lines, unless its first record alone has
            # more; it ends a record (or the file).
            lines = chunk.raw.count(b"\n") + (not chunk.raw.endswith(b"\n"))
            assert lines <= chunk_rows or len(records) <= 1, (chunk.raw, chunk_rows)
            if chunk.copyable:  # COPY reads it as it is: the same records, whole
                assert b"\r" not in chunk.raw and b"\n\n" not in chunk.raw
                assert len(chunk.raw) <= limit
                joined = b"\n".join(records.datas) + b"\n"
                assert joined.removesuffix(b"\n") == chunk.raw.removesuffix(b"\n")
        assert chunk.end_offset >= offset
        offset, line = chunk.end_offset, chunk.next_line
        got.extend(records)
    assert offset == len(data) or not data[offset:].strip(b"\n")  # (blank lines at the end)
    if broken:  # an unterminated quoted field: one last record (COPY rejects it)
        assert got.lines[-1] == clean.count("\n") + 1
        got = Records(got.lines[:-1], got.datas[:-1], got.ends[:-1], got.too_long)
    assert got.lines == [line for line, _ in expected]
    for index, (data_, (line, record)) in enumerate(zip(got.datas, expected, strict=True)):
        if data_:
            assert next(csv.reader(io.StringIO(data_.decode(), newline=""))) == record
        else:  # longer than the limit: skipped, its size kept
            assert got.too_long[line][0] > limit
            assert index + 1 == len(expected) or got.too_long[line][1] <= expected[index + 1][0]


def test_a_file_of_short_records_is_cut_every_chunk_rows_lines_and_copied_as_it_is() -> None:
    data = b"".join(b'%d,"x, ""y"""\n' % i for i in range(1000))
    chunks = cut(data, 4096, 100, 1 << 20, 1 << 20)
    assert [c.raw.count(b"\n") for c in chunks] == [100] * 10
    assert all(c.copyable for c in chunks)
    assert [c.first_line for c in chunks] == list(range(1, 1001, 100))


def test_a_record_longer_than_the_limit_hands_over_to_the_splitter_and_is_skipped() -> None:
    data = b'1,a\n2,"' + b"y" * 5000 + b'"\n3,c\n4,d\n'
    chunks = cut(data, 100, 2, 64, 256)
    records = Records()
    for chunk in chunks:
        records.extend(chunk.records)
    assert records.lines == [1, 2, 3, 4]
    assert records.datas[1] == b"" and records.too_long[2][0] > 5000
    assert records.datas[2:] == [b"3,c", b"4,d"]
