"""Persistence: SQLAlchemy 2 tables, Alembic migrations, and small repositories.

Invariants live in the schema (unique names per kind and tenant, unique
allocated identities), not only in code.

``Store`` and ``open_store`` are imported from appliance.store.db on first use: the package's
light modules (actor, migrate's HEAD) are read by ``anvil blade list``, whose start-up cannot
afford SQLAlchemy (appliance.services.inventory_lite).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.store.db import Store, open_store

__all__ = ["Store", "open_store"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from appliance.store import db

        return getattr(db, name)
    raise AttributeError(f"module 'appliance.store' has no attribute {name!r}")
