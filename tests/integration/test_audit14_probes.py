"""Probes of a hostile review (haudit14) of feature errors told as row errors
(``RowFeatureError``, ``as_row_error``, ``ROW_CAUSED``): what a job ends as when a
target raises feature_not_supported (0A000) from a row's CHECK or trigger, from its
row-level security, from COPY's options and from an INSERT's statement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain, daemon_role

_RAISER = """
    CREATE FUNCTION no_sevens(k int) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN IF k = 7 OR k < 0 THEN
        RAISE EXCEPTION 'sevens are not supported' USING ERRCODE = 'feature_not_supported';
    END IF; RETURN true; END $$;
"""


async def _job(
    conn: Conn,
    drain: Drain,
    tmp_path: Path,
    table: str,
    text: str,
    dsn: str | None = None,
    kind: str = "csv",
    **payload: Any,
) -> tuple[str, str | None, list[int], int]:
    """Load ``text`` into public.``table``: the job's status, last error, rejected
    lines and the rows the table holds."""
    path = tmp_path / f"t.{kind}"
    path.write_text(text)
    body = {"source": f"file://{path}", "table": table, "max_errors": 3, **payload}
    job = await importd.enqueue(conn, kind, body)
    extra = {"dsn": dsn} if dsn else {}
    await drain(import_roots=(str(tmp_path),), tables=(f"public.{table}",), **extra)
    row = await conn.fetchrow("SELECT status, last_error FROM import_jobs WHERE id=$1", job)
    lines = [
        e["line_number"]
        for e in await conn.fetch(
            "SELECT line_number FROM import_job_errors WHERE job_id=$1 ORDER BY 1", job
        )
    ]
    count = await conn.fetchval(f"SELECT count(*) FROM public.{table}")
    return row["status"], row["last_error"], lines, count


@pytest.mark.parametrize("atomic", [False, True])
@pytest.mark.parametrize("on_conflict", ["error", "ignore", "update"])
async def test_a_plpgsql_check_raising_a_feature_error_for_one_row_rejects_that_row(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, on_conflict: str
) -> None:
    await conn.execute(_RAISER + "CREATE TABLE t (k int UNIQUE, v text CHECK (no_sevens(k)));")
    extra: dict[str, Any] = {"conflict_columns": ["k"]} if on_conflict == "update" else {}
    got = await _job(
        conn,
        drain,
        tmp_path,
        "t",
        "k,v\n1,a\n7,b\n9,c\n",
        atomic=atomic,
        on_conflict=on_conflict,
        **extra,
    )
    assert got[:3] == ("completed", None, [3]), got


@pytest.mark.parametrize("atomic", [False, True])
@pytest.mark.parametrize("on_conflict", ["error", "ignore"])
async def test_a_plpgsql_check_raising_a_feature_error_for_every_row_is_too_many_errors(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, on_conflict: str
) -> None:
    await conn.execute(_RAISER + "CREATE TABLE t (k int, v text CHECK (no_sevens(k)));")
    rows = "".join(f"{-i},x\n" for i in range(1, 41))
    status, error, _lines, _ = await _job(
        conn,
        drain,
        tmp_path,
        "t",
        "k,v\n" + rows,
        atomic=atomic,
        chunk_rows=10,
        on_conflict=on_conflict,
    )
    assert status == "failed" and (error or "").startswith("TooManyErrors"), (status, error)


@pytest.mark.parametrize("atomic", [False, True])
async def test_a_trigger_raising_a_feature_error_for_one_row_rejects_that_row(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    await conn.execute("""
        CREATE TABLE tg (k int, v text);
        CREATE FUNCTION no_sevens_tg() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.k = 7 THEN
            RAISE EXCEPTION 'seven' USING ERRCODE = 'feature_not_supported';
        END IF; RETURN NEW; END $$;
        CREATE TRIGGER no_sevens BEFORE INSERT ON tg FOR EACH ROW EXECUTE FUNCTION no_sevens_tg();
    """)
    got = await _job(conn, drain, tmp_path, "tg", "k,v\n1,a\n7,b\n9,c\n", atomic=atomic)
    assert got[:3] == ("completed", None, [3]), got


@pytest.mark.parametrize("atomic", [False, True])
async def test_an_sql_function_check_raising_a_feature_error_for_one_row(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    # array_position of a two-dimensional array, inside a non-inlined SQL function.
    await conn.execute("""
        CREATE FUNCTION pos_null(a int[]) RETURNS boolean LANGUAGE sql STRICT VOLATILE
            AS 'SELECT array_position(a, NULL) IS NULL';
        CREATE TABLE t (k int, a int[] CHECK (pos_null(a)));
    """)
    text = 'k,a\n1,"{1,2}"\n2,"{{1,2},{3,4}}"\n3,"{3}"\n'
    got = await _job(conn, drain, tmp_path, "t", text, atomic=atomic)
    assert got[:3] == ("completed", None, [3]), got


@pytest.mark.parametrize("on_conflict", ["error", "ignore"])
@pytest.mark.parametrize("kind", ["csv", "ndjson"])
@pytest.mark.parametrize("atomic", [False, True])
async def test_row_level_security_still_fails_the_job_as_such(
    conn: Conn, drain: Drain, tmp_path: Path, dsn: str, atomic: bool, kind: str, on_conflict: str
) -> None:
    async with daemon_role(conn, dsn, "importd_rls14", "rls-password-14") as weak:
        await conn.execute("""
            CREATE TABLE rls (k int UNIQUE, v text);
            ALTER TABLE rls ENABLE ROW LEVEL SECURITY;
            CREATE POLICY small ON rls FOR ALL TO importd_rls14 USING (true) WITH CHECK (k < 100);
            GRANT ALL ON rls TO importd_rls14;
        """)
        text = (
            "k,v\n1,a\n500,b\n3,c\n"
            if kind == "csv"
            else '{"k":1,"v":"a"}\n{"k":500,"v":"b"}\n{"k":3,"v":"c"}\n'
        )
        got = await _job(
            conn,
            drain,
            tmp_path,
            "rls",
            text,
            dsn=weak,
            kind=kind,
            atomic=atomic,
            on_conflict=on_conflict,
        )
    if on_conflict == "error":
        assert got[0] == "failed" and (got[1] or "").startswith("RowLevelSecurity: "), got
    else:  # staged: an INSERT, which row-level security lets through or refuses by row
        assert got[0] in ("completed", "failed"), got


@pytest.mark.parametrize("atomic", [False, True])
async def test_copy_options_postgresql_refuses_still_fail_as_copy_options(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    await conn.execute("CREATE TABLE t (k int, v text)")
    got = await _job(
        conn, drain, tmp_path, "t", "k\u00e9v\n1\u00e9a\n", atomic=atomic, delimiter="\u00e9"
    )
    assert got[0] == "failed", got
    assert "CopyOptions" in (got[1] or "") or "delimiter" in (got[1] or ""), got


@pytest.mark.parametrize("on_conflict", ["ignore", "update"])
async def test_an_insert_feature_error_of_the_statement_fails_the_job(
    conn: Conn, drain: Drain, tmp_path: Path, on_conflict: str
) -> None:
    # PostgreSQL refuses ON CONFLICT on a table with an INSERT rule (0A000) whatever the
    # row: the statement's error, not each row's.
    await conn.execute("""
        CREATE TABLE t (k int UNIQUE, v text);
        CREATE TABLE t_log (k int);
        CREATE RULE log_t AS ON INSERT TO t DO ALSO INSERT INTO t_log VALUES (NEW.k);
    """)
    rows = "".join(f"{i},x\n" for i in range(1, 21))
    got = await _job(
        conn,
        drain,
        tmp_path,
        "t",
        "k,v\n" + rows,
        on_conflict=on_conflict,
        conflict_columns=["k"],
        max_errors=100,
    )
    assert got[0] == "failed", got
    assert (
        "payload.on_conflict: INSERT with ON CONFLICT clause cannot be used with table that "
        "has INSERT or UPDATE rules; importd moves rows with INSERT … ON CONFLICT"
    ) in (got[1] or ""), got
    assert got[2] == [], got


@pytest.mark.parametrize("atomic", [False, True])
@pytest.mark.parametrize("on_conflict", ["error", "ignore"])
async def test_ndjson_a_plpgsql_check_raising_a_feature_error_for_one_row(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool, on_conflict: str
) -> None:
    await conn.execute(_RAISER + "CREATE TABLE t (k int UNIQUE, v text CHECK (no_sevens(k)));")
    text = '{"k":1,"v":"a"}\n{"k":7,"v":"b"}\n{"k":9,"v":"c"}\n'
    got = await _job(
        conn, drain, tmp_path, "t", text, kind="ndjson", atomic=atomic, on_conflict=on_conflict
    )
    assert got[:3] == ("completed", None, [2]), got
