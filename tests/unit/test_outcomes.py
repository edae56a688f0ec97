"""Outcomes are checked before they are written: ``result_problem`` against PostgreSQL
itself, the judge of what a jsonb column accepts."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importd.context import result_problem
from importd.db import Pool
from importd.redaction import clean_text

# Text with what PostgreSQL refuses mixed in: NUL and halves of surrogate pairs.
_chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d"]))


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_surrogate(v) for v in value)
    return False


def test_result_problem_names_what_and_where() -> None:
    assert result_problem({"a": [1, {"b": math.inf}]}) == (
        "inf at $['a'][1]['b'] is not a JSON number"
    )
    assert result_problem([-math.inf]) == "-inf at $[0] is not a JSON number"
    assert result_problem({"k\x00": 1}) == "a key at $ holds a NUL or lone surrogate"
    assert result_problem(["\udc80"]) == (
        "the string at $[0] is not valid Unicode (a lone surrogate)"
    )
    assert result_problem({"s": {1, 2}}) == "Object of type set is not JSON serializable"
    loop: list[Any] = []
    loop.append(loop)
    assert result_problem(loop) == "Circular reference detected"
    assert result_problem({"ok": [1, 2.5, "x", None, True]}) is None


@given(st.text(_chars, max_size=3000))
def test_clean_text_fits_a_text_column(text: str) -> None:
    cleaned = clean_text(text, 2000)
    assert "\x00" not in cleaned and len(cleaned) <= 2000
    cleaned.encode("utf-8")  # no lone surrogate left
    if (
        "\x00" not in text
        and not _has_surrogate(text)
        and len(text) <= 2000
        and ("***" not in cleaned)
    ):
        assert cleaned == text


async def test_progress_refuses_what_the_job_row_cannot_hold() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from importd.context import JobContext  # noqa: PLC0415
    from importd.models import Job  # noqa: PLC0415

    now = datetime.now(UTC)
    job = Job(
        id=1,
        kind="k",
        queue="q",
        tenant_id=None,
        payload={},
        priority=0,
        run_at=now,
        attempt=1,
        max_attempts=3,
        timeout=60,
        created_at=now,
    )
    # No database in this layer: the checks refuse the values before any use of the pool.
    ctx = JobContext(job, pool=cast("Pool", None), log=None, deadline=0.0)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: ctx.progress(done=-1), "done must be between 0 and 2**63-1, not -1"),
        (lambda: ctx.progress(done=2**63), "done must be between 0 and 2**63-1"),
        (
            lambda: ctx.progress(total=1.5),  # type: ignore[arg-type]
            "total must be an int, not float 1.5",
        ),
        (lambda: ctx.progress(failed=True), "failed must be an int, not bool True"),
        (
            lambda: ctx.progress(bytes_read="9"),  # type: ignore[arg-type]
            "bytes_read must be an int, not str '9'",
        ),
        (lambda: ctx.progress(done=5, total=4), "done (5) is more than total (4)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    ctx.progress(done=3, total=10, failed=1, bytes_read=100)
    with pytest.raises(ValueError, match="done"):
        ctx.progress(done=11)  # above the total reported earlier
    assert ctx.take_progress() == {
        "rows_done": 3,
        "rows_total": 10,
        "rows_failed": 1,
        "bytes_read": 100,
    }
