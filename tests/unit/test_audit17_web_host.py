"""Audit 17: importd web without a ``web_token`` trusts any request from loopback, whatever
its ``Host`` header: a web page whose name the attacker re-points at 127.0.0.1 (DNS
rebinding) is then this browser's "same origin" and reads every job's payload, error
and rejected rows. Without a token, only a loopback host name may be asked for."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from importd.web import security


async def _jobs(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("every job's payload")


def _client(token: str | None) -> httpx.AsyncClient:
    app = security.Guard(Starlette(routes=[Route("/jobs", _jobs)]), token)
    # ASGITransport's client address is 127.0.0.1: the request comes from this machine.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")


@pytest.mark.parametrize(
    "host", ["attacker.example:8080", "attacker.example", "127.0.0.1.nip.io:8080", "0x7f.1"]
)
async def test_without_a_token_a_foreign_host_name_is_refused(host: str) -> None:
    async with _client(None) as client:
        answer = await client.get("/jobs", headers={"host": host})
    assert answer.status_code in (400, 403, 421), answer.text
    assert "payload" not in answer.text


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.1"]
)
async def test_without_a_token_loopback_host_names_are_served(host: str) -> None:
    async with _client(None) as client:
        answer = await client.get("/jobs", headers={"host": host})
    assert answer.status_code == 200, answer.text


async def test_with_a_token_any_host_name_is_served_to_whoever_proves_it() -> None:
    token = "t" * 20
    async with _client(token) as client:
        answer = await client.get(
            "/jobs",
            headers={"host": "importd.internal:8080", "authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200
