"""Applying and checking the schema migrations in ``sql/migrations``.

Each migration runs in its own transaction, under a transaction-level advisory lock so that any
number of ``importd migrate`` started at once apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import structlog

from . import db, sql
from .db import Conn, Connection

log = structlog.get_logger("importd.migrate")

# pg_advisory_lock key: the bytes of "importd" plus a zero, read as a bigint.
ADVISORY_LOCK_KEY = int.from_bytes(b"importd\x00", "big", signed=True)


class SchemaMismatch(Exception):
    """The database schema is older or newer than this version of importd knows."""


@dataclass(frozen=True)
class SchemaState:
    """What the database holds compared with what this code ships."""

    applied: dict[int, str] = field(default_factory=dict)  # version -> checksum
    pending: list[str] = field(default_factory=list)  # names, in order
    unknown: list[int] = field(default_factory=list)  # versions newer than the code
    edited: list[str] = field(default_factory=list)  # applied, but the file changed since

    @property
    def current(self) -> bool:
        """Whether code and database agree exactly."""
        return not self.pending and not self.unknown

    def describe(self) -> str:
        """One line for an operator."""
        if self.unknown:
            return (
                f"the database schema is newer than this importd (unknown migrations "
                f"{self.unknown}); upgrade importd"
            )
        if self.pending:
            return (
                f"the database schema is behind: {len(self.pending)} pending migration(s) "
                f"({', '.join(self.pending)}); run 'importd migrate'"
            )
        return f"schema current at version {max(self.applied, default=0)}"


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def inspect(conn: Conn) -> SchemaState:
    """Compare the migrations recorded in the database with those shipped."""
    exists = await conn.fetchval(sql.query("find_migrations_table"))
    applied: dict[int, str] = {}
    if exists:
        rows = await conn.fetch(sql.query("applied_migrations"))
        applied = {row["version"]: row["checksum"] for row in rows}
    shipped = sql.migrations()
    known = {version for version, _, _ in shipped}
    return SchemaState(
        applied=applied,
        pending=[name for version, name, _ in shipped if version not in applied],
        unknown=sorted(v for v in applied if v not in known),
        edited=[
            name
            for version, name, text in shipped
            if version in applied and applied[version] != _checksum(text)
        ],
    )


async def verify(conn: Conn) -> SchemaState:
    """Raise SchemaMismatch unless the database is exactly at this code's version."""
    state = await inspect(conn)
    if not state.current:
        raise SchemaMismatch(state.describe())
    return state


async def apply(conn: Connection) -> list[str]:
    """Apply every pending migration on ``conn``; returns the names applied.

    Each migration's transaction first takes a transaction-level advisory lock and looks
    again at what is applied, so concurrent ``importd migrate`` runs apply each migration
    once; no session state outlives a transaction, so this works through a
    transaction-mode pooler too."""
    done: list[str] = []
    async with conn.transaction():
        await conn.execute(sql.query("lock_migrations"), ADVISORY_LOCK_KEY)
        await conn.execute(sql.query("create_migrations_table"))
        found = await db.one(conn, "find_pg_net_design")
        if found["functions"]:
            # The trigger that called pg_net goes in the same transaction as the
            # functions: from the commit on, no insert calls pg_net.
            await conn.execute(sql.query("replace_pg_net_design"))
            log.info(
                "pg_net_design_replaced",
                dropped=list(found["functions"]),
                renamed={t: f"{t}_pg_net" for t in found["tables"]},
            )
    for version, name, text in sql.migrations():
        async with conn.transaction():
            await conn.execute(sql.query("lock_migrations"), ADVISORY_LOCK_KEY)
            state = await inspect(conn)
            if state.unknown:
                raise SchemaMismatch(state.describe())
            if version in state.applied:
                continue
            await conn.execute(text)
            await conn.execute(sql.query("record_migration"), version, name, _checksum(text))
        log.info("migration_applied", version=version, migration=name)
        done.append(name)
    return done
