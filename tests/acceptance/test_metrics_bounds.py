"""/metrics stays small whatever kinds and queues producers invent."""

from __future__ import annotations

import re
from typing import Any

import httpx

import importd
from importd.metrics import MAX_QUEUE_LABELS
from tests.helpers import wait_until
from tests.unit.test_metrics_bounds import series


async def test_twenty_thousand_queues_and_kinds_keep_metrics_small(conn: Any, daemons: Any) -> None:
    # 20,000 pending jobs, each with a kind and a queue of its own (due tomorrow, so only
    # the sampler sees them), and 300 runnable ones in 300 queues of their own.
    await conn.execute("""
        INSERT INTO import_jobs (kind, queue, payload, run_at)
        SELECT 'kind_' || i, 'queue_' || i, '{}', now() + interval '1 day'
        FROM generate_series(1, 20000) AS i""")
    await importd.enqueue_many(
        conn, [importd.NewJob("noop", {}, queue=f"run_{i}") for i in range(300)]
    )
    proc = daemons("--metrics-address", "127.0.0.1:0", "--poll-interval", "1")
    await proc.wait_for_event("metrics_listening")
    port = int(
        next(e for e in proc.events() if e["event"] == "metrics_listening")["address"].rsplit(
            ":", 1
        )[1]
    )
    url = f"http://127.0.0.1:{port}/metrics"

    async def settled() -> str | None:
        text = httpx.get(url, timeout=10).text
        values = series(text)
        claimed = sum(v for k, v in values.items() if k.startswith("importd_jobs_claimed_total"))
        pending = sum(
            v
            for k, v in values.items()
            if k.startswith("importd_jobs{") and 'status="pending"' in k
        )
        return text if claimed == 300 and pending >= 20000 else None

    text = await wait_until(settled, timeout=60, what="300 claims and a sample of 20,000 jobs")
    assert len(text.encode()) < 100_000, len(text.encode())
    values = series(text)
    queues = {m for k in values for m in re.findall(r'queue="([^"]*)"', k)}
    assert len(queues) <= MAX_QUEUE_LABELS + 1 and "other" in queues
    assert values['importd_jobs{queue="other",status="pending"}'] > 19_000
    assert not any(k for k in values if "kind_" in k)  # no kind without a handler
