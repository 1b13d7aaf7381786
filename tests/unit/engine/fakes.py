"""In-process fakes for engine logic tests (the emulated rack proves the real drivers)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from appliance.drivers.fake.driver import FakeBmcDriver
from appliance.drivers.protocols import Bmc, PortConfig, Secret, SwitchRef
from appliance.engine.model import EngineSettings
from appliance.engine.runner import Engine
from appliance.engine.steps import KINDS
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import SwitchRow


@dataclass
class FakeSwitch:
    name: str = "fake-switch"
    ports: dict[str, PortConfig] = field(default_factory=dict)
    calls: list[tuple[str, PortConfig]] = field(default_factory=list)

    async def get_port(self, sw: SwitchRef, port: str) -> PortConfig:
        return self.ports.get(port, PortConfig())

    async def set_port(self, sw: SwitchRef, port: str, want: PortConfig) -> None:
        self.calls.append((port, want))
        self.ports[port] = want

    async def list_ports(self, sw: SwitchRef) -> tuple[str, ...]:
        return tuple(self.ports)

    async def close(self) -> None:
        pass


class FakeHardware:
    def __init__(self, *, power_delay: float = 0.0) -> None:
        self.bmcs = FakeBmcDriver(power_delay=power_delay)
        self.sw = FakeSwitch()

    def bmc(self, blade: str) -> tuple[FakeBmcDriver, Bmc]:
        return self.bmcs, Bmc(blade=blade, address=f"fake://{blade}", username="u", password=Secret("p"))

    def prefetch(self, blades: list[str]) -> None:
        pass

    def switch(self, name: str) -> tuple[FakeSwitch, SwitchRef]:
        return self.sw, SwitchRef(name=name, address="fake://sw")

    def storage(self) -> None:
        return None

    def notifier(self) -> None:
        return None


def signal_boots(store: Store) -> int:
    """Play the boot service for jobs waiting at await-boot: record the boot signal of their
    binding generation, as ``POST /boot/callback`` does. Returns how many were signalled."""
    from sqlalchemy import select

    from appliance.store.tables import BindingRow, JobEventRow, JobRow, JobStepRow

    n = 0
    with store.write() as s:
        waiting = s.execute(
            select(JobRow.id, BindingRow.generation)
            .join(JobStepRow, (JobStepRow.job_id == JobRow.id) & (JobStepRow.name == "await-boot"))
            .join(BindingRow, (BindingRow.job_id == JobRow.id) & (BindingRow.state == "live"))
            .where(JobRow.state == "running", JobStepRow.state == "running")).all()
        for job_id, generation in waiting:
            seen = s.scalars(select(JobEventRow.id).where(JobEventRow.job_id == job_id,
                                                          JobEventRow.kind == "boot-signal")).first()
            if seen is None:
                s.add(JobEventRow(job_id=job_id, kind="boot-signal", message="booted (test)",
                                  data={"generation": generation, "facts": {}}))
                n += 1
    return n


FAST = EngineSettings(power_timeout=5.0, poll_interval=0.01, retry_backoff=(0.01, 0.02, 0.05, 0.1),
                      boot_timeout=10.0, boot_poll=0.02)


def rack(store: Store, tmp: Path, blades: int = 3, *, cpus: int = 16, memory: int = 128) -> None:
    with store.write() as s:
        s.add(SwitchRow(name="sw1", driver="fake", address="fake://sw1"))
    svc = BladeService(store, SecretBox(tmp / "secrets.key"))
    for i in range(1, blades + 1):
        svc.enroll(Enrollment(name=f"b{i:02d}", bmc=f"fake://b{i:02d}", username="admin", password=Secret("pw"),
                              cpus=cpus, memory_gib=memory,
                              nics=(NicSpec("eth0", f"52:54:00:00:{i:02x}:01", "sw1", str(2 * i - 1)),
                                    NicSpec("eth1", f"52:54:00:00:{i:02x}:02", "sw1", str(2 * i)))))


PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  requirements: {{minCpus: {cpus}, minMemoryGiB: 64, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:a0:00:00:{n:02x}:01", vlans: {{native: 100, tagged: [200]}}, pxe: true}}
      - {{name: eth1, mac: "02:a0:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
"""


def add_profile(store: Store, name: str, n: int, *, cpus: int = 8) -> None:
    ProfileService(store).import_document(PROFILE.format(name=name, n=n, cpus=cpus))


async def run_until_idle(engine: Engine, *, timeout: float = 30.0, boots: bool = True) -> None:
    """Run the engine until no unfinished job is left; ``boots``: blades boot (signal_boots)."""
    from sqlalchemy import func, select

    from appliance.store.tables import JobRow

    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while True:
                await asyncio.sleep(0.05)
                if boots:
                    signal_boots(engine.store)
                with engine.store.read() as s:
                    left = s.scalar(select(func.count()).select_from(JobRow).where(
                        JobRow.state.in_(["pending", "running", "waiting", "rolling_back"])))
                if not left:
                    break
    finally:
        stop.set()
        await task


def make_engine(store: Store, hw: FakeHardware, **kw: object) -> Engine:
    return Engine(store, hw, KINDS, settings=FAST, **kw)  # type: ignore[arg-type]
