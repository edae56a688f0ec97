"""NewJob, the producer API's job description: what it accepts and how it behaves."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from typing import Any

import pytest

from importd import NewJob


def test_new_job_takes_the_arguments_of_a_generated_dataclass() -> None:
    # NewJob writes its own __init__ (for speed); it must accept exactly what the one
    # @dataclass would generate accepts, and stay frozen, comparable and hashable.
    fields = dataclasses.fields(NewJob)
    reference = dataclasses.make_dataclass(
        "Reference",
        [(f.name, f.type) for f in fields[:2]]
        + [(f.name, f.type, dataclasses.field(default=f.default)) for f in fields[2:]],
        frozen=True,
        slots=True,
    )
    mine = inspect.signature(NewJob).parameters
    theirs = inspect.signature(reference).parameters
    assert [(p.name, p.kind, p.default) for p in mine.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]
    every: dict[str, Any] = {
        "kind": "csv",
        "payload": {"a": 1},
        "queue": "q",
        "priority": -3,
        "run_at": datetime(2030, 1, 1, tzinfo=UTC),
        "max_attempts": 2,
        "timeout": 9.5,
        "dedup_key": "d",
        "tenant_id": "t",
    }
    assert dataclasses.asdict(NewJob(**every)) == dataclasses.asdict(reference(**every))
    assert dataclasses.asdict(NewJob("csv", {})) == dataclasses.asdict(reference("csv", {}))
    job = NewJob("csv", {}, queue="q")
    assert job == NewJob("csv", {}, queue="q") != NewJob("csv", {})
    assert dataclasses.replace(job, priority=4).priority == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.queue = "other"  # type: ignore[misc]
    assert hash(NewJob("csv", None, "q")) == hash(NewJob("csv", None, "q"))  # type: ignore[arg-type]
