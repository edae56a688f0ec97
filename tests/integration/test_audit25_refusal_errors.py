"""Audit 25: the check of NULL suspects (``CheckTable.convert``'s ``refusals``) marks the
converted suspects the target's NOT NULL and CHECK refuse by evaluating those tests on
them (``flag``), then tries each marked row into the target. A CHECK may fail to
evaluate on a row's value instead of being false: a function that cannot take it
(``array_position`` of a two-dimensional array: ``feature_not_supported``, which the
README lists among a row's refusals) or an expression that fails on it (a division by
zero). COPY of that record alone rejects it with that error; the import must do the
same, keep every other row exact, and not fail the job (``CheckFailed``) nor log an
unexpected error of the check ahead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Conn, Drain
from tests.integration.test_audit25_harness import (
    assert_exact,
    create_twins,
    reference_csv,
    run_import,
)

ARRAY = (
    "CREATE TABLE {schema}.t (k int, v int NOT NULL, "
    "a int[] CHECK (array_position(a, 5) IS NULL OR v > 0))"
)
DIVIDE = "CREATE TABLE {schema}.t (k int, v int NOT NULL, a int CHECK (100 / a > 0))"


def _array_records() -> list[str]:
    # Chunk 1 (lines 2-11) teaches the screen: a NULL v refused, and a bad value of a
    # (so that a is watched and a two-dimensional array is a suspect). The chunks after
    # it hold NULL v rows and two-dimensional arrays side by side.
    records = []
    for i in range(1, 41):
        v = "" if i in (3, 14, 25, 33) else str(i)
        a = '"{{1,2},{3,4}}"' if i in (16, 27, 34) else ("{x}" if i == 5 else "{1}")
        records.append(f"{i},{v},{a}")
    return records


def _divide_records() -> list[str]:
    records = []
    for i in range(1, 41):
        v = "" if i in (3, 14, 25, 33) else str(i)
        a = "0" if i in (16, 27, 34) else ("x" if i == 5 else "1")
        records.append(f"{i},{v},{a}")
    return records


@pytest.mark.parametrize("atomic", [False, True])
async def test_a_check_whose_function_cannot_take_a_suspects_value(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_twins(conn, ARRAY)
    records = _array_records()
    select = "k, v, a::text"
    ref = await reference_csv(conn, "t", ["k", "v", "a"], records, select=select)
    assert [ref.classes[i] for i, _ in ref.errors] == [
        "23502",
        "22P02",
        "23502",
        "0A000",
        "23502",
        "0A000",
        "23502",
        "0A000",
    ]
    got = await run_import(
        conn,
        drain,
        tmp_path,
        "t",
        "k,v,a\n" + "\n".join(records) + "\n",
        atomic=atomic,
        select=select,
    )
    assert_exact(got, ref, records)
    logged = capsys.readouterr().out
    assert "check_ahead_failed" not in logged and "import_check_failed" not in logged


@pytest.mark.parametrize("atomic", [False, True])
async def test_a_check_that_fails_to_evaluate_on_a_suspects_value(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_twins(conn, DIVIDE)
    records = _divide_records()
    ref = await reference_csv(conn, "t", ["k", "v", "a"], records)
    assert "22012" in ref.classes.values()
    got = await run_import(
        conn, drain, tmp_path, "t", "k,v,a\n" + "\n".join(records) + "\n", atomic=atomic
    )
    assert_exact(got, ref, records)
    logged = capsys.readouterr().out
    assert "check_ahead_failed" not in logged and "import_check_failed" not in logged
