"""The ``http`` handler: call an existing function endpoint (what the pg_net trigger
called), with the job's timeout, retries and a bearer token that never leaves memory.

POSTs ``{id, kind, queue, attempt, payload}`` as JSON. 2xx completes the job with the
response (bounded) as its result; 408, 429, 5xx and connection errors retry (honouring
``Retry-After``); any other status fails the job with the status and the start of the body.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .. import urls
from ..context import JobContext
from ..models import InvalidPayload, Job, PermanentError
from ..redaction import redact_head, redact_value
from .sources import check_url, status_error

MAX_RESPONSE = 64 * 1024
CUT_MARGIN = 8 * 1024  # bytes read past MAX_RESPONSE, redacted with what precedes the cut


async def call_function(job: Job, ctx: JobContext) -> Any:
    """POST the job to ``payload.url`` (or the ``http_url`` setting)."""
    url = job.payload.get("url", ctx.settings.http_url)
    if not isinstance(url, str) or not url:
        raise InvalidPayload("payload.url: required (or set http_url in the configuration)")
    where = "payload.url" if "url" in job.payload else "http_url"
    target = check_url(url, ctx.settings.url_prefixes, where)
    if ctx.http is None:
        raise PermanentError("no HTTP client in this daemon")
    body = {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "attempt": job.attempt,
        "payload": job.payload,
    }
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"importd-{job.id}"}
    if ctx.settings.http_token:
        headers["Authorization"] = f"Bearer {_token_for(target, ctx, where)}"
    timeout = max(ctx.remaining, 0.1)
    try:
        async with ctx.http.stream(
            "POST",
            target,
            content=json.dumps(body).encode(),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
        ) as response:
            data = b""
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_RESPONSE + CUT_MARGIN:
                    # (A margin past the cut: a secret the cut falls inside is masked
                    # whole, see ``_decode``.)
                    data = data[: MAX_RESPONSE + CUT_MARGIN]
                    break
    except httpx.TimeoutException as exc:
        raise TimeoutError(
            f"the endpoint did not answer within {timeout:.0f} s ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise ConnectionError(f"cannot reach the endpoint: {type(exc).__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise status_error(response, "the endpoint", data)
    ctx.log.debug("http_called", status=response.status_code, bytes=len(data))
    # An endpoint that echoes the request would put the token in the job row: mask it.
    return {"status": response.status_code, "body": _decode(data, response)}


def _token_for(target: httpx.URL, ctx: JobContext, where: str) -> str:
    """The bearer token, for a request to ``target`` that may carry it: one under
    ``http_token_prefixes``, or, without those, at ``http_url``'s scheme, host and port.
    ``url_prefixes`` says where jobs may send; not where the token may go (the sources of
    imports are under it too, and a job's payload chooses its URL). A job whose URL lies
    outside fails at once, before any request: sent without the token, it would fail on
    the endpoint's refusal, less clearly."""
    settings = ctx.settings
    assert settings.http_token
    ok, scope = urls.token_allowed(target, settings.http_token_prefixes, settings.http_url)
    if ok:
        return settings.http_token
    if scope.startswith("nowhere"):
        raise PermanentError(
            f"HttpToken: http_token is set, but it may be sent {scope}: set http_url (the "
            "token then goes to its scheme, host and port) or http_token_prefixes"
        )
    setting = "http_token_prefixes" if settings.http_token_prefixes else "http_url's origin"
    raise urls.InvalidURL(
        f"InvalidURL: {where}: {str(target)[:200]} is not where http_token may be sent "
        f"({setting}: {scope}); add its prefix to http_token_prefixes to send the token "
        "there"
    )


def _decode(data: bytes, response: httpx.Response) -> Any:
    """The answer's body, secrets masked: its JSON value, or its text when it is not JSON
    or is nested too deep for Python to walk (``RecursionError``; no retry would help)."""
    if not data:
        return None
    if len(data) > MAX_RESPONSE:  # cut: its text, the cut made after the redaction
        return redact_head(data.decode("utf-8", "replace"), MAX_RESPONSE)
    if "json" in response.headers.get("content-type", ""):
        try:
            value = json.loads(data)
            # Stored as jsonb: the value must also be encoded again, as deep as it is.
            json.dumps(value)
            return redact_value(value)
        except (ValueError, RecursionError):
            pass
    return redact_value(data.decode("utf-8", "replace"))
