"""Property-based tests: random CSV and NDJSON files, with good and bad records at random
places, loaded by importd (both atomic modes, small chunks) and compared with an
independent reference — Python's csv and json modules, and a plain check of which values
an int column takes. The table must hold exactly the good records, and import_job_errors
exactly the bad ones, by their source line."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importd
from tests.helpers import Conn, Drain

INT4 = (-(2**31), 2**31 - 1)
# Each example is a real import (both atomic modes, one drain, 0.15 - 0.2 s): 35 and 25
# examples keep this file at 11 - 13 s on a loaded 2-core machine (the suite's budget is
# about 15 s); the generators put every kind of trouble in most of them.
SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
EXAMPLES = settings(max_examples=35, deadline=None, suppress_health_check=SLOW)
ND_EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=SLOW)


@pytest.fixture
async def tables(conn: Conn) -> Any:
    for mode in ("t", "f"):
        await conn.execute(f"CREATE TABLE csv_{mode} (a text, b int, c text)")
        await conn.execute(f"CREATE TABLE nd_{mode} (a text, b int, n numeric, j jsonb)")
    return conn


@pytest.fixture
def run(drain: Drain, tmp_path: Path, tables: Conn) -> Any:
    conn = tables

    async def load(
        kind: str, data: bytes, **payload: Any
    ) -> dict[bool, tuple[list[Any], list[Any]]]:
        """Load ``data`` in both atomic modes; per mode, the sorted rows and error lines."""
        path = tmp_path / f"f.{kind}"
        path.write_bytes(data)
        prefix = "csv" if kind == "csv" else "nd"
        await conn.execute(f"TRUNCATE {prefix}_t, {prefix}_f, import_job_errors")
        jobs = {
            atomic: await importd.enqueue(
                conn,
                kind,
                {
                    "source": f"file://{path}",
                    "table": f"{prefix}_{'t' if atomic else 'f'}",
                    "atomic": atomic,
                    "max_errors": 10_000,
                    "chunk_rows": 10,
                    **payload,
                },
            )
            for atomic in (True, False)
        }
        code = await drain(import_roots=(str(tmp_path),), tables=("public.*",))
        out = {}
        for atomic, job_id in jobs.items():
            row = await conn.fetchrow(
                "SELECT status, last_error FROM import_jobs WHERE id = $1", job_id
            )
            assert row["status"] == "completed", (code, row["last_error"])
            table = f"{prefix}_{'t' if atomic else 'f'}"
            columns = "a, b, c" if kind == "csv" else "a, b, n::text, j::text"
            rows = sorted(tuple(r) for r in await conn.fetch(f"SELECT {columns} FROM {table}"))
            lines = [
                r["line_number"]
                for r in await conn.fetch(
                    "SELECT line_number FROM import_job_errors WHERE job_id = $1 ORDER BY 1", job_id
                )
            ]
            out[atomic] = (rows, lines)
        return out

    return load


# -- CSV ---------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab ,"\\.é\n')), min_size=1, max_size=8), st.just("\\.")
)
GOOD_B = st.integers(*INT4).map(str)
BAD_B = st.one_of(
    st.sampled_from(["x1", "1.5", "NOTINT", "99999999999", "-", "\uff11"]),
    st.integers(2**31, 2**40).map(str),
)
RECORD = st.one_of(
    st.tuples(TEXT, GOOD_B, TEXT).map(list),  # good
    st.tuples(TEXT, BAD_B, TEXT).map(list),  # bad value
    st.tuples(TEXT, GOOD_B).map(list),  # too few fields
    st.just(["\\."]),  # a line "\." alone
)


def reference_csv(text: str, header: bool) -> tuple[list[Any], list[Any]]:
    """The rows a careful CSV reader loads and the start lines of the records it rejects."""
    reader = csv.reader(io.StringIO(text, newline=""))
    good, bad = [], []
    if header:
        next(reader)
    start = reader.line_num + 1
    for record in reader:
        ok = len(record) == 3 and re.fullmatch(r"-?[0-9]+", record[1]) is not None
        if ok and INT4[0] <= int(record[1]) <= INT4[1]:
            good.append((record[0], int(record[1]), record[2]))
        else:
            bad.append(start)
        start = reader.line_num + 1
    return sorted(good), bad


@EXAMPLES
@given(
    records=st.lists(RECORD, min_size=1, max_size=60),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    header=st.booleans(),
    final_newline=st.booleans(),
)
async def test_csv_loads_exactly_the_good_records(
    run: Any, records: list[Any], newline: str, bom: bool, header: bool, final_newline: bool
) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=newline)
    if header:
        writer.writerow(["a", "b", "c"])
    for record in records:
        # Line breaks inside quoted fields are the file's own.
        writer.writerow([value.replace("\n", newline) for value in record])
    text = out.getvalue()
    if not final_newline:
        text = text[: -len(newline)]
    payload: dict[str, Any] = {} if header else {"header": False, "columns": ["a", "b", "c"]}
    got = await run("csv", (b"\xef\xbb\xbf" if bom else b"") + text.encode(), **payload)
    expected = reference_csv(text, header)
    assert got[True] == expected
    assert got[False] == expected


# -- NDJSON ------------------------------------------------------------------------------

NUMBER = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(
        lambda d: format(d, "f") if abs(d.adjusted()) < 40 else str(d)
    ),
    st.sampled_from(
        ["1E5", "0.10000000000000000000000001", "-0", "1e400", "3.14159265358979323846"]
    ),
)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBER.map(lambda t: ("num", t)), TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["k", "é", "x y"]), inner, max_size=3),
    ),
    max_leaves=6,
)


def dump(value: Any) -> str:
    """JSON text with numbers written exactly as generated."""
    if isinstance(value, tuple):
        return str(value[1])
    if isinstance(value, list):
        return "[" + ",".join(map(dump, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=bool(value and "é" in str(value)))


ND_RECORD = st.one_of(
    st.tuples(st.just("good"), TEXT, st.integers(*INT4).map(str), NUMBER, JSON_VALUE),
    st.tuples(
        st.just("bad"),
        TEXT,
        BAD_B.map(lambda b: json.dumps(b) if not b.isdigit() else b),
        NUMBER,
        JSON_VALUE,
    ),
    st.tuples(
        st.just("junk"),
        st.sampled_from(['{"a": ', "[1]", '{"a": NaN}', '"x"', '{"zz": 1}']),
        st.none(),
        st.none(),
        st.none(),
    ),
)


def reference_value(text: str | None) -> Any:
    """A JSON text's value with exact numbers; JSON null and SQL NULL alike are None."""
    return None if text is None else json.loads(text, parse_float=Decimal, parse_int=Decimal)


@ND_EXAMPLES
@given(records=st.lists(ND_RECORD, min_size=1, max_size=40), crlf=st.booleans(), bom=st.booleans())
async def test_ndjson_loads_exactly_the_good_records(
    run: Any, records: list[Any], crlf: bool, bom: bool
) -> None:
    lines = []
    for kind, a, b, n, j in records:
        if kind == "junk":
            lines.append(a)
        else:
            lines.append("{" + f'"a":{json.dumps(a)},"b":{b},"n":{n},"j":{dump(j)}' + "}")
    newline = "\r\n" if crlf else "\n"
    data = ("\ufeff" if bom else "") + newline.join(lines) + newline
    got = await run("ndjson", data.encode(), columns={c: c for c in "abnj"})
    good, bad = [], []
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line, parse_constant=lambda c: 1 / 0)
        except (ValueError, ZeroDivisionError):
            bad.append(number)
            continue
        b = obj.get("b") if isinstance(obj, dict) else None
        if (
            not isinstance(obj, dict)
            or set(obj) - set("abnj")
            or isinstance(b, bool)
            or not isinstance(b, int)
            or not INT4[0] <= b <= INT4[1]
        ):
            bad.append(number)
            continue
        raw = re.search(r'"n":([^,]*),"j":', line)
        assert raw is not None
        good.append((obj["a"], b, Decimal(raw.group(1)), reference_value(dump_j(line))))
    for atomic in (True, False):
        rows, error_lines = got[atomic]
        assert error_lines == bad
        loaded = sorted(((a, b, Decimal(n), reference_value(j)) for a, b, n, j in rows), key=repr)
        assert loaded == sorted(good, key=repr)


def dump_j(line: str) -> str:
    """The text of field j in a generated record (it is last)."""
    return line[line.index('"j":') + 4 : -1]
