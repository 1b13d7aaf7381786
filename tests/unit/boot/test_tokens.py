"""Boot tokens and heartbeat secrets in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.boot.http import base_url_for, create_boot_app
from appliance.boot.tokens import check_heartbeat, issue_boot_token, spend_boot_token
from appliance.config import load_settings
from appliance.store import Store
from appliance.store.tables import BindingRow
from tests.unit.boot.conftest import IMAGE, Inventory, profile_doc


def _inventory(store: Store) -> Inventory:
    inv = Inventory(store, {}, {}, {})
    inv.add_blade("b1", ("52:54:00:00:00:01",))
    inv.add_profile(profile_doc("p1", IMAGE))
    inv.bind("p1", "b1", generation=2)
    return inv


def test_token_lifecycle(store: Store) -> None:
    inv = _inventory(store)
    with store.write() as s:
        binding = s.get(BindingRow, inv.bindings["p1"])
        assert binding is not None
        first = issue_boot_token(s, binding)
        second = issue_boot_token(s, binding)
    with store.write() as s:
        assert spend_boot_token(s, first) is None          # voided by the newer one
        spent = spend_boot_token(s, second)
        assert spent is not None and spent.generation == 2 and spent.job_id is not None
    with store.write() as s:
        assert spend_boot_token(s, second) is None         # one-time
        assert check_heartbeat(s, spent.heartbeat_secret) is not None
        assert check_heartbeat(s, second) is None          # a boot token is no heartbeat secret
        s.get(BindingRow, inv.bindings["p1"]).state = "released"  # type: ignore[union-attr]
    with store.write() as s:
        assert check_heartbeat(s, spent.heartbeat_secret) is None  # the generation is over


def test_a_second_callback_generation_voids_the_first_heartbeat_secret(store: Store) -> None:
    inv = _inventory(store)
    secrets = []
    for _ in range(2):
        with store.write() as s:
            binding = s.get(BindingRow, inv.bindings["p1"])
            assert binding is not None
            spent = spend_boot_token(s, issue_boot_token(s, binding))
            assert spent is not None
            secrets.append(spent.heartbeat_secret)
    with store.write() as s:
        assert check_heartbeat(s, secrets[0]) is None
        assert check_heartbeat(s, secrets[1]) is not None


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
