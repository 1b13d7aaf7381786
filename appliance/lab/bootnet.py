"""The VM lab's provisioning network: a namespace with one bridge and one tap per VM.

``create(ns, taps)`` builds (root needed; lab/boot-vm.md §2.1)::

    namespace NS (default "anvil-lab", DESIGN §7)
      lo up
      br0: 10.77.0.1/24 and fd77::1/64 (for the router advertisement iPXE waits for), up
      tap01 … tapNN: tap devices, members of br0, up; VM i (1-based) uses tap_name(i)

The boot role (dnsmasq, TFTP, HTTP) runs inside NS bound to br0, and QEMU opens its tap
there (``ip netns exec NS qemu-system-x86_64 … ifname=tapNN``); nothing of 10.77.0.0/24
reaches the host namespace. ``destroy(ns)`` deletes the namespace, which removes the
bridge and the taps; stop the processes inside by PID first.

The taps are also the ports of the lab's switch, Anvil's ``linux-bridge`` driver: its
SwitchRef address is :meth:`BootNet.switch_address` =
``linuxbridge://netns/NS?bridge=br0`` (``&vlans=ignore`` for profiles with tagged VLANs),
and a VM's port id is its tap name. Shutting that port sets the tap's link down, so the VM
loses carrier.

No VLAN filtering (this host kernel refuses ``vlan_filtering 1``) and no STP; forwarding
delay 0, so a tap forwards as soon as QEMU opens it. IPv6 stays on in NS (unlike
``netns.add``'s default) and fd77::1 is added without duplicate address detection, so
dnsmasq's ``constructor:br0`` RA can start at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from appliance.lab import netns

DEFAULT_NETNS = "anvil-lab"
BRIDGE = "br0"
SERVER_IPV4 = "10.77.0.1"
PREFIX_V4 = 24
SERVER_IPV6 = "fd77::1"
PREFIX_V6 = 64
SUBNET = "10.77.0.0/24"
MAX_TAPS = 99


def tap_name(index: int) -> str:
    """The tap of VM ``index`` (1-based): ``tap01`` … ``tap99``; stable, so a VM keeps its switch port."""
    if not 1 <= index <= MAX_TAPS:
        raise ValueError(f"VM index {index} outside 1..{MAX_TAPS}")
    return f"tap{index:02d}"


@dataclass(frozen=True, slots=True)
class BootNet:
    netns: str
    bridge: str
    taps: tuple[str, ...]
    server_ipv4: str = SERVER_IPV4
    server_ipv6: str = SERVER_IPV6

    def switch_address(self, *, ignore_vlans: bool = False) -> str:
        """The ``linux-bridge`` SwitchRef address whose ports are these taps."""
        extra = "&vlans=ignore" if ignore_vlans else ""
        return f"linuxbridge://netns/{self.netns}?bridge={self.bridge}{extra}"


class BootNetError(netns.NetnsError):
    """The lab network could not be created; the message names the command that failed."""


def create(ns: str = DEFAULT_NETNS, taps: int = 2, *, server_ipv4: str = SERVER_IPV4,
           server_ipv6: str = SERVER_IPV6) -> BootNet:
    """Create namespace ``ns`` with the bridge and ``taps`` taps (tap01…); all or nothing.
    ``server_ipv4``/``server_ipv6``: the bridge's addresses (a second provisioning network, such
    as a second rack's, uses 10.78.0.1 and fd78::1; DESIGN §8).

    Raises BootNetError if ``ns`` already exists (a previous lab still up: destroy it
    first) or any step fails; on failure the half-built namespace is deleted.
    """
    if not 0 <= taps <= MAX_TAPS:
        raise BootNetError(f"{taps} taps asked; 0..{MAX_TAPS} allowed")
    if netns.exists(ns):
        raise BootNetError(f"network namespace {ns} already exists (destroy it first, or pick another name)")
    names = tuple(tap_name(i) for i in range(1, taps + 1))
    netns.add(ns, no_ipv6=False)
    try:
        ip = ["ip", "-n", ns]
        netns.run([*ip, "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0"])
        netns.add_address(ns, BRIDGE, f"{server_ipv4}/{PREFIX_V4}")
        netns.run([*ip, "addr", "add", f"{server_ipv6}/{PREFIX_V6}", "dev", BRIDGE, "nodad"])
        netns.link_set(ns, BRIDGE, up=True)
        for tap in names:
            netns.run([*ip, "tuntap", "add", "dev", tap, "mode", "tap"])
            netns.run([*ip, "link", "set", tap, "master", BRIDGE, "up"])
    except netns.NetnsError as exc:
        destroy(ns)
        raise BootNetError(f"creating the lab network in {ns}: {exc}") from exc
    return BootNet(netns=ns, bridge=BRIDGE, taps=names, server_ipv4=server_ipv4, server_ipv6=server_ipv6)


def add_taps(net: BootNet, count: int) -> BootNet:
    """Grow ``net`` by ``count`` taps (numbered after the last); returns the new record."""
    start = len(net.taps) + 1
    names = tuple(tap_name(i) for i in range(start, start + count))
    for tap in names:
        netns.run(["ip", "-n", net.netns, "tuntap", "add", "dev", tap, "mode", "tap"])
        netns.run(["ip", "-n", net.netns, "link", "set", tap, "master", net.bridge, "up"])
    return BootNet(netns=net.netns, bridge=net.bridge, taps=net.taps + names)


def destroy(ns: str = DEFAULT_NETNS) -> None:
    """Delete the namespace (bridge and taps go with it); a missing one is fine. Idempotent."""
    with contextlib.suppress(netns.NetnsError):
        netns.delete(ns)
