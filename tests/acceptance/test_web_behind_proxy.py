"""``importd web`` behind a reverse proxy that ends TLS (``web_proxies``): the proxy
speaks HTTPS to the browser and plain HTTP to importd web, saying so in
``X-Forwarded-Proto``. A real ``importd web`` process; the proxy's requests are sent as a
proxy sends them (from 127.0.0.1, with its forwarded headers)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.acceptance import test_web as base
from tests.helpers import run_importd

web = base.web
TOKEN = base.TOKEN

# What a TLS proxy (nginx's proxy_set_header lines) adds to a browser's request for
# https://dash.example/ that it passes on.
PROXIED = {
    "host": "dash.example",
    "x-forwarded-proto": "https",
    "x-forwarded-for": "198.51.100.7",
}


async def _sign_in(url: str) -> httpx.Response:
    """The browser's sign-in through the proxy: the form (its CSRF cookie and field),
    then the POST with the Origin a browser sends from https://dash.example."""
    async with httpx.AsyncClient() as client:
        form = await client.get(url + "/login", headers=PROXIED)
        client.cookies.clear()  # (sent by hand below, as the proxy passes them)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        # The browser sends its cookies back through the proxy as they were set (a
        # Secure one too: to the browser the site is https); the proxy passes them on.
        cookie = "; ".join(f"{name}={value}" for name, value in form.cookies.items())
        return await client.post(
            url + "/login",
            data={"token": TOKEN, "csrf": csrf.group(1)},
            headers={**PROXIED, "origin": "https://dash.example", "cookie": cookie},
        )


async def test_sign_in_through_a_tls_proxy_it_believes(web: Any) -> None:
    server = await web("--proxy", "127.0.0.1")
    answer = await _sign_in(server.url)
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"].lower()
    assert "importd_session=" in cookie and "secure" in cookie
    # A client that is not the proxy is not believed: its own claim of https changes
    # nothing (the request stays plain HTTP, so its https Origin is another origin).
    other = await web("--proxy", "192.0.2.1")
    assert (await _sign_in(other.url)).status_code == 403


async def test_without_the_setting_a_tls_proxy_s_forms_are_refused(web: Any) -> None:
    server = await web()
    refused = await _sign_in(server.url)
    assert refused.status_code == 403
    # Said as it is: the token was right, the form came through another origin.
    assert "sent through another site" in refused.text and "--proxy" in refused.text
    assert "That is not the token" not in refused.text


def test_a_proxy_is_named_by_its_address(dsn: str) -> None:
    """``*`` or a host name is refused at start (exit 3), naming the setting."""
    for bad in ("*", "proxy.example", "0.0.0.0/0", "::/0", "0.0.0.0/1", "8000::/1", "4.0.0.0/6"):
        done = run_importd("web", "--dsn", dsn, "--proxy", bad)
        assert done.returncode == 3, done.stderr
        assert "web_proxies" in done.stderr or "--proxy" in done.stderr, done.stderr


async def test_through_a_proxy_a_dashboard_without_a_token_answers_no_one(web: Any) -> None:
    """Without ``web_token`` the dashboard answers only this machine: through the proxy,
    a request for another host name from another client is refused."""
    server = await web("--proxy", "127.0.0.1", token=None)
    async with httpx.AsyncClient() as client:
        refused = await client.get(server.url + "/jobs", headers=PROXIED)
        local = await client.get(server.url + "/jobs")
    assert refused.status_code == 403 and "web_token" in refused.text
    assert local.status_code == 200


async def test_through_a_proxy_wrong_tokens_throttle_the_client_not_the_proxy(web: Any) -> None:
    """Behind the proxy every request comes from 127.0.0.1: the throttle on wrong tokens
    counts the client its ``X-Forwarded-For`` names, so one guesser does not lock every
    user out."""
    server = await web("--proxy", "127.0.0.1")
    async with httpx.AsyncClient() as client:
        for n in range(10):
            guess = {**PROXIED, "authorization": f"Bearer guess-{n}"}
            assert (await client.get(server.url + "/jobs", headers=guess)).status_code == 401
        right = {**PROXIED, "authorization": f"Bearer {TOKEN}"}
        assert (await client.get(server.url + "/jobs", headers=right)).status_code == 429
        elsewhere = {**right, "x-forwarded-for": "203.0.113.9"}
        assert (await client.get(server.url + "/jobs", headers=elsewhere)).status_code == 200
    assert (await _sign_in(server.url)).status_code == 429  # the guesser's own sign-in
    lines = server.log_path.read_text()
    assert '"client": "198.51.100.7"' in lines and "web_login_throttled" in lines


async def test_a_proxy_network_written_with_host_bits_is_believed(web: Any) -> None:
    """``127.0.0.1/8`` passed importd's check and uvicorn, reading it strictly, matched
    nothing: the proxy's forwarded headers were ignored (its clients all counted as one,
    its forms refused as another origin)."""
    server = await web("--proxy", "127.0.0.1/8")
    answer = await _sign_in(server.url)
    assert answer.status_code == 303, answer.text
    assert "secure" in answer.headers["set-cookie"].lower()
