"""Persistence: SQLAlchemy 2 tables, Alembic migrations, and small repositories.

Invariants live in the schema (unique names per kind and tenant, unique
allocated identities), not only in code.
"""

from appliance.store.db import Store, open_store

__all__ = ["Store", "open_store"]
