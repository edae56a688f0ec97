"""Where a daemon's handlers come from, as the README says: modules given with
``--handlers`` (importable by the daemon's Python), and the ``importd.handlers`` entry
point group of installed packages (name: the kind; value: ``module:function``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from importd import handlers


def test_a_handlers_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(handlers.HandlerError) as caught:
        handlers.load(["myapp_not_installed.jobs"])
    assert "cannot import handlers module 'myapp_not_installed.jobs'" in str(caught.value)
    assert "No module named 'myapp_not_installed'" in str(caught.value)


def test_an_installed_packages_entry_point_is_its_kinds_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package installed the ordinary way (a .dist-info with entry_points.txt, which
    pip writes from the README's pyproject.toml table) is found on sys.path: the entry
    point's name is the kind, its value the handler function, with no flag."""
    (tmp_path / "importd_plugin_sample.py").write_text(
        "async def thumbnail(job, ctx):\n    return {'ok': True}\n"
    )
    info = tmp_path / "importd_plugin_sample-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: importd-plugin-sample\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[importd.handlers]\nthumbnail = importd_plugin_sample:thumbnail\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = handlers.load()
    plugin = sys.modules["importd_plugin_sample"]
    assert registry.get("thumbnail") is plugin.thumbnail
    assert {"csv", "ndjson", "http", "noop"} <= set(registry.kinds)  # declared the same way
    monkeypatch.delitem(sys.modules, "importd_plugin_sample")
