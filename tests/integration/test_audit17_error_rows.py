"""Audit 17: a registered secret in a rejected row reached ``import_job_errors`` as it was:
its ``message`` (PostgreSQL quotes the bad value) and its ``raw_record``. ``importd show``
and the dashboard mask it when they print the row, but the row itself is read by
anyone with SELECT on the table. A job's ``last_error`` in the same run is masked; its
error rows must be too (the registered values, at least)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import importd

TOKEN = "tok-" + "Audit17Secret" * 2


@pytest.mark.parametrize("atomic", [True, False])
async def test_a_registered_secret_in_a_rejected_row_is_masked_in_its_error_row(
    conn: Any, drain: Any, tmp_path: Path, atomic: bool
) -> None:
    await conn.execute("CREATE TABLE counts (id int, n int)")
    source = tmp_path / "counts.csv"
    source.write_text(f"id,n\n1,2\n2,{TOKEN}\n3,4\n")
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": f"file://{source}", "table": "counts", "max_errors": 5, "atomic": atomic},
    )
    assert (
        await drain(import_roots=(str(tmp_path),), tables=("public.counts",), http_token=TOKEN) == 0
    )
    (error,) = await conn.fetch(
        "SELECT line_number, message, raw_record FROM import_job_errors WHERE job_id = $1",
        job_id,
    )
    assert error["line_number"] == 3
    assert "invalid input syntax for type integer" in error["message"]
    assert TOKEN not in error["message"], error["message"]
    assert TOKEN not in (error["raw_record"] or ""), error["raw_record"]
    assert (error["raw_record"] or "").startswith("2,")
    assert await conn.fetchval("SELECT count(*) FROM counts") == 2
