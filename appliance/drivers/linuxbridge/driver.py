"""SwitchDriver for a plain Linux bridge without VLANs: the VM lab's "switch" (DESIGN §7).

Address: ``linuxbridge://netns/NAME?bridge=BR`` (the bridge in namespace NAME) or
``linuxbridge:///?bridge=BR`` (the caller's namespace). Add ``&vlans=ignore`` to
accept tagged VLANs too (see below). Ports are the bridge's member interfaces (the
VMs' taps), by name. No credentials: it needs CAP_NET_ADMIN (and CAP_SYS_ADMIN to
enter another namespace).

Port shut = the tap's link set down (IFF_UP cleared) through pyroute2's netlink, read
back from the link flags; the VM sees no carrier.

VLANs: this kernel has neither 802.1Q devices nor bridge vlan_filtering (lab/vlan.md
§0), so the bridge carries one flat L2 segment and records nothing. ``native`` is
accepted and ignored (lab profiles name VLANs the lab does not separate); tagged
VLANs raise Unsupported, because a blade that expects tagged frames would silently
get none, unless the address says ``vlans=ignore``. ``get_port`` always reports
``native=None, tagged=∅``. VLAN behaviour is proven on the ``ovs`` driver instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyroute2.config  # type: ignore[import-untyped]
from pyroute2 import AsyncIPRoute

from appliance.drivers.errors import BadSettings, BmcFailure, BmcUnreachable, DriverError, Unsupported
from appliance.drivers.protocols import PortConfig, SwitchRef

# pyroute2 opens sockets in another namespace from a forked child and ends that child with
# SIGTERM; the child inherits asyncio's signal wakeup fd, so the parent's event loop took the
# child's SIGTERM as its own and `anvil serve` shut down (exit 0, nothing logged).
pyroute2.config.disable_mp_signal = True

IFF_UP = 0x1


@dataclass(frozen=True, slots=True)
class BridgeTarget:
    netns: str | None
    bridge: str
    ignore_vlans: bool


def parse_address(sw: SwitchRef) -> BridgeTarget:
    url = urlsplit(sw.address)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    path = url.path.strip("/")
    ok = url.scheme == "linuxbridge" and "bridge" in query and (
        (url.netloc == "netns" and path and "/" not in path) or (url.netloc == "" and not path))
    if not ok or set(query) - {"bridge", "vlans"} or query.get("vlans", "strict") not in ("strict", "ignore"):
        raise BadSettings(sw.name, "linux-bridge", "address",
                          f"expected linuxbridge://netns/NAME?bridge=BR[&vlans=ignore], got {sw.address!r}")
    return BridgeTarget(path or None, query["bridge"], query.get("vlans") == "ignore")


async def _items(result: Any) -> list[Any]:
    """pyroute2 0.9 answers with a list or an async iterator, depending on the request."""
    if isinstance(result, list | tuple):
        return list(result)
    return [item async for item in result]


class LinuxBridgeDriver:
    name = "linux-bridge"

    @asynccontextmanager
    async def _netlink(self, sw: SwitchRef, t: BridgeTarget, op: str) -> AsyncIterator[AsyncIPRoute]:
        try:
            async with asyncio.timeout(sw.timeout):
                # flags=0: never create the namespace (pyroute2's default is O_CREAT).
                async with AsyncIPRoute(netns=t.netns, flags=0) if t.netns else AsyncIPRoute() as ipr:
                    yield ipr
        except TimeoutError as exc:
            raise BmcUnreachable(sw.name, self.name, op, f"netlink gave no answer within {sw.timeout:g}s") from exc
        except DriverError:
            raise
        except FileNotFoundError as exc:
            raise BmcUnreachable(sw.name, self.name, op, f"no network namespace {t.netns}") from exc
        except Exception as exc:  # NetlinkError and friends
            raise BmcFailure(sw.name, self.name, op, f"netlink: {exc}") from exc

    async def _ports(self, sw: SwitchRef, ipr: AsyncIPRoute, t: BridgeTarget, op: str) -> dict[str, bool]:
        """{member name: IFF_UP} of the bridge."""
        links = await _items(await ipr.link("dump"))
        bridge = next((lk["index"] for lk in links if lk.get("ifname") == t.bridge), None)
        if bridge is None:
            raise BadSettings(sw.name, self.name, op, f"no bridge {t.bridge}" + (f" in {t.netns}" if t.netns else ""))
        return {lk.get("ifname"): bool(lk["flags"] & IFF_UP) for lk in links if lk.get("master") == bridge}

    async def get_port(self, sw: SwitchRef, port: str) -> PortConfig:
        t = parse_address(sw)
        async with self._netlink(sw, t, "get_port") as ipr:
            ports = await self._ports(sw, ipr, t, "get_port")
        if port not in ports:
            raise BadSettings(sw.name, self.name, "get_port", f"{port} is not a port of {t.bridge}")
        return PortConfig(native=None, tagged=frozenset(), up=ports[port])

    async def set_port(self, sw: SwitchRef, port: str, want: PortConfig) -> None:
        """Set the port's link up or down (idempotent); VLANs as the module docstring says."""
        op = "set_port"
        t = parse_address(sw)
        if want.tagged and not t.ignore_vlans:
            raise Unsupported(sw.name, self.name, op, f"a plain Linux bridge cannot tag VLANs "
                              f"{sorted(want.tagged)} (add vlans=ignore to the address to accept them unenforced)")
        async with self._netlink(sw, t, op) as ipr:
            ports = await self._ports(sw, ipr, t, op)
            if port not in ports:
                raise BadSettings(sw.name, self.name, op, f"{port} is not a port of {t.bridge}")
            if ports[port] != want.up:
                await ipr.link("set", ifname=port, state="up" if want.up else "down")
            if (await self._ports(sw, ipr, t, op)).get(port) != want.up:
                raise BmcFailure(sw.name, self.name, op, f"{port} did not go {'up' if want.up else 'down'}",
                                 retryable=True)

    async def list_ports(self, sw: SwitchRef) -> tuple[str, ...]:
        t = parse_address(sw)
        async with self._netlink(sw, t, "list_ports") as ipr:
            return tuple(sorted(await self._ports(sw, ipr, t, "list_ports")))

    async def close(self) -> None:
        """Nothing is kept open: each call opens and closes its netlink socket."""


def create(settings: object | None = None) -> LinuxBridgeDriver:
    """Entry-point factory (``anvil.drivers.switch``: ``linux-bridge``)."""
    return LinuxBridgeDriver()
