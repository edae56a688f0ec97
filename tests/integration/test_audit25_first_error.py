"""Audit 25: which row ``TooManyErrors`` names first. Bad rows of a chunk are found in an
order of their own: the screen's suspects (a value that does not convert; once learned,
a NULL a NOT NULL refuses) before the rows the target refuses that the screen calls good
(``Copier._screened``, ``_raw_screened``: the rest then goes through
``CheckTable.filtered``). The message must still name the file's first bad row
(``common.Budget.count``), here a NULL refused at line 3 before a value that does not
convert at line 4, in both atomic modes, when both were found before the limit was
passed. (With ``max_errors`` 0 the limit is passed at the first row found, the suspect
at line 4, and that is the row named: the rest of the chunk is not looked at.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Conn, Drain
from tests.integration.test_audit25_harness import create_twins, run_import

DDL = "CREATE TABLE {schema}.t (k int, v int NOT NULL, w text NOT NULL)"
NULL_REFUSED = 'null value in column "v" of relation "t" violates not-null constraint'


def _text() -> str:
    records = ["1,1,a", "2,,b", "3,x,c", *(f"{i},{i},w" for i in range(4, 30))]
    return "k,v,w\n" + "\n".join(records) + "\n"


@pytest.mark.parametrize("atomic", [False, True])
async def test_too_many_errors_names_the_files_first_bad_row(
    conn: Conn, drain: Drain, tmp_path: Path, atomic: bool
) -> None:
    # Both bad rows are found before the limit is passed: the first in the file is named.
    await create_twins(conn, DDL)
    got = await run_import(conn, drain, tmp_path, "t", _text(), atomic=atomic, max_errors=1)
    assert got.status == "failed"
    assert (got.last_error or "").startswith(
        f"TooManyErrors: 2 rows rejected, more than max_errors=1; first: line 3: {NULL_REFUSED}"
    ), got.last_error
    assert [e[0] for e in got.errors] == [3, 4]
    assert got.rows == []
