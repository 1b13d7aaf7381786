"""N+1 failover of a real QEMU blade, end to end (issue 8's "done when").

An iSCSI-boot profile (sanhook + the lab image, LUN in the lab's tgtd) runs on vm-01 and
its image writes a marker to the LUN. vm-01 then dies: its QEMU process is killed, as a
blade dies. The monitor inside `anvil serve` (1 s poll for this test) sees the blade
powered off, the failover job fences it (power read back off through its IPMI BMC, LUN
access revoked), stamps the profile onto vm-02 — same IQN, same LUN — and the image on
vm-02 reports the marker vm-01 wrote. The failover record keeps its timeline, and a
webhook receiver on loopback gets the three signed events.

Prints the recovery time from the kill to the boot callback and to the first heartbeat
from vm-02.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from appliance.lab import procs
from appliance.lab.vm_bmc import read_state, state_path
from appliance.monitor.webhook import verify_signature
from appliance.store.tables import BindingRow, BladeRow, BootTokenRow, FailoverRow
from tests.e2e.conftest import VmLab, requires_vm_lab

pytestmark = [requires_vm_lab, pytest.mark.slow, pytest.mark.xdist_group("vm-lab"), pytest.mark.timeout(900)]

SECRET = "e2e-failover-webhook-secret"
MARKER = "FAILOVER-MARK"
TARGET = "iqn.2026-11.io.anvil.e2e:failover-disk"
IQN = "iqn.2026-11.io.anvil.e2e:failover-host"


class Receiver:
    """Signed webhooks on 127.0.0.1, kept only when the signature checks."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        got = self.events

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = verify_signature(SECRET, body, {k: v for k, v in self.headers.items()})
                if ok:
                    got.append(json.loads(body))
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = procs.free_tcp_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Hook)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(timeout=5)


def _record(vm_lab: VmLab, profile: str) -> FailoverRow | None:
    store = vm_lab.anvil.store()
    try:
        with store.read() as s:
            row = s.scalar(select(FailoverRow).where(FailoverRow.profile == profile))
            if row is not None:
                s.expunge(row)
            return row
    finally:
        store.close()


def _first_heartbeat(vm_lab: VmLab, blade: str) -> datetime | None:
    store = vm_lab.anvil.store()
    try:
        with store.read() as s:
            seen = s.scalar(select(BootTokenRow.last_seen_at)
                            .join(BindingRow, BindingRow.id == BootTokenRow.binding_id)
                            .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                            .where(BladeRow.name == blade, BindingRow.state == "live",
                                   BootTokenRow.kind == "heartbeat", BootTokenRow.last_seen_at.is_not(None)))
            return seen if seen is None or seen.tzinfo else seen.replace(tzinfo=UTC)
    finally:
        store.close()


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:g} s")


def test_killed_vm_fails_over_to_the_spare_vm_with_the_same_lun_and_identity(
        vm_lab: VmLab, receiver: Receiver, record_property: Callable[[str, object], None]) -> None:
    anvil = vm_lab.anvil
    # A 1 s monitor for this test: restart the appliance with it.
    vm_lab.serve.stop()
    anvil.env.update({"ANVIL_MONITOR_INTERVAL": "1", "ANVIL_MONITOR_FAIL_AFTER": "2"})
    vm_lab.serve.start(timeout=60)

    secret_file = anvil.tmp / "hook.secret"
    secret_file.write_text(SECRET)
    anvil("failover", "domain", "create", "vmprod", "--webhook-url", receiver.url,
          "--webhook-secret-file", str(secret_file))
    name = "fo-01"
    vm_lab.import_profile(name, {
        "identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384e0f", "iscsiInitiator": IQN,
                     "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:0f", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {
            "type": "iscsi", "portal": "10.77.0.1:3260", "target": TARGET, "lun": 1, "sizeMiB": 8,
            "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img",
            "cmdline": f"console=ttyS0 panic=-1 anvil.disk_write={MARKER}"}},
        "failover": {"domain": "vmprod", "priority": 10, "policy": "n+1"},
    })
    vm_lab.assign(name, "vm-01")
    assert f"disk marker written: '{MARKER}'" in vm_lab.agent_lines("vm-01")
    time.sleep(3)   # the monitor has seen vm-01 healthy

    vm = vm_lab.vm("vm-01")
    qemu = read_state(state_path(Path(vm["run_dir"]), vm["name"]))["pid"]
    assert qemu, "vm-01's QEMU is not running"
    killed_at = datetime.now(UTC)
    os.kill(int(qemu), signal.SIGKILL)          # the blade dies

    row = _until("failover done", lambda: (lambda r: r if r and r.state in ("succeeded", "failed") else None)(
        _record(vm_lab, name)), 300)
    assert row.state == "succeeded", (row.state, row.reason, vm_lab.serve.log_tail())
    assert row.from_blade == "vm-01" and row.to_blade == "vm-02" and row.fence == "power"
    events = [e["event"] for e in row.timeline]
    assert events[:3] == ["detected", "fenced", "spare-chosen"], events
    assert {"powered-on", "booted", "active"} <= set(events), events

    # vm-02 booted the same LUN as the same initiator and found vm-01's marker.
    job_events = vm_lab.events(str(row.job_id))
    signals = [e for e in job_events if e.kind == "boot-signal"]
    assert signals, [e.kind for e in job_events]
    facts = (signals[0].data or {})["facts"]
    assert facts["disk"] == MARKER, facts
    assert facts["profile"] == f"{vm_lab.tenant}/{name}" and facts["mac"] == vm_lab.vm("vm-02")["mac"]
    target = vm_lab.target(TARGET)
    assert target.acl == (IQN,)
    assert "iBFT found" in vm_lab.agent_lines("vm-02")

    callback_at = signals[0].at if signals[0].at.tzinfo else signals[0].at.replace(tzinfo=UTC)
    beat = _until("first heartbeat from vm-02", lambda: _first_heartbeat(vm_lab, "vm-02"), 60)
    to_callback = (callback_at - killed_at).total_seconds()
    to_heartbeat = (beat - killed_at).total_seconds()
    record_property("failover_kill_to_callback_s", round(to_callback, 1))
    record_property("failover_kill_to_heartbeat_s", round(to_heartbeat, 1))
    print(f"VM failover: QEMU of vm-01 killed -> boot callback from vm-02 {to_callback:.1f} s, "
          f"-> first heartbeat {to_heartbeat:.1f} s (timeline: "
          + ", ".join(f"{e['event']} {e['at'][11:23]}" for e in row.timeline) + ")")

    kinds = _until("webhooks", lambda: (lambda k: k if {"failure.detected", "failover.started",
                                                         "failover.finished"} <= set(k) else None)(
        [e["event"] for e in receiver.events]), 30)
    assert all(e["data"]["profile"] == f"{vm_lab.tenant}/{name}" for e in receiver.events), kinds
    vm_lab.stamped.add(name)   # released by the fixture's teardown
    anvil("failover", "clear", "vm-01")   # "repaired": back to the spares, so `lab down` may take it


def test_a_frozen_guest_whose_bmc_reads_on_fails_over_by_its_heartbeat(
        vm_lab: VmLab, record_property: Callable[[str, object], None]) -> None:
    """Issue 21: a hung OS. vm-01's guest is frozen (QMP ``stop``): QEMU, and so its IPMI BMC,
    still reads On and healthy; only the image's heartbeats stop. With the shipped monitor
    settings (a poll every 30 s), the heartbeat sweep notices within seconds and the profile
    moves to vm-02. (8f9e50f: a 35 s heartbeat timeout, checked only at the 30 s polls.)"""
    from appliance.lab.vm_bmc import qmp_command

    anvil = vm_lab.anvil
    if "fo-01" in vm_lab.stamped:       # the test above left its profile on vm-02
        vm_lab.release("fo-01")
    if any(k in anvil.env for k in ("ANVIL_MONITOR_INTERVAL", "ANVIL_MONITOR_FAIL_AFTER")):
        vm_lab.serve.stop()
        for key in ("ANVIL_MONITOR_INTERVAL", "ANVIL_MONITOR_FAIL_AFTER"):
            anvil.env.pop(key, None)
        vm_lab.serve.start(timeout=60)
    anvil("failover", "domain", "create", "vmhung")
    name = "hung-01"
    vm_lab.import_profile(name, {
        "identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384e1f",
                     "nics": [{"name": "eth0", "mac": "02:a0:00:00:e2:1f", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {"type": "image", "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img",
                                              "cmdline": "console=ttyS0 panic=-1"}},
        "failover": {"domain": "vmhung", "priority": 10, "policy": "n+1"},
    })
    vm_lab.assign(name, "vm-01")
    vm_lab.stamped.add(name)
    _until("a heartbeat from vm-01", lambda: _first_heartbeat(vm_lab, "vm-01"), 60)
    time.sleep(3)

    vm = vm_lab.vm("vm-01")
    qmp_command(Path(vm["run_dir"]) / f"{vm['name']}.qmp", "stop")      # the guest hangs; QEMU lives on
    frozen_at = datetime.now(UTC)
    row = _until("failover done", lambda: (lambda r: r if r and r.state in ("succeeded", "failed") else None)(
        _record(vm_lab, name)), 300)
    assert row.state == "succeeded", (row.state, row.reason, vm_lab.serve.log_tail())
    assert row.from_blade == "vm-01" and row.to_blade == "vm-02" and row.fence == "power"
    assert "no heartbeat" in (row.reason or ""), row.reason
    detected = next(e for e in row.timeline if e["event"] == "detected")
    detection = (datetime.fromisoformat(detected["at"]) - frozen_at).total_seconds()
    record_property("hung_os_detection_s", round(detection, 1))
    print(f"VM failover of a hung guest: frozen -> detected {detection:.1f} s (heartbeat every 2 s, "
          f"timeout 6.5 s, swept every 1 s, confirmed by 3 probes a second apart); timeline: "
          + ", ".join(f"{e['event']} {e['at'][11:23]}" for e in row.timeline))
    # Shipped defaults find it well inside the 30 s poll (the old heartbeat timeout alone was 35 s).
    assert detection < 20, f"a hung guest was detected only after {detection:.1f} s"
    anvil("failover", "clear", "vm-01")
