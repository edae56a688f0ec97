"""``importd enqueue`` checks payloads with the handler's own rules, and only with the
settings it has: without url_prefixes a URL is checked for its own shape, never refused
for the prefixes it does not know, and a refusal names what works for ``enqueue``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd import cli, config, payloads
from importd.models import InvalidPayload
from tests.unit.test_urls import candidate_urls
from tests.url_reference import reference_parts

NONE = config.Settings()


@pytest.fixture
def no_outside_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No IMPORTD_* variables, no /etc/importd/importd.toml: only what the test gives."""
    for name in list(os.environ):
        if name.startswith("IMPORTD_") or name in ("DATABASE_URL", "CREDENTIALS_DIRECTORY"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def test_an_http_url_passes_without_url_prefixes() -> None:
    payloads.check("http", {"url": "https://example.com/x"}, NONE)
    payloads.check("http", {}, config.Settings(http_url="https://example.com/fn"))
    payloads.check("http", {}, NONE)  # the daemon's http_url may supply it
    # A prefix set for this command too is applied, as the daemon would.
    with pytest.raises(InvalidPayload, match="not under an allowed prefix"):
        payloads.check(
            "http", {"url": "https://example.com/x"}, config.Settings(url_prefixes=("https://a/",))
        )


@pytest.mark.parametrize(
    ("kind", "payload", "given", "message"),
    [
        ("http", {"url": "ftp://example.com/x"}, {}, "payload.url: expected an https:// URL"),
        ("http", {"url": "https://u:pw@example.com/x"}, {}, "payload.url: credentials"),
        ("http", {"url": "https://example.com/a\nb"}, {}, "payload.url: control character"),
        ("http", {"url": "https:///x"}, {}, "payload.url: no host"),
        ("http", {"url": 5}, {}, "payload.url: a URL string"),
        ("http", {}, {"http_url": "https://example.com/../x"}, "http_url: the path climbs"),
        (
            "csv",
            {"source": "https://example.com/a\tb.csv", "table": "t"},
            {},
            "payload.source: control character",
        ),
    ],
)
def test_a_malformed_url_is_refused_naming_its_field(
    kind: str, payload: dict[str, object], given: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        payloads.check(kind, payload, config.Settings(**given))  # type: ignore[arg-type]
    assert message in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(url=candidate_urls())
def test_without_prefixes_a_url_is_refused_exactly_when_its_shape_is_wrong(url: str) -> None:
    """Against urllib's reading of the URL (tests/url_reference.py): accepted exactly when
    it is an http(s) URL with a host, no credentials and no control characters, whose path
    does not climb above the root (the daemon's prefixes decide the rest)."""
    try:
        payloads.check("http", {"url": url}, NONE)
    except InvalidPayload as exc:
        assert str(exc).startswith("InvalidURL: payload.url: "), exc
        assert reference_parts(url) is None, f"{url!r} refused: {exc}"
    else:
        assert reference_parts(url) is not None, f"{url!r} accepted"


@settings(max_examples=300, deadline=None)
@given(url=st.one_of(st.text(max_size=60), st.text(max_size=60).map("https://".__add__)))
def test_any_text_is_accepted_or_refused_naming_the_field(url: str) -> None:
    for kind, payload in (("http", {"url": url}), ("csv", {"source": url, "table": "t"})):
        try:
            payloads.check(kind, payload, NONE)
        except InvalidPayload as exc:
            assert (
                str(exc)
                .removeprefix("InvalidURL: ")
                .startswith("payload.url: " if kind == "http" else "payload.source: ")
            ), exc


def test_enqueue_exits_2_naming_the_field_never_a_traceback(
    no_outside_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["enqueue", "http", "--payload", '{"url": "https://u:p@example.com/"}'])
    err = capsys.readouterr().err
    assert code == 2, err
    assert (
        err.startswith("importd: InvalidURL: payload.url: credentials")
        and len(err.splitlines()) == 1
    )
    # A good URL passes the check and goes on to the database (none given here: exit 3).
    code = cli.main(["enqueue", "http", "--payload", '{"url": "https://example.com/x"}'])
    err = capsys.readouterr().err
    assert code == 3 and "no database given" in err and "Traceback" not in err


def test_enqueue_payloads_refuses_a_dedup_key_rather_than_drop_it(
    no_outside_settings: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--dedup-key`` names one job: with ``--payloads`` (many jobs) it was silently
    ignored. It is a bad command line (exit 2), said before anything is read or sent."""
    source = tmp_path / "jobs.ndjson"
    source.write_text("{}\n{}\n")
    code = cli.main(["enqueue", "noop", "--payloads", str(source), "--dedup-key", "k"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("importd: --dedup-key") and len(err.splitlines()) == 1, err


def test_refusals_at_enqueue_name_only_what_enqueue_takes() -> None:
    """``importd enqueue`` has no --table or --url-prefix flag: its refusals name the
    environment variable and the file key, which work for it."""
    with pytest.raises(InvalidPayload) as caught:
        payloads.check(
            "csv",
            {"source": "file:///srv/u.csv", "table": "orders"},
            config.Settings(tables=("public.customers",)),
        )
    text = str(caught.value)
    # The variable and the file key keep the tables allowed already (one new value
    # alone would have replaced them).
    assert "IMPORTD_TABLES=public.customers,public.orders" in text, text
    assert 'tables = ["public.customers", "public.orders"]' in text
    assert "--table" not in text
    with pytest.raises(InvalidPayload) as caught:
        payloads.check(
            "http",
            {"url": "https://other.example/x"},
            config.Settings(url_prefixes=("https://example.com/",)),
        )
    text = str(caught.value)
    assert "IMPORTD_URL_PREFIXES=https://other.example/" in text
    assert "url_prefixes = [" in text and "--url-prefix" not in text
