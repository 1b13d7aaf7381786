"""``serve --role boot`` alone in the provisioning namespace serves its own ``/metrics`` on
``metrics.boot_listen``: the DHCP messages its dnsmasq exchanged with a PXE client on the
machines' side, the iPXE binary that client read over TFTP and its boot HTTP requests, all counted
where they were served (a boot role has no API, engine or monitor, so none of their series)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from appliance.boot.tftp import IPXE_SOURCE
from appliance.lab import netns
from tests.integration.boot.conftest import SERVER, ProvisioningNet
from tests.support.boot_role import BootRole, wait_for

MAC = "52:54:00:79:00:01"
POOL = ("10.78.0.100", "10.78.0.150")
METRICS = f"{SERVER}:9465"


def _scrape(net: ProvisioningNet) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    # The boot role listens inside its namespace only: scrape from there, as a local Prometheus would.
    text = subprocess.run(["ip", "netns", "exec", net.boot_ns, "curl", "-sf", "--max-time", "5",
                           f"http://{METRICS}/metrics"], capture_output=True, text=True, timeout=15,
                          check=True).stdout
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _in_client_ns(net: ProvisioningNet, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", net.client_ns, *argv], capture_output=True, text=True,
                          timeout=30)


def test_the_boot_role_counts_dhcp_tftp_and_http_on_its_own_metrics_listen(
        tmp_path: Path, provisioning_net: ProvisioningNet) -> None:
    net = provisioning_net
    config = tmp_path / "anvil.toml"
    config.write_text(f'[boot]\nlisten = "{SERVER}:8080"\ntftp_listen = "{SERVER}:69"\ndhcp = "reservations"\n'
                      f'interface = "{net.boot_if}"\ndhcp_range = "{POOL[0]},{POOL[1]}"\n'
                      f'[metrics]\nboot_listen = "{METRICS}"\n')
    role = BootRole(state=tmp_path / "state", config=config, netns=net.boot_ns).start()
    try:
        assert f"metrics on http://{METRICS}/metrics" in role.log()
        before = _scrape(net)
        assert "anvil_monitor_pass_duration_seconds_count" not in before
        assert not [n for n in before if n.startswith(("anvil_job", "anvil_engine", "anvil_failovers"))]

        offers = [r for r in net.probe(MAC, "--pxe", "--first", wait=8) if r["type"] == "OFFER"]
        assert offers, "no DHCP offer"
        # The blade as iPXE would be once it took the lease: an address of its own on the network.
        netns.add_address(net.client_ns, net.client_if, "10.78.0.9/24")
        if (IPXE_SOURCE / "ipxe.efi").is_file():
            got = tmp_path / "got.efi"
            fetch = _in_client_ns(net, sys.executable, "-c", "import sys, tftpy; tftpy.TftpClient(sys.argv[1], 69)"
                                  ".download('ipxe.efi', sys.argv[2], timeout=2)", SERVER, str(got))
            assert fetch.returncode == 0, fetch.stderr
            assert got.read_bytes() == (IPXE_SOURCE / "ipxe.efi").read_bytes()
        script = _in_client_ns(net, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                               f"http://{SERVER}:8080/boot/ipxe?mac={MAC}")
        assert script.stdout.strip().isdigit(), script

        def counted() -> bool:
            dhcp = _scrape(net).get("anvil_dhcp_messages_total", {})
            return dhcp.get((("type", "DHCPDISCOVER"),), 0) >= 1 and dhcp.get((("type", "DHCPOFFER"),), 0) >= 1

        wait_for(counted, 10, "dnsmasq's DISCOVER and OFFER counted", interval=0.25)
        after = _scrape(net)
        if (IPXE_SOURCE / "ipxe.efi").is_file():
            assert after["anvil_tftp_requests_total"] == {(("file", "ipxe.efi"), ("outcome", "sent")): 1}
        http = {dict(k)["route"]: v for k, v in after["anvil_boot_requests_total"].items()}
        assert http == {"/boot/ipxe": 1}, after["anvil_boot_requests_total"]
        assert after["anvil_boot_request_duration_seconds_count"][(("route", "/boot/ipxe"),)] == 1
    finally:
        status = role.stop()
    assert status == 0, role.log()
