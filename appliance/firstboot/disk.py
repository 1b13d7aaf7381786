"""Which disk holds the appliance's state: the one labelled ANVIL-DATA, else an empty disk that
may be formatted once someone (the console's admin or the seed) confirms. Pure: it reads
``lsblk --json`` output given to it."""

from __future__ import annotations

import json
from dataclasses import dataclass

DATA_LABEL = "ANVIL-DATA"
MIN_BYTES = 1 << 30            # smaller disks are seed volumes and the like, never the state's home
LSBLK = ["lsblk", "--json", "--bytes", "--output", "NAME,PATH,SIZE,TYPE,FSTYPE,LABEL,RO,MOUNTPOINT,PTTYPE"]


@dataclass(frozen=True)
class Device:
    path: str
    size: int
    type: str                  # disk, part, rom, loop
    fstype: str
    label: str
    read_only: bool
    in_use: bool               # mounted, partitioned, or holding partitions

    def describe(self) -> str:
        return f"{self.path} ({self.size / (1 << 30):.1f} GiB, {self.fstype or 'no filesystem'})"


def parse_lsblk(text: str) -> list[Device]:
    out: list[Device] = []

    def walk(node: dict[str, object], parent_in_use: bool) -> None:
        children = node.get("children") or []
        assert isinstance(children, list)
        used = parent_in_use or bool(children) or bool(node.get("mountpoint")) or bool(node.get("pttype"))
        out.append(Device(path=str(node.get("path") or f"/dev/{node['name']}"), size=int(str(node.get("size") or 0)),
                          type=str(node.get("type") or ""), fstype=str(node.get("fstype") or ""),
                          label=str(node.get("label") or ""), read_only=node.get("ro") in (True, "1", 1),
                          in_use=used))
        for child in children:
            walk(child, False)

    for node in json.loads(text).get("blockdevices", []):
        walk(node, False)
    return out


def labelled(devices: list[Device]) -> Device | None:
    """The data disk already formatted (this is not the first boot, or a disk moved from another appliance)."""
    found = [d for d in devices if d.label == DATA_LABEL]
    return found[0] if found else None


def blank(devices: list[Device]) -> list[Device]:
    """Whole disks with nothing on them (no filesystem, no partition table, not mounted, writable),
    big enough to hold the state: the only ones first boot may offer to format."""
    return [d for d in devices
            if d.type == "disk" and not d.fstype and not d.in_use and not d.read_only and d.size >= MIN_BYTES]


def choose_blank(devices: list[Device], wanted: bool | str) -> Device | None:
    """The blank disk to format when the seed confirms ``wanted`` (True: the only blank disk; a path:
    that disk, which must be blank). None when it does not confirm; ValueError when it is ambiguous."""
    if wanted is False:
        return None
    candidates = blank(devices)
    if isinstance(wanted, str):
        for d in candidates:
            if d.path == wanted:
                return d
        raise ValueError(f"data_disk.format: {wanted} is not an empty disk of at least 1 GiB "
                         f"(empty disks: {', '.join(d.path for d in candidates) or 'none'})")
    if len(candidates) != 1:
        raise ValueError(f"data_disk.format: true needs exactly one empty disk, found "
                         f"{', '.join(d.path for d in candidates) or 'none'}; name one, like /dev/vdb")
    return candidates[0]
