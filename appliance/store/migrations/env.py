"""Alembic environment: the connection comes from appliance.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from appliance.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs batch mode to alter tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url (alembic -x) or call appliance.store.migrate.upgrade()")
    with create_engine(url).begin() as conn:
        _run(conn)
