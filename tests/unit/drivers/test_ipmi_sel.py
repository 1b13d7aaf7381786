"""SEL health: which logged faults count, assertion/deassertion, caching, bounds.

The BMC side is the lab's SEL (appliance.lab.sel_log), answering the same storage
commands it answers over IPMI; the wire itself is tested in tests/integration/bmc."""

from __future__ import annotations

import struct

import pytest

from appliance.drivers.ipmi import sel
from appliance.drivers.protocols import Health, HealthState
from appliance.lab.sel_log import SelLog, system_event

MEMORY, PROCESSOR, TEMPERATURE, OEM = 0x0C, 0x07, 0x01, 0xC0


class Bmc:
    """A SEL behind a raw-command function that counts what it was asked."""

    def __init__(self) -> None:
        self.log = SelLog(clock=lambda: 1_700_000_000)
        self.calls: list[int] = []

    def raw(self, netfn: int, command: int, data: bytes) -> tuple[int, bytes]:
        assert netfn == sel.NETFN_STORAGE
        self.calls.append(command)
        return self.log.answer(command, data)

    def add(self, record: bytes) -> None:
        code, _ = self.log.answer(sel.ADD_SEL_ENTRY, record)
        assert code == 0


def test_an_empty_sel_is_ok_without_reading_entries() -> None:
    bmc = Bmc()
    assert sel.SelCache().health_now(bmc.raw) == Health(HealthState.OK, "")
    assert bmc.calls == [sel.GET_SEL_INFO]


def test_uncorrectable_ecc_is_critical_until_its_deassertion() -> None:
    bmc, cache = Bmc(), sel.SelCache()
    bmc.add(system_event(MEMORY, 0x03, 0x01))
    health = cache.health_now(bmc.raw)
    assert health is not None and health.state is HealthState.CRITICAL
    assert health.reason == "SEL: memory uncorrectable ECC (sensor 0x03, record 0x0001)"
    bmc.add(system_event(MEMORY, 0x03, 0x01, deassert=True))
    assert cache.health_now(bmc.raw) == Health(HealthState.OK, "")


def test_informational_oem_and_unknown_events_are_ignored() -> None:
    bmc = Bmc()
    bmc.add(system_event(MEMORY, 0x03, 0x00))                 # one correctable ECC: informational
    bmc.add(system_event(0x12, 0x01, 0x02))                   # system event: OEM system boot
    oem = bytearray(system_event(MEMORY, 0x03, 0x01))
    oem[2] = OEM                                              # an OEM record that looks like a fault
    bmc.add(bytes(oem))
    assert sel.SelCache().health_now(bmc.raw) == Health(HealthState.OK, "")


def test_warnings_thresholds_and_the_worst_first() -> None:
    bmc, cache = Bmc(), sel.SelCache()
    bmc.add(system_event(MEMORY, 0x04, 0x05))                 # correctable ECC logging limit reached
    health = cache.health_now(bmc.raw)
    assert health is not None and health.state is HealthState.WARNING and "logging limit" in health.reason
    bmc.add(system_event(TEMPERATURE, 0x30, 0x09, event_type=0x01))
    bmc.add(system_event(PROCESSOR, 0x60, 0x00))
    health = cache.health_now(bmc.raw)
    assert health is not None and health.state is HealthState.CRITICAL
    # The criticals, newest first; the warning is counted.
    assert health.reason == ("SEL: processor IERR (sensor 0x60, record 0x0003); "
                             "SEL: temperature above upper critical (sensor 0x30, record 0x0002); and 1 more")


def test_entries_are_read_only_when_the_sel_changed() -> None:
    bmc, cache = Bmc(), sel.SelCache()
    bmc.add(system_event(MEMORY, 0x03, 0x01))
    cache.health_now(bmc.raw)
    bmc.calls.clear()
    cache.health_now(bmc.raw)
    assert bmc.calls == [sel.GET_SEL_INFO]
    bmc.log.clock = lambda: 1_700_000_060
    code, _ = bmc.log.answer(sel.CLEAR_SEL, b"\x00\x00CLR\xaa")
    assert code == 0
    assert cache.health_now(bmc.raw) == Health(HealthState.OK, "")    # cleared after the repair


def test_a_bmc_without_a_sel_is_asked_once() -> None:
    calls: list[int] = []

    def raw(netfn: int, command: int, data: bytes) -> tuple[int, bytes]:
        calls.append(command)
        return 0xC1, b""

    cache = sel.SelCache()
    assert cache.health_now(raw) is None and cache.health_now(raw) is None
    assert calls == [sel.GET_SEL_INFO]


def test_a_looping_or_endless_chain_is_bounded() -> None:
    record = system_event(MEMORY, 0x03, 0x01)

    def looping(netfn: int, command: int, data: bytes) -> tuple[int, bytes]:
        if command == sel.RESERVE_SEL:
            return 0, b"\x01\x00"
        wanted = struct.unpack_from("<H", data, 2)[0]
        return 0, struct.pack("<H", 7 if wanted == 0 else 0) + record    # 0 → 7 → 0 → …

    assert len(sel.read_records(looping)) == 2

    def endless(netfn: int, command: int, data: bytes) -> tuple[int, bytes]:
        wanted = struct.unpack_from("<H", data, 2)[0] if command == sel.GET_SEL_ENTRY else 0
        return 0, struct.pack("<H", wanted + 1) + record

    assert len(sel.read_records(endless, limit=50)) == 50


def test_an_error_mid_read_is_reported_not_guessed() -> None:
    def broken(netfn: int, command: int, data: bytes) -> tuple[int, bytes]:
        if command == sel.GET_SEL_INFO:
            return 0, struct.pack("<BHHIIB", 0x51, 3, 100, 1, 0, 0)
        if command == sel.GET_SEL_ENTRY:
            return 0xFF, b""
        return 0, b"\x01\x00"

    with pytest.raises(sel.SelUnreadable, match="Get SEL Entry 0x0000: completion code 0xff"):
        sel.SelCache().health_now(broken)


@pytest.mark.parametrize(("chassis", "log", "expected"), [
    (Health(HealthState.OK), None, Health(HealthState.OK)),
    (Health(HealthState.WARNING, "drive fault"), Health(HealthState.OK), Health(HealthState.WARNING, "drive fault")),
    (Health(HealthState.OK), Health(HealthState.CRITICAL, "SEL: x"), Health(HealthState.CRITICAL, "SEL: x")),
    (Health(HealthState.WARNING, "drive fault"), Health(HealthState.CRITICAL, "SEL: x"),
     Health(HealthState.CRITICAL, "drive fault; SEL: x")),
])
def test_chassis_status_and_sel_combine_to_the_worse(chassis: Health, log: Health | None, expected: Health) -> None:
    assert sel.combine(chassis, log) == expected
