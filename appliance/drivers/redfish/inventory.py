"""Inspection facts from Redfish documents — pure mapping, no I/O.

Which of a System's ``EthernetInterfaces`` are the blade's NICs, and by which MAC:

- ``EthernetInterfaceType: Virtual`` is an interface the OS or the BMC built (a VLAN, a
  team), not a port; without the type, one whose ``Links.RelatedInterfaces`` names other
  interfaces is built on them (DMTF's VLAN sub-interface). Both repeat a real NIC's MAC.
- ``Links.HostInterface`` marks the host's end of the BMC's own link (the Redfish host
  interface, a USB or internal LAN to the BMC): it is cabled to no switch, and its MAC is
  often the same on every server of a model.
- The NIC's identity is ``PermanentMACAddress``, the burned-in MAC; ``MACAddress`` (some
  iDRACs spell it ``MacAddress``) is the one in use now, which an OS, a BMC setting or a
  profile's virtual MAC (ours included) can change. Cabling, DHCP and the boot service find a
  blade by its NIC's MAC and must keep finding it when a profile moves on or off it, so the
  burned-in MAC is the key and the current one is recorded beside it. A BMC that reports no
  permanent MAC (iLO 5, AMI) gives the current one as the only one there is.
- A MAC that no NIC can own (not six octets, all zero, multicast) is not a NIC identity:
  that interface is skipped, with the reason.
- One MAC seen twice in one system is one NIC: an interface that says it is ``Physical``
  wins, then one not VLAN-tagged (``VLAN.VLANEnable``), then the first in the BMC's order.

When no EthernetInterface gives a NIC, the Ethernet NetworkDeviceFunctions do (their
``Ethernet.PermanentMACAddress`` / ``MACAddress``), under the same rules.

CPUs, threads and memory come from ``ProcessorSummary`` (``Count``, ``LogicalProcessorCount``)
and ``MemorySummary.TotalSystemMemoryGiB``; each one missing there (or zero: some BMCs say 0
until the host has run POST) is counted from the members of ``Processors`` (CPUs present,
their ``TotalThreads``) or ``Memory`` (DRAM present, ``CapacityMiB``). Unknown stays None.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.drivers.protocols import NicFact
from appliance.drivers.redfish.identity import Ndf

_MAC = re.compile(r"(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}|[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class Skipped:
    """An interface that is not one of the blade's NICs, and why."""

    name: str
    reason: str


def nic_mac(value: object) -> str | None:
    """``value`` as a canonical unicast MAC (``aa:bb:cc:dd:ee:ff``), or None when no NIC can own it."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _MAC.fullmatch(text):
        return None
    digits = text.replace(":", "").replace("-", "")
    if int(digits, 16) == 0 or int(digits[:2], 16) & 1:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _links(body: Mapping[str, Any]) -> Mapping[str, Any]:
    links = body.get("Links")
    return links if isinstance(links, dict) else {}


def _not_a_nic(body: Mapping[str, Any]) -> str | None:
    """Why this EthernetInterface is not a NIC of the blade, or None when it is one."""
    kind = body.get("EthernetInterfaceType")
    if kind == "Virtual":
        return "a virtual interface (EthernetInterfaceType Virtual)"
    links = _links(body)
    if links.get("HostInterface"):
        return "the BMC's host interface (Links.HostInterface)"
    if kind != "Physical" and links.get("RelatedInterfaces"):
        return "built on other interfaces (Links.RelatedInterfaces)"
    status = body.get("Status")
    if isinstance(status, dict) and status.get("State") == "Absent":
        return "absent (Status.State Absent)"
    return None


def _speed(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True, slots=True)
class _Candidate:
    order: int
    rank: int          # lower wins a shared MAC: 0 Physical, 1 untyped, 2 untyped and VLAN-tagged
    fact: NicFact


def _pick(found: Iterable[_Candidate]) -> tuple[NicFact, ...]:
    """One NIC per MAC (see the module docstring), in the BMC's order."""
    best: dict[str, _Candidate] = {}
    for c in found:
        held = best.get(c.fact.mac)
        if held is None or c.rank < held.rank:
            best[c.fact.mac] = c
    return tuple(c.fact for c in sorted(best.values(), key=lambda c: c.order))


def _rank(body: Mapping[str, Any]) -> int:
    if body.get("EthernetInterfaceType") == "Physical":
        return 0
    vlan = body.get("VLAN")
    return 2 if isinstance(vlan, dict) and vlan.get("VLANEnable") is True else 1


def _fact(name: str, permanent: object, current: object, speed: object) -> NicFact | str:
    """The NicFact, or why there is none."""
    now = nic_mac(current)
    mac = nic_mac(permanent) or now
    if mac is None:
        shown = permanent or current
        return f"MAC {shown!r} cannot be a NIC's" if shown else "no MAC address"
    return NicFact(name=name, mac=mac, speed_mbps=_speed(speed), current_mac=now)


def nics(interfaces: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[tuple[NicFact, ...], tuple[Skipped, ...]]:
    """The blade's NICs among EthernetInterfaces given as (link, body), and what was skipped."""
    found: list[_Candidate] = []
    skipped: list[Skipped] = []
    for order, (path, body) in enumerate(interfaces):
        name = str(body.get("Id") or path.rstrip("/").rsplit("/", 1)[-1])
        reason = _not_a_nic(body)
        made = _fact(name, body.get("PermanentMACAddress"), body.get("MACAddress") or body.get("MacAddress"),
                     body.get("SpeedMbps")) if reason is None else reason
        if isinstance(made, str):
            skipped.append(Skipped(name, made))
            continue
        found.append(_Candidate(order, _rank(body), made))
    return _pick(found), tuple(skipped)


def nics_from_functions(ndfs: Iterable[Ndf]) -> tuple[tuple[NicFact, ...], tuple[Skipped, ...]]:
    """The blade's NICs from Ethernet NetworkDeviceFunctions (when EthernetInterfaces give none)."""
    found: list[_Candidate] = []
    skipped: list[Skipped] = []
    for order, ndf in enumerate(n for n in ndfs if n.kind == "eth"):
        eth = ndf.body.get("Ethernet")
        eth = eth if isinstance(eth, dict) else {}
        name = str(ndf.body.get("Id") or ndf.path.rstrip("/").rsplit("/", 1)[-1])
        made = _fact(name, eth.get("PermanentMACAddress"), eth.get("MACAddress"), None)
        if isinstance(made, str):
            skipped.append(Skipped(name, made))
            continue
        found.append(_Candidate(order, 0, made))
    return _pick(found), tuple(skipped)


def text(value: object) -> str | None:
    """A string property, trimmed; None when missing or blank (an iDRAC 8 reports Model " ")."""
    return value.strip() or None if isinstance(value, str) else None


# ---- CPUs, threads, memory ----------------------------------------------------------


def _positive(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _sub(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    sub = body.get(key)
    return sub if isinstance(sub, dict) else {}


def processor_summary(system: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(CPUs, threads) from ``ProcessorSummary``; None for each the summary does not give."""
    summary = _sub(system, "ProcessorSummary")
    count, threads = _positive(summary.get("Count")), _positive(summary.get("LogicalProcessorCount"))
    return (int(count) if count else None), (int(threads) if threads else None)


def memory_summary(system: Mapping[str, Any]) -> int | None:
    gib = _positive(_sub(system, "MemorySummary").get("TotalSystemMemoryGiB"))
    return round(gib) if gib else None


def _present(body: Mapping[str, Any]) -> bool:
    return _sub(body, "Status").get("State") != "Absent"


def processors(members: Iterable[Mapping[str, Any]]) -> tuple[int | None, int | None]:
    """(CPUs, threads) counted from Processor resources: CPUs only (not GPUs, FPGAs…), present ones.
    Threads are None unless every CPU counted says how many it has."""
    cpus = [p for p in members if p.get("ProcessorType") in (None, "CPU") and _present(p)]
    if not cpus:
        return None, None
    threads = [_positive(p.get("TotalThreads")) for p in cpus]
    total = sum(t for t in threads if t) if all(threads) else None
    return len(cpus), (int(total) if total else None)


def memory(members: Iterable[Mapping[str, Any]]) -> int | None:
    """GiB of present DRAM modules (persistent memory is not system memory, as in MemorySummary)."""
    mib = sum(_positive(m.get("CapacityMiB")) or 0.0 for m in members
              if m.get("MemoryType") in (None, "DRAM") and _present(m))
    return round(mib / 1024) if mib > 0 else None
