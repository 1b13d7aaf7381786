"""start_boot_services in-process on loopback: what starts, what a failure leaves behind (nothing),
and the DHCP settings derived from the interface."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from appliance.boot.role import BootServiceError, dhcp_settings, start_boot_services
from appliance.config import Settings
from appliance.lab.procs import free_tcp_port, free_udp_port
from appliance.store import Store


def _settings(tmp_path: Path, **boot: str) -> Settings:
    return Settings.model_validate({"state_dir": str(tmp_path / "state"),
                                    "boot": {"listen": f"127.0.0.1:{free_tcp_port()}", **boot}})


async def test_http_and_tftp_start_and_close(tmp_path: Path, sqlite_store: Store) -> None:
    settings = _settings(tmp_path, tftp_listen=f"127.0.0.1:{free_udp_port()}")
    boot = await start_boot_services(settings, sqlite_store)
    try:
        assert boot.http_url == f"http://{settings.boot.listen}" and boot.tftp_port is not None
        assert boot.dnsmasq is None and "TFTP on port" in boot.describe()
        async with aiohttp.ClientSession() as http, http.get(f"{boot.http_url}/boot/ipxe?mac=x") as resp:
            assert resp.status == 200
    finally:
        await boot.close()
        await boot.close()       # idempotent
    with socket.socket() as again:   # the port is free once closed
        again.bind(("127.0.0.1", int(settings.boot.listen.rsplit(":", 1)[1])))


async def test_a_service_that_cannot_start_leaves_nothing_running(tmp_path: Path, sqlite_store: Store) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        settings = _settings(tmp_path, tftp_listen=f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(BootServiceError, match="boot tftp: cannot listen on") as err:
            await start_boot_services(settings, sqlite_store)
    assert err.value.service == "tftp"
    with socket.socket() as again:   # boot HTTP had started: it was stopped again
        again.bind(("127.0.0.1", int(settings.boot.listen.rsplit(":", 1)[1])))


def test_dhcp_settings_come_from_the_interface_and_refuse_an_unreachable_boot_url(tmp_path: Path) -> None:
    with pytest.raises(BootServiceError, match=r"cannot reach boot HTTP at http://127\.0\.0\.1:"):
        dhcp_settings(_settings(tmp_path, dhcp="reservations", interface="lo", dhcp_range="127.0.0.100,127.0.0.199"))
    s = dhcp_settings(_settings(tmp_path, dhcp="proxy", interface="lo", advertise_url="http://10.77.0.1:8080"))
    assert (s.server, s.prefix, s.proxy, s.http_base) == ("127.0.0.1", 8, True, "http://10.77.0.1:8080")
    with pytest.raises(BootServiceError, match="has no IPv4 address"):
        dhcp_settings(_settings(tmp_path, dhcp="proxy", interface="nosuchif0"))
