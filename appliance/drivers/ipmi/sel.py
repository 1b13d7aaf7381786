"""Health from the System Event Log (IPMI 2.0 §31, §32 and §42): which hardware faults are
asserted now.

The SEL is a log, not a state: a fault stays asserted until the same sensor logs its
deassertion, or an admin clears the log after the repair (``ipmitool sel clear``), as
with a vendor's integrated management log. Only well-known faults count (table
``_SENSOR_SPECIFIC`` and critical thresholds); OEM records and informational events are
ignored, so a chatty BMC does not make a healthy blade look sick.

Reading is bounded and cheap on the common path: Get SEL Info first, and the entries only
when its entry count or last addition/erase time changed since the last read
(:class:`SelCache`, one per BMC session).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from appliance.drivers.protocols import Health, HealthState

NETFN_STORAGE = 0x0A
GET_SEL_INFO, RESERVE_SEL, GET_SEL_ENTRY, ADD_SEL_ENTRY, CLEAR_SEL = 0x40, 0x42, 0x43, 0x44, 0x47
RECORD_SIZE = 16
FIRST_RECORD, LAST_RECORD = 0x0000, 0xFFFF
SYSTEM_EVENT = 0x02
MAX_ENTRIES = 1024          # a SEL holds a few hundred to ~3,000; read at most this many per change
_SHOWN = 3

# (sensor type, sensor-specific offset) → (state, what it means); IPMI 2.0 table 42-3.
_SENSOR_SPECIFIC: dict[tuple[int, int], tuple[HealthState, str]] = {
    (0x07, 0x00): (HealthState.CRITICAL, "processor IERR"),
    (0x07, 0x01): (HealthState.CRITICAL, "processor thermal trip"),
    (0x07, 0x02): (HealthState.CRITICAL, "processor FRB1/BIST failure"),
    (0x07, 0x08): (HealthState.WARNING, "processor disabled"),
    (0x08, 0x01): (HealthState.WARNING, "power supply failure"),
    (0x08, 0x03): (HealthState.WARNING, "power supply input lost"),
    (0x0C, 0x01): (HealthState.CRITICAL, "memory uncorrectable ECC"),
    (0x0C, 0x03): (HealthState.CRITICAL, "memory scrub failed"),
    (0x0C, 0x05): (HealthState.WARNING, "memory correctable ECC logging limit reached"),
    (0x0C, 0x0A): (HealthState.CRITICAL, "memory critical overtemperature"),
    (0x13, 0x04): (HealthState.CRITICAL, "PCI PERR"),
    (0x13, 0x05): (HealthState.CRITICAL, "PCI SERR"),
    (0x13, 0x07): (HealthState.WARNING, "bus correctable error"),
    (0x13, 0x08): (HealthState.CRITICAL, "bus uncorrectable error"),
    (0x13, 0x09): (HealthState.CRITICAL, "fatal NMI"),
    (0x20, 0x00): (HealthState.CRITICAL, "OS critical stop during load"),
    (0x20, 0x01): (HealthState.CRITICAL, "OS run-time critical stop"),
    (0x23, 0x01): (HealthState.WARNING, "watchdog hard reset"),
    (0x23, 0x02): (HealthState.WARNING, "watchdog power down"),
    (0x23, 0x03): (HealthState.WARNING, "watchdog power cycle"),
}
_SENSOR_NAMES = {0x01: "temperature", 0x02: "voltage", 0x03: "current", 0x04: "fan"}
# Threshold offsets (table 42-2): going past a critical or non-recoverable threshold.
_THRESHOLD_CRITICAL = {0x02: "below lower critical", 0x04: "below lower non-recoverable",
                       0x09: "above upper critical", 0x0B: "above upper non-recoverable"}
_THRESHOLD_WARNING = {0x00: "below lower non-critical", 0x07: "above upper non-critical"}


class SelUnreadable(Exception):
    """The BMC answered a SEL command with an error we cannot read past."""


# (netfn, command, data) → (completion code, response data)
Raw = Callable[[int, int, bytes], tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class SelInfo:
    entries: int
    last_add: int
    last_erase: int

    @classmethod
    def parse(cls, data: bytes) -> SelInfo:
        if len(data) < 13:
            raise SelUnreadable(f"Get SEL Info answered {len(data)} bytes, expected 14")
        entries, _free, last_add, last_erase = struct.unpack_from("<HHII", data, 1)
        return cls(entries, last_add, last_erase)


@dataclass(frozen=True, slots=True)
class Fault:
    record: int
    sensor_type: int
    sensor: int
    state: HealthState
    what: str

    def describe(self) -> str:
        return f"SEL: {self.what} (sensor 0x{self.sensor:02x}, record 0x{self.record:04x})"


def classify(record: bytes) -> tuple[tuple[int, int, int], bool, Fault | None] | None:
    """A system-event record as (condition key, asserted?, the fault it is, if known); None for
    records that are not system events (OEM, timestamped OEM)."""
    if len(record) < RECORD_SIZE or record[2] != SYSTEM_EVENT:
        return None
    record_id = record[0] | record[1] << 8
    sensor_type, sensor, dir_type, data1 = record[10], record[11], record[12], record[13]
    asserted = not dir_type & 0x80
    event_type, offset = dir_type & 0x7F, data1 & 0x0F
    key = (sensor_type, sensor, offset)
    known: tuple[HealthState, str] | None = None
    if event_type == 0x6F:
        known = _SENSOR_SPECIFIC.get((sensor_type, offset))
    elif event_type == 0x01:
        name = _SENSOR_NAMES.get(sensor_type, f"sensor type 0x{sensor_type:02x}")
        if offset in _THRESHOLD_CRITICAL:
            known = (HealthState.CRITICAL, f"{name} {_THRESHOLD_CRITICAL[offset]}")
        elif offset in _THRESHOLD_WARNING:
            known = (HealthState.WARNING, f"{name} {_THRESHOLD_WARNING[offset]}")
    fault = Fault(record_id, sensor_type, sensor, known[0], known[1]) if known else None
    return key, asserted, fault


def active_faults(records: list[bytes]) -> list[Fault]:
    """Faults asserted and not deasserted later, in log order (the log is chronological)."""
    active: dict[tuple[int, int, int], Fault] = {}
    for record in records:
        seen = classify(record)
        if seen is None:
            continue
        key, asserted, fault = seen
        if not asserted:
            active.pop(key, None)
        elif fault is not None:
            active[key] = fault
    return list(active.values())


def health_of(faults: list[Fault]) -> Health:
    if not faults:
        return Health(HealthState.OK, "")
    worst = [f for f in faults if f.state is HealthState.CRITICAL] or faults
    shown = [f.describe() for f in reversed(worst[-_SHOWN:])]    # the newest first
    more = len(faults) - len(shown)
    reason = "; ".join(shown) + (f"; and {more} more" if more else "")
    return Health(worst[0].state, reason)


def read_records(raw: Raw, limit: int = MAX_ENTRIES) -> list[bytes]:
    """Every record, following each entry's "next record ID"; at most ``limit`` (bounded even
    when a BMC's chain loops)."""
    code, data = raw(NETFN_STORAGE, RESERVE_SEL, b"")
    reservation = data[:2] if code == 0 and len(data) >= 2 else b"\x00\x00"
    records: list[bytes] = []
    record_id, seen = FIRST_RECORD, set()
    while record_id != LAST_RECORD and len(records) < limit and record_id not in seen:
        seen.add(record_id)
        code, data = raw(NETFN_STORAGE, GET_SEL_ENTRY, reservation + struct.pack("<HBB", record_id, 0, 0xFF))
        if code == 0xCB and not records:     # "requested data not present": the SEL is empty
            break
        if code != 0 or len(data) < 2 + RECORD_SIZE:
            raise SelUnreadable(f"Get SEL Entry 0x{record_id:04x}: completion code 0x{code:02x}")
        records.append(bytes(data[2:2 + RECORD_SIZE]))
        record_id = data[0] | data[1] << 8
    return records


@dataclass(slots=True)
class SelCache:
    """What the last read of one BMC's SEL found, keyed by its Get SEL Info answer."""

    info: SelInfo | None = None
    health: Health | None = None
    unsupported: bool = False

    def health_now(self, raw: Raw) -> Health | None:
        """The SEL's verdict; None when the BMC has no SEL (it answers Get SEL Info with an error)."""
        if self.unsupported:
            return None
        code, data = raw(NETFN_STORAGE, GET_SEL_INFO, b"")
        if code != 0:
            self.unsupported = code in (0xC1, 0xC9, 0xD4)    # invalid command / parameter / privilege
            return None
        info = SelInfo.parse(data)
        if info == self.info and self.health is not None:
            return self.health
        health = health_of(active_faults(read_records(raw))) if info.entries else Health(HealthState.OK, "")
        self.info, self.health = info, health
        return health


def combine(chassis: Health, sel: Health | None) -> Health:
    """The worse of the two, with both reasons."""
    if sel is None or sel.state is HealthState.OK:
        return chassis
    if chassis.state is HealthState.OK:
        return sel
    order = [HealthState.OK, HealthState.WARNING, HealthState.CRITICAL]
    state = max(chassis.state, sel.state, key=order.index)
    return Health(state, f"{chassis.reason}; {sel.reason}")
