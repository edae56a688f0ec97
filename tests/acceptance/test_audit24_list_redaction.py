"""audit24: the job list's last errors are redacted before they are cut, not after.

The job list shows each job's last error cut to 300 characters. The cut was made in SQL
(``left(last_error, 300)``) and the redaction ran on what was left: a credential the cut
fell inside had lost what the redaction recognises it by (a URL's ``@``, a registered
secret's tail), and its head was shown on the list while the job's page masked it. As
the README promises for every cut text, the redaction now reads past the cut.
"""

from __future__ import annotations

from typing import Any

import httpx

import importd
from tests.acceptance import test_web as base
from tests.helpers import Conn

web = base.web

PASSWORD = "S3cretPassw0rdXYZ"


async def test_the_job_list_never_shows_the_head_of_a_masked_secret(conn: Conn, web: Any) -> None:
    errors = {
        # The cut falls inside a URL's password (the "@" that marks its end is past it).
        "url": "e" * 275 + f" postgresql://app:{PASSWORD}@db/app failed",
        # The cut falls inside a registered secret: the web token itself.
        "token": "e" * 290 + f" {base.TOKEN} was refused",
    }
    ids = {}
    for name, error in errors.items():
        job_id = await importd.enqueue(conn, "csv", {}, queue=f"cut-{name}")
        await conn.execute(
            "UPDATE import_jobs SET status = 'failed', attempts = 1, started_at = now(), "
            "finished_at = now(), last_error = $2 WHERE id = $1",
            job_id,
            error,
        )
        ids[name] = job_id
    server = await web()
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {base.TOKEN}"}) as client:
        listed = (await client.get(server.url + "/jobs")).text
        pages = [(await client.get(f"{server.url}/jobs/{i}")).text for i in ids.values()]
    # The job pages mask both (the whole text is redacted there).
    assert "postgresql://app:***@db/app" in pages[0] and PASSWORD not in pages[0]
    assert base.TOKEN not in pages[1] and "*** was refused" in pages[1]
    # The list shows no part of either.
    assert PASSWORD[:6] not in listed, "the head of a URL's password is on the job list"
    assert base.TOKEN[:6] not in listed, "the head of the web token is on the job list"
    assert "postgresql://app:***" in listed
