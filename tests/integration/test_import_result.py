"""What an import's result holds, field by field, as the README lists it."""

from __future__ import annotations

import re
from pathlib import Path

import importd
from tests.helpers import ROOT, Conn, Drain

BASE = {"table", "rows_loaded", "rows_rejected", "bytes_read", "atomic", "duration_s"}


def _readme_sentence() -> str:
    text = " ".join((ROOT / "README.md").read_text().split())
    found = re.search(r"The result holds (.*?); `rows_done`", text)
    assert found is not None
    return found.group(1)


async def test_the_result_holds_the_fields_the_readme_lists(
    conn: Conn, drain: Drain, root: Path
) -> None:
    await conn.execute("CREATE TABLE people (id int PRIMARY KEY, age int)")
    data = "id,age\n1,11\n2,x\n3,30\n"
    (root / "p.csv").write_text(data)
    source = f"file://{root}/p.csv"
    plain = await importd.enqueue(
        conn, "csv", {"source": source, "table": "people", "max_errors": 5, "atomic": False}
    )
    assert await drain(import_roots=(str(root),), tables=("public.people",)) == 0
    await conn.execute("INSERT INTO people VALUES (4, 10)")
    (root / "q.csv").write_text("id,age\n4,11\n5,50\n")
    ignoring = await importd.enqueue(
        conn,
        "csv",
        {"source": f"file://{root}/q.csv", "table": "people", "on_conflict": "ignore"},
    )
    assert await drain(import_roots=(str(root),), tables=("public.people",)) == 0
    first = await conn.fetchval("SELECT result FROM import_jobs WHERE id = $1", plain)
    second = await conn.fetchval("SELECT result FROM import_jobs WHERE id = $1", ignoring)
    assert set(first) == BASE, first
    assert set(second) == BASE | {"rows_skipped"}, second
    assert first["table"] == "public.people" and first["atomic"] is False
    assert (first["rows_loaded"], first["rows_rejected"]) == (2, 1)
    assert first["bytes_read"] == len(data) and first["duration_s"] >= 0
    assert (second["rows_loaded"], second["rows_skipped"], second["atomic"]) == (1, 1, True)
    sentence = _readme_sentence()
    for name in BASE | {"rows_skipped"}:
        assert f"`{name}`" in sentence, name
