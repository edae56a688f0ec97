"""The quick start's first import: flags for the allowlist and the roots, refusals that say
how to set them, doctor's warnings, and payloads checked at enqueue time."""

from __future__ import annotations

from pathlib import Path

import pytest

from importd import config
from importd.handlers import sources
from importd.models import InvalidPayload


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"IMPORTD_IMPORT_ROOTS": "uploads"},
            "IMPORTD_IMPORT_ROOTS: bad value 'uploads': 'uploads' is a relative path",
        ),
        (
            {"IMPORTD_IMPORT_ROOTS": "/srv/no/such/dir"},
            "IMPORTD_IMPORT_ROOTS: bad value '/srv/no/such/dir': /srv/no/such/dir does not exist",
        ),
        ({"IMPORTD_IMPORT_ROOTS": "/etc/hostname"}, "/etc/hostname is not a directory"),
    ],
)
def test_relative_missing_or_file_roots_are_refused_at_load(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(config.ConfigError, match=None) as caught:
        config.load({}, environ=environ)
    assert message in str(caught.value)
    with pytest.raises(config.ConfigError) as caught:
        config.load({"import_roots": ["uploads"]}, environ={})
    assert str(caught.value).startswith("--import-root: bad value")


def test_a_symlink_out_of_a_root_names_its_target(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.csv").symlink_to("/etc/hostname")
    with pytest.raises(InvalidPayload) as caught:
        sources.resolve_file(f"file://{root}/link.csv", (str(root),))
    assert f"{root}/link.csv (a symlink to /etc/hostname) is outside the import roots" in str(
        caught.value
    )
