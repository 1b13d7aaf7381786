"""Q-BRIDGE PortList bitmaps: port p is bit 0x80 >> ((p-1) % 8) of byte (p-1) // 8."""

from __future__ import annotations

import pytest

from appliance.drivers.snmp import portlist


def test_port_1_is_the_most_significant_bit_of_the_first_octet() -> None:
    assert portlist.encode([1]) == b"\x80"
    assert portlist.encode([8]) == b"\x01"
    assert portlist.encode([9]) == b"\x00\x80"


def test_encode_pads_to_the_agents_length_and_grows_when_needed() -> None:
    assert portlist.encode([5, 24], size=3) == b"\x08\x00\x01"
    assert portlist.encode([], size=4) == b"\x00" * 4
    assert portlist.encode([17], size=1) == b"\x00\x00\x80"


def test_decode_is_the_inverse_of_encode() -> None:
    ports = frozenset({1, 2, 8, 9, 16, 17, 24, 100, 4096})
    assert portlist.decode(portlist.encode(ports)) == ports
    assert portlist.decode(b"\xff\x00\x01") == frozenset({1, 2, 3, 4, 5, 6, 7, 8, 24})
    assert portlist.decode(b"") == frozenset()


def test_with_port_changes_only_that_port_and_keeps_the_length() -> None:
    start = b"\x08\x00\x01"                       # ports 5 and 24
    assert portlist.with_port(start, 9, True) == b"\x08\x80\x01"
    assert portlist.with_port(start, 5, False) == b"\x00\x00\x01"
    assert portlist.with_port(start, 5, True) == start           # already a member: unchanged
    assert portlist.with_port(start, 40, False) == start         # beyond the list: not a member, unchanged
    assert portlist.with_port(start, 32, True) == b"\x08\x00\x01\x01"


def test_contains_reads_short_lists_as_not_member() -> None:
    assert portlist.contains(b"\x08", 5)
    assert not portlist.contains(b"\x08", 6)
    assert not portlist.contains(b"\x08", 30)


def test_port_zero_is_rejected() -> None:
    with pytest.raises(ValueError):
        portlist.encode([0])
