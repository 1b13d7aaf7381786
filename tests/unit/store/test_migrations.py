"""Migrations: applied at start, HEAD matches the scripts, schema matches the tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from appliance.store import Store
from appliance.store.migrate import HEAD, alembic_config, current_revision
from appliance.store.tables import Base


def test_head_constant_matches_the_migration_scripts() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


def test_store_is_migrated_to_head_and_matches_the_tables(store: Store) -> None:
    assert current_revision(store.engine) == HEAD
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_runs_with_wal_and_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from appliance.store import open_store

    s = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with s.read() as session:
        conn = session.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    s.close()
