"""Q-BRIDGE-MIB PortList bitmaps (RFC 4363): pure encode, decode and edit.

A PortList is an OCTET STRING in which port p (1-based) is bit ``0x80 >> ((p-1) % 8)``
of byte ``(p-1) // 8``: the first octet's most significant bit is port 1. Agents
return lists of a fixed length (often fewer bytes than the last port needs is an
error on their side); edits here grow the list with zero bytes when needed and
never shrink it, so writing back keeps the agent's length.
"""

from __future__ import annotations

from collections.abc import Iterable


def _locate(port: int) -> tuple[int, int]:
    if port < 1:
        raise ValueError(f"port numbers start at 1, got {port}")
    return (port - 1) // 8, 0x80 >> ((port - 1) % 8)


def decode(octets: bytes) -> frozenset[int]:
    """The port numbers whose bits are set."""
    return frozenset(i * 8 + bit + 1 for i, byte in enumerate(octets) for bit in range(8) if byte & (0x80 >> bit))


def encode(ports: Iterable[int], size: int = 0) -> bytes:
    """A PortList with ``ports`` set, at least ``size`` bytes long."""
    out = bytearray(size)
    for port in ports:
        idx, mask = _locate(port)
        if idx >= len(out):
            out.extend(bytes(idx + 1 - len(out)))
        out[idx] |= mask
    return bytes(out)


def contains(octets: bytes, port: int) -> bool:
    idx, mask = _locate(port)
    return idx < len(octets) and bool(octets[idx] & mask)


def with_port(octets: bytes, port: int, member: bool) -> bytes:
    """``octets`` with ``port``'s bit set (member) or cleared; other bits untouched."""
    idx, mask = _locate(port)
    out = bytearray(octets)
    if idx >= len(out):
        if not member:
            return bytes(out)
        out.extend(bytes(idx + 1 - len(out)))
    if member:
        out[idx] |= mask
    else:
        out[idx] &= ~mask & 0xFF
    return bytes(out)
