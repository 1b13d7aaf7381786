"""A rack controller's boot services (appliance.boot.remote) against a real region app on loopback:
it registers, serves its own blade's script, refuses another rack's, forwards the callback and the
agent's heartbeats, fetches an image once, and never needs a store. (The same over real HTTPS,
namespaces, dnsmasq and QEMU: tests/e2e/test_rack_controllers.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliance.boot.region import setup_rack_api
from appliance.boot.remote import RackLink, RegionClient, RegionError
from appliance.boot.role import BootServiceError, start_boot_services
from appliance.config import Settings
from appliance.lab.procs import free_tcp_port
from appliance.services.racks import RackService
from tests.unit.boot.conftest import Inventory

WEB_MAC = "52:54:00:00:01:01"       # blade-1 (web-01): rack-a
DB_MAC = "52:54:00:00:02:01"        # blade-2 (db-01): rack-b


@pytest.fixture
async def region(inventory: Inventory, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    svc = RackService(inventory.store)
    tokens = {name: svc.add(name, [])[1] for name in ("rack-a", "rack-b")}
    svc.set_blade_rack("blade-1", "rack-a")
    svc.set_blade_rack("blade-2", "rack-b")
    images = tmp_path / "region-images"
    (images / "lab").mkdir(parents=True)
    (images / "lab" / "vmlinuz").write_bytes(b"kernel-bytes")
    app = web.Application()
    setup_rack_api(app, inventory.store, images, inventory.key)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), tokens


def _settings(tmp_path: Path, listen: str) -> Settings:
    return Settings.model_validate({"state_dir": str(tmp_path / "rack-state"),
                                    "store": {"url": "sqlite:////nonexistent/never-opened.db"},
                                    "boot": {"listen": listen}})


async def test_a_rack_controller_serves_its_blades_through_the_region(
        region: tuple[str, dict[str, str]], inventory: Inventory, tmp_path: Path) -> None:
    url, tokens = region
    listen = f"127.0.0.1:{free_tcp_port()}"
    settings = _settings(tmp_path, listen)
    link = RackLink(RegionClient(url, tokens["rack-a"]), settings)
    boot = await start_boot_services(settings, None, link=link)
    base = f"http://{listen}"
    try:
        assert link.name == "rack-a" and RackService(inventory.store).get("rack-a").health == "up"
        async with aiohttp.ClientSession() as http:
            text = await (await http.get(f"{base}/boot/ipxe", params={"mac": WEB_MAC})).text()
            token = inventory.tokens["web-01"]
            assert f"anvil.token={token}" in text and f"anvil.callback={base}/boot/callback" in text
            other = await (await http.get(f"{base}/boot/ipxe", params={"mac": DB_MAC})).text()
            assert "no boot script" in other and "db-01" not in other
            assert link.served == {WEB_MAC: 1}
            # The callback counts only from an address this rack saw with the blade's MAC (its lease file).
            assert (await http.post(f"{base}/boot/callback", data={"token": token})).status == 403
            leases = settings.run_dir / "dnsmasq.leases"
            leases.parent.mkdir(parents=True, exist_ok=True)
            leases.write_text(f"0 {WEB_MAC} 127.0.0.1 web *\n")
            resp = await http.post(f"{base}/boot/callback", data={"token": token, "ip": "127.0.0.1"})
            assert resp.status == 200, await resp.text()
            answer = await resp.text()
            secret = re.search(r"heartbeat_secret=(\S+)", answer)
            assert secret and f"heartbeat_url={base}/boot/heartbeat" in answer
            beat = await http.post(f"{base}/boot/heartbeat", headers={"Authorization": f"Bearer {secret.group(1)}"})
            assert beat.status == 204
            assert (await http.post(f"{base}/boot/heartbeat", data={"secret": "forged"})).status == 403
            # Images: fetched from the region once, then served from the rack's own folder.
            got = await http.get(f"{base}/boot/images/lab/vmlinuz")
            assert got.status == 200 and await got.read() == b"kernel-bytes"
            assert (settings.images_dir / ".region" / "lab" / "vmlinuz").read_bytes() == b"kernel-bytes"
            assert (await http.get(f"{base}/boot/images/lab/missing")).status == 404
    finally:
        await boot.close()
    assert not Path("/nonexistent/never-opened.db").exists()
    assert not (settings.state_dir / "boot.key").exists() and not (settings.state_dir / "secrets.key").exists()


async def test_a_rack_controller_with_a_bad_token_does_not_start(
        region: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, _ = region
    settings = _settings(tmp_path, f"127.0.0.1:{free_tcp_port()}")
    link = RackLink(RegionClient(url, "anvil-rack-not-a-real-token"), settings)
    with pytest.raises(BootServiceError, match="refuses this rack token"):
        await start_boot_services(settings, None, link=link)
    unreachable = RackLink(RegionClient(f"http://127.0.0.1:{free_tcp_port()}", "anvil-rack-x"), settings)
    with pytest.raises(BootServiceError, match="cannot register with the region"):
        await start_boot_services(settings, None, link=unreachable)
    with pytest.raises(RegionError, match="https:// URL"):
        RegionClient("ftp://region", "t")
