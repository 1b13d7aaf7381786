"""Is this callback coming from the blade it claims to be? (DESIGN §8: a callback counts only
from the blade's expected address.)

The blade's MACs are the burned-in MACs of its NICs and the MACs of the profile bound to it
(applied as virtual MACs or at boot). The peer address of a callback is the blade's when:

1. ``reservation``: it is an ``ipv4`` of the profile's NICs (what the DHCP reservation hands
   that blade);
2. ``lease``: the managed dnsmasq leased it to one of the blade's MACs (its lease file);
3. ``neighbour``: the kernel's neighbour table (ARP, IPv6 ND) of the boot service's network
   maps it to one of the blade's MACs — with proxy DHCP or another DHCP server, the address
   that fetched the blade's script is its own, and the provisioning network is on-link;
4. ``loopback``: only when the boot service listens on loopback alone (the emulated rack:
   every blade's OS is a process on this machine, and nothing else can reach the service).

Anything else — another host on the provisioning network — is refused. A host that forges
the blade's MAC *and* address on the wire is out of reach of any boot service (see the
README's security model).
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.boot.ipxe import normalize_mac

log = logging.getLogger(__name__)

ARP_TABLE = Path("/proc/net/arp")


def normalize_ip(value: str) -> str | None:
    """``10.0.0.5`` for ``10.0.0.5`` and ``::ffff:10.0.0.5``; a compressed IPv6 address; None if none."""
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def read_arp(table: Path = ARP_TABLE) -> dict[str, str]:
    """IPv4 address → MAC of the complete entries of the kernel's ARP table (this network namespace)."""
    out: dict[str, str] = {}
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or parts[2] == "0x0":
            continue
        mac = normalize_mac(parts[3])
        if mac and mac != "00:00:00:00:00:00":
            out[parts[0]] = mac
    return out


def read_ipv6_neighbours() -> dict[str, str]:
    """IPv6 address → MAC from the kernel's neighbour table (``ip -6 neigh``, this network
    namespace); empty where unavailable. Only asked for a callback from an IPv6 peer."""
    try:
        out = subprocess.run(["ip", "-6", "neigh", "show"], capture_output=True, text=True, timeout=2,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    table: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if "lladdr" in parts and parts[-1] not in ("FAILED", "INCOMPLETE"):
            mac = normalize_mac(parts[parts.index("lladdr") + 1])
            ip = normalize_ip(parts[0])
            if mac and ip:
                table[ip] = mac
    return table


def read_leases(path: Path) -> dict[str, set[str]]:
    """MAC → addresses leased by dnsmasq (its lease file: ``expiry mac ip host client-id``)."""
    out: dict[str, set[str]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            mac, ip = normalize_mac(parts[1]), normalize_ip(parts[2])
            if mac and ip:
                out.setdefault(mac, set()).add(ip)
    return out


@dataclass
class PeerCheck:
    """Decides whether a peer address is the blade's own (see the module docstring)."""

    loopback_only: bool                          # the boot service listens on loopback alone
    leases_path: Path | None = None              # the managed dnsmasq's lease file, if any
    arp: Callable[[], dict[str, str]] = read_arp
    ipv6: Callable[[], dict[str, str]] = read_ipv6_neighbours
    _warned: dict[str, float] = field(default_factory=dict)

    def match(self, peer: str, macs: Iterable[str], reserved: Iterable[str]) -> str | None:
        """Which rule makes ``peer`` the blade's address; None when none does."""
        ip = normalize_ip(peer)
        if ip is None:
            return None
        if ipaddress.ip_address(ip).is_loopback:
            return "loopback" if self.loopback_only else None
        if ip in {normalize_ip(r.split("/", 1)[0]) for r in reserved}:
            return "reservation"
        wanted = {m for m in (normalize_mac(x) for x in macs) if m}
        if self.leases_path is not None:
            leases = read_leases(self.leases_path)
            if any(ip in leases.get(mac, ()) for mac in wanted):
                return "lease"
        table = self.arp() if ":" not in ip else self.ipv6()
        if table.get(ip) in wanted:
            return "neighbour"
        return None

    def refused(self, peer: str, why: str, *, every: float = 10.0) -> None:
        """Log a refused callback, at most once per peer every ``every`` s (a flood logs a few lines)."""
        now = time.monotonic()
        if now - self._warned.get(peer, -every) < every:
            return
        if len(self._warned) > 4096:
            self._warned.clear()
        self._warned[peer] = now
        log.warning("boot callback from %s refused: %s", peer[:64], why)


def is_loopback_listen(listen: str) -> bool:
    """Whether ``HOST:PORT`` listens on a loopback address only."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        return False
    if host == "localhost":
        return True
    ip = normalize_ip(host)
    return ip is not None and ipaddress.ip_address(ip).is_loopback
