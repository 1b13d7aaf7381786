"""Who makes the changes being audited: an :class:`Actor` in a context variable.

Apart from appliance.store.audit (which reads it and re-exports these names) so that the CLI
can set it for every command without importing SQLAlchemy: ``anvil blade list`` reads a
SQLite store without it (appliance.services.inventory_lite).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes the changes: ``who`` (``local:alice``, ``user:bob``, ``token:ci``), and from where."""

    who: str
    origin: str


_actor: ContextVar[Actor | None] = ContextVar("anvil_actor", default=None)


def current_actor() -> Actor | None:
    return _actor.get()


def set_actor(actor: Actor | None) -> None:
    """Set the actor for the rest of this context (a CLI call, a request's task)."""
    _actor.set(actor)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)
