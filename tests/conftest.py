"""Shared fixtures. Each test gets its own state directory through ANVIL_* variables,
and store tests run against both SQLite and a throw-away PostgreSQL cluster.

No test sees the caller's ANVIL_* environment (a developer's exported ANVIL_API_LISTEN once
failed `config show`'s test): it is removed when pytest starts, before collection and any
fixture of any scope, and again before each test; fixtures such as ``anvil_env`` then set
what a test needs. Only the knobs in ``TEST_KNOBS``, which steer the tests themselves, are kept.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from appliance.lab.procs import free_tcp_port
from appliance.store import Store, open_store
from tests.support.postgres import PgCluster

pytest_plugins = ["tests.support.skip_gate", "tests.support.order"]

REPO = Path(__file__).resolve().parent.parent
_db_counter = itertools.count()

# ANVIL_* variables that steer the test run rather than the appliance, so they are not cleared.
TEST_KNOBS = frozenset({
    "ANVIL_CI",              # skips fail the run (tests/support/skip_gate.py)
    "ANVIL_CHAOS_SEED",      # replays one chaos run (tests/integration/engine/test_chaos.py)
    "ANVIL_REGEN_GOLDEN",    # rewrites the golden files instead of comparing with them
    "ANVIL_LAB_CACHE",       # where the lab's downloaded guest kernel is kept between runs
    "ANVIL_ISO_CACHE",       # where iso/build.sh keeps the appliance image's build cache
})


def callers_anvil_variables(environ: Mapping[str, str]) -> list[str]:
    """The ANVIL_* variables of ``environ`` no test may see."""
    return sorted(k for k in environ if k.startswith("ANVIL_") and k not in TEST_KNOBS)


_SAVED_ENV = pytest.StashKey[dict[str, str]]()


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: module-level code and session/module-scoped fixtures (the VM lab's,
    # the engine rig's) build their environments from os.environ. Restored at unconfigure.
    saved = {k: os.environ.pop(k) for k in callers_anvil_variables(os.environ)}
    config.stash[_SAVED_ENV] = saved


def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.update(config.stash.get(_SAVED_ENV, {}))


@pytest.fixture(autouse=True)
def _no_callers_anvil_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an earlier test or fixture left in os.environ is gone too (restored after the test)."""
    for key in callers_anvil_variables(os.environ):
        monkeypatch.delenv(key)


@pytest.fixture
def anvil_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An isolated state directory for the CLI and services, as environment variables."""
    state = tmp_path / "state"
    # A free boot HTTP port per test: `anvil serve` serves boot HTTP beside the API, and the
    # lab's emulated blades boot from it (tests run in parallel, so never the default 8080).
    env = {"ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(tmp_path / "anvil.toml"),
           "ANVIL_BOOT_LISTEN": f"127.0.0.1:{free_tcp_port()}"}
    # Nothing from the developer's shell (ANVIL_URL, ANVIL_TOKEN, ANVIL_API_LISTEN, ANVIL_LAB_NETNS…)
    # may reach the code under test: only what this fixture sets.
    import os

    for key in [k for k in os.environ if k.startswith("ANVIL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database(f"anvil_{next(_db_counter)}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'anvil.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A store on SQLite only: for what does not depend on the database (the ``store`` fixture runs both)."""
    s = open_store(f"sqlite:///{tmp_path / 'anvil.db'}")
    try:
        yield s
    finally:
        s.close()
