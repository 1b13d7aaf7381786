"""``/metrics`` on its own listen (DESIGN §8: ``[metrics] listen``, no authentication), the boot
role's own registry, and the DHCP messages counted from dnsmasq's log."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.config import load_settings
from appliance.errors import ConfigError, ListenError
from appliance.metrics import DnsmasqLogCollector, Metrics
from appliance.metrics_listen import MetricsListen, start_metrics_listen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_the_metrics_section_defaults_to_node_exporter_style_loopback_listens(tmp_path: Path) -> None:
    s = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path)})
    assert (s.metrics.listen, s.metrics.boot_listen) == ("127.0.0.1:9464", "127.0.0.1:9465")
    off = load_settings(env={"ANVIL_STATE_DIR": str(tmp_path), "ANVIL_METRICS_LISTEN": "",
                             "ANVIL_METRICS_BOOT_LISTEN": "10.0.0.1:9100"})
    assert (off.metrics.listen, off.metrics.boot_listen) == ("", "10.0.0.1:9100")
    assert "listen" in off.metrics.model_fields_set


def test_a_bad_metrics_listen_is_named(tmp_path: Path) -> None:
    config = tmp_path / "anvil.toml"
    config.write_text('[metrics]\nlisten = "9464"\n')
    with pytest.raises(ConfigError, match=r"anvil.toml:metrics.listen: .*'9464' is not HOST:PORT"):
        load_settings(config, env={"ANVIL_STATE_DIR": str(tmp_path)})


async def test_metrics_are_served_without_authentication_on_their_own_listen() -> None:
    m = Metrics()
    m.steps.labels("stamp", "power-on", "done").observe(0.3)
    port = _free_port()
    runner = await start_metrics_listen(m, MetricsListen(f"127.0.0.1:{port}", "metrics.listen",
                                                         "ANVIL_METRICS_LISTEN", explicit=True))
    assert runner is not None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                got = _families(await resp.text())
            async with http.get(f"http://127.0.0.1:{port}/api/v1/jobs") as resp:
                assert resp.status == 404     # nothing else is served there
    finally:
        await runner.cleanup()
    assert got["anvil_job_step_duration_seconds_count"][(("kind", "stamp"), ("outcome", "done"),
                                                          ("step", "power-on"))] == 1


async def test_a_taken_default_listen_costs_only_the_listen_but_a_configured_one_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        default = MetricsListen(address, "metrics.listen", "ANVIL_METRICS_LISTEN", explicit=False)
        assert await start_metrics_listen(Metrics(), default) is None
        configured = MetricsListen(address, "metrics.listen", "ANVIL_METRICS_LISTEN", explicit=True)
        with pytest.raises(ListenError, match=rf"cannot listen on {address} for metrics: address already in use.*"
                                              r"metrics.listen in the configuration, or ANVIL_METRICS_LISTEN"):
            await start_metrics_listen(Metrics(), configured)
    off = MetricsListen("", "metrics.listen", "ANVIL_METRICS_LISTEN", explicit=True)
    assert await start_metrics_listen(Metrics(), off) is None


def test_the_boot_role_registry_serves_only_what_a_boot_role_can_move() -> None:
    m = Metrics(boot_only=True)
    m.boot_requests.labels("/boot/ipxe", "ok").inc()
    m.count_tftp("ipxe.efi", "sent")
    m.monitor_pass.observe(1)    # counted where nobody scrapes
    got = _families(m.render().decode())
    assert got["anvil_boot_requests_total"] == {(("outcome", "ok"), ("route", "/boot/ipxe")): 1}
    assert got["anvil_tftp_requests_total"] == {(("file", "ipxe.efi"), ("outcome", "sent")): 1}
    assert not [n for n in got if n.startswith(("anvil_monitor", "anvil_job", "anvil_engine", "anvil_failovers"))]
    full = _families(Metrics().render().decode())
    # The known outcomes of failovers and leadership are series from the start, at 0.
    assert full["anvil_failovers_total"] == {(("outcome", "started"),): 0, (("outcome", "refused"),): 0}
    assert set(full["anvil_engine_leadership_changes_total"]) == {
        (("change", c),) for c in ("acquired", "lost", "released")}


LOG = """\
Dec  6 18:00:00 dnsmasq[41]: started, version 2.90 DNS disabled
Dec  6 18:00:01 dnsmasq-dhcp[41]: 2817342 available DHCP range: 10.78.0.100 -- 10.78.0.150
Dec  6 18:00:02 dnsmasq-dhcp[41]: 2817342 vendor class: PXEClient:Arch:00007
Dec  6 18:00:02 dnsmasq-dhcp[41]: 2817342 DHCPDISCOVER(bts) 52:54:00:78:00:01
Dec  6 18:00:02 dnsmasq-dhcp[41]: 2817342 tags: efi64, bts
Dec  6 18:00:05 dnsmasq-dhcp[41]: 2817342 DHCPOFFER(bts) 10.78.0.120 52:54:00:78:00:01
Dec  6 18:00:05 dnsmasq-dhcp[41]: 2817342 PXE(bts) 52:54:00:78:00:01 proxy
"""


def test_dhcp_messages_are_counted_from_dnsmasqs_log_across_scrapes_and_restarts(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    c = DnsmasqLogCollector(log)

    def counts() -> dict[str, float]:
        (family,) = list(c.collect())
        return {s.labels["type"]: s.value for s in family.samples if s.name.endswith("_total")}

    assert counts() == {}                               # no log yet: no error, nothing counted
    log.write_text(LOG + "Dec  6 18:00:06 dnsmasq-dhcp[41]: 2817342 DHCPREQ")   # a line being written
    assert counts() == {"DHCPDISCOVER": 1, "DHCPOFFER": 1, "PXE": 1}
    with log.open("a") as fh:
        fh.write("UEST(bts) 10.78.0.120 52:54:00:78:00:01\n"
                 "Dec  6 18:00:06 dnsmasq-dhcp[41]: 2817342 DHCPACK(bts) 10.78.0.120 52:54:00:78:00:01\n")
    assert counts() == {"DHCPDISCOVER": 1, "DHCPOFFER": 1, "PXE": 1, "DHCPREQUEST": 1, "DHCPACK": 1}
    # A new dnsmasq starts a shorter log: read from its start, the totals kept (a counter never falls).
    log.write_text("Dec  6 18:01:00 dnsmasq-dhcp[42]: 1 DHCPDISCOVER(bts) 52:54:00:78:00:02\n")
    assert counts() == {"DHCPDISCOVER": 2, "DHCPOFFER": 1, "PXE": 1, "DHCPREQUEST": 1, "DHCPACK": 1}
    assert counts()["DHCPDISCOVER"] == 2                # read once, counted once


def test_a_registry_counting_dhcp_exposes_it(tmp_path: Path) -> None:
    log = tmp_path / "dnsmasq.log"
    log.write_text(LOG)
    m = Metrics(boot_only=True)
    m.count_dhcp(log)
    got = _families(m.render().decode())
    assert got["anvil_dhcp_messages_total"][(("type", "DHCPOFFER"),)] == 1
