"""``importd web``: a dashboard over importd's database, rendered on the server.

Pages: the overview, the running jobs, the job list (filters, keyset paging), one job
(its rejected rows, paged and as CSV); retry and cancel through the CLI's own operations
(:mod:`importd.ops`); live updates by server-sent events (:mod:`importd.web.live`). The
guards (token, CSRF, security headers) are in :mod:`importd.web.security`. Every asset
ships in this package: no build step, no CDN.

Needs the ``web`` extra: ``pip install 'importd[web]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import structlog
import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .. import __version__, db, fleet, ops, redaction, repository
from ..config import ConfigError, Settings
from ..models import Status
from ..redaction import redact, redact_value
from . import security
from .live import Hub

log = structlog.get_logger("importd.web")

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
# The largest job id (bigint): a larger one in a URL names no job.
MAX_JOB_ID = 2**63 - 1
# How much of a job's last error the job list shows (cut after the redaction).
LIST_ERROR_CHARS = 300
ERRORS_PAGE_SIZE = 50
# Ids a filtered job-list page scans at most (about 20 ms): a filter that matches little
# pages back through history in steps instead of reading it whole in one request.
SCAN_WINDOW = 20_000
_STATUSES = [str(s) for s in Status]
_FINISHED = ("completed", "failed", "cancelled")
# A live page's request for the changing parts of itself (static/app.js sends it).
PART_HEADER = "x-importd-part"
# The largest POST body read (the sign-in form is open to every client): a larger one is
# refused before more of it is read.
MAX_FORM = 1_000_000


def _digits(text: str) -> bool:
    """Whether ``text`` is a run of 0-9 (``str.isdigit`` also takes "²", which int() does
    not read, and "٣", which it reads as 3)."""
    return text.isascii() and text.isdigit()


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair; ValueError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not _digits(port) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (like 127.0.0.1:8080)")
    return host.strip("[]"), int(port)


def check_settings(settings: Settings) -> tuple[str, int]:
    """Where to listen; a ConfigError for an unsafe or malformed setting."""
    try:
        host, port = parse_listen(settings.web_listen or "127.0.0.1:8080")
    except ValueError as exc:
        raise ConfigError(f"web_listen: {exc}") from None
    if settings.web_token is not None and len(settings.web_token) < 16:
        # (Not "web_token: ...": the redaction would mask what follows a key and a colon.)
        raise ConfigError("web_token must be at least 16 characters (try: openssl rand -hex 16)")
    if settings.web_token is not None and not (
        settings.web_token.isascii()
        and settings.web_token.isprintable()
        and " " not in settings.web_token
    ):
        raise ConfigError(
            "web_token must be printable ASCII without blanks, as it travels in an "
            "Authorization header (try: openssl rand -hex 16)"
        )
    if not security.is_loopback(host) and not settings.web_token:
        raise ConfigError(
            f"web_listen {host}:{port} is reachable from other machines: set web_token "
            "(IMPORTD_WEB_TOKEN or IMPORTD_WEB_TOKEN_FILE), or listen on 127.0.0.1"
        )
    return host, port


# -- formatting for the templates ------------------------------------------------------


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _bytes(value: Any) -> str:
    if not value:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "-"
    return ops._age((datetime.now(UTC) - value).total_seconds())


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return ops._age((end - start).total_seconds())


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=_num,
        size=_bytes,
        when=_when,
        ago=_ago,
        age=ops._age,
        pretty=_pretty,
        redact=redact,
    )
    env.globals.update(between=_between, version=__version__)
    return env


# -- the application -------------------------------------------------------------------


def _said(outcome: tuple[str, list[str]]) -> str:
    """One flash line from what a CLI operation did and why some ids were not done."""
    text, problems = outcome
    return "; ".join([text, *problems])


class Web:
    """The dashboard's state: settings, templates, the pool and the live hub."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = settings.web_token
        self.read_only = settings.web_read_only
        self.env = _environment()
        self.pool: Any = None
        self.hub: Hub | None = None
        self.render_ms: list[tuple[str, float]] = []  # (page, ms), the last 1,000
        # Wrong tokens per client, shared by the sign-in form and the bearer check.
        self.throttle = security.Throttle()

    @property
    def can_act(self) -> bool:
        """Whether retry and cancel are offered: a token is set and not --read-only."""
        return bool(self.token) and not self.read_only

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        dsn = self.settings.require_dsn()
        # Behind a pooler (seen, or said with statement_cache_size = 0), as the daemon
        # does: no named prepared statements, which a transaction-mode pooler cannot keep,
        # and no session setting at connect, which pgbouncer refuses as a startup
        # parameter. Unnamed statements are planned for the values bound anyway.
        cache = await db.statement_cache_for(dsn, self.settings.statement_cache_size)
        pooled = cache == 0
        # The job list's filters are optional ("$2 IS NULL OR ..."): planned for the values
        # given, an unused filter folds away and a used one can take its index.
        self.pool = await db.create_pool(
            dsn,
            min_size=1,
            max_size=4,
            statement_cache_size=cache,
            application_name="importd-web",
            reset_sessions=False,  # single statements only: nothing to reset
            server_settings=None if pooled else {"plan_cache_mode": "force_custom_plan"},
        )
        self.hub = Hub(self.pool, self.settings.effective_listen_dsn)
        if self.token:  # the sessions' key (scrypt of the token), made before a page needs it
            await asyncio.to_thread(security.session_value, self.token)
        listener = asyncio.create_task(self.hub.listener.run(), name="web-listener")
        listener.add_done_callback(_listener_ended)
        log.info("web_started", read_only=self.read_only, actions=self.can_act)
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            await self.pool.close()

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        csrf, new = security.csrf_token(request)
        part = request.headers.get(PART_HEADER) == "1"
        # A live page asks for its changing parts: the same template's main block, the
        # same escaping; the flash stays for the whole page that shows it.
        flash = None if part else unquote(request.cookies.get("importd_flash", "")) or None
        page = self.env.get_template(template)
        values = {
            "csrf": csrf,
            "can_act": self.can_act,
            "read_only": self.read_only,
            "has_token": bool(self.token),
            "flash": flash,
            "path": request.url.path,
            **context,
        }
        if part:
            body = "".join(page.blocks["main"](page.new_context(values)))
        else:
            body = page.render(values)
        response = HTMLResponse(body, status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["vary"] = PART_HEADER
        if new:
            response.set_cookie(security.CSRF_COOKIE, csrf, **security.cookie_args(request))
        if flash:
            response.delete_cookie("importd_flash", path="/")
        return response

    def timed(
        self, name: str, view: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            response = await view(request)
            self.render_ms.append((name, (time.perf_counter() - started) * 1000))
            del self.render_ms[:-1000]
            response.headers["server-timing"] = f"render;dur={self.render_ms[-1][1]:.1f}"
            return response

        return run

    # -- pages ---------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        async with self.pool.acquire() as conn:
            data = await repository.overview(conn)
            daemons = await repository.daemons(conn)
        queues: dict[str, dict[str, int]] = {}
        for row in data["counts"]:
            cell = queues.setdefault(row["queue"], {})
            cell[row["status"]] = cell.get(row["status"], 0) + row["n"]
        for row in data["recent"]:
            cell = queues.setdefault(row["queue"], {})
            key = row["status"] + "_1h"
            cell[key] = cell.get(key, 0) + row["n"]
        return self.render(
            request,
            "overview.html",
            page="overview",
            queues=sorted(queues.items()),
            summary=data["summary"],
            chart=_chart(data["recent"], data["summary"]["at"]),
            tenants=sorted(data["tenants_running"].items(), key=lambda kv: (-kv[1], kv[0]))[:10],
            rate_limits=sorted(data["rate_limits"].items()),
            daemons=daemons,
            stale_after=fleet.STALE_AFTER,
        )

    async def running(self, request: Request) -> Response:
        async with self.pool.acquire() as conn:
            running = await repository.running_jobs(conn, 200)
        return self.render(request, "running.html", page="running", running=redact_value(running))

    def _filters(self, request: Request) -> tuple[repository.JobFilter, dict[str, str], str]:
        q = request.query_params
        given = {
            k: q[k].strip()
            for k in ("status", "kind", "queue", "tenant", "from", "to", "q")
            if q.get(k, "").strip()
        }
        problem = ""
        status = given.get("status")
        if status is not None and status not in _STATUSES:
            problem = f"unknown status {status!r}"
            status = None
        times: dict[str, datetime | None] = {}
        for key in ("from", "to"):
            times[key] = None
            if key in given:
                try:
                    value = datetime.fromisoformat(given[key])
                    # In UTC here: a time PostgreSQL cannot hold is a problem, not a 500.
                    value = value if value.tzinfo else value.replace(tzinfo=UTC)
                    times[key] = value.astimezone(UTC)
                except (ValueError, OverflowError):
                    problem = f"{key}: {given[key]!r} is not a date or time (2026-01-31T12:00)"
        filters = repository.JobFilter(
            status=status,
            kind=given.get("kind"),
            queue=given.get("queue"),
            tenant=given.get("tenant"),
            created_from=times["from"],
            created_to=times["to"],
            search=given.get("q"),
        )
        return filters, given, problem

    async def jobs(self, request: Request) -> Response:
        filters, given, problem = self._filters(request)
        cursor_text = request.query_params.get("before", "")
        cursor = int(cursor_text) if _digits(cursor_text) and len(cursor_text) < 19 else None
        window = SCAN_WINDOW if filters.narrows else None
        search = filters.search or ""
        async with self.pool.acquire() as conn:
            # A job id: straight to the job, like River UI and Oban Web.
            is_id = _digits(search) and len(search) < 19 and len(given) == 1
            if is_id and await repository.job_exists(conn, int(search)):
                return RedirectResponse(f"/jobs/{int(search)}", status_code=303)
            rows, floor = await repository.list_jobs(
                conn, filters, older_than=cursor, limit=PAGE_SIZE + 1, window=window
            )
        more = len(rows) > PAGE_SIZE
        rows = redact_value(rows[:PAGE_SIZE])
        for row in rows:
            # Redacted whole, then cut: a secret the cut falls inside is masked whole.
            if row["last_error"] and len(row["last_error"]) > LIST_ERROR_CHARS:
                row["last_error"] = row["last_error"][: LIST_ERROR_CHARS - 1] + "…"
        base = dict(given)

        def link(before: int | None) -> str:
            query = {**base, **({"before": str(before)} if before is not None else {})}
            return "/jobs" + ("?" + urlencode(query) if query else "")

        older_link = search_link = None
        if more:
            older_link = link(rows[-1]["id"])
        elif floor > 1:
            # The window ran out before the page filled: offer to look further back.
            search_link = link(floor)
        return self.render(
            request,
            "jobs.html",
            page="jobs",
            rows=rows,
            given=given,
            problem=problem,
            statuses=_STATUSES,
            older_link=older_link,
            search_link=search_link,
            floor=floor,
            first_link=link(None) if cursor is not None else None,
            back=urlencode({**base, **({"before": cursor_text} if cursor else {})}),
        )

    async def job(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        if job_id > MAX_JOB_ID:
            return self.render(request, "missing.html", status=404, page="jobs", job_id=job_id)
        page_text = request.query_params.get("errors_page", "1")
        page = int(page_text) if _digits(page_text) and 0 < int(page_text) < 10**6 else 1
        async with self.pool.acquire() as conn:
            job = await repository.job_details(conn, job_id)
            if job is None:
                return self.render(request, "missing.html", status=404, page="jobs", job_id=job_id)
            errors = await repository.job_errors_page(
                conn,
                job_id,
                limit=ERRORS_PAGE_SIZE,
                offset=(page - 1) * ERRORS_PAGE_SIZE,
            )
        job = redact_value(job)
        return self.render(
            request,
            "job.html",
            page="jobs",
            job=job,
            errors=repository.shown_errors(errors),
            errors_page=page,
            errors_pages=max(1, -(-job["error_count"] // ERRORS_PAGE_SIZE)),
            finished=job["status"] in _FINISHED,
        )

    async def errors_csv(self, request: Request) -> Response:
        job_id = int(request.path_params["job_id"])
        if job_id > MAX_JOB_ID:
            return Response(f"no job {job_id}", status_code=404, media_type="text/plain")
        async with self.pool.acquire() as conn:
            try:
                text = await ops.errors(conn, job_id)
            except LookupError:
                return Response(f"no job {job_id}", status_code=404, media_type="text/plain")
        return Response(
            text + "\n",
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="job-{job_id}-rejected.csv"',
                "cache-control": "no-store",
            },
        )

    async def events(self, request: Request) -> Response:
        assert self.hub is not None
        job_text = request.query_params.get("job", "")
        job_id = int(job_text) if _digits(job_text) and len(job_text) < 19 else None
        # A stream outlives no session: it ends when the cookie that opened it expires
        # (the page's next try is then refused), as a page load would be.
        return StreamingResponse(
            self.hub.stream(job_id, until=security.session_ends(request, self.token)),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # -- actions -------------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, list[str]] | None:
        """The POST's fields; None when its body is larger than MAX_FORM (read no further
        than that: the sign-in form is open to anyone)."""
        declared = request.headers.get("content-length", "")
        if _digits(declared) and int(declared) > MAX_FORM:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return None
        return parse_qs(body.decode("utf-8", "replace"), max_num_fields=5000)

    @staticmethod
    def _too_large() -> Response:
        return Response("the form is too large", status_code=413, media_type="text/plain")

    @staticmethod
    def _field(form: dict[str, list[str]], name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    def _denied(self, request: Request, form: dict[str, list[str]]) -> Response | None:
        if self.read_only:
            return Response("importd web is read-only", status_code=403, media_type="text/plain")
        if not self.token or not security.authenticated(request, self.token):
            return Response(
                "retry and cancel need web_token", status_code=403, media_type="text/plain"
            )
        return self._forged(request, form)

    def _forged(self, request: Request, form: dict[str, list[str]]) -> Response | None:
        """The answer to a form whose CSRF field or Origin is refused (None: accepted)."""
        problem = security.csrf_problem(request, self._field(form, "csrf"))
        if problem is None:
            return None
        log.warning("web_form_refused", path=request.url.path, reason=problem)
        return Response(
            "the form has expired or came from another site: reload the page and try again",
            status_code=403,
            media_type="text/plain",
        )

    def _done(self, request: Request, location: str, text: str) -> Response:
        response = RedirectResponse(location, status_code=303)
        response.set_cookie(
            "importd_flash", quote(text[:300]), max_age=60, **security.cookie_args(request)
        )
        return response

    async def job_action(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return self._too_large()
        denied = self._denied(request, form)
        if denied is not None:
            return denied
        job_id = int(request.path_params["job_id"])
        action = request.path_params["action"]
        if action not in ("retry", "cancel") or job_id > MAX_JOB_ID:
            return Response("no such action", status_code=404, media_type="text/plain")
        async with self.pool.acquire() as conn:
            if action == "retry":
                text = _said(await ops.retry(conn, [job_id], kind=None, queue=None, since=None))
            else:
                text = _said(await ops.cancel(conn, [job_id]))
        log.info("web_action", action=action, ids=[job_id], outcome=text)
        return self._done(request, f"/jobs/{job_id}", f"job {job_id}: {text}")

    async def bulk_action(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return self._too_large()
        denied = self._denied(request, form)
        if denied is not None:
            return denied
        action = (form.get("action") or [""])[0]
        ids = sorted({int(v) for v in form.get("id", []) if _digits(v) and len(v) < 19})
        back_qs = parse_qs((form.get("back") or [""])[0])
        back = "/jobs" + (
            "?" + urlencode({k: v[0] for k, v in back_qs.items() if v}) if back_qs else ""
        )
        async with self.pool.acquire() as conn:
            if action == "retry" and ids:
                text = _said(await ops.retry(conn, ids, kind=None, queue=None, since=None))
            elif action == "cancel" and ids:
                text = _said(await ops.cancel(conn, ids))
            elif action == "retry-failed":
                kind = self._field(form, "kind") or None
                queue = self._field(form, "queue") or None
                text = _said(await ops.retry(conn, None, kind=kind, queue=queue, since=None))
            else:
                return self._done(request, back, "nothing selected")
        log.info("web_action", action=action, ids=ids, outcome=text)
        return self._done(request, back, text)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.render(request, "login.html", page="login", failed=False)
        form = await self._form(request)
        if form is None:
            return self._too_large()
        given = (form.get("token") or [""])[0]
        problem = security.csrf_problem(request, self._field(form, "csrf"))
        if problem is not None:
            log.warning("web_form_refused", path=request.url.path, reason=problem)
            # Not "that is not the token": the token was not looked at.
            return self.render(
                request,
                "login.html",
                status=403,
                page="login",
                failed=False,
                refused=(
                    "This form has expired or was sent through another site: reload the "
                    "page and sign in again. (Behind a proxy that ends TLS, name it with "
                    "--proxy.)"
                ),
            )
        client = security.client_address(request)
        wait = self.throttle.retry_after(client)
        if wait is not None:
            # Not even a right token is looked at: the throttle bounds the guesses.
            response = self.render(
                request,
                "login.html",
                status=429,
                page="login",
                failed=False,
                throttled=security.too_many_failures(wait),
            )
            response.headers["retry-after"] = str(math.ceil(wait))
            return response
        if not self.token or not security.token_matches(given.strip(), self.token):
            log.warning("web_login_failed", client=client)
            if self.throttle.failed(client):
                log.warning("web_login_throttled", client=client, failures=security.Throttle.LIMIT)
            return self.render(request, "login.html", status=401, page="login", failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            security.SESSION_COOKIE,
            security.session_value(self.token),
            max_age=security.SESSION_SECONDS,
            **security.cookie_args(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Sign out: the session cookie deleted (a form with this browser's CSRF token)."""
        form = await self._form(request)
        if form is None:
            return self._too_large()
        forged = self._forged(request, form)
        if forged is not None:
            return forged
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(security.SESSION_COOKIE, **security.cookie_args(request))
        return response


def _chart(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Completed and failed per minute over the last hour, as SVG bar geometry."""
    end = int(now.timestamp()) // 60 * 60
    minutes = [end - 60 * i for i in range(59, -1, -1)]
    done = dict.fromkeys(minutes, 0)
    failed = dict.fromkeys(minutes, 0)
    for row in rows:
        minute = int(row["minute"])
        if row["status"] not in ("completed", "failed"):
            continue
        target = done if row["status"] == "completed" else failed
        if minute in target:
            target[minute] += row["n"]
    top = max([done[m] + failed[m] for m in minutes] + [1])
    height = 120.0
    bars = []
    for i, minute in enumerate(minutes):
        h_done = height * done[minute] / top
        h_failed = height * failed[minute] / top
        bars.append(
            {
                "x": i * 10,
                "done": done[minute],
                "failed": failed[minute],
                "y_done": height - h_done,
                "h_done": h_done,
                "y_failed": height - h_done - h_failed,
                "h_failed": h_failed,
                "label": datetime.fromtimestamp(minute, UTC).strftime("%H:%M"),
            }
        )
    return {
        "bars": bars,
        "top": top,
        "height": height,
        "total_done": sum(done.values()),
        "total_failed": sum(failed.values()),
    }


class _Catch:
    """Logs an unexpected exception once, with its traceback, and answers 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            log.exception(
                "web_request_failed", path=scope.get("path"), error=db.describe_db_error(exc)
            )
            if not started:
                body = b"importd web: something went wrong; the log has the details"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings) -> security.Guard:
    """The ASGI application (guards outermost)."""
    web = Web(settings)
    routes = [
        Route("/", web.timed("overview", web.overview)),
        Route("/running", web.timed("running", web.running)),
        Route("/jobs", web.timed("jobs", web.jobs)),
        Route("/jobs/bulk", web.bulk_action, methods=["POST"]),
        Route("/jobs/{job_id:int}", web.timed("job", web.job)),
        Route("/jobs/{job_id:int}/rejected.csv", web.errors_csv),
        Route("/jobs/{job_id:int}/{action:str}", web.job_action, methods=["POST"]),
        Route("/events", web.events),
        Route("/login", web.login, methods=["GET", "POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=web.lifespan)
    app.state.web = web
    guard = security.Guard(_Catch(app), settings.web_token, web.throttle)
    guard.web = web
    return guard


def _listener_ended(task: asyncio.Task[None]) -> None:
    """The live pages' LISTEN connection gave up for good (an error no retry gets past,
    such as a DSN option the driver refuses): said once, with its traceback; the pages
    are still served, without live updates."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("web_listener_failed", error=db.describe_db_error(exc), exc_info=exc)


class _Server(uvicorn.Server):
    """Ends the live streams at the first signal, so a shutdown does not wait for them."""

    def __init__(self, config: uvicorn.Config, web: Web) -> None:
        super().__init__(config)
        self.web = web

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.web.hub is not None:
            self.web.hub.stop()
        super().handle_exit(sig, frame)


def proxy_spec(item: str) -> str:
    """A ``web_proxies`` entry as uvicorn matches it: an address as given, a network in
    its canonical form (uvicorn reads ``127.0.0.1/8``, host bits set, as no network at
    all, and never believed that proxy)."""
    item = item.strip()
    if "/" not in item:
        return item
    return str(ipaddress.ip_network(item, strict=False))


def serve(settings: Settings) -> int:
    """Run ``importd web`` until SIGINT / SIGTERM."""
    host, port = check_settings(settings)
    settings.effective_listen_dsn  # noqa: B018 (both DSNs checked: a ConfigError now, not in a traceback)
    # (As the daemon does: the redaction's patterns compiled before a page needs them.)
    threading.Thread(target=redaction.warm, name="importd-redaction", daemon=True).start()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        server_header=False,
        # Behind a reverse proxy that ends TLS (web_proxies), the scheme and the client
        # are the proxy's X-Forwarded-Proto and X-Forwarded-For, believed only from the
        # addresses named: a form's Origin (https://host) then matches this server's, and
        # cookies are sent Secure. Without it, every POST through such a proxy was refused
        # as coming from another origin, sign-in included.
        proxy_headers=bool(settings.web_proxies),
        forwarded_allow_ips=[proxy_spec(p) for p in settings.web_proxies] or None,
    )
    log.info(
        "web_listening",
        url=f"http://{host if ':' not in host else f'[{host}]'}:{port}/",
        read_only=settings.web_read_only,
    )
    server = _Server(config, app.web)
    server.run()
    return 0 if server.started else 1
