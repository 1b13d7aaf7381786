"""Fencing's fallback, for real: the failed blade's BMC is gone, so nothing can power it off.

The fence then shuts every switch port of the blade (snmpsim, or Open vSwitch's userspace
datapath) and revokes its profile's iSCSI LUN access in a real tgtd, and the failover moves
the profile to a spare. Each effect is read back from the peer itself, not through Anvil's
drivers: ifAdminStatus by an SNMP GET and snmpsim's own log of SETs, PORT_DOWN from
``ovs-ofctl dump-ports-desc``, the target's ACL from ``tgtadm``. No spare exists until the
fence is seen to hold, so the order (cut off first, then the spare powered on) is checked,
not assumed; the world check then joins the BMCs' power history with the ports' history.

Needs root (tgtd's control socket, OVS namespaces) and the apt packages tgt and openvswitch-switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
)
from sqlalchemy import select

from appliance.domain.health import DetectorPolicy
from appliance.drivers.tgt import TgtDriver, create
from appliance.lab import procs
from appliance.lab import tgt as lab_tgt
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.lab.ovs_switch import OvsSwitch
from appliance.lab.snmp_switch import IF_ADMIN_STATUS
from appliance.monitor.runner import MonitorSettings
from appliance.services.failover import FailoverInfo, FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store.tables import ProfileRow
from tests.support import world_io
from tests.support.tgtadm import show_targets

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MONITOR = MonitorSettings(interval=1.0, probe_timeout=3.0, policy=DetectorPolicy(fail_after=2, recover_after=1))
TARGET = "iqn.2026-11.io.anvil.san:db"
INITIATOR = "iqn.2026-11.io.anvil:db"

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: db, tenant: ops}}
spec:
  identity:
    iscsiInitiator: {initiator}
    nics:
      - {{name: eth0, mac: "02:f1:00:00:00:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:f1:00:00:00:02", vlans: {{native: 101}}}}
  boot:
    mode: uefi
    source: {{type: iscsi, portal: "{portal}", target: {target}, lun: 1, sizeMiB: 4,
              kernel: lab/vmlinuz, initrd: lab/initrd.img}}
  failover: {{domain: prod, priority: 5, policy: n+1}}
"""


@asynccontextmanager
async def tgtd_and_driver(tmp_path: Path) -> AsyncIterator[tuple[lab_tgt.TgtdHandle, TgtDriver]]:
    luns = tmp_path / "luns"
    luns.mkdir()
    handle: lab_tgt.TgtdHandle | None = None
    for attempt in range(3):   # another worker may take the free ports first
        try:
            handle = lab_tgt.start(tmp_path / "tgt", "127.0.0.1", procs.free_tcp_port(), lab_tgt.free_control_port())
            break
        except procs.ProcError:
            if attempt == 2:
                raise
    assert handle is not None
    driver = create({**handle.settings(), "roots": [luns], "timeout": 5.0})
    try:
        yield handle, driver
    finally:
        await driver.close()
        lab_tgt.stop(handle)


async def snmp_admin_up(rig: InprocRig, port: str) -> bool:
    """ifAdminStatus of ``port`` by a plain SNMP GET to snmpsim (ifIndex = port on the rig's switch)."""
    assert rig.switch is not None
    engine = SnmpEngine()
    try:
        target = await UdpTransportTarget.create(("127.0.0.1", rig.switch.port), timeout=2.0, retries=2)
        err, status, _, binds = await get_cmd(engine, CommunityData(rig.switch.community), target, ContextData(),
                                              ObjectType(ObjectIdentity(f"{IF_ADMIN_STATUS}.{port}")),
                                              lookupMib=False)
    finally:
        engine.close_dispatcher()
    assert not err and not status, (err, status)
    return int(binds[0][1]) == 1


def ovs_ports_down(ovs: OvsSwitch) -> dict[str, bool]:
    """Port name → PORT_DOWN in its OpenFlow config, from ``ovs-ofctl dump-ports-desc``."""
    out: dict[str, bool] = {}
    port = None
    for line in ovs.ofctl("dump-ports-desc").splitlines():
        head = re.match(r"^\s*\S+\((\S+)\): addr:", line)
        if head:
            port = head.group(1)
            out[port] = False
        elif port is not None and line.strip().startswith("config:"):
            out[port] = "PORT_DOWN" in line
    return out


class OvsPortWatch:
    """Polls the OVS switch's own port state every 0.2 s in a thread and keeps each change: the
    history the world check needs (port-down is OpenFlow state, in no OVSDB record to replay)."""

    def __init__(self, ovs: OvsSwitch, limit: float = 240.0) -> None:
        self.ovs = ovs
        self.limit = limit
        self.changes: dict[str, list[tuple[float, bool]]] = {}   # port -> (time, down)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ovs-port-watch", daemon=True)

    def _run(self) -> None:
        last: dict[str, bool] = {}
        deadline = time.monotonic() + self.limit
        for _ in range(int(self.limit / 0.2) + 1):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            at = time.time()
            for port, down in ovs_ports_down(self.ovs).items():
                if last.get(port, False) != down:
                    self.changes.setdefault(port, []).append((at, down))
                last[port] = down
            self._stop.wait(0.2)

    def __enter__(self) -> OvsPortWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def cut_off(self, ports_of: dict[str, list[str]]) -> dict[str, list[tuple[float, bool]]]:
        out: dict[str, list[tuple[float, bool]]] = {}
        for blade, ports in ports_of.items():
            down = dict.fromkeys(ports, False)
            for at, port, state in sorted((at, p, d) for p in ports for at, d in self.changes.get(p, [])):
                down[port] = state
                out.setdefault(blade, []).append((at, all(down.values())))
        return out


async def ports_up(rig: InprocRig, blade: str) -> list[bool]:
    ports = [rig.port_of(blade, k) for k in range(2)]
    if rig.ovs is not None:
        seen = await asyncio.to_thread(ovs_ports_down, rig.ovs)
        return [not seen[p] for p in ports]
    return [await snmp_admin_up(rig, p) for p in ports]


def _active(rig: InprocRig) -> bool:
    with rig.store.read() as s:
        return s.scalar(select(ProfileRow.state).where(ProfileRow.name == "db")) == "active"


def failover(rig: InprocRig, state: str) -> FailoverInfo | None:
    got = {f.profile: f for f in FailoverService(rig.store).list_failovers(domain="prod", limit=10)}
    info = got.get("db")
    return info if info is not None and info.state == state else None


@pytest.mark.parametrize("switch", ["snmp", "ovs"])
async def test_a_blade_whose_bmc_is_gone_is_fenced_by_its_ports_and_lun_and_its_profile_moves(
        tmp_path: Path, switch: str) -> None:
    async with tgtd_and_driver(tmp_path) as (tgtd, storage), InprocRig(
            tmp_path / "rig", chassis=[1, 1], enroll=1, switch=switch, storage=storage, monitor=MONITOR,
            engine=fast_engine(fence_timeout=3.0, luns_dir=tmp_path / "luns")) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        ProfileService(rig.store).import_document(PROFILE.format(initiator=INITIATOR, portal=tgtd.portal,
                                                                 target=TARGET))
        JobService(rig.store).submit_assign("db", tenant="ops", blade="b001")
        await rig.until("db active on b001", lambda: _active(rig), 60)
        assert show_targets(tgtd.control_port)[TARGET].acl == (INITIATOR,)
        assert await ports_up(rig, "b001") == [True, True]
        await asyncio.sleep(2.5)   # the monitor has seen the blade healthy

        watch = OvsPortWatch(rig.ovs) if rig.ovs is not None else None
        with watch or contextlib.nullcontext():
            rig.kill_bmc("b001")   # b001 stays on: its emulator's last word is "On"
            info = await rig.until("fenced, waiting for a spare", lambda: failover(rig, "waiting"), 60)
            # Cut off before any spare exists: ports down on the switch, the LUN closed on the target.
            assert info.fence == "isolation", (info.fence, info.reason, info.timeline)
            assert await ports_up(rig, "b001") == [False, False]
            assert show_targets(tgtd.control_port)[TARGET].acl == ()
            assert rig.emulators[0].proc.alive() is False

            rig.enroll(1)   # the spare arrives: the failover goes on
            done = await rig.until("moved to the spare", lambda: failover(rig, "succeeded"), 90)
        assert (done.from_blade, done.to_blade) == ("b001", "b002")
        assert [e["event"] for e in done.timeline][:2] == ["detected", "fenced"]
        assert rig.raw_power("b002") == "On"
        assert show_targets(tgtd.control_port)[TARGET].acl == (INITIATOR,)   # granted again, to the spare
        assert await ports_up(rig, "b001") == [False, False]                  # and the old blade stays cut off
        if watch is not None:
            cut = watch.cut_off(world_io.switch_ports(rig.store, "rig-sw"))
            assert cut.get("b001"), watch.changes
            problems = await asyncio.to_thread(world_io.inproc_violations, rig, cut=cut)
        else:
            problems = await asyncio.to_thread(world_io.inproc_violations, rig)
        assert not problems, problems


FC_PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: db, tenant: ops}
spec:
  identity:
    nics:
      - {name: eth0, mac: "02:f1:00:00:00:01", vlans: {native: 100}}
      - {name: eth1, mac: "02:f1:00:00:00:02", vlans: {native: 101}}
    hbas:
      - {name: fc0, wwpn: "20:00:00:25:b5:f1:00:01", wwnn: "20:00:00:25:b5:f1:01:01"}
  boot: {mode: legacy, source: {type: fc, targetWwpn: "50:06:01:60:3e:a0:12:34", lun: 1}}
  failover: {domain: prod, priority: 5, policy: n+1}
"""


async def test_shut_ports_do_not_fence_a_blade_that_reaches_its_san_over_fc(tmp_path: Path) -> None:
    """The FC fabric is not behind the Ethernet ports and no zoning is managed: with the BMC gone,
    the failover waits for an operator and no spare is powered on."""
    async with InprocRig(tmp_path, chassis=[1, 1], monitor=MONITOR, engine=fast_engine(fence_timeout=3.0)) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        ProfileService(rig.store).import_document(FC_PROFILE)
        JobService(rig.store).submit_assign("db", tenant="ops", blade="b001")
        await rig.until("db active on b001", lambda: _active(rig), 60)
        await asyncio.sleep(2.5)
        rig.kill_bmc("b001")
        info = await rig.until("needs an operator", lambda: failover(rig, "needs-operator"), 60)
        assert "isolation: the profile's FC HBAs (fc0) reach the SAN past the switch ports" in (info.reason or "")
        await asyncio.sleep(2)   # and it stays so
        assert failover(rig, "needs-operator") is not None
        assert rig.raw_power("b002") == "Off"
        assert await ports_up(rig, "b001") == [True, True]   # nothing half-done
