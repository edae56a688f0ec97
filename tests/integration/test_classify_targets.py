"""What a target's own refusals are told as (``common.classify``): a trigger's
invalid_parameter_value (22023) for one row is that row's error, not a COPY option; a
table whose row-level security applies to importd's role fails at once saying so, and
what to change, not as a COPY option (found by an audit of issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

import importd
from tests.helpers import Conn, Drain, daemon_role


@pytest.mark.parametrize("atomic", [True, False])
async def test_a_trigger_refusing_a_row_is_not_blamed_on_copy_options(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    await conn.execute("""
        CREATE TABLE tg (k int, v text);
        CREATE FUNCTION no_sevens() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.k = 7 THEN
            RAISE EXCEPTION 'seven is not allowed' USING ERRCODE = 'invalid_parameter_value';
        END IF; RETURN NEW; END $$;
        CREATE TRIGGER no_sevens BEFORE INSERT ON tg FOR EACH ROW EXECUTE FUNCTION no_sevens();
    """)
    path = tmp_path / "t.csv"
    path.write_text("k,v\n1,a\n7,b\n9,d\n")
    job = await importd.enqueue(
        conn, "csv", {"source": f"file://{path}", "table": "tg", "atomic": atomic, "max_errors": 5}
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.tg",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    assert "change payload.delimiter" not in (row["last_error"] or ""), row["last_error"]
    assert row["status"] == "completed", row["last_error"]
    errs = await conn.fetch("SELECT line_number FROM import_job_errors WHERE job_id=$1", job)
    assert [e["line_number"] for e in errs] == [3]


async def test_a_table_with_row_level_security_is_not_told_as_copy_options(
    conn: Conn, drain: Drain, tmp_path: Path, dsn: str
) -> None:
    async with daemon_role(conn, dsn, "importd_rls", "rls-password-1") as weak:
        await conn.execute("""
            CREATE TABLE rls (k int, v text);
            ALTER TABLE rls ENABLE ROW LEVEL SECURITY;
            CREATE POLICY small ON rls FOR ALL TO importd_rls USING (true) WITH CHECK (k < 100);
            GRANT ALL ON rls TO importd_rls;
        """)
        path = tmp_path / "r.csv"
        path.write_text("k,v\n1,a\n500,b\n3,c\n")
        job = await importd.enqueue(
            conn,
            "csv",
            {"source": f"file://{path}", "table": "rls", "atomic": False, "max_errors": 5},
        )
        await drain(dsn=weak, import_roots=(str(tmp_path),), tables=("public.rls",))
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    # PostgreSQL refuses COPY FROM into a table whose row-level security applies to
    # the role (SQLSTATE 0A000, a class COPY's options errors share).
    assert row["status"] == "failed"
    assert row["last_error"].startswith(
        "RowLevelSecurity: COPY FROM not supported with row-level security"
    ), row["last_error"]
    assert "BYPASSRLS" in row["last_error"]
