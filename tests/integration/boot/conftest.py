"""A private provisioning network for the boot role: namespace ``…b`` (the appliance side,
10.78.0.1/24 on one end of a veth pair) and ``…c`` (the machines; the other end), both
named per test (``netns.unique_prefix``) so tests can run in parallel, and deleted after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.lab import netns

PROBE = Path(__file__).resolve().parent / "dhcp_probe.py"
SERVER = "10.78.0.1"


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "dnsmasq"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, dnsmasq-base)"
    return None


@dataclass(frozen=True)
class ProvisioningNet:
    boot_ns: str
    client_ns: str
    boot_if: str
    client_if: str

    def probe(self, mac: str, *flags: str, wait: float = 1.5) -> list[dict[str, Any]]:
        """A DHCPDISCOVER from ``mac`` on the machines' side; the replies within ``wait`` s (dhcp_probe.py;
        pass ``--first`` to stop at the first)."""
        res = subprocess.run(["ip", "netns", "exec", self.client_ns, sys.executable, str(PROBE), "--iface",
                              self.client_if, "--mac", mac, "--wait", str(wait), *flags],
                             capture_output=True, text=True, timeout=wait + 20, check=True)
        replies: list[dict[str, Any]] = json.loads(res.stdout)
        return replies


@pytest.fixture
def provisioning_net() -> Iterator[ProvisioningNet]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = netns.unique_prefix("bt")
    net = ProvisioningNet(f"{prefix}b", f"{prefix}c", f"{prefix}s", f"{prefix}k")
    try:
        netns.add(net.boot_ns)
        netns.add(net.client_ns)
        netns.add_veth(net.boot_ns, net.boot_if, net.client_ns, net.client_if)
        netns.add_address(net.boot_ns, net.boot_if, f"{SERVER}/24")
        netns.link_set(net.boot_ns, net.boot_if, up=True)
        netns.link_set(net.client_ns, net.client_if, up=True)
        yield net
    finally:
        netns.delete_all([net.boot_ns, net.client_ns])
