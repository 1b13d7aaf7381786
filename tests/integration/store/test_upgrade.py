"""Upgrading a store made by an older Anvil: the store is created and filled by the real CLI of
commit 26bddbb (the last main commit whose schema head was 0012, run from `git archive`), then
this version's CLI upgrades it. A migration that fails half-way (one injected after head) rolls
every pending migration back: the store stays at 0012, and the old version still works on it.
A SQLite store is copied to anvil.db.before-<revision> before any upgrade."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from sqlalchemy import inspect

from appliance.store.db import make_engine
from appliance.store.migrate import HEAD, MIGRATIONS, current_revision, upgrade

REPO = Path(__file__).resolve().parents[3]
OLD_COMMIT = "26bddbb"           # main before migrations 0013-0015 (change records, host pools, baremetal)
OLD_HEAD = "0012"
NEW_TABLES = {"change_records", "host_pools", "baremetal_nodes"}
BMC = "redfish+http://127.0.0.1:8000/redfish/v1/Systems/00000000-0000-0000-0000-000000000001"
EXAMPLES = REPO / "profiles" / "examples"

FAILING = '''"""injected: does some work, then fails"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("boom", sa.Column("id", sa.Integer, primary_key=True))
    with op.batch_alter_table("profiles") as batch:
        batch.add_column(sa.Column("boom", sa.Integer, nullable=True))
    op.execute("UPDATE profiles SET name = 'boom-' || name")
    raise RuntimeError("injected migration failure")


def downgrade() -> None:
    pass
'''

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _cli(state: Path, tree: Path | None) -> Cli:
    """The `anvil` of this checkout (tree None) or of an extracted older tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env.update({"ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(state.parent / "anvil.toml")})
    if tree is not None:
        env["PYTHONPATH"] = str(tree)

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "appliance", *args], input=input, capture_output=True,
                             text=True, env=env, cwd=tree or REPO, timeout=120)
        assert res.returncode == 0, f"anvil {' '.join(args)} ({tree or 'this version'}): {res.stderr}"
        return res

    return run


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("old-anvil")
    blob = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "appliance", "profiles", "pxe",
                           "firmware"], capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=blob, check=True, timeout=60)
    return tree


def _fill_with_old(old: Cli) -> None:
    old("blade", "enroll", "blade01", "--bmc", BMC, "--username", "admin", "--password-stdin",
        "--nic", "eth0=52:54:00:00:01:01", input="bmc-Pw-1\n")
    old("profile", "import", str(EXAMPLES / "web-01.yaml"), str(EXAMPLES / "db-01.yaml"))
    old("user", "add", "ann", "--role", "viewer", "--password-stdin", input="pass-word-1\n")


def _names(cli: Cli) -> tuple[list[str], list[str], dict[str, object]]:
    """Blade and profile names, and web-01's held identities (the versions' outputs differ in new fields)."""
    blades = [b["name"] for b in json.loads(cli("blade", "list", "-o", "json").stdout)]
    profiles = [p["name"] for p in json.loads(cli("profile", "list", "-o", "json").stdout)]
    shown = yaml.safe_load(cli("profile", "show", "web-01", "--tenant", "acme", "-o", "yaml").stdout)
    return blades, profiles, {k: shown[k] for k in ("name", "tenant", "state", "heldIdentities")}


def _failing_scripts(tmp: Path) -> Path:
    scripts = tmp / "migrations"
    shutil.copytree(MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    nxt = f"{int(HEAD) + 1:04d}"
    (scripts / "versions" / f"{nxt}_boom.py").write_text(FAILING.format(rev=nxt, down=HEAD))
    return scripts


def test_store_of_the_previous_version_upgrades_and_a_failed_upgrade_leaves_it_usable(
        old_tree: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    old, new = _cli(state, old_tree), _cli(state, None)
    _fill_with_old(old)
    db = state / "anvil.db"
    engine = make_engine(f"sqlite:///{db}")
    assert current_revision(engine) == OLD_HEAD
    before = _names(old)
    old_verify = old("audit", "verify").stdout

    # 1. A migration that fails after 0013-0015 and its own work: all of it rolled back.
    with pytest.raises(RuntimeError, match="injected migration failure"):
        upgrade(engine, f"{int(HEAD) + 1:04d}", scripts=_failing_scripts(tmp_path))
    assert current_revision(engine) == OLD_HEAD
    tables = set(inspect(engine).get_table_names())
    assert not tables & (NEW_TABLES | {"boom"})
    assert "boom" not in {c["name"] for c in inspect(engine).get_columns("profiles")}
    engine.dispose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert _names(old) == before                      # the old version works on it as before
    assert old("audit", "verify").stdout == old_verify
    backup = Path(f"{db}.before-{OLD_HEAD}")
    with sqlite3.connect(backup) as conn:             # the copy taken before the upgrade
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (OLD_HEAD,)
        assert conn.execute("SELECT count(*) FROM profiles").fetchone() == (2,)

    # 2. This version upgrades it to head: the same blades, profiles, identities, intact audit.
    assert f"store schema {OLD_HEAD}" in new("version").stdout
    assert _names(new) == before
    assert f"store schema {HEAD}" in new("version").stdout
    assert "intact" in new("audit", "verify").stdout
    engine = make_engine(f"sqlite:///{db}")
    assert set(inspect(engine).get_table_names()) >= NEW_TABLES
    engine.dispose()


@pytest.mark.postgres
def test_a_failed_upgrade_on_postgresql_leaves_the_old_schema(pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(pg_url)
    try:
        upgrade(engine, OLD_HEAD)
        with pytest.raises(RuntimeError, match="injected migration failure"):
            upgrade(engine, f"{int(HEAD) + 1:04d}", scripts=_failing_scripts(tmp_path))
        assert current_revision(engine) == OLD_HEAD
        assert not set(inspect(engine).get_table_names()) & (NEW_TABLES | {"boom"})
        upgrade(engine)
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()
