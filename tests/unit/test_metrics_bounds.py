"""/metrics stays small whatever kinds and queues producers invent."""

from __future__ import annotations

from importd.metrics import Metrics


def series(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, _, value in (
            line.rpartition(" ") for line in text.splitlines() if line and line[0] != "#"
        )
    }


def test_labels_are_known_kinds_configured_queues_and_other() -> None:
    m = Metrics(kinds=["csv", "noop"], queues=["imports"])
    for i in range(5000):
        m.count(m.claimed, f"kind_{i}", f"queue_{i}")
        m.count(m.completed, "noop", "imports")
        m.observe(m.duration, 0.1, f"kind_{i}", "imports")
        m.observe(m.start_latency, 0.1, f"queue_{i}")
    values = series(m.render().decode())
    assert values['importd_jobs_claimed_total{kind="other",queue="other"}'] == 5000
    assert values['importd_jobs_completed_total{kind="noop",queue="imports"}'] == 5000
    assert values['importd_job_duration_seconds_count{kind="other",queue="imports"}'] == 5000
    assert values['importd_job_start_latency_seconds_count{queue="other"}'] == 5000
    assert len(m.render()) < 20_000


def test_queue_slots_are_reused_once_a_queue_has_been_idle() -> None:
    m = Metrics(kinds=["noop"], max_queues=3, idle_samples=2)
    for queue in ("a", "b", "c", "d"):
        m.count(m.completed, "noop", queue)
    values = series(m.render().decode())
    assert {k for k in values if k.startswith("importd_jobs_completed_total")} == {
        f'importd_jobs_completed_total{{kind="noop",queue="{q}"}}' for q in ("a", "b", "c", "other")
    }
    m.set_job_counts([("b", "pending", 4), ("zzz", "pending", 7)])  # a and c have no jobs
    m.count(m.completed, "noop", "e")  # not idle for 2 samples yet: other
    assert (
        series(m.render().decode())['importd_jobs_completed_total{kind="noop",queue="other"}'] == 2
    )
    assert series(m.render().decode())['importd_jobs{queue="other",status="pending"}'] == 7
    m.count(m.completed, "noop", "c")  # c is used again
    m.set_job_counts([("b", "pending", 4)])  # zzz's jobs are gone: its series too
    m.count(m.completed, "noop", "e")  # takes the slot of the queue idle the longest: a
    values = series(m.render().decode())
    assert 'importd_jobs_completed_total{kind="noop",queue="a"}' not in values
    assert values['importd_jobs_completed_total{kind="noop",queue="e"}'] == 1
    assert values['importd_jobs_completed_total{kind="noop",queue="b"}'] == 1
    assert values['importd_jobs_completed_total{kind="noop",queue="c"}'] == 2
    assert values['importd_jobs{queue="b",status="pending"}'] == 4
    assert 'importd_jobs{queue="other",status="pending"}' not in values
    m.set_job_counts([])
    assert not any(k.startswith("importd_jobs{") for k in series(m.render().decode()))
