"""Identity pools: a named range of MACs, WWPNs, WWNNs, UUIDs or IQNs.

A pool numbers its members 0..size-1 (the *offset*); the store allocates offsets
and :func:`value_at` turns one into the canonical identity. IQN pools are a
prefix plus a decimal suffix range (``iqn.2026-11.io.anvil:node-`` + 1..1000).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.domain.identities import IdentityKind, from_int, parse_identity, parse_iqn, to_int
from appliance.domain.names import NAME_RE

MAX_POOL_SIZE = 2**32
# How --start/--end read for each kind: shown by `anvil pool create --help` and the console's form.
RANGE_FORMATS: dict[str, tuple[str, str]] = {   # kind → (what start and end are, an example)
    "mac": ("six hex octets (02: is a locally administered prefix)",
            "--start 02:a0:00:00:00:00 --end 02:a0:00:00:ff:ff"),
    "wwpn": ("eight hex octets", "--start 20:00:00:25:b5:00:00:00 --end 20:00:00:25:b5:00:00:ff"),
    "wwnn": ("eight hex octets", "--start 20:00:00:25:b5:00:01:00 --end 20:00:00:25:b5:00:01:ff"),
    "uuid": ("8-4-4-4-12 hex digits, counted as one 128-bit number",
             "--start 4c4c4544-0000-0000-0000-000000000000 --end 4c4c4544-0000-0000-0000-00000000ffff"),
    "iqn": ("--prefix, then the first and last decimal number after it",
            "--prefix iqn.2026-11.io.anvil:host- --start 1 --end 9999"),
}
_NAME = NAME_RE


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A validated pool definition. ``start``/``end`` are canonical values (IQN: suffix numbers)."""

    name: str
    kind: IdentityKind
    start: str
    end: str
    prefix: str | None = None

    @property
    def size(self) -> int:
        return self._last() - self._first() + 1

    def _first(self) -> int:
        return int(self.start) if self.kind is IdentityKind.IQN else to_int(self.kind, self.start)

    def _last(self) -> int:
        return int(self.end) if self.kind is IdentityKind.IQN else to_int(self.kind, self.end)

    def value_at(self, offset: int) -> str:
        """The identity at ``offset`` (0-based) in canonical form."""
        if not 0 <= offset < self.size:
            raise IndexError(f"offset {offset} outside pool {self.name!r} of size {self.size}")
        n = self._first() + offset
        if self.kind is IdentityKind.IQN:
            return parse_iqn(f"{self.prefix}{n}")
        return parse_identity(self.kind, from_int(self.kind, n))

    def offset_of(self, value: str) -> int | None:
        """The offset of ``value`` in this pool, or None when it lies outside."""
        try:
            if self.kind is IdentityKind.IQN:
                assert self.prefix is not None
                v = parse_iqn(value)
                if not v.startswith(self.prefix) or not v[len(self.prefix):].isdigit():
                    return None
                n = int(v[len(self.prefix):])
            else:
                n = to_int(self.kind, value)
        except ValueError:
            return None
        off = n - self._first()
        return off if 0 <= off < self.size else None


def make_pool(name: str, kind: str, start: str, end: str, prefix: str | None = None) -> PoolSpec:
    """Validate a pool definition; raises ValueError with a reason naming the field."""
    if not _NAME.match(name):
        raise ValueError(f"name: {name!r} is not a lowercase name (a-z, 0-9, '-')")
    try:
        k = IdentityKind(kind)
    except ValueError:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(k.value for k in IdentityKind)}") from None
    if k is IdentityKind.IQN:
        if not prefix:
            raise ValueError("prefix: an IQN pool needs a prefix (e.g. iqn.2026-11.io.anvil:node-)")
        prefix = prefix.strip().lower()
        for field, v in (("start", start), ("end", end)):
            if not str(v).isdigit():
                raise ValueError(f"{field}: {v!r} is not a number (IQN pools number a suffix)")
        parse_iqn(f"{prefix}{start}")
        s, e = str(int(start)), str(int(end))
    else:
        if prefix:
            raise ValueError("prefix: only IQN pools take a prefix")
        try:
            s = parse_identity(k, start)
        except ValueError as exc:
            raise ValueError(f"start: {exc}") from None
        try:
            e = parse_identity(k, end)
        except ValueError as exc:
            raise ValueError(f"end: {exc}") from None
    spec = PoolSpec(name=name, kind=k, start=s, end=e, prefix=prefix)
    if spec.size <= 0:
        raise ValueError(f"end: {end!r} comes before start {start!r}")
    if spec.size > MAX_POOL_SIZE:
        raise ValueError(f"end: the range holds {spec.size} identities, more than {MAX_POOL_SIZE}")
    if k is IdentityKind.MAC:
        # Every member must be a valid unicast MAC: the range may not cross into multicast space.
        for off in (0, spec.size - 1):
            spec.value_at(off)
        if (to_int(k, s) >> 40) != (to_int(k, e) >> 40):
            raise ValueError("end: a MAC pool must keep the first octet (it would cross multicast addresses)")
    return spec
