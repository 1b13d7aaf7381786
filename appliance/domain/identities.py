"""Identity values: parsing, canonical form, and the integer view pools count in.

Canonical forms are lowercase: MAC ``02:a0:00:00:00:01``, WWN ``20:00:00:25:b5:00:00:01``,
UUID ``4c4c4544-0042-3510-8052-b4c04f384d32``, IQN as RFC 3720 (``iqn.``, ``eui.``, ``naa.``).
Parsers raise :class:`ValueError` with a human reason ("is not a MAC address").
"""

from __future__ import annotations

import re
import uuid as _uuid
from enum import StrEnum

from appliance.domain.names import NAME_RE


class IdentityKind(StrEnum):
    MAC = "mac"
    WWPN = "wwpn"
    WWNN = "wwnn"
    UUID = "uuid"
    IQN = "iqn"


POOL_PREFIX = "pool:"
_POOL_NAME = NAME_RE
_HEX_OCTETS = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")
# RFC 3720 §3.2.6.3.1: iqn.yyyy-mm.<reversed domain>[:<anything>]; case-insensitive, stored lowercase.
_IQN = re.compile(
    r"^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:_-]+)?$"
)
_EUI = re.compile(r"^eui\.[0-9a-f]{16}$")
_NAA = re.compile(r"^naa\.([0-9a-f]{16}|[0-9a-f]{32})$")
IQN_MAX_BYTES = 223


def is_pool_ref(value: str) -> bool:
    return value.startswith(POOL_PREFIX)


def parse_pool_ref(value: str) -> str:
    """Return the pool name of ``pool:<name>``."""
    name = value[len(POOL_PREFIX):]
    if not _POOL_NAME.match(name):
        raise ValueError(f'"{value}" does not name a pool (pool:<lowercase name>)')
    return name


def _octets(value: str, count: int, what: str) -> str:
    v = value.strip().lower()
    if not _HEX_OCTETS.match(v) or len(v.split(":")) != count:
        raise ValueError(f'"{value}" is not {what}')
    return v


def parse_mac(value: str) -> str:
    v = _octets(value, 6, "a MAC address")
    first = int(v[:2], 16)
    if first & 1:
        raise ValueError(f'"{value}" is a multicast MAC address')
    if v == "00:00:00:00:00:00":
        raise ValueError(f'"{value}" is the all-zero MAC address')
    return v


def parse_wwn(value: str) -> str:
    v = _octets(value, 8, "a WWN (8 colon-separated hex octets)")
    if int(v.replace(":", ""), 16) == 0:
        raise ValueError(f'"{value}" is the all-zero WWN')
    return v


def parse_uuid(value: str) -> str:
    v = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", v):
        raise ValueError(f'"{value}" is not a UUID')
    return str(_uuid.UUID(v))


def parse_iqn(value: str) -> str:
    v = value.strip().lower()
    if len(v.encode()) > IQN_MAX_BYTES:
        raise ValueError(f'"{value}" is longer than {IQN_MAX_BYTES} bytes')
    if not (_IQN.match(v) or _EUI.match(v) or _NAA.match(v)):
        raise ValueError(f'"{value}" is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:id], eui. or naa.)')
    return v


PARSERS = {
    IdentityKind.MAC: parse_mac,
    IdentityKind.WWPN: parse_wwn,
    IdentityKind.WWNN: parse_wwn,
    IdentityKind.UUID: parse_uuid,
    IdentityKind.IQN: parse_iqn,
}


def parse_identity(kind: IdentityKind, value: str) -> str:
    """Canonical form of ``value`` as an identity of ``kind``; raises ValueError."""
    return PARSERS[kind](value)


# ---- integer view, for pools ------------------------------------------------

def _octets_to_int(v: str) -> int:
    return int(v.replace(":", ""), 16)


def _int_to_octets(n: int, count: int) -> str:
    h = f"{n:0{count * 2}x}"
    return ":".join(h[i:i + 2] for i in range(0, count * 2, 2))


def to_int(kind: IdentityKind, value: str) -> int:
    """The integer a pool counts with (not defined for IQNs, which pools number by suffix)."""
    v = parse_identity(kind, value)
    if kind is IdentityKind.UUID:
        return _uuid.UUID(v).int
    if kind is IdentityKind.IQN:
        raise ValueError("IQN pools are numbered by suffix, not by value")
    return _octets_to_int(v)


def from_int(kind: IdentityKind, n: int) -> str:
    if kind is IdentityKind.MAC:
        return _int_to_octets(n, 6)
    if kind in (IdentityKind.WWPN, IdentityKind.WWNN):
        return _int_to_octets(n, 8)
    if kind is IdentityKind.UUID:
        return str(_uuid.UUID(int=n))
    raise ValueError("IQN pools are numbered by suffix, not by value")
