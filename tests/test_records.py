"""The record splitter and the NDJSON row converter (pure functions, no database)."""

from __future__ import annotations

import pytest

from importd.handlers.records import NdjsonRows, Record, RowError, Splitter

CSV = (b'id,name,note\n'
       b'1,alice,"line one\nline two"\n'
       b'2,bob,"say ""hi"", then\n\nleave"\n'
       b'\n'
       b'3,carol,plain\r\n'
       b'4,dave,"no newline at end"')


def split(data: bytes, size: int, **kw) -> tuple[list[Record], Splitter]:
    splitter = Splitter(**kw)
    out: list[Record] = []
    for i in range(0, len(data), size):
        out += splitter.feed(data[i:i + size])
    out += splitter.finish()
    return out, splitter


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4096])
def test_quoted_newlines_stay_in_their_record_whatever_the_block_size(size: int) -> None:
    records, splitter = split(CSV, size)
    assert [r.line for r in records] == [1, 2, 4, 8, 9]
    assert records[1].data == b'1,alice,"line one\nline two"\n'
    assert records[2].data == b'2,bob,"say ""hi"", then\n\nleave"\n'
    assert records[3].data == b"3,carol,plain\r\n"
    assert records[4].data == b'4,dave,"no newline at end"\n'
    assert splitter.consumed == len(CSV)


def test_backslash_escape() -> None:
    data = b'1,"a \\" quote\nand newline"\n2,x\n'
    records, _ = split(data, 5, escape=b"\\")
    assert [r.line for r in records] == [1, 3]


def test_every_line_is_a_record_without_quotes() -> None:
    records, _ = split(b'{"a": "x\\ny"}\n\n{"a": 2}\n', 3, quote=None)
    assert [(r.line, r.data) for r in records] == [(1, b'{"a": "x\\ny"}\n'), (3, b'{"a": 2}\n')]


def test_unterminated_quote_becomes_one_last_record() -> None:
    records, _ = split(b'1,ok\n2,"never closed\n3,x\n', 4)
    assert [r.line for r in records] == [1, 2]
    assert records[1].data == b'2,"never closed\n3,x\n'


def test_ndjson_rows() -> None:
    rows = NdjsonRows({}, ["id", "name", "tags", "meta"], json_columns=["meta"])
    row = rows.convert(Record(1, b'{"id": 1, "name": "a\\tb\\\\c", "meta": {"x": [1, null]}}\n'))
    assert row == b'1\ta\\tb\\\\c\t\\N\t{"x": [1, null]}\n'
    assert rows.convert(Record(2, b"   \n")) is None
    with pytest.raises(RowError, match="invalid JSON"):
        rows.convert(Record(3, b'{"id": \n'))
    with pytest.raises(RowError, match="expected a JSON object"):
        rows.convert(Record(4, b"[1, 2]\n"))
    with pytest.raises(RowError, match="'colour' is not among the import's columns"):
        rows.convert(Record(5, b'{"colour": "red"}\n'))
    with pytest.raises(RowError, match="nested value"):
        rows.convert(Record(6, b'{"tags": ["a"]}\n'))
    with pytest.raises(RowError, match="not UTF-8"):
        rows.convert(Record(7, b'{"name": "\xff"}\n'))
    mapped = NdjsonRows({"Name": "name"}, ["name"], json_columns=[])
    assert mapped.convert(Record(8, b'{"Name": true}\n')) == b"true\n"
