"""The record splitter and the NDJSON row converter (pure functions, no database)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd.handlers import records
from importd.handlers.records import JSON_STEP, NdjsonRows, Records, RowError, Splitter, loads

CSV = (
    b"id,name,note\n"
    b'1,alice,"line one\nline two"\n'
    b'2,bob,"say ""hi"", then\n\nleave"\n'
    b"\n"
    b"3,carol,plain\r\n"
    b'4,dave,"no newline at end"'
)


def split(data: bytes, size: int, **kw: Any) -> tuple[Records, Splitter]:
    splitter = Splitter(**kw)
    out = Records()
    for i in range(0, len(data), size):
        out.extend(splitter.feed(data[i : i + size]))
    out.extend(splitter.finish())
    return out, splitter


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4096])
def test_quoted_newlines_stay_in_their_record_whatever_the_block_size(size: int) -> None:
    records, splitter = split(CSV, size)
    assert records.lines == [1, 2, 4, 8, 9]
    assert records.datas[1] == b'1,alice,"line one\nline two"'
    assert records.datas[2] == b'2,bob,"say ""hi"", then\n\nleave"'
    assert records.datas[3] == b"3,carol,plain\r"
    assert records.datas[4] == b'4,dave,"no newline at end"'
    assert splitter.consumed == len(CSV)
    # Each record's end offset is where the stream stands after it: resume points.
    for line, data, end in zip(records.lines, records.datas, records.ends, strict=True):
        assert CSV[:end].endswith(data + (b"\n" if end < len(CSV) else b""))
        assert CSV[:end].count(b"\n") == line - 1 + data.count(b"\n") + (end < len(CSV))
    assert [records.next_line(i) for i in range(len(records))] == [2, 4, 7, 9, 10]


def test_the_common_case_takes_the_fast_path_with_exact_offsets() -> None:
    data = b"".join(b"%d,x\n" % i for i in range(1000))
    records, splitter = split(data, 100)
    assert records.lines == list(range(1, 1001))
    assert records.ends[-1] == splitter.consumed == len(data)
    assert records.ends[9] == len(b"".join(b"%d,x\n" % i for i in range(10)))


def test_backslash_escape() -> None:
    data = b'1,"a \\" quote\nand newline"\n2,x\n'
    records, _ = split(data, 5, escape=b"\\")
    assert records.lines == [1, 3]


def test_every_line_is_a_record_without_quotes() -> None:
    records, _ = split(b'{"a": "x\\ny"}\n\n{"a": 2}\n', 3, quote=None)
    assert list(zip(records.lines, records.datas, strict=True)) == [
        (1, b'{"a": "x\\ny"}'),
        (3, b'{"a": 2}'),
    ]


def test_unterminated_quote_becomes_one_last_record() -> None:
    data = b'1,ok\n2,"never closed\n3,x\n'
    records, splitter = split(data, 4)
    assert records.lines == [1, 2]
    assert records.datas[1] == b'2,"never closed\n3,x'
    assert splitter.consumed == len(data)


def test_ndjson_rows() -> None:
    rows = NdjsonRows({}, ["id", "name", "tags", "meta"], json_columns=["meta"])
    row = rows.convert(b'{"id": 1, "name": "a\\tb\\\\c", "meta": {"x": [1, null]}}')
    assert row == b'1\ta\\tb\\\\c\t\\N\t{"x": [1, null]}\n'
    assert rows.convert(b"   ") is None
    with pytest.raises(RowError, match="invalid JSON"):
        rows.convert(b'{"id": ')
    with pytest.raises(RowError, match="expected a JSON object"):
        rows.convert(b"[1, 2]")
    with pytest.raises(RowError, match="'colour' is not among the import's columns"):
        rows.convert(b'{"colour": "red"}')
    with pytest.raises(RowError, match="nested value"):
        rows.convert(b'{"tags": ["a"]}')
    with pytest.raises(RowError, match="not UTF-8"):
        rows.convert(b'{"name": "\xff"}')
    mapped = NdjsonRows({"Name": "name"}, ["name"], json_columns=[])
    assert mapped.convert(b'{"Name": true}') == b"true\n"


# -- properties: the splitter against Python's csv module ---------------------------------

import csv  # noqa: E402
import io  # noqa: E402

FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n é')), max_size=6)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.lists(FIELD, min_size=1, max_size=3), min_size=1, max_size=30),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    block=st.integers(1, 50),
    limit=st.integers(4, 40),
)
def test_splitter_finds_the_records_and_lines_csv_finds(
    rows: list[list[str]], newline: str, block: int, limit: int
) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=newline)
    for row in rows:
        writer.writerow([f.replace("\n", newline) for f in row])
    text = out.getvalue()
    data = text.encode()
    expected = []  # (start line, record text) per non-blank record
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for record in reader:
        if record:
            expected.append((start, record))
        start = reader.line_num + 1
    splitter = Splitter(newline=b"\r" if newline == "\r" else b"\n", limit=limit)
    got = Records()
    for i in range(0, len(data), block):
        got.extend(splitter.feed(data[i : i + block]))
    got.extend(splitter.finish())
    assert got.lines == [line for line, _ in expected]
    for index, (data_, (line, record)) in enumerate(zip(got.datas, expected, strict=True)):
        if data_:  # kept whole (the loader rejects it still if it is over the limit)
            source = data_.removesuffix(b"\r").decode()
            assert next(csv.reader(io.StringIO(source, newline=""))) == record
        else:  # too long: skipped to its end, its size and extent kept
            size, after = got.too_long[line]
            assert size > limit
            assert after == (expected[index + 1][0] if index + 1 < len(expected) else after)
    assert splitter.consumed == len(data)


def _reference_keys(data: bytes) -> list[str] | str | None:
    """What ``object_keys`` must say, from ``json.loads`` (one C call)."""
    try:
        obj = json.loads(data, parse_float=str, parse_int=str, parse_constant=_refuse)
    except ValueError:
        return "not JSON"
    return list(obj) if isinstance(obj, dict) else None


def _refuse(name: str) -> Any:
    raise ValueError(name)


def _object_keys_or_error(data: bytes) -> list[str] | str | None:
    try:
        return records.object_keys(data)
    except ValueError:
        return "not JSON"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    value=_JSON,
    indent=st.sampled_from([None, 0, 1]),
    cut=st.integers(0, 400),
    junk=st.sampled_from(["", ",", "]", "}", '"', ":", " ", "x", "{", "1"]),
    step=st.sampled_from([0, 3, 16]),
)
def test_object_keys_walked_in_steps_agree_with_json_loads(
    value: Any, indent: int | None, cut: int, junk: str, step: int
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    # Also text that is not JSON: a character put in at some place.
    for data in (text, text[:cut] + junk + text[cut:]):
        raw = data.encode()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(records, "JSON_STEP", step)
            assert _object_keys_or_error(raw) == _reference_keys(raw), data


def test_object_keys_of_a_long_record_keep_order_and_duplicates_once() -> None:
    big = b'{"b": [' + b",".join([b"1"] * 40_000) + b'], "a": {"x": 1}, "b": 2}'
    assert records.object_keys(big) == ["b", "a"]
    assert records.object_keys(b"[" + big + b"]") is None
    with pytest.raises(ValueError):
        records.object_keys(big[:-1])


# -- NDJSON records walked key by key (long records; imports into a json column) --------

JSON_NUMBER = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.sampled_from(["1E5", "-0", "0.10000000000000000000000001", "3.14159265358979323846"]),
)
JSON_TEXT = st.text(alphabet=st.sampled_from(list('ab \t"\\é\u2028/')), max_size=6)
JSON_LEAF = st.one_of(st.none(), st.booleans(), JSON_NUMBER.map(lambda n: ("n", n)), JSON_TEXT)
JSON_TREE = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(JSON_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
SPACE = st.sampled_from(["", " ", "\n ", "\t"])


def written(value: Any, space: str) -> str:
    """``value`` as JSON text, numbers as generated, ``space`` between tokens."""
    if isinstance(value, tuple):
        return str(value[1])
    if isinstance(value, list):
        return "[" + space + f",{space}".join(written(v, space) for v in value) + space + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)}{space}:{space}{written(v, space)}" for k, v in value.items())
        return "{" + space + f",{space}".join(pairs) + space + "}"
    return json.dumps(value)


def exact_json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def copy_fields(row: bytes) -> list[str | None]:
    """The fields of a COPY text row, unescaped (None for \\N)."""
    out: list[str | None] = []
    for field in row.decode().rstrip("\n").split("\t"):
        if field == "\\N":
            out.append(None)
            continue
        out.append(
            re.sub(
                r"\\(.)",
                lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)),
                field,
            )
        )
    return out


RECORD_FIELDS = st.dictionaries(
    st.sampled_from(["id", "name", "meta", "doc"]),
    st.one_of(JSON_LEAF, JSON_TREE),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(fields=RECORD_FIELDS, space=SPACE, pad=st.booleans())
def test_walked_records_give_what_decoded_ones_do(
    fields: dict[str, Any], space: str, pad: bool
) -> None:
    """The walk (``_walked``: long records, imports into a ``json`` column) against the
    whole decode (``json.loads`` with exact numbers) as the reference: the same rows
    refused; text and number columns alike; json columns the same JSON value, and for
    ``json`` (verbatim) the very text of the file."""
    columns = ["id", "name", "meta", "doc"]
    text = written(fields, space)
    if pad:  # past JSON_STEP: the walk's path for long records
        text = text[:-1] + ("," if fields else "") + '"name": ' + json.dumps("p" * JSON_STEP) + "}"
        fields = {**fields, "name": "p" * JSON_STEP}
    walked = NdjsonRows({}, columns, json_columns=["meta", "doc"], verbatim=["doc"])
    decoded = NdjsonRows({}, columns, json_columns=["meta", "doc"])
    data = text.encode()
    try:
        expected = decoded._decoded(loads(data))
    except RowError:
        with pytest.raises(RowError):
            walked.convert(data)
        return
    row = walked.convert(data)
    assert row is not None
    got = copy_fields(row)
    for column, want, have in zip(columns, expected, got, strict=True):
        if column in ("meta", "doc") and have is not None:
            expected_text = copy_fields((want + "\n").encode())[0] or "null"
            assert exact_json(have) == exact_json(expected_text)
            if column == "doc":
                assert have == written(fields["doc"], space)
        else:
            assert copy_fields((want + "\n").encode())[0] == have, column


def test_walked_records_refuse_what_decoded_ones_do() -> None:
    rows = NdjsonRows({}, ["id", "doc"], json_columns=["doc"], verbatim=["doc"])
    assert rows.convert(b'{"doc": {"b":1,  "a": [1.50, 1E5]}, "id": 7}') == (
        b'7\t{"b":1,  "a": [1.50, 1E5]}\n'
    )
    for bad, message in [
        (b'{"id": ', "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b'"x"', "expected a JSON object, got string"),
        (b'{"id": 1,}', "invalid JSON"),
        (b'{"id": 1} 2', "invalid JSON"),
        (b'{"id": NaN}', "invalid JSON"),
        (b'{"id": [1]}', "nested value"),
        (b'{"colour": 1}', "'colour' is not among the import's columns"),
        (b'{"id": "\xff"}', "not UTF-8"),
        (b'{"doc": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    ]:
        with pytest.raises(RowError, match=re.escape(message)):
            rows.convert(bad)


ESCAPES = st.sampled_from(
    [
        "\\ud800",
        "\\udbff",
        "\\udc00",
        "\\uDFFF",
        "\\ud83d\\ude00",
        "\\\\",
        "\\\\ud800",
        "\\n",
        "\\u0041",
        "a",
        "é",
    ]
)


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(ESCAPES, max_size=8), container=st.booleans())
def test_a_lone_surrogate_is_found_as_decoding_finds_it(pieces: list[str], container: bool) -> None:
    """``_lone_surrogate`` against Python's own decoder and encoder (the reference): a JSON
    string whose escapes leave a surrogate alone cannot be UTF-8 text."""
    raw = '"' + "".join(pieces) + '"'
    if container:
        raw = '{"k": [' + raw + ", 1]}"
    try:
        json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8")
        lone = False
    except UnicodeEncodeError:
        lone = True
    assert (records._lone_surrogate(raw) is not None) == lone, raw
