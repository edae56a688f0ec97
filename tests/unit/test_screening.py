"""The screen of bad-row chunks (importd/handlers/imports/screening.py) on its own: it
vouches for the values users write and for nothing doubtful; tables with a type it does
not know are not screened; the COPY data of a chunk without some rows is exactly that of
the others; and a chunk's bytes screened as they are (``Screen.spans``) name only whole
records, as the splitter cuts them, that the per-record screen doubts. Against the
server's own COPY: tests/integration/test_screening.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

from importd.handlers.imports.batches import Batch
from importd.handlers.imports.batches import join_rows as _join
from importd.handlers.imports.copying import Copier
from importd.handlers.imports.screening import Labels, Screen
from importd.handlers.records import Splitter
from importd.tables import CopyFormat


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
        (
            "jsonb",
            ["0.5", "null", '"{""a"": [1, {""b"": ""x\\""y""}], ""c"": true}"', '"""Zo\u00eb"""'],
            ["{0.5", '"[1,]"', '"{""a"":1,}"', '"""\\u0000"""', "1e400", "NaN", '""', '"[1 2]"'],
        ),
        ("json", ['"[]"', '"""\\u0041"""'], ['"[[[[[1]]]]]"', '"\t1"']),
        ("integer[]", ["{1}", '"{1,NULL,-3}"', "{}"], ['"{1, 2}"', "{1.5}", "{{1}}", '"{1,}"']),
        ("numeric(5,2)[]", ['"{1.25,-999.99}"'], ["{1000}", "{1.255}"]),
        ("text[]", ['"{a,NULL,Zoë}"', "{x}"], ['"{a b}"', '"{""a""}"', "{a", "{a\\,b}"]),
        ("boolean[]", ['"{t,false}"'], ["{maybe}"]),
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


def test_an_enum_is_screened_by_its_labels() -> None:
    mood = Labels(("happy", "so so", "a,b", 'say "hi"', ""))
    screen = Screen.build(["integer", mood], "csv", ",", '"', '"', "")
    assert screen is not None
    good = [b"1,happy", b"1,so so", b'1,"a,b"', b'1,"say ""hi"""', b'1,""', b"1,"]
    suspect = [b"1,Happy", b"1,happy ", b"1,a,b", b"1,sad", b'1,"hap""py"']
    assert [body for body in good if not screen.good(body)] == []
    assert [body for body in suspect if screen.good(body)] == []
    text = Screen.build(["integer", mood], "text", "\t", '"', '"', "")
    assert text is not None
    assert text.good(b"1\tso so") and text.good(b"1\t\\N") and not text.good(b"1\tsad")


def test_tables_with_an_unscreened_type_are_not_screened() -> None:
    assert Screen.build(["integer", "point"], "csv", ",", '"', '"', "") is None
    assert Screen.build(["integer", "int4range"], "csv", ",", '"', '"', "") is None
    assert Screen.build(["integer", "point[]"], "csv", ",", '"', '"', "") is None
    assert Screen.build(["integer", Labels(())], "csv", ",", '"', '"', "") is None
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


# -- screening a chunk's bytes as they are (Screen.spans), against the splitter and the
# per-record screen -----------------------------------------------------------------------

SPAN_TYPES = ["integer", "text", "date", "character varying(3)"]
# Fields mostly well formed (quoted or not, with commas, quotes and line breaks inside
# quotes), sometimes not: a quote inside an unquoted field, a NUL byte, an open quote.
PLAIN = st.sampled_from(["", "7", "-12", "x1", "2024-01-31", "2023-02-29", "abc", "abcd"])
QUOTED = st.text(alphabet='a1,"\n', max_size=5).map(lambda t: '"' + t.replace('"', '""') + '"')
ODD = st.sampled_from(['a"b', '"', '"a"b"', "\x00", '"a', "1\x00"])
FIELD = st.one_of(PLAIN, PLAIN, QUOTED)
# As many fields as columns, each likely of its column's shape; or any fields.
GOOD_FIELDS = [["7", "-12", ""], ["x", '"a\nb"'], ["2024-01-31"], ["abc", '"a,b"']]
RECORD = st.one_of(
    st.tuples(*(st.one_of(st.sampled_from(good), FIELD) for good in GOOD_FIELDS)).map(",".join),
    st.tuples(*(st.one_of(st.sampled_from(good), FIELD) for good in GOOD_FIELDS)).map(",".join),
    st.lists(st.one_of(FIELD, ODD), min_size=1, max_size=5).map(",".join),
).filter(bool)  # (an empty record would be a blank line: no record)


def fields(body: bytes) -> int | None:
    """How many fields a record has when each is quoted (quotes inside doubled) or free
    of quotes, and no NUL byte is anywhere; None otherwise. A parser of its own, not the
    screen's pattern."""
    if b"\0" in body:
        return None
    at, size, count = 0, len(body), 1
    while True:  # at: the start of a field
        if body[at : at + 1] == b'"':
            at += 1
            while True:
                close = body.find(b'"', at)
                if close < 0:
                    return None
                at = close + 2 if body[close + 1 : close + 2] == b'"' else close + 1
                if at == close + 1:
                    break
            if at == size:
                return count
            if body[at : at + 1] != b",":
                return None
        else:
            comma = body.find(b",", at)
            if b'"' in body[at : size if comma < 0 else comma]:
                return None
            if comma < 0:
                return count
            at = comma
        at, count = at + 1, count + 1


@given(
    records=st.lists(RECORD, min_size=1, max_size=12),
    last_newline=st.booleans(),
    watch=st.sampled_from([None, {0}, {2, 3}]),
    first_line=st.integers(1, 100),
)
def test_the_bytes_screen_finds_the_records_the_record_screen_doubts(
    records: list[str], last_newline: bool, watch: set[int] | None, first_line: int
) -> None:
    """``spans`` over a chunk's bytes (no blank line, LF line ends, as COPY takes them)
    names only whole records, as the splitter cuts them, that the per-record screen
    doubts, with their lines; and every one it doubts whose fields are well formed and
    as many as the columns (another may be missed: its COPY then fails, and the chunk
    takes the path of a failing chunk)."""
    data = "\n".join(records).encode() + (b"\n" if last_newline else b"")
    assume(data.strip(b"\n") and not data.startswith(b"\n") and b"\n\n" not in data)
    screen = Screen.build(SPAN_TYPES, "csv", ",", '"', '"', "", watch)
    assert screen is not None
    splitter = Splitter(b'"', None, first_line, newline=b"\n")
    split = splitter.feed(data)
    split.extend(splitter.finish())
    spans = screen.spans(data)
    assert spans is not None
    starts = [0, *split.ends[:-1]]
    where = {(start, end): i for i, (start, end) in enumerate(zip(starts, split.ends, strict=True))}
    assert all(span in where for span in spans), "a span that is not a whole record"
    indexes = [where[span] for span in spans]
    assert indexes == sorted(set(indexes))
    assert not any(screen.good(split.datas[i]) for i in indexes)
    must = [
        i
        for i, body in enumerate(split.datas)
        if not screen.good(body) and fields(body) == len(SPAN_TYPES)
    ]
    assert set(must) <= set(indexes)
    event("a record not well formed" if None in map(fields, split.datas) else "well formed")
    event(f"suspects: {'none' if not spans else 'all' if len(spans) == len(split) else 'some'}")
    event("multi-line records" if any(b"\n" in body for body in split.datas) else "one line each")
    # (A file in LATIN1: no record is a suspect for its bytes, as for ``screen`` here.)
    copier = Copier(
        CopyFormat("csv", encoding="LATIN1"), "latin_1", ",", '"', False, None, 1 << 20, print
    )
    copier.names = [f"c{i}" for i in range(len(SPAN_TYPES))]
    copier.types = SPAN_TYPES
    copier.watch.columns = None if watch is None else {copier.names[i] for i in watch}
    screened = copier.screen_raw(data, first_line)
    assert screened is not None
    assert screened.rows.lines == [split.lines[i] for i in indexes]
    assert screened.rows.raws == [split.datas[i] for i in indexes]
    rest = b"".join(data[starts[i] : split.ends[i]] for i in range(len(split)) if i not in indexes)
    assert screened.without(list(range(len(indexes)))) == rest


# -- bad shapes: a field too few or too many, bytes that are not UTF-8 --------------------

NOT_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"])


@given(
    records=st.lists(
        st.tuples(RECORD, st.one_of(st.just(b""), NOT_UTF8), st.integers(0, 8)), min_size=1
    ),
    last_newline=st.booleans(),
    watch=st.sampled_from([None, {0}, {2, 3}]),
)
def test_the_bytes_screen_finds_every_record_of_a_bad_shape(
    records: list[tuple[str, bytes, int]], last_newline: bool, watch: set[int] | None
) -> None:
    """With ``whole`` and ``utf8``, ``spans`` names every record whose fields are well
    formed but too few or too many, and every record with bytes that are not UTF-8 (or
    gives up, None, when such bytes lie on a line inside a quoted field: the chunk is
    then split into records); still whole records only, each one the screen doubts."""
    bodies = []
    for text, bad, place in records:
        body = text.encode()
        at = min(place, len(body))
        bodies.append(body[:at] + bad + body[at:])
    data = b"\n".join(bodies) + (b"\n" if last_newline else b"")
    assume(not data.startswith(b"\n") and b"\n\n" not in data)
    screen = Screen.build(SPAN_TYPES, "csv", ",", '"', '"', "", watch, whole=True, utf8=True)
    assert screen is not None
    splitter = Splitter(b'"', None, 1, newline=b"\n")
    split = splitter.feed(data)
    split.extend(splitter.finish())
    spans = screen.spans(data)
    if spans is None:
        event("gave up")
        return
    starts = [0, *split.ends[:-1]]
    where = {(start, end): i for i, (start, end) in enumerate(zip(starts, split.ends, strict=True))}
    assert all(span in where for span in spans), "a span that is not a whole record"
    indexes = {where[span] for span in spans}
    assert not any(screen.good(split.datas[i]) for i in indexes)
    for i, body in enumerate(split.datas):
        if fields(body) not in (None, len(SPAN_TYPES)):
            assert i in indexes, body
        try:
            body.decode()
        except UnicodeDecodeError:
            assert i in indexes, body
            event("not UTF-8")


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (b"1,x,2024-01-31", 'missing data for column "d4"'),
        (b"1", 'missing data for column "d2"'),
        (b"1,x,2024-01-31,abc,z", "extra data after last expected column"),
        (b'1,"x,y,z",2024-01-31,"a,b",', "extra data after last expected column"),
        (b"x1,y,2024-01-31,abc,z", "extra data after last expected column"),  # before values
        (b"x1,\xff,2024-01-31,abc,z", 'invalid byte sequence for encoding "UTF8": 0xff'),
        (b"1,\xe2\x82", 'invalid byte sequence for encoding "UTF8": 0xe2 0x82 0x0a'),
        (b"x1,y", b"x1,y,,"),  # a field in doubt: PostgreSQL converts it, NULL for the rest
        (b"1,x,2023-02-29", b"1,x,2023-02-29,"),
        (b"1,x,2024-01-31,abc", None),  # as many fields as columns: PostgreSQL's
        (b'1,"x,2024-01-31', None),  # its quotes do not close
        (b"1,x\ry,2024-01-31,abc,z", None),  # a carriage return: PostgreSQL's own error
    ],
)
def test_the_verdicts_the_screen_gives_without_postgresql(
    body: bytes, verdict: str | bytes | None
) -> None:
    screen = Screen.build(SPAN_TYPES, "csv", ",", '"', '"', "", {0}, utf8=True)
    assert screen is not None
    names = ["d1", "d2", "d3", "d4"]
    assert screen.verdict(body + b"\n", body, names, utf8=True) == verdict
    if isinstance(verdict, str) and verdict.startswith("invalid byte"):
        # Not UTF-8 for COPY (or a server of another encoding): PostgreSQL's to judge.
        assert screen.verdict(body + b"\n", body, names, utf8=False) is None
