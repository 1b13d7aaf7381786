"""[boot] template_dirs: a site's own iPXE templates, searched before the built-in ones,
so one profile's script can be changed without touching the installed package."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from appliance.boot.http import setup
from appliance.config import ConfigError, load_settings
from tests.unit.boot.conftest import Inventory, loopback_peers

BASE = "http://10.77.0.1:8080"


async def test_a_per_profile_template_in_a_site_folder_wins_for_that_profile_only(inventory: Inventory,
                                                                                 tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "profiles" / "acme").mkdir(parents=True)
    (site / "profiles" / "acme" / "db-01.ipxe.j2").write_text("#!ipxe\necho site script for {{ blade }}\n")
    app = web.Application()
    setup(app, store=inventory.store, images_dir=tmp_path, base_url=BASE, template_dirs=[site], key=inventory.key,
          peers=loopback_peers())
    async with TestClient(TestServer(app)) as c:
        db = await (await c.get("/boot/ipxe", params={"mac": "52:54:00:00:02:01"})).text()
        web01 = await (await c.get("/boot/ipxe", params={"mac": "52:54:00:00:01:01"})).text()
    assert db == "#!ipxe\necho site script for blade-2\n"
    assert "anvil.profile=acme/web-01" in web01      # the built-in template, as before


def test_template_dirs_come_from_the_file_or_the_environment_and_must_be_absolute(tmp_path: Path) -> None:
    config = tmp_path / "anvil.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[boot]\ntemplate_dirs = ["/srv/pxe"]\n')
    assert load_settings(config, env={}).boot.template_dirs == [Path("/srv/pxe")]
    env = {"ANVIL_BOOT_TEMPLATE_DIRS": "/srv/a:/srv/b"}
    assert load_settings(config, env=env).boot.template_dirs == [Path("/srv/a"), Path("/srv/b")]
    config.write_text(f'state_dir = "{tmp_path}"\n[boot]\ntemplate_dirs = ["pxe"]\n')
    with pytest.raises(ConfigError, match=r"boot.template_dirs: .*must be absolute paths, not pxe"):
        load_settings(config, env={})
