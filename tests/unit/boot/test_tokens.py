"""Boot tokens and heartbeat secrets in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from appliance.boot.http import base_url_for, create_boot_app
from appliance.boot.tokens import BootKey, check_heartbeat, find_attempt, spend
from appliance.config import load_settings
from appliance.store import Store
from appliance.store.tables import BindingRow, BootTokenRow, utcnow
from tests.unit.boot.conftest import IMAGE, Inventory, profile_doc


def _inventory(store: Store) -> Inventory:
    inv = Inventory(store, {}, {}, {})
    inv.add_blade("b1", ("52:54:00:00:00:01",))
    inv.add_profile(profile_doc("p1", IMAGE))
    inv.bind("p1", "b1", generation=2)
    return inv


def test_token_lifecycle(store: Store) -> None:
    inv = _inventory(store)
    first = inv.tokens["p1"]
    second = inv.open_attempt("p1")
    with store.write() as s:
        assert find_attempt(s, first) is None                # voided by the newer attempt
        presented = find_attempt(s, second)
        assert presented is not None and presented.binding.generation == 2 and presented.attempt.job_id
        used, secret = spend(s, presented, now=utcnow())
        assert used
    with store.write() as s:
        again = find_attempt(s, second)
        assert again is not None and again.attempt.used_at is not None   # spent: a replay is judged by the caller
        assert check_heartbeat(s, secret) is not None
        assert check_heartbeat(s, second) is None          # a boot token is no heartbeat secret
        s.get(BindingRow, inv.bindings["p1"]).state = "released"  # type: ignore[union-attr]
    with store.write() as s:
        assert check_heartbeat(s, secret) is None  # the generation is over
        assert find_attempt(s, second) is None


def test_a_second_callback_voids_the_first_heartbeat_secret(store: Store) -> None:
    inv = _inventory(store)
    secrets = []
    for _ in range(2):
        token = inv.open_attempt("p1")
        with store.write() as s:
            presented = find_attempt(s, token)
            assert presented is not None
            secrets.append(spend(s, presented, now=utcnow())[1])
    with store.write() as s:
        assert check_heartbeat(s, secrets[0]) is None
        assert check_heartbeat(s, secrets[1]) is not None


def test_the_database_holds_no_usable_token(store: Store) -> None:
    """A reader of anvil.db sees the nonce and the token's hash, not the token: it needs boot.key."""
    inv = _inventory(store)
    with store.read() as s:
        row = s.scalars(select(BootTokenRow).where(BootTokenRow.kind == "boot")).one()
    assert row.nonce and inv.tokens["p1"] not in (row.nonce, row.token_hash)
    assert BootKey.ephemeral().token(row.nonce) != inv.tokens["p1"]      # another key derives another token
    assert inv.key.token(row.nonce) == inv.tokens["p1"]


def test_the_boot_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "boot.key"
    first = BootKey.load(path)
    assert BootKey.load(path) == first and path.stat().st_mode & 0o777 == 0o600
    assert "***" in repr(first) and first.secret.hex() not in repr(first)


@pytest.mark.parametrize(("listen", "url"), [("10.77.0.1:8080", "http://10.77.0.1:8080"), ("0.0.0.0:8080", None)])
def test_base_url_for(listen: str, url: str | None) -> None:
    assert base_url_for(listen) == url


async def test_standalone_boot_app(tmp_path: Path, anvil_env: dict[str, str]) -> None:
    settings = load_settings()
    app = create_boot_app(settings)
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/boot/ipxe", params={"mac": "52:54:00:12:34:56"})
        assert r.status == 200
        assert f"chain http://{settings.boot.listen}/boot/discover##params" in await r.text()
        assert (await c.get("/api/v1/blades")).status == 404   # the boot role serves /boot only
    assert settings.images_dir.is_dir()
