"""audit24: a job id or a date beyond what PostgreSQL holds is a 404 or a filter problem.

``/jobs/99999999999999999999`` (past bigint) and ``/jobs?from=0001-01-01T00:00+14:00``
(before year 1 in UTC) reached the database and failed there: a 500 for the reader, and a
``web_request_failed`` line with a whole traceback in the log for every such request.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.acceptance import test_web as base

web = base.web

HUGE = "9" * 20


async def test_out_of_range_ids_and_dates_are_answered_not_failed(web: Any) -> None:
    server = await web()
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {base.TOKEN}"}) as client:
        page = await client.get(f"{server.url}/jobs/{HUGE}")
        csv = await client.get(f"{server.url}/jobs/{HUGE}/rejected.csv")
        listed = await client.get(server.url + "/jobs", params={"from": "0001-01-01T00:00+14:00"})
        csrf = client.cookies.get("importd_csrf") or ""
        action = await client.post(f"{server.url}/jobs/{HUGE}/cancel", data={"csrf": csrf})
    assert page.status_code == 404 and f"No job {HUGE}" in page.text
    assert csv.status_code == 404
    assert listed.status_code == 200 and 'id="filter-problem"' in listed.text
    assert action.status_code in (303, 404), action.text
    assert "web_request_failed" not in server.log_path.read_text()
