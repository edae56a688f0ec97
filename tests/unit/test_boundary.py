"""The database boundary (docs/ARCHITECTURE.md, "The database boundary"), read from the
source: which modules import asyncpg, and that SQL text lives in ``sql/``, not in Python.

A change that breaks the boundary fails here with the module and line to look at."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from importd import sql

PACKAGE = Path(__file__).resolve().parents[2] / "importd"

# The modules that import asyncpg, and why (the package docstring says the same).
ASYNCPG_ALLOWED = {
    "importd.db": "the connector: pools, connections, codecs, the error classes",
    "importd.handlers.imports": "COPY, and the error classes a rejected row raises",
}

# A string that starts like one of these is SQL: a statement keyword in upper case, then
# what follows it in a statement (upper-case words, a name, a parenthesis, a "*").
_SQL_START = re.compile(
    r"""^\s*(?:
        SELECT\s+(?:[\w*"(]|\$\d) | INSERT\s+INTO\s | UPDATE\s+[\w".]+\s+SET\s
        | DELETE\s+FROM\s | WITH\s+(?:RECURSIVE\s+)?\w+\s+AS\b
        | (?:CREATE|ALTER|DROP)\s+(?:OR\s+REPLACE\s+|UNIQUE\s+|TEMP(?:ORARY)?\s+|UNLOGGED\s+)*
          (?:TABLE|INDEX|SCHEMA|DATABASE|FUNCTION|TRIGGER|VIEW|ROLE|EXTENSION|SEQUENCE|TYPE)
          \s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?[\w".]+
        | TRUNCATE\s+(?:TABLE\s+)?[\w".]+\s*(?:;|$|RESTART|CASCADE)
        | (?:UN)?LISTEN\s+[\w"*]+\s*(?:;|$) | NOTIFY\s+[\w"]+\s*(?:,|;|$)
        | SET\s+(?:LOCAL\s+|SESSION\s+)?\w+\s*(?:=|TO\s)
        | RESET\s+[\w.]+\s*(?:;|$) | SAVEPOINT\s+\w+ | RELEASE\s+SAVEPOINT\s+\w+
        | ROLLBACK\s*(?:;|$|TO\s) | (?:BEGIN|COMMIT)\s*(?:;|$)
        | COPY\s+[\w".]+\s*(?:\(|FROM\s|TO\s) | DO\s+\$
        | (?:GRANT|REVOKE)\s+[\w, ]+\s(?:ON|TO|FROM)\s
    )""",
    re.VERBOSE,
)

# SQL text that stays in Python, each with its reason (keep this list short).
SQL_ALLOWED = {
    # CREATE DATABASE cannot run in a transaction block, so no DO block can quote the
    # name with format('%I'); the name is a constant. Commented where it is.
    ("importd.daemon", "CREATE DATABASE"),
    # The savepoints of bad-row isolation stay, on purpose: after each group of rows that
    # loads while bad rows are isolated (isolating.Isolation._settle),
    # "RELEASE SAVEPOINT importd_try; SAVEPOINT importd_try" goes as ONE simple-protocol
    # message (one round trip); a sql/queries file holds one statement, so moving it means
    # two files and a second round trip per group. The other three belong to the same
    # protocol and stay beside it. No input reaches them: the name is a constant (_TRY).
    ("importd.handlers.imports.copying", "SAVEPOINT"),
    ("importd.handlers.imports.copying", "RELEASE SAVEPOINT"),
    ("importd.handlers.imports.copying", "ROLLBACK TO SAVEPOINT"),
    # The same protocol where the check and the refused rows' COPY fall back (moved out
    # of copying with them): the chunk's savepoint, and one each around the check's
    # INSERT and the probe of a CHECK's immutability.
    ("importd.handlers.imports.checking", "SAVEPOINT"),
    ("importd.handlers.imports.checking", "RELEASE SAVEPOINT"),
    ("importd.handlers.imports.checking", "ROLLBACK TO SAVEPOINT"),
    ("importd.handlers.imports.ahead", "SAVEPOINT"),
    ("importd.handlers.imports.isolating", "RELEASE SAVEPOINT"),
    ("importd.handlers.imports.isolating", "ROLLBACK TO SAVEPOINT"),
}


def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, ast.parse(path.read_text(encoding="utf-8"), str(path))))
    return found


def _allowed(name: str, allowed: dict[str, str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def _imports_asyncpg(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Import)
            and any(a.name.split(".")[0] == "asyncpg" for a in node.names)
        ) or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "asyncpg"):
            lines.append(node.lineno)
    return lines


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes: prose, never statements."""
    ids = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
        ):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _sql_strings(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of each string literal that opens like a SQL statement; an f-string
    is read with a name in place of each replacement field."""
    prose = _docstrings(tree)
    parts = {
        id(value)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for value in node.values
    }
    found = []
    for node in ast.walk(tree):
        text = None
        if not isinstance(node, ast.expr):
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "x"
                for v in node.values
            )
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in prose
            and id(node) not in parts
        ):
            text = node.value
        if text is not None and _SQL_START.match(text):
            found.append((node.lineno, text.strip().splitlines()[0]))
    return found


def test_only_the_connector_and_copy_import_asyncpg() -> None:
    offenders = [
        f"{name}:{line}"
        for name, tree in _modules()
        if not _allowed(name, ASYNCPG_ALLOWED)
        for line in _imports_asyncpg(tree)
    ]
    assert offenders == [], "import asyncpg outside the boundary (take the types from db)"


def test_the_allowed_modules_still_need_their_exception() -> None:
    # An entry nobody needs any more is a hole in the rule: drop it.
    trees = dict(_modules())
    for allowed in ASYNCPG_ALLOWED:
        needing = [
            n for n, t in trees.items() if _allowed(n, {allowed: ""}) and _imports_asyncpg(t)
        ]
        assert needing, f"{allowed} no longer imports asyncpg: remove it from the list"


def test_no_sql_text_in_python() -> None:
    offenders = []
    used = set()
    for name, tree in _modules():
        for line, text in _sql_strings(tree):
            key = next(
                (k for k in SQL_ALLOWED if k[0] == name and text.lstrip().startswith(k[1])), None
            )
            if key is None:
                offenders.append(f"{name}:{line}: {text}")
            else:
                used.add(key)
    assert offenders == [], "SQL text in Python: move it to sql/queries/<verb_object>.sql"
    assert used == SQL_ALLOWED, f"allowed SQL no longer found: {SQL_ALLOWED - used}"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 1",
        "SELECT pg_notify($1, $2)",
        'SELECT count(*) FROM "people"',
        "  INSERT INTO public.importd_migrations (version) VALUES ($1)",
        "UPDATE import_jobs SET status = 'pending'",
        "DELETE FROM import_jobs",
        "WITH picked AS (SELECT 1) SELECT * FROM picked",
        "\nCREATE TABLE IF NOT EXISTS public.importd_migrations (",
        "CREATE UNLOGGED TABLE x (a int)",
        'CREATE DATABASE "importd"',
        "ALTER TABLE import_jobs ENABLE TRIGGER t",
        "DROP INDEX x",
        "SET DateStyle = 'ISO, YMD'",
        "SET TimeZone TO 'UTC'",
        "RESET importd.notify",
        "LISTEN importd",
        "NOTIFY importd, 'x'",
        "SAVEPOINT importd_try",
        "RELEASE SAVEPOINT importd_try",
        "ROLLBACK TO SAVEPOINT importd_try",
        "COPY people (id) FROM STDIN",
        "DO $$ BEGIN END $$",
        "TRUNCATE importd_staging.job_1",
        "RELEASE SAVEPOINT x; SAVEPOINT x",
        "BEGIN",
        "GRANT SELECT ON import_jobs TO importd",
    ],
)
def test_the_check_sees_statements(text: str) -> None:
    assert _SQL_START.match(text)


@pytest.mark.parametrize(
    "text",
    [
        "select the rows",  # prose in lower case
        "SELECT, INSERT and UPDATE on the table",  # a privilege list in a message
        "INSERT",
        "COPY chunk failed",
        "COPY line 3",
        "LISTEN for notifications (false: poll only)",
        "ALTER the table by hand",
        "DROP the staging tables by hand",
        "RESET the counters",
        "RELEASE notes",
        "NOTIFY the operator when done",
        "TRUNCATE TABLE rights are needed",
        "GRANT access",
        "CREATE permission is missing",
        "DELETE them by hand",
        "UPDATE the settings",
        "SET up the listener",
        "ROLLBACK_THING",
        "Begin here",
        "with the table",
    ],
)
def test_the_check_leaves_messages_alone(text: str) -> None:
    assert not _SQL_START.match(text)


def test_every_query_file_the_code_names_exists() -> None:
    # sql.query("name") with a literal name: a typo would fail only when that path runs.
    names: set[str] = set()
    for _name, tree in _modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "query"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "sql"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    assert names, "no sql.query call found: the check reads the wrong files"
    for name in sorted(names):
        assert sql.query(name).strip(), name
