"""importd web in a real headless Chromium, against a real ``importd web`` process.

The browser is Debian's ``chromium`` driven through ``/usr/bin/chromedriver`` (Selenium is
pointed at both; it downloads nothing). Missing, the tests fail: ``.ci/run`` installs them.
Every page visited is saved as a PNG under ``artifacts/web/``; with ``IMPORTD_WEB_DOCS=1``
the overview and a job page are also written to ``docs/`` for the README.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import importd
from importd import config, sql
from importd.web import check_settings, create_app, security
from tests.helpers import ROOT, Conn, Drain, StartDaemon, importd_env, run_importd, wait_until

TOKEN = "test-web-token-0123456789"
ARTIFACTS = ROOT / "artifacts" / "web"
DAEMONS_DDL = (
    "CREATE TABLE IF NOT EXISTS importd_daemons (name text PRIMARY KEY, host text, pid int, "
    "version text, kinds text[], queues text[], started_at timestamptz, last_seen timestamptz)"
)
XSS = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


def _find(name: str, *candidates: str) -> str:
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} is missing: apt-get install -y chromium chromium-driver (.ci/run does it)")


class Browser(webdriver.Chrome):
    """Chromium with the folder its downloads land in."""

    downloads: Path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session (a fresh profile, downloads to a temp dir)."""
    binary = _find("chromium", os.environ.get("IMPORTD_TEST_CHROMIUM", ""), "/usr/bin/chromium")
    driver_path = _find(
        "chromedriver", os.environ.get("IMPORTD_TEST_CHROMEDRIVER", ""), "/usr/bin/chromedriver"
    )
    profile = tempfile.mkdtemp(prefix="importd-chromium-")
    downloads = tempfile.mkdtemp(prefix="importd-downloads-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": downloads, "download.prompt_for_download": False}
    )
    driver = Browser(service=Service(executable_path=driver_path), options=options)
    driver.downloads = Path(downloads)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebProcess:
    """A real ``importd web`` process."""

    def __init__(
        self,
        dsn: str,
        log_path: Path,
        *args: str,
        token: str | None = TOKEN,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = _free_port()
        self.dsn = dsn
        self.url = f"http://127.0.0.1:{self.port}"
        env = importd_env(**({"IMPORTD_WEB_TOKEN": token} if token else {}), **(env or {}))
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "importd",
                "web",
                "--dsn",
                dsn,
                "--listen",
                f"{host}:{self.port}",
                "--log-format",
                "json",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    async def ready(self) -> WebProcess:
        async def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"importd web exited:\n{self.log_path.read_text()}")
            try:
                async with httpx.AsyncClient() as client:
                    await client.get(self.url + "/login", timeout=2)
                return True
            except httpx.TransportError:
                return False

        await wait_until(answers, timeout=30, what="importd web to answer")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def web(dsn: str, tmp_path: Path) -> Iterator[Any]:
    """Start ``importd web`` on this test's database: ``await web(*args)``."""
    started: list[WebProcess] = []

    async def start(*args: str, **kwargs: Any) -> WebProcess:
        proc = WebProcess(dsn, tmp_path / f"web-{len(started)}.log", *args, **kwargs)
        started.append(proc)
        return await proc.ready()

    yield start
    for proc in started:
        proc.stop()


def shot(driver: webdriver.Chrome, name: str, docs: str | None = None) -> None:
    """Save the page as artifacts/web/NAME.png (and docs/DOCS when asked for)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The whole page, not just the window.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 140, 600), 4000))
    try:
        driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        if docs and os.environ.get("IMPORTD_WEB_DOCS"):
            (ROOT / "docs").mkdir(exist_ok=True)
            driver.save_screenshot(str(ROOT / "docs" / docs))
    finally:
        driver.set_window_size(1280, 1000)


async def open_page(driver: webdriver.Chrome, url: str) -> None:
    await asyncio.to_thread(driver.get, url)
    await settled(driver)


async def settled(driver: webdriver.Chrome) -> None:
    """A live page has drawn its parts once from its stream's first picture (so elements
    found now are not swapped under Selenium until something changes)."""
    await until(
        driver,
        lambda d: d.execute_script(
            "var b = document.body; return !b.dataset.live || b.dataset.live === 'running' "
            "|| !!b.dataset.refreshed"
        ),
        "the page's first live picture",
    )


async def sign_in(driver: webdriver.Chrome, server: WebProcess) -> None:
    driver.delete_all_cookies()
    await open_page(driver, server.url + "/")
    assert driver.current_url.endswith("/login")  # the token is asked for first
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "sign-in").click()
    try:
        await until(driver, lambda d: d.current_url == server.url + "/", "the overview after login")
    except Exception:
        print(driver.current_url, driver.page_source[:3000], server.log_path.read_text()[-3000:])
        raise


async def until(driver: webdriver.Chrome, check: Any, what: str, timeout: float = 20) -> Any:
    # A live page redraws parts of itself: an element found a moment ago may be replaced
    # between the find and the read; the check is simply tried again.
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return await asyncio.to_thread(wait.until, check, f"timed out waiting for {what}")


def text(driver: webdriver.Chrome, css: str) -> str:
    found = shown(driver, css)
    if found is None:  # what WebDriverWait waits through
        raise NoSuchElementException(f"nothing matches {css}")
    return found


def shown(driver: webdriver.Chrome, css: str) -> str | None:
    """An element's text, read in the page (live updates swap elements under Selenium)."""
    found = driver.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.innerText : null", css
    )
    return None if found is None else str(found).strip()


async def watching(driver: webdriver.Chrome) -> None:
    """The page is live (see settled); mark it to see reloads."""
    await settled(driver)
    driver.execute_script("window.__same_page = true")


async def make_job(
    conn: Any,
    kind: str,
    status: str,
    *,
    queue: str = "default",
    payload: dict[str, Any] | None = None,
    error: str | None = None,
    tenant: str | None = None,
) -> int:
    job_id = await importd.enqueue(conn, kind, payload or {}, queue=queue, tenant_id=tenant)
    if status == "running":
        await conn.execute(
            "UPDATE import_jobs SET status = 'running', attempts = 1, started_at = now(), "
            "locked_by = 'web-test:1', locked_until = now() + interval '5 min' WHERE id = $1",
            job_id,
        )
    elif status != "pending":
        await conn.execute(
            "UPDATE import_jobs SET status = $2, attempts = 1, started_at = now(), "
            "finished_at = now(), last_error = $3 WHERE id = $1",
            job_id,
            status,
            error,
        )
    return job_id


async def test_overview_shows_real_counts_rates_tenants_and_daemons(
    conn: Conn, web: Any, browser: Browser
) -> None:
    for _ in range(3):
        await make_job(conn, "csv", "pending", queue="imports")
    for _ in range(2):
        await make_job(conn, "csv", "failed", queue="imports", error="boom")
    await make_job(conn, "http", "completed", queue="hooks")
    await make_job(conn, "csv", "running", queue="imports", tenant="acme")
    await conn.execute(
        "INSERT INTO importd_rate_limits (key, tat) VALUES ('queue:hooks', now() + interval '30 s')"
    )
    await conn.execute(DAEMONS_DDL)
    await conn.execute(
        "INSERT INTO importd_daemons VALUES ('box-1:4242', 'box-1', 4242, '9.9.9', "
        "'{csv,ndjson}', '{imports}', now() - interval '1 hour', now())"
    )
    server = await web()
    await sign_in(browser, server)
    row = 'tr[data-queue="imports"]'
    assert text(browser, f'{row} [data-count="pending"]') == "3"
    assert text(browser, f'{row} [data-count="running"]') == "1"
    assert text(browser, f"{row} td:nth-child(5)") == "2"  # failed in the last hour
    assert text(browser, 'tr[data-queue="hooks"] td:nth-child(4)') == "1"  # completed 1h
    assert text(browser, "#failed-1h") == "2" and text(browser, "#done-1h") == "1"
    daemons = text(browser, "#daemons")
    assert "box-1:4242" in daemons and "9.9.9" in daemons and "csv, ndjson" in daemons
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "acme" in page and "queue:hooks" in page and "booked" in page
    # Live: a new pending job shows without a reload (drawn from the stream), and the rest
    # of the page too: the running job fails, and the queue table's "failed 1h" and the
    # last hour's card follow (the server redraws those parts).
    browser.execute_script("window.__same_page = true")
    await until(browser, lambda d: d.find_element(By.ID, "live-state").is_displayed(), "live")
    shot(browser, "overview", docs="web-overview.png")
    await make_job(conn, "csv", "pending", queue="imports")
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', finished_at = now(), "
        "last_error = 'boom', locked_by = NULL, locked_until = NULL "
        "WHERE queue = 'imports' AND status = 'running'"
    )
    await until(
        browser,
        lambda d: text(d, f'{row} [data-count="pending"]') == "4",
        "the pending count to go live to 4",
    )
    await until(
        browser,
        lambda d: shown(d, f"{row} td:nth-child(5)") == "3" and shown(d, "#failed-1h") == "3",
        "the failed count to go live to 3",
    )
    assert shown(browser, f'{row} [data-count="running"]') == "0"
    assert browser.execute_script("return window.__same_page") is True


async def test_job_list_and_job_page_follow_changes_without_reload(
    conn: Conn, web: Any, browser: Browser
) -> None:
    older = await make_job(conn, "csv", "pending", queue="watch")
    server = await web()
    await sign_in(browser, server)
    await open_page(browser, server.url + "/jobs?queue=watch")
    await watching(browser)
    browser.find_element(By.CSS_SELECTOR, f'input.row-select[value="{older}"]').click()
    # A new job shows, and a listed job's new status, together (one redraw or two).
    newer = await make_job(conn, "csv", "running", queue="watch")
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', attempts = 1, "
        "finished_at = now(), last_error = 'went wrong' WHERE id = $1",
        older,
    )
    await until(
        browser,
        lambda d: (
            shown(d, f'tr[data-job="{newer}"] .badge') == "running"
            and shown(d, f'tr[data-job="{older}"] .badge') == "failed"
        ),
        "the new job and the failed one on the list",
    )
    assert "went wrong" in (shown(browser, f'tr[data-job="{older}"]') or "")
    assert browser.execute_script("return window.__same_page") is True
    # A selection survives the redraw (the bulk actions act on it).
    assert (
        browser.execute_script(
            "return document.querySelector(arguments[0]).checked",
            f'input.row-select[value="{older}"]',
        )
        is True
    )
    # A job page follows its job: running, then failed with its (escaped) error.
    await open_page(browser, f"{server.url}/jobs/{newer}")
    await watching(browser)
    assert shown(browser, "#job-status") == "running" and shown(browser, "#cancel") == "Cancel"
    assert shown(browser, "#last-error") is None
    await conn.execute(
        "UPDATE import_jobs SET status = 'failed', finished_at = now(), "
        "last_error = $2, locked_by = NULL, locked_until = NULL WHERE id = $1",
        newer,
        XSS,
    )
    await until(browser, lambda d: shown(d, "#job-status") == "failed", "the job page: failed")
    assert XSS in (shown(browser, "#last-error") or "")  # shown as text, inert
    assert browser.execute_script("return window.__pwned") is None
    assert shown(browser, "#retry") == "Retry" and shown(browser, "#cancel") is None
    assert browser.execute_script("return window.__same_page") is True
    # The parts come from the page itself asked for with a header: its main block only.
    async with httpx.AsyncClient(
        headers={"authorization": f"Bearer {TOKEN}", "x-importd-part": "1"}
    ) as client:
        part = await client.get(f"{server.url}/jobs/{newer}")
    assert part.status_code == 200 and 'id="job-part"' in part.text
    assert "<html" not in part.text and "&lt;script&gt;" in part.text
    assert "frame-ancestors 'none'" in part.headers["content-security-policy"]


async def test_running_progress_bar_moves_while_the_job_runs(
    conn: Conn, web: Any, browser: Browser, daemons: StartDaemon
) -> None:
    job_id = await importd.enqueue(conn, "steps", {"total": 400, "pause": 0.05}, queue="imports")
    daemon = daemons("--heartbeat-interval", "0.2")
    server = await web()
    await sign_in(browser, server)
    await open_page(browser, server.url + "/running")
    bar = f'tr[data-job="{job_id}"] progress'

    def value(d: Any) -> float:
        # Read in the page: the live updates replace the rows under Selenium's feet.
        return float(
            d.execute_script(
                "var e = document.querySelector(arguments[0]); return e ? e.value : 0", bar
            )
        )

    first = await until(browser, lambda d: value(d) > 0 and value(d), "the job's progress")
    browser.execute_script("window.__same_page = true")
    later = await until(
        browser, lambda d: value(d) > first + 20 and value(d), "the progress bar to move"
    )
    assert later > first
    assert browser.execute_script("return window.__same_page") is True  # no reload
    row = browser.execute_script(
        "return document.querySelector(arguments[0]).innerText", f'tr[data-job="{job_id}"]'
    )
    assert "/ 400" in row and "steps" in row and "1 / 5" in row
    shot(browser, "running")
    await open_page(browser, f"{server.url}/jobs/{job_id}")
    job_bar = "#job-progress"
    before = float(
        browser.execute_script("return document.querySelector(arguments[0]).value", job_bar)
    )
    await until(
        browser,
        lambda d: (
            float(
                d.execute_script(
                    "var e = document.querySelector(arguments[0]); return e ? e.value : 0", job_bar
                )
            )
            > before
        ),
        "the job page's progress bar to move",
    )
    daemon.kill()


async def test_failed_import_shows_and_downloads_rejected_rows(
    conn: Conn, drain: Drain, web: Any, browser: Browser, tmp_path: Path
) -> None:
    await conn.execute(
        "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, age int CHECK (age >= 0))"
    )
    lines = ["id,name,age"] + [f"{i},n{i},{i}" for i in range(1, 121)]
    lines[3] = "3,three,not-a-number"  # line 4
    lines[60] = "60,sixty,-5"  # line 61: CHECK
    lines[61] = f'61,"{XSS.replace(chr(34), chr(34) * 2)}",x'  # line 62, a script
    lines[99] = "99,,7"  # line 100: NOT NULL
    source = tmp_path / "people.csv"
    source.write_text("\n".join(lines) + "\n")
    job_id = await importd.enqueue(
        conn,
        "csv",
        {"source": f"file://{source}", "table": "people", "max_errors": 3},
        max_attempts=1,
    )
    await drain(import_roots=(str(tmp_path),), tables=("public.people",))
    assert await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", job_id) == "failed"
    server = await web()
    await sign_in(browser, server)
    await open_page(browser, f"{server.url}/jobs/{job_id}")
    assert text(browser, "#job-status") == "failed"
    assert "TooManyErrors" in text(browser, "#last-error")
    shown = [
        row.find_elements(By.TAG_NAME, "td")
        for row in browser.find_elements(By.CSS_SELECTOR, "#rejected tbody tr")
    ]
    assert [cells[0].text for cells in shown] == ["4", "61", "62", "100"]
    assert XSS.split('"', maxsplit=1)[0] in shown[2][2].text  # the raw record, shown as text
    assert browser.execute_script("return window.__pwned") is None
    shot(browser, "job-failed-import", docs="web-job.png")
    # The download: the CSV a user fixes and uploads again, with the source's line numbers.
    for old in browser.downloads.glob("*"):
        old.unlink()
    browser.find_element(By.ID, "download-rejected").click()
    path = browser.downloads / f"job-{job_id}-rejected.csv"
    await wait_until(
        lambda: asyncio.sleep(0, path.is_file() and path.stat().st_size > 0),
        timeout=20,
        what="the CSV download",
    )
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["line", "message", "record"]
    assert [r[0] for r in rows[1:]] == ["4", "61", "62", "100"]
    assert "three" in rows[1][2] and "sixty" in rows[2][2] and "<script>" in rows[3][2]


async def test_script_in_payload_error_and_row_is_inert(
    conn: Conn, drain: Drain, web: Any, browser: Browser
) -> None:
    job_id = await importd.enqueue(
        conn,
        "fail",
        {"message": XSS, "note": XSS, "leak": f"token={TOKEN}"},
        max_attempts=1,
        dedup_key=XSS,
    )
    await conn.execute(
        "INSERT INTO import_job_errors (job_id, attempt, line_number, message, "
        "raw_record) VALUES ($1, 1, 7, $2, $2)",
        job_id,
        XSS,
    )
    await drain()
    server = await web()
    await sign_in(browser, server)
    for url in (
        f"/jobs/{job_id}",
        "/jobs?status=failed",
        f"/jobs?q={job_id}",
        "/jobs?" + urlencode({"q": XSS}),
    ):
        await open_page(browser, server.url + url)
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "<script>window.__pwned = 1</script>" in page, url  # shown, as text
        assert browser.execute_script("return window.__pwned") is None, url
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img"), url
    await open_page(browser, f"{server.url}/jobs/{job_id}")
    assert '"note": "<script>window.__pwned = 1</script><img src=\\"x\\"' in text(
        browser, "#payload"
    )
    assert XSS in text(browser, "#last-error")
    # Secrets are masked as everywhere else (the web token is one).
    assert '"leak": "token=***"' in text(browser, "#payload") and TOKEN not in browser.page_source
    shot(browser, "job-script-payload")
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}) as client:
        answer = await client.get(f"{server.url}/jobs/{job_id}")
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_retry_and_cancel_buttons_change_jobs(conn: Conn, web: Any, browser: Browser) -> None:
    failed = await make_job(conn, "csv", "failed", error="boom")
    others = [await make_job(conn, "csv", "failed", queue="bulk", error="boom") for _ in range(2)]
    server = await web()
    await sign_in(browser, server)
    await open_page(browser, f"{server.url}/jobs/{failed}")
    browser.find_element(By.ID, "retry").click()
    await until(browser, lambda d: text(d, "#job-status") == "pending", "the job to be pending")
    assert "back to pending" in text(browser, "#flash")
    await settled(browser)
    browser.find_element(By.ID, "cancel").click()
    await until(browser, lambda d: text(d, "#job-status") == "cancelled", "the job cancelled")
    status = await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", failed)
    assert status == "cancelled"
    # In bulk, from a filtered list.
    await open_page(browser, f"{server.url}/jobs?status=failed&queue=bulk")
    browser.find_element(By.ID, "select-all").click()
    browser.find_element(By.ID, "bulk-retry").click()
    await until(
        browser, lambda d: "2 job(s) back to pending" in text(d, "#flash"), "the bulk retry"
    )
    assert browser.current_url.endswith("/jobs?status=failed&queue=bulk")
    statuses = await conn.fetch("SELECT status FROM import_jobs WHERE id = ANY ($1)", others)
    assert {r["status"] for r in statuses} == {"pending"}
    await open_page(browser, f"{server.url}/jobs?status=pending&queue=bulk")
    shot(browser, "jobs")
    browser.find_element(By.ID, "select-all").click()
    browser.find_element(By.ID, "bulk-cancel").click()
    await until(browser, lambda d: "2 job(s) cancelled" in text(d, "#flash"), "the bulk cancel")
    # "Retry every failed job" of the filtered queue: the CLI's `retry --failed --queue`.
    again = [await make_job(conn, "csv", "failed", queue="bulk2", error="boom") for _ in range(2)]
    elsewhere = await make_job(conn, "csv", "failed", queue="other", error="boom")
    await open_page(browser, f"{server.url}/jobs?status=failed&queue=bulk2")
    browser.find_element(By.ID, "retry-all-failed").click()
    await until(
        browser,
        lambda d: "2 job(s) back to pending" in text(d, "#flash"),
        "retry every failed job of queue bulk2",
    )
    statuses = await conn.fetch(
        "SELECT id, status FROM import_jobs WHERE id = ANY ($1)", [*again, elsewhere]
    )
    assert {r["id"]: r["status"] for r in statuses} == {
        again[0]: "pending",
        again[1]: "pending",
        elsewhere: "failed",
    }
    # A form without the page's CSRF token changes nothing.
    async with httpx.AsyncClient(
        headers={"authorization": f"Bearer {TOKEN}"}, cookies={"importd_csrf": "y" * 43}
    ) as client:
        forged = await client.post(f"{server.url}/jobs/{others[0]}/retry", data={"csrf": "x"})
    assert forged.status_code == 403
    assert (
        await conn.fetchval("SELECT status FROM import_jobs WHERE id = $1", others[0])
        == "cancelled"
    )


async def test_jobs_keyset_paging_filters_and_search(
    conn: Conn, web: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await conn.execute(
        "INSERT INTO import_jobs (kind, queue, status, finished_at, attempts, dedup_key) "
        "SELECT 'csv', 'q' || (i % 3), 'completed', now(), 1, 'up-' || i "
        "FROM generate_series(1, 230) i"
    )
    server = await web(token=None)

    def ids_of(page: str) -> list[int]:
        return [int(part.split('"')[0]) for part in page.split('data-job="')[1:]]

    def link(page: str, anchor: str) -> str:
        if f'id="{anchor}"' not in page:
            return ""
        return (
            page.split(f'id="{anchor}"', maxsplit=1)[0]
            .rsplit('href="', 1)[1]
            .split('"', maxsplit=1)[0]
            .replace("&amp;", "&")
        )

    async with httpx.AsyncClient(base_url=server.url) as client:
        seen: list[int] = []
        url = "/jobs?queue=q1"
        pages = 0
        while url:
            page = (await client.get(url)).text
            pages += 1
            ids = ids_of(page)
            assert ids == sorted(ids, reverse=True)
            seen += ids
            url = link(page, "page-older")
        expected = await conn.fetch(
            "SELECT id FROM import_jobs WHERE queue = 'q1' ORDER BY id DESC"
        )
        assert seen == [r["id"] for r in expected] and pages == 2
        first = (await client.get(link(page, "page-first"))).text
        assert ids_of(first) == seen[:50]
        found = (await client.get("/jobs?q=up-17")).text
        assert ids_of(found) == [17]
        jump = await client.get("/jobs?q=42", follow_redirects=False)
        assert jump.status_code == 303 and jump.headers["location"] == "/jobs/42"
        bad = (await client.get("/jobs?from=yesterday")).text
        assert "is not a date or time" in bad
        # No web_token: the page is open to this machine, but offers no action.
        assert 'id="select-all"' not in first and "view only" in first

    # A filter that matches little pages back through history in bounded windows.
    from starlette.testclient import TestClient  # noqa: PLC0415

    import importd.web  # noqa: PLC0415

    monkeypatch.setattr(importd.web, "SCAN_WINDOW", 100)
    with TestClient(
        create_app(config.Settings(dsn=server.dsn)),
        base_url="http://127.0.0.1",
        client=("127.0.0.1", 5000),
    ) as local:
        page = local.get("/jobs?q=up-17").text
        assert ids_of(page) == [] and "searched back to job 131" in page
        page = local.get(link(page, "page-search-older")).text
        assert ids_of(page) == [] and "searched back to job 31" in page
        page = local.get(link(page, "page-search-older")).text
        assert ids_of(page) == [17] and 'id="page-search-older"' not in page


async def test_refused_without_the_token(dsn: str, web: Any, tmp_path: Path) -> None:
    # Off loopback, importd web does not start without a token.
    done = run_importd("web", "--dsn", dsn, "--listen", f"0.0.0.0:{_free_port()}")
    assert done.returncode == 3 and "set web_token" in done.stderr
    with pytest.raises(config.ConfigError, match="at least 16 characters"):
        check_settings(config.Settings(dsn=dsn, web_token="short-token"))
    # Listening everywhere with a token: a request without it is refused.
    server = await web(host="0.0.0.0")
    async with httpx.AsyncClient() as client:
        refused = await client.get(server.url + "/jobs")
        assert refused.status_code == 401 and "token" in refused.text
        events = await client.get(server.url + "/events")
        assert events.status_code == 401
        allowed = await client.get(
            server.url + "/jobs", headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert allowed.status_code == 200
    # Without a token, a client that is not this machine is refused (as the app sees it).
    from starlette.testclient import TestClient  # noqa: PLC0415

    app = create_app(config.Settings(dsn=dsn))
    remote = TestClient(app, client=("192.0.2.10", 40000))
    answer = remote.get("/jobs")
    assert answer.status_code == 403 and "web_token" in answer.text
    # Read-only: the actions are refused even with the token.
    read_only = TestClient(
        create_app(config.Settings(dsn=dsn, web_token=TOKEN, web_read_only=True))
    )
    bearer = {"authorization": f"Bearer {TOKEN}"}
    refused = read_only.post("/jobs/1/retry", headers=bearer)
    assert refused.status_code == 403 and "read-only" in refused.text
    with read_only:  # and it offers none
        page = read_only.get("/jobs", headers=bearer).text
    assert "read-only" in page and 'id="select-all"' not in page and 'id="bulk-retry"' not in page


async def test_a_read_only_dashboard_serves_a_newer_schema_with_a_warning(
    conn: Any, web: Any
) -> None:
    """As ``status`` and ``show``: a dashboard without retry and cancel only reads, so a
    schema migrated ahead of it (a rolling upgrade) is served, with the warning first.
    With its actions on it refuses (exit 4: tests/acceptance/test_exit_codes.py)."""
    newer = max(version for version, _, _ in sql.migrations()) + 1
    await conn.execute(
        "INSERT INTO importd_migrations (version, name, checksum) VALUES ($1, $2, 'x')",
        newer,
        f"{newer:04d}_from_the_future",
    )
    proc = await web("--read-only", env={"IMPORTD_HTTP_TOKEN": "tok9"})
    async with httpx.AsyncClient() as client:
        page = await client.get(proc.url + "/login", timeout=5)
    assert page.status_code == 200
    lines = proc.log_path.read_text().splitlines()
    assert lines[0].startswith("importd: warning: the database schema is newer"), lines
    # And, as a daemon does, it names a secret too short to be masked, never its value.
    (short,) = [json.loads(line) for line in lines if "secret_too_short_to_mask" in line]
    assert short["settings"] == ["http_token"] and "tok9" not in json.dumps(short)


async def test_sign_out_ends_the_session_in_the_browser(web: Any, browser: Browser) -> None:
    server = await web()
    await sign_in(browser, server)
    cookie = browser.get_cookie("importd_session")
    assert cookie is not None and TOKEN not in cookie["value"]
    browser.find_element(By.ID, "sign-out").click()
    await until(browser, lambda d: d.current_url == server.url + "/login", "the sign-in form")
    assert browser.get_cookie("importd_session") is None
    await open_page(browser, server.url + "/jobs")
    assert browser.current_url == server.url + "/login"  # asked for the token again
    # The old cookie, replayed by hand, still proves the token until its twelve hours end
    # (sign-out is the browser's; a new token ends every session at once).
    async with httpx.AsyncClient() as client:
        replayed = await client.get(
            server.url + "/jobs", headers={"cookie": f"importd_session={cookie['value']}"}
        )
    assert replayed.status_code == 200


async def test_ten_wrong_tokens_lock_the_sign_in_form_for_that_client(web: Any) -> None:
    server = await web()
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.get("/login")  # the CSRF cookie
        csrf = client.cookies["importd_csrf"]
        for n in range(10):
            wrong = await client.post("/login", data={"csrf": csrf, "token": f"guess-{n}"})
            assert wrong.status_code == 401 and 'id="login-failed"' in wrong.text
        right = await client.post("/login", data={"csrf": csrf, "token": TOKEN})
        assert right.status_code == 429
        assert "too many wrong tokens from this address" in right.text
        assert 290 <= int(right.headers["retry-after"]) <= 300
        assert "importd_session" not in client.cookies
        # The API's bearer header comes from the same client: refused too.
        bearer = await client.get("/jobs", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 429
    events = [json.loads(line) for line in server.log_path.read_text().splitlines()]
    failed = [e for e in events if e.get("event") == "web_login_failed"]
    throttled = [e for e in events if e.get("event") == "web_login_throttled"]
    assert len(failed) == 10 and {e["client"] for e in failed} == {"127.0.0.1"}
    assert len(throttled) == 1 and throttled[0]["failures"] == 10
    assert TOKEN not in server.log_path.read_text()


async def test_a_live_stream_ends_when_its_session_does(web: Any) -> None:
    """The stream's session is checked as it opens and again as it runs: a cookie three
    seconds from its twelve hours keeps its stream that long, not for ever."""
    server = await web()
    issued = int(time.time()) - security.SESSION_SECONDS + 3
    cookie = {"cookie": f"importd_session={security.session_value(TOKEN, issued)}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        started = time.monotonic()
        async with client.stream("GET", "/events", headers=cookie) as stream:
            assert stream.status_code == 200
            frames = [line async for line in stream.aiter_lines() if line.startswith("data:")]
        lasted = time.monotonic() - started
        assert frames and 1.5 < lasted < 15, lasted  # ended by the server, after the expiry
        assert (await client.get("/jobs", headers=cookie)).status_code == 401
        # A bearer's stream has no session to end: it runs on (read one frame, close it).
        bearer = {"authorization": f"Bearer {TOKEN}"}
        async with client.stream("GET", "/events", headers=bearer) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    break


async def test_odd_digits_in_the_address_bar_are_no_errors(conn: Conn, web: Any) -> None:
    """ "²" passes str.isdigit() and fails int(): each parameter read as a number took
    the page to a 500 before."""
    job_id = await make_job(conn, "csv", "failed", error="boom")
    server = await web()
    bearer = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url, headers=bearer, timeout=10) as client:
        for path in (
            "/jobs?before=%C2%B2",
            "/jobs?q=%C2%B2",
            "/jobs?q=%D9%A3",
            f"/jobs/{job_id}?errors_page=%C2%B2",
        ):
            answer = await client.get(path)
            assert answer.status_code == 200, (path, answer.status_code)
        async with client.stream("GET", "/events?job=%C2%B2") as stream:
            assert stream.status_code == 200
        page = await client.get("/jobs")
        csrf = client.cookies["importd_csrf"]
        bulk = await client.post(
            "/jobs/bulk",
            data={"csrf": csrf, "action": "retry", "id": "\u00b2"},
            follow_redirects=False,
        )
        assert bulk.status_code == 303 and page.status_code == 200
    assert "web_request_failed" not in server.log_path.read_text()


def test_a_web_token_that_cannot_travel_in_a_header_is_refused(dsn: str) -> None:
    for token in ("pässwörd-ÄÖÜ-0123456789", "a token with blanks in it", "tab\there-0123456789"):
        with pytest.raises(config.ConfigError, match="printable ASCII"):
            check_settings(config.Settings(dsn=dsn, web_token=token))
    # The reason reaches the operator: "web_token: ..." was masked as a key's value.
    for token, reason in (("a token with blanks in it", "printable ASCII"), ("short", "16")):
        done = run_importd("web", "--dsn", dsn, env={"IMPORTD_WEB_TOKEN": token})
        assert done.returncode == 3 and reason in done.stderr, done.stderr
        assert token not in done.stderr


async def test_the_sign_in_form_forgives_blanks_around_the_token(web: Any) -> None:
    server = await web()
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.get("/login")
        csrf = client.cookies["importd_csrf"]
        signed = await client.post("/login", data={"csrf": csrf, "token": f" {TOKEN}\t"})
    assert signed.status_code == 303 and "importd_session" in client.cookies


async def test_a_listen_connection_that_cannot_be_made_is_said_and_the_pages_served(
    dsn: str, web: Any
) -> None:
    """An error no retry gets past on the LISTEN connection (an option the driver
    refuses) ended the live updates without a word in the log."""
    server = await web("--listen-dsn", f"{dsn}?sslmode=bogus")

    def said() -> bool:
        return "web_listener_failed" in server.log_path.read_text()

    await wait_until(said, what="the listener's failure in the log")
    (line,) = [json.loads(x) for x in server.log_path.read_text().splitlines() if "listener" in x]
    assert line["level"] == "error" and "sslmode" in line["error"]
    async with httpx.AsyncClient() as client:
        page = await client.get(
            server.url + "/jobs", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
        )
    assert page.status_code == 200
