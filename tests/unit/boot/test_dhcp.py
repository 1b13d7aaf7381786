"""dnsmasq config and reservations: golden files, validated by dnsmasq itself, reloaded by SIGHUP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appliance.boot.dhcp import (
    DhcpSettings,
    Reservation,
    check_config,
    render_config,
    render_hosts,
    reservations,
    write_atomic,
    write_hosts,
)
from tests.unit.boot.conftest import Inventory

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "dhcp"
RUN = Path("/var/lib/anvil/run")
needs_dnsmasq = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="apt package dnsmasq-base is missing")


def settings(run: Path = RUN, **kw: object) -> DhcpSettings:
    base: dict[str, object] = {"interface": "br0", "server": "10.77.0.1", "run_dir": run,
                               "http_base": "http://10.77.0.1:8080"}
    return DhcpSettings(**{**base, **kw})  # type: ignore[arg-type]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ANVIL_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


CONFIGS = {
    "dnsmasq-range.conf": {"range_start": "10.77.0.100", "range_end": "10.77.0.199"},
    "dnsmasq-proxy.conf": {},
    "dnsmasq-range-no-ra.conf": {"range_start": "10.77.0.100", "range_end": "10.77.0.199", "enable_ra": False},
}


@needs_dnsmasq
@pytest.mark.parametrize("name", CONFIGS)
def test_config_matches_golden_and_dnsmasq_accepts_it(name: str, tmp_path: Path) -> None:
    check_golden(name, render_config(settings(**CONFIGS[name])))
    conf = tmp_path / "dnsmasq.conf"
    write_atomic(conf, render_config(settings(tmp_path, **CONFIGS[name])))
    check_config(conf)


@needs_dnsmasq
def test_check_config_reports_dnsmasq_complaint(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("dhcp-range=nonsense-option-value\nno-such-option=1\n")
    with pytest.raises(ValueError, match="dnsmasq rejects"):
        check_config(conf)


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="outside"):
        render_config(settings(range_start="10.78.0.1", range_end="10.78.0.9"))
    with pytest.raises(ValueError, match="interface"):
        render_config(settings(interface="br0\nenable-tftp"))


def test_hosts_from_live_bindings(inventory: Inventory) -> None:
    with inventory.store.read() as s:
        items = reservations(s)
    text = render_hosts(items)
    check_golden("dnsmasq.hosts", text)
    assert "02:a0:00:00:00:01,52:54:00:00:01:01,10.100.0.11,web-01\n" in text


def test_hosts_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        render_hosts([Reservation(("zz",), "10.0.0.1")])
    with pytest.raises(ValueError):
        render_hosts([Reservation(("52:54:00:00:00:01",), "10.0.0.300")])
    assert render_hosts([Reservation(("52:54:00:00:00:01",), "10.0.0.3", "bad name\n")]) == \
        "52:54:00:00:00:01,10.0.0.3\n"


@needs_dnsmasq
def test_running_dnsmasq_rereads_hosts_on_sighup(tmp_path: Path) -> None:
    """dnsmasq on loopback (no DHCP range needed to start): SIGHUP makes it read the new hostsfile."""
    s = settings(tmp_path, interface="lo", server="127.0.0.1", prefix=8, range_start="127.0.0.100",
                 range_end="127.0.0.199", enable_ra=False)
    text = render_config(s).replace("except-interface=lo\n", "")
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_atomic(s.config_path, text + f"dhcp-alternate-port={port},{port + 1}\n")
    assert write_hosts(s, [Reservation(("52:54:00:00:00:01",), "127.0.0.101", "one")])
    assert not write_hosts(s, [Reservation(("52:54:00:00:00:01",), "127.0.0.101", "one")])
    proc = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "-C", str(s.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / "dnsmasq.log"

    def reads() -> int:
        lines = log.read_text().splitlines() if log.exists() else []
        return sum(line.endswith(f": read {s.hostsfile}") for line in lines)

    try:
        deadline = time.monotonic() + 10
        while reads() < 1:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.05)
        assert write_hosts(s, [Reservation(("52:54:00:00:00:01",), "127.0.0.101", "one"),
                               Reservation(("52:54:00:00:00:02",), "127.0.0.102", "two")])
        before = reads()
        os.kill(proc.pid, signal.SIGHUP)
        while reads() <= before:
            assert time.monotonic() < deadline + 10, log.read_text()
            time.sleep(0.05)
        assert proc.poll() is None
        assert "cannot read" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
