"""The operators' commands: status, show, retry, cancel, prune. Each takes a connection
and arguments and returns the text (or JSON) to print; tables fit 80 columns."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from . import fleet, repository
from .config import parse_duration
from .db import Conn, DeepJSON
from .redaction import redact_value


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c).replace("\n", "\\n") for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _progress(row: dict[str, Any]) -> str:
    done, total = row["rows_done"], row["rows_total"]
    if total:
        return f"{done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)"
    return f"{done:,}" if done else "-"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def dumps(value: Any) -> str:
    """JSON for scripts."""
    return json.dumps(value, default=_json_default, indent=2, sort_keys=True)


async def status(conn: Conn, *, as_json: bool = False) -> str:
    """What is queued, what runs, what failed lately."""
    data = await repository.status(conn, daemons_seen_within=fleet.STALE_AFTER)
    by_group: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in data["counts"]:
        key = row["status"] + ("_1h" if row["recent"] else "")
        by_group[(row["queue"], row["kind"])][key] += row["n"]
    summary = data["summary"]
    failures_1h = sum(g.get("failed_1h", 0) for g in by_group.values())
    daemons = data["daemons"]
    pending = [
        (r["queue"], r["kind"], r["n"])
        for r in data["counts"]
        if r["status"] == "pending" and not r["recent"]
    ]
    unserved = fleet.unserved(pending, daemons)
    if as_json:
        return dumps(
            {
                "queues": [
                    {"queue": q, "kind": k, **dict(v)} for (q, k), v in sorted(by_group.items())
                ],
                "oldest_runnable_s": summary["oldest_runnable_s"],
                "estimated_rows": summary["estimated_rows"],
                "rows": summary.get("exact_rows"),
                "running": redact_value(data["running"]),
                "failed_last_hour": failures_1h,
                "tenants_running": data["tenants_running"],
                "rate_limits_ahead_s": data["rate_limits"],
                "daemons": daemons,
                "unserved": [
                    {"kind": u.kind, "pending": u.pending, "queues": list(u.queues)}
                    for u in unserved
                ],
                "at": summary["at"],
            }
        )
    rows = [
        [
            q,
            k,
            v.get("pending", 0),
            v.get("running", 0),
            v.get("completed_1h", 0),
            v.get("failed_1h", 0),
            v.get("cancelled_1h", 0),
        ]
        for (q, k), v in sorted(by_group.items())
    ]
    parts = [
        _table(["queue", "kind", "pending", "running", "done 1h", "failed 1h", "cancel 1h"], rows)
        if rows
        else "no jobs pending, running or ended in the last hour"
    ]
    parts.append(
        f"oldest runnable job waits: {_age(summary['oldest_runnable_s'])}   "
        f"failures in the last hour: {failures_1h}   "
        + (
            f"jobs in table: {summary['exact_rows']:,}"
            if summary.get("exact_rows") is not None
            else f"jobs in table: about {max(summary['estimated_rows'] or 0, 0):,}"
        )
    )
    parts.append(_daemons(daemons))
    if unserved:
        parts.append(
            "pending kinds no live daemon serves (their jobs wait for one):\n"
            + "\n".join(f"  {u.text}" for u in unserved)
        )
    tenants = data["tenants_running"]
    if tenants:
        top = sorted(tenants.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        parts.append(
            "tenants with the most running jobs: "
            + ", ".join(f"{name} {n}" for name, n in top)
            + (f" (and {len(tenants) - len(top)} more)" if len(tenants) > len(top) else "")
        )
    if data["rate_limits"]:
        parts.append(
            "rate limits: "
            + ", ".join(
                f"{key} " + (f"booked {ahead:.1f} s ahead" if ahead > 0 else "idle")
                for key, ahead in sorted(data["rate_limits"].items())
            )
        )
    if data["running"]:
        running = [
            [
                r["id"],
                r["kind"][:12],
                r["queue"][:12],
                _progress(r),
                _age(r["elapsed_s"]),
                f"{r['attempts']}/{r['max_attempts']}",
                (r["locked_by"] or "")[:22],
            ]
            for r in data["running"]
        ]
        parts.append(
            "running now:\n"
            + _table(["id", "kind", "queue", "progress", "for", "try", "daemon"], running)
        )
    return "\n\n".join(parts)


def _daemons(daemons: list[dict[str, Any]]) -> str:
    """Two lines or more per live daemon: who and where, then what it serves."""
    if not daemons:
        return f"no live daemon (none seen in the last {fleet.STALE_AFTER:g} s)"
    lines = [f"live daemons: {len(daemons)}"]
    for d in daemons:
        lines.append(f"  {d['name']}  version {d['version']}  seen {_age(d['seen_s'])} ago")
        lines.append(f"    host {d['host']}  pid {d['pid']}  up {_age(d['up_s'])}")
        queues = "every queue" if d["queues"] is None else ", ".join(d["queues"]) or "none"
        served = f"kinds: {', '.join(d['kinds']) or 'none'}; queues: {queues}"
        lines.extend(textwrap.wrap(served, 78, initial_indent="    ", subsequent_indent="      "))
    return "\n".join(lines)


_SHOWN = [
    "id",
    "kind",
    "queue",
    "tenant_id",
    "status",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "timeout_s",
    "dedup_key",
    "locked_by",
    "locked_until",
    "rows_total",
    "rows_done",
    "rows_failed",
    "bytes_read",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
]


async def show(conn: Conn, job_id: int, *, as_json: bool = False, first_errors: int = 5) -> str:
    """Every field of a job, its last error, and its first row-level errors."""
    job = await repository.job_details(conn, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    errors = repository.shown_errors(await repository.job_errors(conn, job_id, first_errors))
    deep = isinstance(job["payload"], DeepJSON)  # (its text: shown as it is)
    job = redact_value(job)
    if as_json:
        job.pop("timeout", None)
        return dumps({**job, "errors": errors})
    width = max(len(k) for k in _SHOWN)
    lines = [
        f"{key.ljust(width)}  {_shown(job[key]) if job[key] is not None else '-'}" for key in _SHOWN
    ]
    payload = job["payload"] if deep else json.dumps(job["payload"])
    lines.append(f"{'payload'.ljust(width)}  {_shown(payload)}")
    if job["result"] is not None:
        lines.append(f"{'result'.ljust(width)}  {json.dumps(job['result'])}")
    if job["last_error"]:
        lines.append(f"{'last_error'.ljust(width)}  {_shown(job['last_error'])}")
    if job["error_count"]:
        lines.append(f"\n{job['error_count']} rejected row(s); first {len(errors)}:")
        lines.append(
            _table(
                ["line", "message", "record"],
                [
                    [
                        e["line_number"] or "-",
                        _shown(e["message"][:44]),
                        _shown((e["raw_record"] or "")[:24]),
                    ]
                    for e in errors
                ],
            )
        )
        lines.append(f"all of them: importd show {job_id} --errors [--json]")
    return "\n".join(lines)


# Control characters as escapes (``\x1b``, ``\n``): text from outside (an endpoint's
# answer, a file's record) must not move the cursor, retitle or clear the operator's
# terminal, or fake a line of its own in what ``importd show`` prints.
_CONTROLS = {
    code: ("\\n" if code == 10 else "\\r" if code == 13 else f"\\x{code:02x}")
    for code in (*range(0x20), *range(0x7F, 0xA0))
    if code != 9
}


def _shown(value: Any) -> str:
    """``value`` as ``importd show`` prints it: control characters escaped."""
    return str(value).translate(_CONTROLS)


async def errors(conn: Conn, job_id: int, *, as_json: bool = False) -> str:
    """Every rejected row of a job: CSV (line, message, record) or JSON."""
    if await repository.job_details(conn, job_id) is None:
        raise LookupError(f"no job {job_id}")
    rows = repository.shown_errors(await repository.job_errors(conn, job_id, None))
    if as_json:
        return dumps(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "message", "record"])
    for row in rows:
        writer.writerow([row["line_number"], row["message"], row["raw_record"]])
    return out.getvalue().rstrip("\n")


_NOT_RETRIED = {
    "completed": "is completed: only failed or cancelled jobs are retried",
    "pending": "is pending: it runs when its turn comes; nothing to retry",
    "running": "is running: nothing to retry (cancel it first to run it again)",
}
_NOT_CANCELLED = {
    "completed": "is completed: too late to cancel",
    "failed": "has failed: nothing to cancel",
    "cancelled": "is cancelled already",
}


async def retry(
    conn: Conn, ids: list[int] | None, *, kind: str | None, queue: str | None, since: str | None
) -> tuple[str, list[str]]:
    """Failed (or cancelled, by id) jobs back to pending, attempts reset: (what was done,
    a reason for each given id that was not retried)."""
    after = datetime.now(UTC) - timedelta(seconds=parse_duration(since)) if since else None
    problems: list[str] = []
    if ids:
        states = await repository.job_states(conn, ids)
        for job_id in sorted(set(ids)):
            state = states.get(job_id)
            if state is None:
                problems.append(f"no job {job_id}")
            elif state in _NOT_RETRIED:
                problems.append(f"job {job_id} {_NOT_RETRIED[state]}")
    retried, skipped = await repository.retry_jobs(conn, ids, kind=kind, queue=queue, since=after)
    text = f"{retried} job(s) back to pending"
    if skipped:
        text += f"; {skipped} skipped: an unfinished job holds the same dedup_key"
        if ids:
            problems.append(f"{skipped} job(s) not retried: an unfinished job holds its dedup_key")
    return text, problems


async def cancel(conn: Conn, ids: list[int]) -> tuple[str, list[str]]:
    """Cancel pending or running jobs: (what was done, a reason for each id that was not
    cancelled)."""
    done = await repository.cancel_jobs(conn, ids)
    running = [job_id for job_id, was in done if was == "running"]
    text = f"{len(done)} job(s) cancelled"
    if running:
        text += f" ({len(running)} running: their daemons stop them within seconds)"
    missing = sorted(set(ids) - {job_id for job_id, _ in done})
    problems: list[str] = []
    if missing:
        states = await repository.job_states(conn, missing)
        for job_id in missing:
            state = states.get(job_id)
            problems.append(
                f"no job {job_id}"
                if state is None
                else f"job {job_id} {_NOT_CANCELLED.get(state, f'is {state}')}"
            )
    return text, problems


async def prune(
    conn: Conn, *, completed_after: float, failed_after: float, batch: int = 1000
) -> tuple[int, int]:
    """Delete finished jobs older than their retention, in batches: (deleted, batches)."""
    return await repository.prune_finished(
        conn, completed_after=completed_after, failed_after=failed_after, batch=batch
    )
