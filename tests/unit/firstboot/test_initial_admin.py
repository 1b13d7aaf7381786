"""The first admin's password: the one chosen at the appliance's first boot (read once from the
state directory, then deleted), else a random one written to admin.password."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ValidationError
from appliance.services.users import INITIAL_ADMIN_PASSWORD, UserService
from appliance.store import open_store


@pytest.fixture
def users(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path / 'anvil.db'}")
    try:
        yield UserService(store)
    finally:
        store.close()


def test_the_chosen_password_makes_the_admin_and_is_deleted(users: UserService, tmp_path: Path) -> None:
    chosen = tmp_path / INITIAL_ADMIN_PASSWORD
    chosen.write_text("seeded-Admin-pw\n")
    assert users.ensure_initial_admin(tmp_path / "admin.password", chosen) == "seeded-Admin-pw"
    assert not chosen.exists() and not (tmp_path / "admin.password").exists()
    assert users.authenticate("admin", "seeded-Admin-pw") is not None
    chosen.write_text("another-password\n")           # a later start never changes an existing admin
    assert users.ensure_initial_admin(tmp_path / "admin.password", chosen) is None


def test_without_a_choice_the_password_is_random_and_written(users: UserService, tmp_path: Path) -> None:
    password = users.ensure_initial_admin(tmp_path / "admin.password", tmp_path / INITIAL_ADMIN_PASSWORD)
    assert password and (tmp_path / "admin.password").read_text() == password + "\n"


def test_a_too_short_chosen_password_is_refused_and_kept(users: UserService, tmp_path: Path) -> None:
    chosen = tmp_path / INITIAL_ADMIN_PASSWORD
    chosen.write_text("short\n")
    with pytest.raises(ValidationError, match="password"):
        users.ensure_initial_admin(tmp_path / "admin.password", chosen)
    assert chosen.exists() and users.list() == []
