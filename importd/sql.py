"""The SQL files under ``sql/``, loaded by name once.

In a wheel they live inside the package (``importd/sql``); in a source checkout they are
the repository's top-level ``sql/`` folder.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path


@functools.cache
def root() -> Traversable:
    """The folder holding ``migrations/`` and ``queries/``."""
    packaged = resources.files("importd") / "sql"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "sql"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("importd's SQL files are missing from this installation")


@functools.cache
def query(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return (root() / "queries" / f"{name}.sql").read_text(encoding="utf-8")


def migrations() -> list[tuple[int, str, str]]:
    """Every migration as ``(version, name, sql)``, in version order."""
    found = []
    for entry in (root() / "migrations").iterdir():
        stem, dot, ext = entry.name.partition(".")
        if ext != "sql" or not dot:
            continue
        number, _, _description = stem.partition("_")
        found.append((int(number), stem, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found
