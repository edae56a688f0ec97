"""importd's version: the one in pyproject.toml, read from the installed package's metadata."""

from __future__ import annotations

import functools


@functools.cache
def version() -> str:
    """The installed version (``0+unknown`` in a source tree that was never installed)."""
    from importlib import metadata  # noqa: PLC0415 - slow to import; only when asked

    try:
        return metadata.version("importd")
    except metadata.PackageNotFoundError:
        return "0+unknown"
