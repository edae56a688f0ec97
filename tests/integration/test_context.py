"""What a handler gets: its context module stands apart from the daemon, and the context
a running handler sees carries no DSN, secret or daemon internals."""

from __future__ import annotations

import subprocess
import sys

import importd
from tests.helpers import Conn, Drain, importd_env


def _imported_by(statement: str) -> set[str]:
    """The importd modules a fresh interpreter has loaded after ``statement``."""
    script = f"{statement}\nimport sys\nprint(' '.join(m for m in sys.modules if 'importd' in m))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=importd_env(),
    ).stdout
    return set(out.split())


def test_the_context_and_the_public_api_do_not_import_the_daemon() -> None:
    internals = {"importd.executor", "importd.daemon", "importd.worker", "importd.guard"}
    for statement in (
        "import importd.context",
        "import importd",
        "import importd.handlers.http, importd.handlers.noop, importd.handlers.imports",
    ):
        loaded = _imported_by(statement)
        assert "importd.context" in loaded
        assert not loaded & internals, (statement, sorted(loaded & internals))


async def test_a_handler_context_reaches_no_dsn_nor_daemon_internals(
    conn: Conn, drain: Drain, dsn: str
) -> None:
    password = "pw-" + "x" * 12
    listen = dsn + ("&" if "?" in dsn else "?") + f"options=-c%20application_name%3D{password}"
    job_id = await importd.enqueue(conn, "introspect", {"needles": [dsn, password, "w-name"]})
    assert await drain(listen_dsn=listen, worker_name="w-name") == 0
    seen = await conn.fetchval("SELECT result FROM import_jobs WHERE id = $1", job_id)
    assert seen["found"] == []  # neither DSN, nor the daemon's name
    names = seen["context"] + seen["own"]
    assert not [name for name in names if "dsn" in name.lower()]
    assert {"worker_id", "_repo", "_metrics"}.isdisjoint(names)
    assert {"job", "pool", "http", "log", "settings", "deadline", "remaining"} <= set(
        seen["context"]
    )
    assert {"progress", "complete_in", "save_checkpoint"} <= set(seen["context"])
    assert seen["settings"] == sorted(
        (
            "import_roots",
            "url_prefixes",
            "tables",
            "http_url",
            "http_token",
            "http_token_prefixes",
            "copy_chunk_rows",
            "copy_chunk_bytes",
            "max_record_bytes",
            "copy_streams",
        )
    )
