"""The handler registry: which async callable runs each job kind.

Handlers come from three places, later ones overriding earlier ones with a warning:
the ``importd.handlers`` entry point group (built-ins and installed plugins), modules
imported with ``--handlers`` (their ``@importd.handler`` decorators), and direct
``register`` calls.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

if TYPE_CHECKING:
    from ..context import JobContext
    from ..models import Job

log = structlog.get_logger("importd.handlers")

# An ``async def`` runs on the event loop; a plain ``def`` runs in a worker thread.
Handler = Callable[["Job", "JobContext"], Awaitable[Any]] | Callable[["Job", "JobContext"], Any]
H = TypeVar("H", bound=Handler)

ENTRY_POINT_GROUP = "importd.handlers"
_KIND = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$")

# Filled by the @handler decorator at import time of a handlers module.
_decorated: dict[str, Handler] = {}


class HandlerError(Exception):
    """A handler could not be loaded or registered."""


def handler(kind: str) -> Callable[[H], H]:
    """Register the decorated function as the handler of ``kind``: an ``async def``
    (run on the daemon's event loop) or a plain ``def`` (run in a worker thread)."""
    if not _KIND.match(kind):
        raise HandlerError(f"invalid job kind {kind!r}: letters, digits and _ . : - only")

    def register(fn: H) -> H:
        _decorated[kind] = fn
        return fn

    return register


class Registry:
    """Kind → handler, frozen once the daemon starts."""

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})

    def register(self, kind: str, fn: Handler) -> None:
        """Add or replace the handler of ``kind``."""
        if not _KIND.match(kind):
            raise HandlerError(f"invalid job kind {kind!r}: letters, digits and _ . : - only")
        if kind in self._handlers and self._handlers[kind] is not fn:
            log.warning("handler_replaced", kind=kind)
        self._handlers[kind] = fn

    def get(self, kind: str) -> Handler | None:
        """The handler of ``kind``, or None."""
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._handlers)


def load(modules: Iterable[str] = ()) -> Registry:
    """A registry with the entry point handlers, then those of ``modules``."""
    registry = Registry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            registry.register(ep.name, ep.load())
        except Exception as exc:
            raise HandlerError(f"cannot load handler {ep.name!r} ({ep.value}): {exc}") from exc
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise HandlerError(f"cannot import handlers module {module!r}: {exc}") from exc
    for kind, fn in _decorated.items():
        registry.register(kind, fn)
    return registry
