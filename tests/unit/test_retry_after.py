"""``Retry-After`` as importd reads it: delta-seconds or an HTTP date, anything else
none at all (the backoff's delay then), never an error of its own in place of the
answer's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from importd.handlers.sources import retry_after, status_error
from importd.models import RetryLater


def _answer(value: bytes) -> httpx.Response:
    return httpx.Response(429, headers=[(b"retry-after", value)])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"30", 30.0), (b" 7 ", 7.0), (b"0", 0.0), (b"-1", None), (b"1.5", None), (b"soon", None)],
)
def test_delta_seconds(value: bytes, seconds: float | None) -> None:
    assert retry_after(_answer(value)) == seconds


def test_a_unicode_digit_is_no_number_of_seconds() -> None:
    # "²" is a digit to str.isdigit() and no number to float(): the retry's error was a
    # ValueError about it instead of the HTTP status.
    answer = _answer("²".encode("latin-1"))
    assert retry_after(answer) is None
    error = status_error(answer, "the endpoint", b"slow down")
    assert not isinstance(error, RetryLater)
    assert str(error) == "HTTP 429 from the endpoint: slow down"


def test_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    seconds = retry_after(_answer(format_datetime(when, usegmt=True).encode()))
    assert seconds is not None and 85 <= seconds <= 90
