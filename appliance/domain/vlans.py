"""VLAN lists as people write them (``10,20,30-32``) and as they read them back."""

from __future__ import annotations

from collections.abc import Iterable


def parse_vlan_list(text: str) -> frozenset[int]:
    """``10,20,30-32`` → {10, 20, 30, 31, 32}; ``""`` → none. ValueError names the bad part."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ValueError(f"{text!r} is not a VLAN list like 10,20,30-32") from None
        if not 1 <= first <= last <= 4094:
            raise ValueError(f"{part!r}: VLANs are 1..4094")
        out.update(range(first, last + 1))
    return frozenset(out)


def vlan_ranges(vlans: Iterable[int]) -> str:
    """``[10, 11, 12, 20]`` → ``10-12,20`` (a trunk of every VLAN reads ``1-4094``); none → ``-``."""
    out: list[str] = []
    for v in sorted(vlans):
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == v - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        elif out and "-" not in out[-1] and int(out[-1]) == v - 1:
            out[-1] = f"{out[-1]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out) or "-"
