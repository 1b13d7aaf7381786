"""A managed dnsmasq for DHCP: its config rendered from ``pxe/dhcp/dnsmasq.conf.j2`` and
its reservations in a ``dhcp-hostsfile`` that dnsmasq re-reads on SIGHUP.

Plain PXE clients get TFTP ``undionly.kpxe`` (BIOS) or ``ipxe.efi`` (UEFI); iPXE (DHCP
option 175 / user class iPXE) gets the HTTP URL of its script. In proxy mode another DHCP
server hands out the addresses and dnsmasq only answers PXE.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.assets import asset_dir
from appliance.boot.ipxe import normalize_mac, one_line
from appliance.store.tables import BindingRow, BladeNicRow, ProfileRow

_IFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class DhcpSettings:
    interface: str
    server: str                      # the appliance's address on the provisioning network
    run_dir: Path                    # STATE_DIR/run
    http_base: str                   # http://SERVER:8080
    range_start: str | None = None   # None: proxy DHCP on the server's subnet
    range_end: str | None = None
    prefix: int = 24
    lease_time: str = "1h"
    enable_ra: bool = True
    # dnsmasq re-reads the hostsfile after dropping privileges; STATE_DIR/run is private
    # to the appliance's user, so dnsmasq keeps running as that user.
    user: str = "root"

    @property
    def proxy(self) -> bool:
        return self.range_start is None

    @property
    def config_path(self) -> Path:
        return self.run_dir / "dnsmasq.conf"

    @property
    def hostsfile(self) -> Path:
        return self.run_dir / "dnsmasq.hosts"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dnsmasq.pid"


def render_config(s: DhcpSettings) -> str:
    if not _IFACE.match(s.interface):
        raise ValueError(f"{s.interface!r} is not an interface name")
    net = ipaddress.ip_interface(f"{s.server}/{s.prefix}").network
    ctx: dict[str, object] = {
        "interface": s.interface, "server": str(ipaddress.ip_address(s.server)), "proxy": s.proxy,
        "subnet": str(net.network_address), "netmask": str(net.netmask), "router": s.server,
        "range_start": "", "range_end": "", "lease_time": s.lease_time,
        "hostsfile": s.hostsfile, "leasefile": s.run_dir / "dnsmasq.leases", "pidfile": s.pidfile,
        "logfile": s.run_dir / "dnsmasq.log", "enable_ra": s.enable_ra, "user": s.user,
        "script_url": f"{s.http_base.rstrip('/')}/boot/ipxe?mac=${{net0/mac}}&uuid=${{uuid}}",
    }
    if not s.proxy:
        for addr in (s.range_start, s.range_end):
            if ipaddress.ip_address(addr or "") not in net:
                raise ValueError(f"DHCP range address {addr} is outside {net}")
        ctx.update(range_start=s.range_start, range_end=s.range_end)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(asset_dir("pxe") / "dhcp")),
                             undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, finalize=one_line)
    return env.get_template("dnsmasq.conf.j2").render(**ctx)


@dataclass(frozen=True, slots=True)
class Reservation:
    macs: tuple[str, ...]   # the profile's MAC and the blade NIC's burned-in MAC: whichever the NIC uses
    address: str
    hostname: str | None = None

    def line(self) -> str:
        parts = [*self.macs, self.address]
        if self.hostname:
            parts.append(self.hostname)
        return ",".join(parts)


def render_hosts(reservations: Iterable[Reservation]) -> str:
    lines = []
    for r in reservations:
        macs = tuple(m for m in (normalize_mac(x) for x in r.macs) if m)
        if not macs:
            raise ValueError(f"reservation for {r.address} has no valid MAC")
        ipaddress.ip_address(r.address)
        host = r.hostname if r.hostname and _HOSTNAME.match(r.hostname) else None
        lines.append(Reservation(macs, r.address, host).line())
    return "".join(f"{line}\n" for line in lines)


def reservations(session: Session) -> list[Reservation]:
    """One reservation per live profile NIC with an ``ipv4``, for its MAC and the blade NIC it lands on."""
    out = []
    rows = session.execute(select(BindingRow, ProfileRow).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                           .where(BindingRow.state == "live").order_by(ProfileRow.tenant, ProfileRow.name)).all()
    for binding, profile in rows:
        burned = {n.position: n.mac for n in session.scalars(
            select(BladeNicRow).where(BladeNicRow.blade_id == binding.blade_id))}
        nics = ((profile.document.get("spec") or {}).get("identity") or {}).get("nics") or []
        for i, nic in enumerate(nics):
            if not isinstance(nic, dict) or not nic.get("ipv4"):
                continue
            macs = [m for m in (normalize_mac(str(nic.get("mac") or "")), burned.get(i)) if m]
            if not macs:
                continue
            address = str(ipaddress.ip_interface(str(nic["ipv4"])).ip)
            out.append(Reservation(tuple(dict.fromkeys(macs)), address, profile.name if i == 0 else None))
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_hosts(s: DhcpSettings, items: Sequence[Reservation]) -> bool:
    """Rewrite the hostsfile; True if it changed (then :func:`reload` dnsmasq)."""
    text = render_hosts(items)
    if s.hostsfile.exists() and s.hostsfile.read_text() == text:
        return False
    write_atomic(s.hostsfile, text)
    return True


def reload(pid: int) -> None:
    """Make dnsmasq re-read its hostsfile."""
    os.kill(pid, signal.SIGHUP)


def check_config(path: Path, dnsmasq: str = "dnsmasq") -> None:
    """``dnsmasq --test``; raises ValueError with its complaint."""
    proc = subprocess.run([dnsmasq, "--test", "-C", str(path)], capture_output=True, text=True, timeout=30,
                          check=False)
    if proc.returncode != 0:
        raise ValueError(f"dnsmasq rejects {path}: {(proc.stderr or proc.stdout).strip()}")
