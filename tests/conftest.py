"""Shared fixtures. Each test gets its own state directory through ANVIL_* variables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anvil_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An isolated state directory for the CLI and services, as environment variables."""
    state = tmp_path / "state"
    env = {"ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(state / "anvil.toml")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ANVIL_STORE_URL", raising=False)
    yield env
