"""Shared fixtures. Each test gets its own state directory through ANVIL_* variables,
and store tests run against both SQLite and a throw-away PostgreSQL cluster."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab.procs import free_tcp_port
from appliance.store import Store, open_store
from tests.support.postgres import PgCluster

REPO = Path(__file__).resolve().parent.parent
_db_counter = itertools.count()


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
