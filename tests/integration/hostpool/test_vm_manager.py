"""The reference VM manager client (examples/vm-manager) against a real ``anvil serve`` and the
emulated rack: grow a pool 0 → 5 through the API alone, survive ``kill -9`` of the appliance
mid-grow, see a host fail over and come back as the same host, shrink to 2; every webhook's
signature checked, and the world (the emulated BMCs' own power histories) showing no host
twice.

The rack is two sushy-tools chassis of four blades each (bench/userpath.py's Rack, the same
the benchmarks use) and one snmpsim switch; the appliance is ``python -m appliance serve``
over TLS in its own state directory, with a 2 s monitor poll (shipped: 30 s) so the failover
comes quickly. The VM manager's token is an operator of tenant ``default`` (the template's).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from appliance.assets import asset_dir
from appliance.lab import redfish_emulator
from appliance.store.tables import HostRow
from tests.support import world
from tests.support.world_io import power, stamps

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
SECRET = "the-vm-managers-webhook-secret"
KVM = asset_dir("profiles") / "examples" / "kvm-host-template.yaml"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _pump_until(manager: Any, what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (applied: {manager.inventory.history})")
        manager.pump(0.3)


def _events(inv: Any, kind: str) -> list[str]:
    return [host for _, event, host in inv.history if event == kind]


def test_a_vm_manager_grows_survives_a_crash_fails_over_and_shrinks(tmp_path: Path) -> None:
    up = _load("bench_userpath", REPO / "bench" / "userpath.py")
    vm = _load("vm_manager", REPO / "examples" / "vm-manager" / "vm_manager.py")
    app = up.Appliance(tmp_path, overrides={"ANVIL_MONITOR_INTERVAL": "2"})
    receiver = vm.Receiver(SECRET.encode())
    with app, up.Rack(tmp_path, app.boot_url, [4, 4], (0.0, 0.2)) as rack:
        app.start()
        rack.enroll_switch(app)
        ca = str(app.state / "tls" / "cert.pem")
        admin = vm.Anvil(app.url, app.token(), ca_cert=ca)
        for b in rack.blades:    # big enough for the template (16 CPUs, 128 GiB), in two chassis
            admin.call("POST", "/blades", {**rack.enrollment(b), "cpus": 32, "memoryGiB": 256})
        for body in ({"name": "macs", "kind": "mac", "start": "02:a0:00:00:00:00", "end": "02:a0:00:00:ff:ff"},
                     {"name": "iqns", "kind": "iqn", "prefix": "iqn.2026-11.io.anvil:host-", "start": "1",
                      "end": "9999"},
                     {"name": "uuids", "kind": "uuid", "start": "4c4c4544-0000-0000-0000-000000000000",
                      "end": "4c4c4544-0000-0000-0000-00000000ffff"}):
            admin.call("POST", "/identity-pools", body)
        template = yaml.safe_load(KVM.read_text())
        template["spec"]["identity"]["nics"][1]["vlans"]["native"] = 100   # the lab switch has no VLAN 40
        admin.call("POST", "/profiles", template)
        admin.call("POST", "/failover-domains", {"name": "kvm-pool", "restartAttempts": 0})   # move, not restart
        token = admin.call("POST", "/tokens", {"name": "vm-manager", "role": "operator", "tenant": "default"})
        api = vm.Anvil(app.url, token["token"], ca_cert=ca)
        receiver.start()
        try:
            _drive(app, rack, api, vm, receiver)
        finally:
            receiver.stop()


def _drive(app: Any, rack: Any, api: Any, vm: ModuleType, receiver: Any) -> None:
    # keepProfiles: released hosts keep their profiles, so the store keeps every binding for the world check.
    api.create_pool("kvm", "kvm-host", max=6, keepProfiles=True)
    manager = vm.Manager(api, "kvm", receiver)
    manager.catch_up()
    api.add_webhook("kvm", receiver.url, SECRET, after=manager.inventory.cursor)
    inv = manager.inventory

    # -- grow 0 → 5, with kill -9 of the appliance while the hosts are being stamped
    manager.ensure_size(5)
    _pump_until(manager, "the first host requested", lambda: bool(_events(inv, "host.requested")), 60)
    assert len(inv.ready) < 5, "every host was ready before the kill: not mid-grow"
    os.kill(app.proc.pid, signal.SIGKILL)
    app.proc.popen.wait(10)
    app.start()
    _pump_until(manager, "five ready hosts", lambda: len(inv.ready) == 5, 240)
    requested = _events(inv, "host.requested")
    assert len(requested) == len(set(requested)) == 5
    assert sorted(_events(inv, "host.ready")) == sorted(requested)
    assert len({h["blade"] for h in inv.ready}) == 5
    assert {h["blade"] for h in inv.ready} <= {b.name for b in rack.blades}

    # -- a host's blade dies: the same host comes back (id, UUID, MACs), on another blade
    victim = dict(inv.ready[0])
    rack.crash(victim["blade"])
    _pump_until(manager, "the host failed over", lambda: victim["id"] in _events(inv, "host.ready")[5:], 180)
    back = inv.hosts[victim["id"]]
    assert back["enabled"] and back["blade"] != victim["blade"]
    assert (back["uuid"], back["macs"], back["iqn"], back["name"]) == (victim["uuid"], victim["macs"],
                                                                       victim["iqn"], victim["name"])
    failed = [c for c, e, h in inv.history if e == "host.failed" and h == victim["id"]]
    ready_again = [c for c, e, h in inv.history if e == "host.ready" and h == victim["id"]]
    assert len(failed) == 1 and failed[0] < ready_again[-1]
    assert len(inv.ready) == 5 and len(set(requested)) == 5   # never a new host for it

    # -- shrink to 2
    manager.ensure_size(2)
    _pump_until(manager, "three hosts released", lambda: len(_events(inv, "host.released")) == 3
                and len(inv.ready) == 2, 120)
    assert api.pool("kvm")["converged"]

    # -- every webhook was signed and arrived; the feed has nothing the webhooks did not bring
    feed = api.events("kvm", 0)
    assert not feed["more"]
    assert sorted(set(receiver.cursors)) == [e["cursor"] for e in feed["items"]]
    assert receiver.rejected == 0 and receiver.accepted == len(set(receiver.cursors))
    forged = receiver.take(b'{"data": {}}', {"X-Anvil-Signature": "sha256=00", "X-Anvil-Timestamp":
                                             str(int(time.time()))})
    assert forged == 401 and receiver.rejected == 1      # the check is real

    # -- the world: no profile on two powered-on blades, no blade running two; exactly 5 hosts
    store = app.store()
    try:
        with store.read() as s:
            assert s.scalar(select(func.count()).select_from(HostRow)) == 5
        blade_of = {b.system["uuid"]: b.name for b in rack.blades}
        for b in rack.blades:
            rack.raw_power(b.name)       # reading a system applies its pending power change (and records it)
        changes = [c for emu in rack.emulators for c in redfish_emulator.power_history(emu)]
        history = power(changes, blade_of)
        assert world.violations(history, stamps(store)) == []
    finally:
        store.close()
    on = {name for name, ch in history.items() if sorted(ch)[-1][1]}
    assert on == {h["blade"] for h in inv.ready}
    ever_on = {name for name, ch in history.items() if any(state for _, state in ch)}
    assert len(ever_on) == 6      # five hosts and the failover's spare: no blade stamped twice over
