"""IPMI health reads the BMC's System Event Log over the wire (the lab's pyghmi BMCs keep one).

Faults are logged the way a BMC's own sensors or the host's BIOS log them: a standard Add
SEL Entry from another IPMI session. The driver under test then reports them as health,
until the sensor deasserts or the SEL is cleared (``ipmitool sel clear``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.drivers.ipmi import IpmiDriver
from appliance.drivers.protocols import Bmc, Health, HealthState, Secret
from appliance.lab import ipmi_emulator, procs
from appliance.lab.sel_log import system_event

pytestmark = pytest.mark.timeout(60)

MEMORY = 0x0C


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ipmi_emulator.IpmiEmulator]:
    emu = ipmi_emulator.start_ipmi(tmp_path, [procs.free_udp_port()])
    try:
        yield emu
    finally:
        ipmi_emulator.stop(emu)


_CLIENT = """
import json, sys
from pyghmi.ipmi import command
port, cmd, data = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
c = command.Command(bmc="127.0.0.1", userid="admin", password="password", port=port)
r = c.raw_command(netfn=0x0A, command=cmd, data=tuple(data))
print(json.dumps({"code": r.get("code", 0), "data": list(r.get("data") or [])}))
"""


def _raw(port: int, command: int, data: bytes) -> dict[str, Any]:
    """One storage command from another IPMI client in a process of its own (pyghmi shares one
    session per BMC and user inside a process), as the host's BIOS or an admin's ipmitool."""
    res = subprocess.run([sys.executable, "-c", _CLIENT, str(port), str(command), data.hex()],
                         capture_output=True, text=True, timeout=30, check=True)
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


async def test_logged_faults_are_health_until_deasserted_or_cleared(
        emulator: ipmi_emulator.IpmiEmulator) -> None:
    port = emulator.ports[0]
    bmc = Bmc("ipmi-sel", emulator.address(port), "admin", Secret("password"), timeout=5.0)
    driver = IpmiDriver()
    try:
        assert await driver.health(bmc) == Health(HealthState.OK, "")

        added = await asyncio.to_thread(_raw, port, 0x44, system_event(MEMORY, 0x03, 0x01))
        assert added == {"code": 0, "data": [1, 0]}
        health = await driver.health(bmc)
        assert health == Health(HealthState.CRITICAL, "SEL: memory uncorrectable ECC (sensor 0x03, record 0x0001)")

        await asyncio.to_thread(_raw, port, 0x44, system_event(MEMORY, 0x03, 0x01, deassert=True))
        assert await driver.health(bmc) == Health(HealthState.OK, "")

        await asyncio.to_thread(_raw, port, 0x44, system_event(0x07, 0x60, 0x00))   # processor IERR
        assert (await driver.health(bmc)).state is HealthState.CRITICAL
        cleared = await asyncio.to_thread(_raw, port, 0x47, b"\x00\x00CLR\xaa")
        assert cleared == {"code": 0, "data": [1]}
        assert await driver.health(bmc) == Health(HealthState.OK, "")
    finally:
        await driver.close()
