"""audit24: a POST's body is read only up to the form limit, before anything else.

The sign-in form is open to every client of a token-protected ``importd web`` (it is how
the token is given). Its body was read whole into memory and only then compared with the
limit: one unauthenticated request of 300 MB took the process's peak memory from 48 MB to
630 MB, and a few at once would exhaust the machine. Now the body is read no further
than the limit: a larger one is refused (413) at once, declared or chunked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance import test_web as base

web = base.web

BODY = 96 * 1024 * 1024


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def _chunks(total: int) -> AsyncIterator[bytes]:
    chunk = b"a" * (1024 * 1024)
    for _ in range(total // len(chunk)):
        yield chunk


async def test_a_huge_sign_in_body_is_refused_without_being_read(web: Any) -> None:
    server = await web(host="0.0.0.0")
    before = _peak_kib(server.proc.pid)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(timeout=60) as client:
        declared = await client.post(server.url + "/login", content=b"a" * BODY, headers=headers)
        chunked = await client.post(server.url + "/login", content=_chunks(BODY), headers=headers)
        # A form of ordinary size is still read and judged (no CSRF cookie: refused).
        small = await client.post(server.url + "/login", data={"token": "x", "csrf": "y"})
    assert declared.status_code == 413, declared.text
    assert chunked.status_code == 413, chunked.text
    assert small.status_code == 403
    grown_mib = (_peak_kib(server.proc.pid) - before) / 1024
    assert grown_mib < 24, f"the web process's peak memory grew by {grown_mib:.0f} MiB"
    # Signed in, the actions' forms have the same limit.
    async with httpx.AsyncClient(
        timeout=60, headers={"authorization": f"Bearer {base.TOKEN}"}
    ) as client:
        bulk = await client.post(server.url + "/jobs/bulk", content=_chunks(BODY), headers=headers)
    assert bulk.status_code == 413
    assert (_peak_kib(server.proc.pid) - before) / 1024 < 24
