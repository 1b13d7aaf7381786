"""The System Event Log of a lab IPMI BMC: the storage commands a real BMC answers
(IPMI 2.0 §31: Get SEL Info, Reserve SEL, Get SEL Entry, Add SEL Entry, Clear SEL).

Faults are injected the way hardware logs them, with a standard Add SEL Entry from any
IPMI client; ``ipmitool sel clear`` (Clear SEL) empties it. Kept in memory, one per BMC.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

NETFN_STORAGE = 0x0A
RECORD_SIZE = 16
_VERSION = 0x51          # IPMI 2.0 SEL
_CAPACITY = 512
_SUPPORTS = 0x0A         # reserve supported, delete not supported (bit 3, bit 1)
_OK, _INVALID, _NOT_PRESENT, _BAD_RESERVATION, _LENGTH, _FULL = 0x00, 0xC1, 0xCB, 0xC5, 0xC7, 0xC4


@dataclass
class SelLog:
    clock: Callable[[], float] = time.time
    records: list[bytearray] = field(default_factory=list)
    last_add: int = 0
    last_erase: int = 0
    reservation: int = 0
    _next_id: int = 1

    def answer(self, command: int, data: bytes) -> tuple[int, bytes]:
        """(completion code, response data) for one storage command; 0xC1 for the rest."""
        handler = {0x40: self._info, 0x42: self._reserve, 0x43: self._entry, 0x44: self._add,
                   0x47: self._clear}.get(command)
        return handler(bytes(data)) if handler else (_INVALID, b"")

    def _info(self, _data: bytes) -> tuple[int, bytes]:
        free = (_CAPACITY - len(self.records)) * RECORD_SIZE
        return _OK, struct.pack("<BHHIIB", _VERSION, len(self.records), min(free, 0xFFFE),
                                self.last_add, self.last_erase, _SUPPORTS)

    def _reserve(self, _data: bytes) -> tuple[int, bytes]:
        self.reservation = self.reservation % 0xFFFF + 1
        return _OK, struct.pack("<H", self.reservation)

    def _entry(self, data: bytes) -> tuple[int, bytes]:
        if len(data) != 6:
            return _LENGTH, b""
        reservation, wanted, offset, count = struct.unpack("<HHBB", data)
        if offset and reservation != self.reservation:
            return _BAD_RESERVATION, b""
        if not self.records:
            return _NOT_PRESENT, b""
        ids = [r[0] | r[1] << 8 for r in self.records]
        if wanted == 0x0000:
            index = 0
        elif wanted == 0xFFFF:
            index = len(ids) - 1
        elif wanted in ids:
            index = ids.index(wanted)
        else:
            return _NOT_PRESENT, b""
        following = ids[index + 1] if index + 1 < len(ids) else 0xFFFF
        end = RECORD_SIZE if count == 0xFF else min(RECORD_SIZE, offset + count)
        return _OK, struct.pack("<H", following) + bytes(self.records[index][offset:end])

    def _add(self, data: bytes) -> tuple[int, bytes]:
        if len(data) != RECORD_SIZE:
            return _LENGTH, b""
        if len(self.records) >= _CAPACITY:
            return _FULL, b""
        record = bytearray(data)
        record_id = self._next_id
        self._next_id = self._next_id % 0xFFFE + 1
        record[0:2] = struct.pack("<H", record_id)
        now = int(self.clock())
        if record[2] < 0xE0:                      # timestamped record types: the BMC stamps them
            record[3:7] = struct.pack("<I", now)
        self.records.append(record)
        self.last_add = now
        return _OK, struct.pack("<H", record_id)

    def _clear(self, data: bytes) -> tuple[int, bytes]:
        if len(data) != 6 or data[2:5] != b"CLR":
            return _LENGTH if len(data) != 6 else _INVALID, b""
        if data[5] == 0xAA:
            self.records.clear()
            self.last_erase = int(self.clock())
        return _OK, b"\x01"                       # erasure completed


def system_event(sensor_type: int, sensor: int, offset: int, *, deassert: bool = False,
                 event_type: int = 0x6F) -> bytes:
    """A 16-byte system event record (IPMI 2.0 §32.1) as Add SEL Entry takes it; the BMC fills
    in the record ID and timestamp."""
    direction = (0x80 if deassert else 0) | event_type
    return struct.pack("<HBIHBBBBBBB", 0, 0x02, 0, 0x0020, 0x04, sensor_type, sensor, direction,
                       offset & 0x0F, 0xFF, 0xFF)
