"""audit18: handlers that raise what is no ``Exception`` (GeneratorExit, a
``BaseException`` of their own, from an ``async def`` or a thread), exceptions whose
``str()`` fails, a ``SystemExit`` whose code has no repr, a result whose iteration
raises: each run must end as a failed attempt with a clear error on the job, never leave
the job ``running`` under a lease nobody keeps (the drain used to exit 0, "every job
completed", with the job stranded)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import importd
from tests.helpers import Conn, Drain


class OwnBase(BaseException):
    """A BaseException of the handler's own, as some libraries define."""


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this error")


class NotTextError(Exception):
    def __str__(self) -> Any:
        return 42  # noqa: PLE0307  (str() raises TypeError on it)


class NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Exploding(list[int]):
    def __iter__(self) -> Any:
        raise RuntimeError("cannot iterate this result")


@importd.handler("audit18_generator_exit")
async def generator_exit(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise GeneratorExit


@importd.handler("audit18_own_base")
async def own_base(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise OwnBase("a base exception of its own")


@importd.handler("audit18_sync_own_base")
def sync_own_base(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise OwnBase("from a thread")


@importd.handler("audit18_unprintable")
async def unprintable(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise UnprintableError


@importd.handler("audit18_not_text")
async def not_text(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise NotTextError


@importd.handler("audit18_exit_no_repr")
async def exit_no_repr(job: importd.Job, ctx: importd.JobContext) -> Any:
    raise SystemExit(NoRepr())


@importd.handler("audit18_exploding_result")
async def exploding_result(job: importd.Job, ctx: importd.JobContext) -> Any:
    return {"rows": Exploding([1, 2])}


CASES = {
    "audit18_generator_exit": "GeneratorExit",
    "audit18_own_base": "OwnBase: a base exception of its own",
    "audit18_sync_own_base": "OwnBase: from a thread",
    "audit18_unprintable": "UnprintableError",
    "audit18_not_text": "NotTextError",
    "audit18_exit_no_repr": "HandlerExited",
    "audit18_exploding_result": "ResultNotJSON",
}


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_an_odd_exception_fails_the_attempt_with_a_clear_error(
    conn: Conn, drain: Drain, kind: str
) -> None:
    job = await importd.enqueue(conn, kind, {}, max_attempts=1)
    code = await asyncio.wait_for(drain(handlers=(__name__,)), 60)
    row = await conn.fetchrow(
        "SELECT status, attempts, locked_by, last_error FROM import_jobs WHERE id = $1", job
    )
    assert (row["status"], row["attempts"], row["locked_by"]) == ("failed", 1, None), dict(row)
    assert CASES[kind] in row["last_error"], row["last_error"]
    assert code == 10  # a job failed for good
