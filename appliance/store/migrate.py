"""Alembic, driven from code: migrations are applied automatically at start.

Alembic is imported only when the schema is behind ``HEAD`` (most starts are
not), which keeps every CLI call fast. A test checks HEAD against the scripts. SQLAlchemy
is imported by the functions that need it: ``anvil blade list`` reads HEAD without it
(appliance.services.inventory_lite).

An upgrade is all or nothing: every pending migration runs in one transaction (PostgreSQL
and SQLite both roll DDL back), so a failing one leaves the store at the revision it had,
usable by the version that made it. A SQLite store is also copied first, with SQLite's
online backup, to ``anvil.db.before-<revision>`` beside it: the way back to the previous
version even after a successful upgrade.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD = "0022"


def alembic_config(scripts: Path = MIGRATIONS) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(scripts))
    return cfg


def current_revision(engine: Engine) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def backup_sqlite(engine: Engine, revision: str) -> Path | None:
    """Copy a SQLite file store to ``<file>.before-<revision>`` (once per revision); its path."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        return None
    target = Path(f"{db}.before-{revision}")
    if target.exists():
        return target
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    part.touch(mode=0o600)
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(part)) as dst:
        src.backup(dst)
    part.replace(target)
    return target


def upgrade(engine: Engine, revision: str = "head", *, scripts: Path = MIGRATIONS) -> None:
    """Bring the schema to ``revision``. Concurrent starters serialise on the database.

    ``scripts`` is the migrations directory (tests inject a failing migration there)."""
    found = current_revision(engine)
    if revision == "head" and scripts == MIGRATIONS and found == HEAD:
        return
    from alembic import command

    if found is not None and found != revision:
        backup_sqlite(engine, found)
    with engine.begin() as conn:
        cfg = alembic_config(scripts)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
