"""Every statement about jobs: enqueue, claim, heartbeat, finish, rescue.

The SQL lives in ``sql/queries``; this module binds parameters and shapes results.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from . import migrate, sql, tables
from .db import Conn, Pool, Record
from .db import one as _one
from .lanes import Lane
from .models import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT_S,
    Job,
    Outcome,
    Status,
)
from .redaction import clean_text, mask, redact, redact_value


@dataclass(frozen=True, slots=True, init=False)
class NewJob:
    """One job to enqueue; the defaults match the table's column defaults."""

    kind: str
    payload: dict[str, Any]
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    run_at: datetime | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT_S
    dedup_key: str | None = None
    tenant_id: str | None = None

    def __init__(
        self,
        kind: str,
        payload: dict[str, Any],
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        run_at: datetime | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float = DEFAULT_TIMEOUT_S,
        dedup_key: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        # The generated __init__ of a frozen dataclass goes through object.__setattr__
        # once per field: 2.5 µs per job, more than enqueue_many's own work per job. The
        # slots' own setters do the same in 1.5 (the signature is the generated one;
        # tests/unit/test_new_job.py compares them).
        _set_kind(self, kind)
        _set_payload(self, payload)
        _set_queue(self, queue)
        _set_priority(self, priority)
        _set_run_at(self, run_at)
        _set_max_attempts(self, max_attempts)
        _set_timeout(self, timeout)
        _set_dedup_key(self, dedup_key)
        _set_tenant_id(self, tenant_id)


(
    _set_kind,
    _set_payload,
    _set_queue,
    _set_priority,
    _set_run_at,
    _set_max_attempts,
    _set_timeout,
    _set_dedup_key,
    _set_tenant_id,
) = (vars(NewJob)[field.name].__set__ for field in dataclasses.fields(NewJob))


async def enqueue_many(conn: Conn, jobs: Iterable[NewJob]) -> list[int]:
    """Insert ``jobs`` in one statement on ``conn`` (inside its transaction, if any) and
    return their ids in order. A job whose ``dedup_key`` belongs to an unfinished job gets
    that job's id instead of a new row.

    The payloads are encoded in one call, as one JSON array, and every other column travels
    as one typed array (no per-row parameters, no statement text that grows with the
    batch). A batch without dedup keys is a plain ``INSERT ... SELECT FROM unnest(...)``
    whose constant columns (one kind, queue, priority... for the whole batch) travel once,
    and whose ids come back as one array: it costs about what a ``COPY`` of the same rows
    costs (``bench/daemon.py``). A batch with a dedup key pays for the lookups."""
    batch = list(jobs)
    if not batch:
        return []
    for job in batch:
        if type(job.payload) is not dict and not isinstance(job.payload, dict):
            raise TypeError(
                f"a job payload must be a JSON object (dict), not {type(job.payload).__name__}"
            )
    if all(job.dedup_key is None for job in batch):
        ids: list[int] = await conn.fetchval(
            sql.query("insert_jobs"),
            *(_once_if_constant(c) if isinstance(c, list) else c for c in _columns(batch)),
        )
        return ids
    found: list[int | None] = await conn.fetchval(
        sql.query("enqueue_jobs"), *_columns(batch), [job.dedup_key for job in batch]
    )
    # A dedup key that a concurrent, just-committed transaction took is invisible to the
    # statement's snapshot (its id comes back NULL, its row was not inserted): ask again
    # for those rows alone (the others are in), and the next snapshot sees the holder.
    for _ in range(5):
        missing = [i for i, job_id in enumerate(found) if job_id is None]
        if not missing:
            return cast(list[int], found)
        again = [batch[i] for i in missing]
        retried: list[int | None] = await conn.fetchval(
            sql.query("enqueue_jobs"), *_columns(again), [job.dedup_key for job in again]
        )
        for i, job_id in zip(missing, retried, strict=True):
            found[i] = job_id
    raise RuntimeError("enqueue: a dedup key kept changing hands; try again")


def _columns(batch: list[NewJob]) -> list[Any]:
    """The statement's parameters $1..$8 for ``batch``: one list per column, and the
    payloads as one JSON array (one encoder call for the whole batch: a call per payload
    cost ten times as much)."""
    return [
        [job.kind for job in batch],
        [job.queue for job in batch],
        [job.tenant_id for job in batch],
        json.dumps([job.payload for job in batch]),
        [job.priority for job in batch],
        [job.run_at for job in batch],
        [job.max_attempts for job in batch],
        [float(job.timeout) for job in batch],
    ]


def _once_if_constant(values: list[Any]) -> list[Any]:
    """``values``, or its first value alone when every value is equal to it (see
    insert_jobs.sql): a column that is the same for the whole batch travels once."""
    first = values[0]
    # list.count compares in C, and an object with itself without calling __eq__.
    if values.count(first) == len(values):
        return [first]
    return values


async def enqueue(
    conn: Conn,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = DEFAULT_PRIORITY,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT_S,
    dedup_key: str | None = None,
    tenant_id: str | None = None,
) -> int:
    """Insert one job on ``conn`` (inside the caller's transaction, so the job and its
    notification commit or roll back with it) and return its id."""
    new = NewJob(
        kind=kind,
        payload=payload if payload is not None else {},
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        timeout=timeout,
        dedup_key=dedup_key,
        tenant_id=tenant_id,
    )
    (job_id,) = await enqueue_many(conn, [new])
    return job_id


def _job(row: Record) -> Job:
    """The run a claimed row describes. Positional, in ``Job``'s field order: on every
    claimed job, keywords cost half as much again as the fields themselves
    (tests/unit/test_hot_path.py checks each field against its column)."""
    return Job(
        row["id"],  # id
        row["kind"],  # kind
        row["queue"],  # queue
        row["tenant_id"],  # tenant_id
        row["payload"],  # payload
        row["priority"],  # priority
        row["run_at"],  # run_at
        row["attempts"],  # attempt
        row["max_attempts"],  # max_attempts
        row["timeout_s"],  # timeout
        row["created_at"],  # created_at
        row["rows_done"],  # rows_done
        row["rows_failed"],  # rows_failed
        row["rows_total"],  # rows_total
        row["checkpoint"],  # checkpoint
        max(row["waited_s"], 0.0),  # waited
    )


@dataclass(frozen=True, slots=True)
class RowFailure:
    """A source record the import rejected."""

    line: int | None
    message: str
    raw: str | None


async def save_checkpoint(
    conn: Conn,
    job: Job,
    worker_id: str,
    checkpoint: dict[str, Any],
    *,
    rows_done: int,
    rows_failed: int,
    bytes_read: int,
    rows_total: int | None = None,
) -> bool:
    """Store ``checkpoint`` and the counters in ``conn``'s transaction, fenced by the lease;
    False when the lease is lost (the caller must roll back)."""
    row = await conn.fetchrow(
        sql.query("save_checkpoint"),
        job.id,
        worker_id,
        job.attempt,
        json.dumps(checkpoint),
        rows_done,
        rows_failed,
        bytes_read,
        rows_total,
    )
    return row is not None


async def count_failures(conn: Conn, job_id: int) -> int:
    """How many row-level errors ``job_id`` has recorded."""
    return int(await conn.fetchval(sql.query("count_job_errors"), job_id))


async def record_failures(conn: Conn, job: Job, failures: Sequence[RowFailure]) -> None:
    """Insert row-level errors of ``job``: each message redacted as a job's error is (it
    quotes the bad value), each record with the registered secrets masked (the rest of
    it is the user's data, kept to be fixed and loaded again)."""
    if failures:
        await conn.execute(
            sql.query("insert_job_errors"),
            job.id,
            job.attempt,
            [f.line for f in failures],
            [row_message(f.message) for f in failures],
            [None if f.raw is None else mask(f.raw) for f in failures],
        )


def shown_errors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rejected rows for a reader (``importd show``, the dashboard, the CSV): every field
    redacted again (a row written before, or by another tool), the message as it was
    stored (``row_message``)."""
    shown = []
    for row in rows:
        fields = {key: redact_value(value) for key, value in row.items() if key != "message"}
        if isinstance(row.get("message"), str):
            fields["message"] = row_message(row["message"])
        shown.append({key: fields.get(key, row[key]) for key in row})  # (the row's order)
    return shown


def row_message(message: str) -> str:
    """A row error's message, redacted with its "column NAME: " apart: a column named
    like a key (``token``, ``api_key``) is no key before a secret there, and masking all
    that followed it hid the reason ("column token: ***"). The value the reason quotes
    is the record's own, stored beside it."""
    if message.startswith("column "):
        name, sep, reason = message[7:].partition(": ")
        if sep:
            # (mask: a registered secret that spans the split is masked whole.)
            return mask(f"column {redact(name)}: {redact(reason)}")
    return redact(message)


async def forget_failures(conn: Conn, job_id: int) -> None:
    """Delete the row-level errors of ``job_id``."""
    await conn.execute(sql.query("delete_job_errors"), job_id)


async def finish_runs(conn: Conn, worker_id: str, runs: Sequence[tuple[Job, Outcome]]) -> set[int]:
    """Write the outcomes of ``runs``; returns the ids whose lease still held (the
    others were rescued or cancelled meanwhile and are left untouched)."""
    if not runs:
        return set()
    if all(
        outcome.status is Status.COMPLETED and not outcome.refund and outcome.progress is None
        for _, outcome in runs
    ):
        return await _finish_completed(conn, worker_id, runs)
    ids, attempts, statuses, errors, delays, refunds = [], [], [], [], [], []
    progress: dict[str, list[int | None]] = {key: [] for key in PROGRESS_COLUMNS}
    results: list[str | None] = []
    for job, outcome in runs:
        ids.append(job.id)
        attempts.append(job.attempt)
        statuses.append(str(outcome.status))
        # Every result and error reaches the row through redaction, whatever the
        # handler put in it (an endpoint's echo of the token, a DSN in a message);
        # an error is also cleaned of what a text column cannot hold. A result the
        # executor checked comes encoded (and redacted) already.
        result = outcome.encoded
        if result is None and outcome.result is not None:
            result = json.dumps(redact_value(outcome.result))
        results.append(result)
        errors.append(clean_text(outcome.error) if outcome.error is not None else None)
        delays.append(float(outcome.delay))
        refunds.append(outcome.refund)
        reported = outcome.progress or {}
        for key, values in progress.items():
            values.append(reported.get(key))
    rows = await conn.fetch(
        sql.query("finish_jobs"),
        worker_id,
        ids,
        attempts,
        statuses,
        results,
        errors,
        delays,
        refunds,
        *progress.values(),
    )
    return {row["id"] for row in rows}


async def _finish_completed(
    conn: Conn, worker_id: str, runs: Sequence[tuple[Job, Outcome]]
) -> set[int]:
    """``finish_runs`` of a batch whose runs all completed: the same write, fewer arrays."""
    ids, attempts, results = [], [], []
    for job, outcome in runs:
        ids.append(job.id)
        attempts.append(job.attempt)
        result = outcome.encoded
        if result is None and outcome.result is not None:
            result = json.dumps(redact_value(outcome.result))
        results.append(result)
    rows = await conn.fetch(sql.query("finish_completed"), worker_id, ids, attempts, results)
    return {row["id"] for row in rows}


# The job row's progress columns, as ``JobContext.progress`` names them.
PROGRESS_COLUMNS = ("rows_done", "rows_total", "rows_failed", "bytes_read")


async def renew_leases(
    conn: Conn, worker_id: str, beats: Sequence[tuple[Job, float, dict[str, int | None]]]
) -> set[int]:
    """For each ``(job, lease_s, progress)``: store the progress and keep the lease at
    least ``lease_s`` seconds ahead. Returns the ids whose lease still holds."""
    if not beats:
        return set()
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    for job, lease_s, progress in beats:
        values = (job.id, job.attempt, lease_s, *(progress.get(c) for c in PROGRESS_COLUMNS))
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await conn.fetch(sql.query("heartbeat_jobs"), worker_id, *columns)
    return {row["id"] for row in rows}


async def run_state(conn: Conn, job_id: int) -> Record | None:
    """The fields of one job that say how its last run ended (status, attempts, lease,
    last error): to tell a write whose reply was lost from a lost lease."""
    return await conn.fetchrow(sql.query("run_state"), job_id)


class Repository:
    """The daemon's statements, on its pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def claim(
        self,
        limit: int,
        worker_id: str,
        *,
        queues: Sequence[str] | None,
        kinds: Sequence[str] | None,
        lease_margin: float,
    ) -> list[Job]:
        """Lease up to ``limit`` runnable jobs to ``worker_id``, in claim order."""
        lane = Lane(tuple(queues) if queues else None, tuple(kinds) if kinds else None)
        jobs, _ = await self.claim_lane(lane, limit, worker_id, lease_margin=lease_margin)
        return jobs

    async def claim_lane(
        self,
        lane: Lane,
        limit: int,
        worker_id: str,
        *,
        lease_margin: float,
        fair: bool = False,
        tenant_cap: int | None = None,
    ) -> tuple[list[Job], float | None]:
        """Lease up to ``limit`` runnable jobs of ``lane`` to ``worker_id``, in the order
        they were picked (a fair claim walks on from ``lane.cursor``; the caller moves
        the cursor). The second value is set when the lane's rate limit held jobs back:
        the seconds until it allows the next start."""
        if lane.rate is None:
            return await self._claim(
                self.pool, lane, limit, worker_id, lease_margin, fair, tenant_cap
            ), None
        rate = lane.rate
        async with self.pool.acquire() as conn, conn.transaction():
            taken = await conn.fetchrow(sql.query("rate_take"), rate.key, rate.interval, rate.burst)
            if taken is None:  # the row is made at start-up; a new limit made meanwhile
                await conn.execute(sql.query("rate_ensure"), [rate.key])
                taken = await _one(conn, "rate_take", rate.key, rate.interval, rate.burst)
            allowed = min(limit, taken["allowed"])
            jobs: list[Job] = []
            if allowed > 0:
                jobs = await self._claim(
                    conn, lane, allowed, worker_id, lease_margin, fair, tenant_cap
                )
            next_in = await conn.fetchval(
                sql.query("rate_spend"), rate.key, taken["at"], rate.interval, len(jobs), rate.burst
            )
        # Held back only if the limit, not a lack of jobs, stopped the claim.
        held = allowed < limit and len(jobs) == allowed
        return jobs, (max(next_in, 0.0) if held else None)

    async def _claim(
        self,
        conn: Conn,
        lane: Lane,
        limit: int,
        worker_id: str,
        lease_margin: float,
        fair: bool,
        tenant_cap: int | None,
    ) -> list[Job]:
        filters = (
            list(lane.queues) if lane.queues is not None else None,
            list(lane.kinds) if lane.kinds is not None else None,
        )
        skips = (
            list(lane.skip_queues) if lane.skip_queues else None,
            list(lane.skip_kinds) if lane.skip_kinds else None,
        )
        if not fair and tenant_cap is None:
            rows = await conn.fetch(
                sql.query("claim_jobs"), limit, worker_id, *filters, lease_margin, *skips
            )
            jobs = [_job(row) for row in rows]
            jobs.sort(key=lambda j: (j.priority, j.run_at, j.id))
            return jobs
        after_queue, after_tenant = lane.cursor or (None, None)
        rows = await conn.fetch(
            sql.query("claim_fair"),
            limit,
            worker_id,
            lease_margin,
            *filters,
            *skips,
            tenant_cap,
            after_queue,
            after_tenant,
        )
        return [_job(row) for row in rows]

    async def ensure_rate_limits(self, keys: Sequence[str]) -> None:
        """Create the shared rows of these rate limits (idle) if they do not exist."""
        if keys:
            await self.pool.execute(sql.query("rate_ensure"), list(keys))

    async def next_due_in(
        self,
        *,
        queues: Sequence[str] | None,
        kinds: Sequence[str] | None,
        skip_queues: Sequence[str] | None = None,
        skip_kinds: Sequence[str] | None = None,
    ) -> float | None:
        """Seconds until the earliest pending job comes due (≤ 0: due now), or None."""
        value: float | None = await self.pool.fetchval(
            sql.query("next_run_at"),
            list(queues) if queues is not None else None,
            list(kinds) if kinds is not None else None,
            list(skip_queues) if skip_queues else None,
            list(skip_kinds) if skip_kinds else None,
        )
        return value

    async def finish(
        self, worker_id: str, runs: Sequence[tuple[Job, Outcome]], conn: Conn | None = None
    ) -> set[int]:
        """Write the outcomes of ``runs`` (see ``finish_runs``), on ``conn`` or the pool."""
        return await finish_runs(conn if conn is not None else self.pool, worker_id, runs)

    async def heartbeat(
        self, worker_id: str, beats: Sequence[tuple[Job, float, dict[str, int | None]]]
    ) -> set[int]:
        """Renew leases and store progress (see ``renew_leases``) on the pool."""
        return await renew_leases(self.pool, worker_id, beats)

    async def run_state(self, job_id: int) -> Record | None:
        """How one job's last run ended (see ``run_state``), on the pool."""
        return await run_state(self.pool, job_id)

    async def count_runnable(
        self, queues: Sequence[str] | None = None, kinds: Sequence[str] | None = None
    ) -> int:
        """Pending jobs due now, of ``queues`` and ``kinds`` (None: every one)."""
        count: int = await self.pool.fetchval(
            sql.query("count_runnable"),
            list(queues) if queues is not None else None,
            list(kinds) if kinds is not None else None,
        )
        return count

    async def count_unserved(
        self, queues: Sequence[str] | None, kinds: Sequence[str] | None, served: Sequence[str]
    ) -> dict[str, int]:
        """Pending jobs by kind, of ``queues`` and ``kinds`` (None: every one), whose kind
        is not in ``served``."""
        rows = await self.pool.fetch(
            sql.query("count_unserved"),
            list(queues) if queues is not None else None,
            list(kinds) if kinds is not None else None,
            list(served),
        )
        return {row["kind"]: row["n"] for row in rows}

    async def count_jobs(self) -> list[Record]:
        """Pending and running jobs by queue and status."""
        rows: list[Record] = await self.pool.fetch(sql.query("count_jobs"))
        return rows

    async def register_daemon(
        self,
        name: str,
        *,
        host: str,
        pid: int,
        version: str,
        kinds: Sequence[str],
        queues: Sequence[str] | None,
    ) -> None:
        """Add daemon ``name`` to ``importd_daemons``, or refresh its last_seen."""
        await self.pool.execute(
            sql.query("register_daemon"),
            name,
            host,
            pid,
            version,
            list(kinds),
            list(queues) if queues is not None else None,
        )

    async def remove_daemon(self, name: str) -> None:
        """Delete daemon ``name``'s row (a clean exit)."""
        await self.pool.execute(sql.query("remove_daemon"), name)

    async def prune_daemons(self, stale_after: float) -> list[str]:
        """Delete the rows of daemons not seen for ``stale_after`` seconds; their names."""
        rows = await self.pool.fetch(sql.query("prune_daemons"), stale_after)
        return [row["name"] for row in rows]

    async def rescue(self, limit: int) -> list[Record]:
        """Return up to ``limit`` jobs with expired leases to pending (or failed)."""
        rows: list[Record] = await self.pool.fetch(sql.query("rescue_jobs"), limit)
        return rows

    async def drop_orphan_staging(self) -> int:
        """Drop the staging tables of jobs no longer pending or running; how many."""
        async with self.pool.acquire() as conn:
            return await tables.drop_orphan_staging(conn)

    async def prune(
        self, completed_after: float, failed_after: float, batch: int
    ) -> tuple[int, int]:
        """Delete finished jobs past their retention, in batches: (deleted, batches)."""
        async with self.pool.acquire() as conn:
            return await prune_finished(
                conn, completed_after=completed_after, failed_after=failed_after, batch=batch
            )

    async def schema_current(self) -> bool:
        """Whether the database's schema is still exactly the one this code knows."""
        async with self.pool.acquire() as conn:
            return (await migrate.inspect(conn)).current


# -- operators' statements (importd status / show / retry / cancel / prune) ----------------


# Below this many estimated rows `status` counts import_jobs exactly (a few milliseconds).
EXACT_COUNT_LIMIT = 100_000


async def job_states(conn: Conn, ids: Sequence[int]) -> dict[int, str]:
    """The status of each of ``ids`` that exists."""
    rows = await conn.fetch(sql.query("job_states"), list(ids))
    return {int(r["id"]): str(r["status"]) for r in rows}


async def status(
    conn: Conn, running_limit: int = 20, daemons_seen_within: float = 30.0
) -> dict[str, Any]:
    """Counts by queue, kind and status; the oldest runnable job; running jobs; the
    daemons seen in the last ``daemons_seen_within`` seconds."""
    counts = await conn.fetch(sql.query("status_counts"))
    row = await _one(conn, "status_summary")
    running = await conn.fetch(sql.query("status_running"), running_limit)
    sharing = await conn.fetch(sql.query("status_sharing"))
    daemons = await live_daemons(conn, daemons_seen_within)
    summary = dict(row)
    # Exact where a count is cheap; the estimate (shown as "about") only for big tables.
    summary["exact_rows"] = (
        await conn.fetchval(sql.query("count_all_jobs"))
        if (summary["estimated_rows"] or 0) < EXACT_COUNT_LIMIT
        else None
    )
    return {
        "daemons": daemons,
        "counts": [dict(r) for r in counts],
        "summary": summary,
        "running": [dict(r) for r in running],
        "tenants_running": {r["name"]: int(r["value"]) for r in sharing if r["what"] == "tenant"},
        "rate_limits": {r["name"]: r["value"] for r in sharing if r["what"] == "rate_limit"},
    }


async def live_daemons(conn: Conn, seen_within: float) -> list[dict[str, Any]]:
    """The daemons seen in the last ``seen_within`` seconds, by name."""
    rows = await conn.fetch(sql.query("status_daemons"), seen_within)
    return [dict(r) for r in rows]


async def pending_kinds(conn: Conn) -> list[tuple[str, str, int]]:
    """Pending jobs as ``(queue, kind, count)``."""
    rows = await conn.fetch(sql.query("pending_kinds"))
    return [(r["queue"], r["kind"], r["n"]) for r in rows]


async def job_details(conn: Conn, job_id: int) -> dict[str, Any] | None:
    """Every field of one job, with its row-error count."""
    row = await conn.fetchrow(sql.query("show_job"), job_id)
    return dict(row) if row is not None else None


async def job_errors(conn: Conn, job_id: int, limit: int | None) -> list[dict[str, Any]]:
    """Row-level errors of one job, by line."""
    return [dict(r) for r in await conn.fetch(sql.query("job_errors"), job_id, limit)]


async def retry_jobs(
    conn: Conn,
    ids: Sequence[int] | None,
    *,
    kind: str | None = None,
    queue: str | None = None,
    since: datetime | None = None,
) -> tuple[int, int]:
    """Failed or cancelled jobs back to pending, in one statement: (retried, skipped)."""
    row = await _one(conn, "retry_jobs", list(ids) if ids else None, kind, queue, since)
    return int(row["retried"]), int(row["skipped"])


async def cancel_jobs(conn: Conn, ids: Sequence[int]) -> list[tuple[int, str]]:
    """Cancel pending or running jobs; (id, status it had) of each one cancelled."""
    rows = await conn.fetch(sql.query("cancel_jobs"), list(ids))
    return [(r["id"], r["was"]) for r in rows]


async def prune_jobs(conn: Conn, status: str, older_than: float, batch: int) -> int:
    """Delete one batch of old finished jobs; how many went."""
    done = await conn.execute(sql.query("prune_jobs"), status, older_than, batch)
    return int(done.rsplit(" ", 1)[-1])


async def prune_finished(
    conn: Conn, *, completed_after: float, failed_after: float, batch: int = 1000
) -> tuple[int, int]:
    """Delete finished jobs older than their retention, in batches: (deleted, batches)."""
    deleted = batches = 0
    for status, age in (
        ("completed", completed_after),
        ("failed", failed_after),
        ("cancelled", failed_after),
    ):
        while True:
            count = await prune_jobs(conn, status, age, batch)
            if count:
                batches += 1
                deleted += count
            if count < batch:
                break
    return deleted, batches


# -- importd web's reads -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The job list's filters; None is no filter. ``search`` is an id or a dedup key."""

    status: str | None = None
    kind: str | None = None
    queue: str | None = None
    tenant: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    search: str | None = None

    @property
    def narrows(self) -> bool:
        """Whether any filter is set (then a page scans a bounded window of ids)."""
        return any(value is not None for value in dataclasses.astuple(self))

    def params(self) -> list[Any]:
        """The filter parameters $2..$9 of ``web_jobs``."""
        by_id = None
        search = self.search
        if search is not None and search.isascii() and search.isdigit() and len(search) < 19:
            by_id = int(search)
        return [
            self.status,
            self.kind,
            self.queue,
            self.tenant,
            self.created_from,
            self.created_to,
            by_id,
            self.search,
        ]


async def list_jobs(
    conn: Conn, filters: JobFilter, *, older_than: int | None, limit: int, window: int | None
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` jobs matching ``filters``, newest first, with ids below the cursor
    ``older_than`` (None: from the newest) and at most ``window`` ids below it (None: no
    bound). Also the lowest id searched.

    A bounded search walks back in slices of ids that double in size (2,000, 4,000, ...):
    a filter that matches often fills the page from the first slice, one that matches
    rarely reads at most ``window`` rows, and neither depends on the planner guessing
    right how many rows the filters keep."""
    top = older_than if older_than is not None else await conn.fetchval(sql.query("web_jobs_top"))
    if window is None:
        rows = await conn.fetch(sql.query("web_jobs"), top, *filters.params(), limit, 0)
        return [dict(r) for r in rows], 0
    params = filters.params()
    bottom = max(top - window, 0)
    found: list[dict[str, Any]] = []
    step = 2000
    while top > bottom and len(found) < limit:
        floor = max(top - step, bottom)
        rows = await conn.fetch(sql.query("web_jobs"), top, *params, limit - len(found), floor)
        found += [dict(r) for r in rows]
        top, step = floor, step * 2
    return found, top


async def running_jobs(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """The running jobs with their progress, the longest-running first (at most ``limit``)."""
    return [dict(r) for r in await conn.fetch(sql.query("status_running"), limit)]


async def job_exists(conn: Conn, job_id: int) -> bool:
    """Whether job ``job_id`` exists."""
    return bool(await conn.fetchval(sql.query("web_job_exists"), job_id))


async def job_errors_page(
    conn: Conn, job_id: int, *, limit: int, offset: int
) -> list[dict[str, Any]]:
    """One page of a job's rejected rows, by source line."""
    rows = await conn.fetch(sql.query("web_job_errors"), job_id, limit, offset)
    return [dict(r) for r in rows]


async def recent(conn: Conn) -> list[dict[str, Any]]:
    """Jobs finished in the last hour by minute, queue and status."""
    return [dict(r) for r in await conn.fetch(sql.query("web_recent"))]


async def overview(conn: Conn) -> dict[str, Any]:
    """What the dashboard's overview shows, in five small statements: unfinished jobs by
    queue and status, the last hour by minute, queue and status, the oldest runnable
    job's wait, the busiest tenants and the rate limits."""
    live_row = await _one(conn, "web_live", None)
    summary = await _one(conn, "status_summary")
    sharing = await conn.fetch(sql.query("status_sharing"))
    return {
        "counts": live_row["counts"],
        "recent": await recent(conn),
        "summary": dict(summary),
        "tenants_running": {r["name"]: int(r["value"]) for r in sharing if r["what"] == "tenant"},
        "rate_limits": {r["name"]: r["value"] for r in sharing if r["what"] == "rate_limit"},
    }


async def daemons(conn: Conn) -> list[dict[str, Any]] | None:
    """The daemon registry's rows; None where this schema has no registry."""
    if not await conn.fetchval(sql.query("web_daemons_present")):
        return None
    return [dict(r) for r in await conn.fetch(sql.query("web_daemons"))]


async def live(conn: Conn, job_id: int | None) -> dict[str, Any]:
    """What an open dashboard page updates: running jobs, counts, a job."""
    return dict(await _one(conn, "web_live", job_id))
