"""A host pool on fake hardware: blades in two chassis, a KVM host template, the engine with
the reconcile loop, and readers of what the pool told its VM manager."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.drivers.protocols import Secret
from appliance.engine.hostpools import HostPoolLoop
from appliance.engine.runner import Engine, LeaderLoop
from appliance.engine.steps import KINDS
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.pools import PoolService
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, HostEventRow, HostRow, ProfileRow, SwitchRow
from tests.unit.engine.fakes import FAST, FakeHardware, signal_boots

TEMPLATE = """\
apiVersion: anvil/v1
kind: ServerProfileTemplate
metadata: {name: kvm-host, tenant: acme}
spec:
  requirements: {minCpus: 16, minMemoryGiB: 128, nics: 2}
  identity:
    uuid: pool:uuids
    iscsiInitiator: pool:iqns
    nics:
      - {name: eth0, mac: pool:macs, vlans: {native: 10, tagged: [20]}, pxe: true}
      - {name: eth1, mac: pool:macs, vlans: {native: 40}}
  boot: {mode: uefi, source: {type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}
  failover: {domain: kvm, policy: n+1}
"""


def rig(store: Store, tmp: Path, chassis: dict[str, int] | None = None, *, small: int = 0) -> list[str]:
    """Blades ``c1-1``… per chassis (32 CPUs, 256 GiB) and ``small`` that fit no host; returns the big ones."""
    chassis = chassis if chassis is not None else {"c1": 2, "c2": 2}
    with store.write() as s:
        s.add(SwitchRow(name="sw1", driver="fake", address="fake://sw1"))
    svc = BladeService(store, SecretBox(tmp / "secrets.key"))
    names, port = [], 0
    wanted = [(f"{c}-{i}", c, 32, 256) for c, n in chassis.items() for i in range(1, n + 1)]
    wanted += [(f"small-{i}", "c1", 8, 32) for i in range(1, small + 1)]
    for k, (name, where, cpus, mem) in enumerate(wanted, 1):
        nics = []
        for n in range(2):
            port += 1
            nics.append(NicSpec(f"eth{n}", f"52:54:00:00:{k:02x}:{n + 1:02x}", "sw1", str(port)))
        svc.enroll(Enrollment(name=name, bmc=f"fake://{name}", username="admin", password=Secret("pw"), cpus=cpus,
                              memory_gib=mem, chassis=where, slot=k, nics=tuple(nics)))
        if cpus == 32:
            names.append(name)
    pools = PoolService(store)
    pools.create("macs", "mac", "02:a0:00:00:00:00", "02:a0:00:00:ff:ff")
    pools.create("uuids", "uuid", "4c4c4544-0000-0000-0000-000000000000", "4c4c4544-0000-0000-0000-00000000ffff")
    pools.create("iqns", "iqn", "1", "9999", prefix="iqn.2026-11.io.anvil:host-")
    ProfileService(store).import_document(TEMPLATE)
    return names


async def drive(store: Store, hw: FakeHardware, until: Callable[[], Any], *, timeout: float = 30.0,
                clock: Callable[[], float] = time.time, boots: bool = True,
                between: Callable[[], None] | None = None, loops: tuple[LeaderLoop, ...] = ()) -> Any:
    """Run the engine with the reconcile loop (and ``loops``) until ``until()`` is truthy (blades boot as asked)."""
    engine = Engine(store, hw, KINDS, settings=FAST,
                    loops=(HostPoolLoop(store, interval=0.05, clock=clock).run, *loops))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0.05)
                if boots:
                    await asyncio.to_thread(signal_boots, store)
                if between is not None:
                    between()
                got = await asyncio.to_thread(until)
                if got:
                    return got
    finally:
        stop.set()
        await task


def events(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, host id, data) of every event, in order."""
    with store.read() as s:
        return [(e.event, e.host_id, e.data) for e in s.scalars(select(HostEventRow).order_by(HostEventRow.id))]


def hosts(store: Store) -> dict[str, tuple[str, str | None]]:
    """host name → (state, blade), every host ever."""
    with store.read() as s:
        return {h.name: (h.state, h.blade) for h in s.scalars(select(HostRow).order_by(HostRow.seq))}


def ready(store: Store, n: int) -> bool:
    with store.read() as s:
        return len(list(s.scalars(select(HostRow.id).where(HostRow.state == "ready")))) == n


def live_bindings(store: Store) -> dict[str, str]:
    """profile name → blade, for every live binding."""
    with store.read() as s:
        return dict(s.execute(select(ProfileRow.name, BladeRow.name).join(BindingRow, BindingRow.profile_id ==
                                                                         ProfileRow.id)
                              .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                              .where(BindingRow.state == "live")).all())
