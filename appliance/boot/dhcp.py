"""A managed dnsmasq for DHCP: its config rendered from ``pxe/dhcp/dnsmasq.conf.j2`` and
its reservations in a ``dhcp-hostsfile`` that dnsmasq re-reads on SIGHUP.

Plain PXE clients get TFTP ``undionly.kpxe`` (BIOS) or ``ipxe.efi`` (UEFI); iPXE (DHCP
option 175 / user class iPXE) gets the HTTP URL of its script. In proxy mode another DHCP
server hands out the addresses and dnsmasq only answers PXE.

:class:`Dnsmasq` keeps one dnsmasq child running (restarted after a capped backoff when
it dies, stopped by PID); :class:`ReservationSync` keeps the hostsfile equal to the live
bindings' addresses, so a reservation follows its profile with a SIGHUP, not a restart.
Errors: :class:`DnsmasqError` (an :class:`~appliance.errors.AnvilError`) when dnsmasq
rejects its configuration or does not come up.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import grp
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
from sqlalchemy import func, literal_column, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from appliance.assets import asset_dir
from appliance.boot.ipxe import normalize_mac, one_line
from appliance.errors import AnvilError
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, ProfileRow

log = logging.getLogger(__name__)

# 'live' inline, not a parameter: only then can SQLite use the partial indexes on live bindings.
_IS_LIVE = BindingRow.state == literal_column("'live'")
_IFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class DnsmasqError(AnvilError):
    """dnsmasq rejected its configuration or did not start; the message quotes its complaint."""


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
    # to the appliance's user, so dnsmasq keeps running as that user (and group: Debian's
    # dnsmasq would otherwise switch to "dip").
    user: str = "root"
    group: str = "root"

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
    def logfile(self) -> Path:
        return self.run_dir / "dnsmasq.log"

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
        "logfile": s.logfile, "enable_ra": s.enable_ra, "user": s.user, "group": s.group,
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


def render_hosts(reservations: Iterable[Reservation], ignored: Iterable[str] = ()) -> str:
    """The hostsfile: one line per reservation, then ``MAC,ignore`` for each of ``ignored`` (blades
    another rack controller serves: dnsmasq answers them nothing, not even from the pool)."""
    lines = []
    for r in reservations:
        macs = tuple(m for m in (normalize_mac(x) for x in r.macs) if m)
        if not macs:
            raise ValueError(f"reservation for {r.address} has no valid MAC")
        ipaddress.ip_address(r.address)
        host = r.hostname if r.hostname and _HOSTNAME.match(r.hostname) else None
        lines.append(Reservation(macs, r.address, host).line())
    reserved = {m for r in reservations for m in (normalize_mac(x) for x in r.macs) if m}
    lines += [f"{mac},ignore" for mac in sorted({m for m in (normalize_mac(x) for x in ignored) if m} - reserved)]
    return "".join(f"{line}\n" for line in lines)


def foreign_macs(session: Session, rack: int | None) -> list[str]:
    """The MACs of blades another rack controller than ``rack`` serves (None: the appliance's own boot
    role): their burned-in NICs and the profile MACs of their live bindings."""
    other = BladeRow.rack_id.is_not(None) if rack is None else or_(BladeRow.rack_id.is_(None),
                                                                   BladeRow.rack_id != rack)
    out = set(session.scalars(select(BladeNicRow.mac).join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
                              .where(other)))
    for (document,) in session.execute(select(ProfileRow.document)
                                       .join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                                       .join(BladeRow, BladeRow.id == BindingRow.blade_id).where(_IS_LIVE, other)):
        for nic in ((((document or {}).get("spec") or {}).get("identity") or {}).get("nics") or []):
            if isinstance(nic, dict) and normalize_mac(str(nic.get("mac") or "")):
                out.add(str(nic["mac"]))
    return sorted(out)


def reservations(session: Session, *, rack: int | Literal["any"] | None = "any") -> list[Reservation]:
    """One reservation per live profile NIC with an ``ipv4``, for its MAC and the blade NIC it lands on;
    only for the blades of rack controller ``rack`` unless it is ``"any"``."""
    out = []
    query = (select(BindingRow, ProfileRow).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
             .where(_IS_LIVE).order_by(ProfileRow.tenant, ProfileRow.name))
    if rack != "any":
        query = query.join(BladeRow, BladeRow.id == BindingRow.blade_id).where(
            BladeRow.rack_id.is_(None) if rack is None else BladeRow.rack_id == rack)
    rows = session.execute(query).all()
    # One query for every bound blade's NICs, not one per binding: the watcher runs this at 10,000 blades.
    burned: dict[int, dict[int, str]] = {}
    for blade_id, position, mac in session.execute(
            select(BladeNicRow.blade_id, BladeNicRow.position, BladeNicRow.mac)
            .join(BindingRow, BindingRow.blade_id == BladeNicRow.blade_id).where(_IS_LIVE)):
        burned.setdefault(blade_id, {})[position] = mac
    for binding, profile in rows:
        nics = ((profile.document.get("spec") or {}).get("identity") or {}).get("nics") or []
        for i, nic in enumerate(nics):
            if not isinstance(nic, dict) or not nic.get("ipv4"):
                continue
            macs = [m for m in (normalize_mac(str(nic.get("mac") or "")), burned.get(binding.blade_id, {}).get(i))
                    if m]
            if not macs:
                continue
            try:
                address = str(ipaddress.ip_interface(str(nic["ipv4"])).ip)
            except ValueError:
                # One bad profile must not take every other blade's reservation with it.
                log.warning("profile %s/%s: NIC %d: %r is no IPv4 address; no reservation", profile.tenant,
                            profile.name, i, nic["ipv4"])
                continue
            out.append(Reservation(tuple(dict.fromkeys(macs)), address, profile.name if i == 0 else None))
    return out


def fingerprint(session: Session) -> tuple[Any, ...]:
    """A cheap summary that changes whenever a binding starts or ends, a profile is edited or a NIC
    is added or removed (bindings are never deleted, so a new one always raises the highest id)."""
    live = select(func.count()).select_from(BindingRow).where(_IS_LIVE).scalar_subquery()
    newest = select(func.max(BindingRow.id)).scalar_subquery()
    edited = select(func.max(ProfileRow.updated_at)).scalar_subquery()
    nics = select(func.count(BladeNicRow.id) * 1_000_003 + func.coalesce(func.max(BladeNicRow.id), 0)) \
        .scalar_subquery()
    racked = select(func.count(BladeRow.rack_id) * 1_000_003 + func.coalesce(func.sum(BladeRow.rack_id), 0)) \
        .scalar_subquery()
    return tuple(session.execute(select(live, newest, edited, nics, racked)).one())


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_hosts(s: DhcpSettings, items: Sequence[Reservation], ignored: Iterable[str] = ()) -> bool:
    """Rewrite the hostsfile; True if it changed (then :func:`reload` dnsmasq)."""
    text = render_hosts(items, ignored)
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


def interface_ipv4(name: str) -> ipaddress.IPv4Interface | None:
    """The interface's (primary) IPv4 address with its prefix, in this network namespace; None if it has none."""
    if not _IFACE.match(name):
        raise ValueError(f"{name!r} is not an interface name")
    req = struct.pack("256s", name.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            addr = fcntl.ioctl(sock.fileno(), 0x8915, req)[20:24]      # SIOCGIFADDR
            mask = fcntl.ioctl(sock.fileno(), 0x891B, req)[20:24]      # SIOCGIFNETMASK
        except OSError:
            return None
    return ipaddress.IPv4Interface(f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}")


def has_global_ipv6(name: str, table: Path = Path("/proc/net/if_inet6")) -> bool:
    """Whether the interface has a global IPv6 address (dnsmasq's ``constructor:`` RA needs one)."""
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return False
    # Columns: address, ifindex, prefix length, scope (00 = global), flags, name.
    return any(len(cols) == 6 and cols[5] == name and cols[3] == "00" for cols in (line.split() for line in lines))


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_dnsmasq(pid: int, config: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]).startswith(b"dnsmasq") and \
        any(str(config).encode() in a for a in argv)


class Dnsmasq:
    """One dnsmasq child for ``settings``, kept running.

    ``start()`` writes nothing but checks the config (``dnsmasq --test``), starts dnsmasq in
    the foreground and returns once it wrote its PID file (bounded). If it dies, it is
    started again after 0.5 s, 1 s, 2 s … at most ``max_backoff`` s (the delay starts over
    once a run lasted ``stable_after`` s). ``stop()`` ends it by PID (SIGTERM, then SIGKILL).
    """

    def __init__(self, settings: DhcpSettings, *, binary: str = "dnsmasq", min_backoff: float = 0.5,
                 max_backoff: float = 30.0, stable_after: float = 60.0, start_timeout: float = 10.0) -> None:
        self.settings = settings
        self.binary = binary
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.start_timeout = start_timeout
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def output_path(self) -> Path:
        return self.settings.run_dir / "dnsmasq.out"

    def _tail(self) -> str:
        parts = []
        for path in (self.output_path, self.settings.logfile):
            with contextlib.suppress(OSError):
                parts.append(path.read_bytes()[-1500:].decode("utf-8", "replace").strip())
        return "\n".join(p for p in parts if p)

    def _kill_orphan(self) -> None:
        """A dnsmasq of ours left running by a killed appliance holds port 67: stop it by its PID file."""
        pid = _read_pid(self.settings.pidfile)
        if pid is None or pid == self.pid or not _is_our_dnsmasq(pid, self.settings.config_path):
            return
        log.warning("stopping dnsmasq pid %d left over from an earlier run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def _spawn(self) -> None:
        s = self.settings
        await asyncio.to_thread(self._kill_orphan)
        s.pidfile.unlink(missing_ok=True)
        argv = [self.binary, "--keep-in-foreground", f"--conf-file={s.config_path}"]
        setpriv = shutil.which("setpriv")
        if setpriv:
            # Dies with the appliance even on SIGKILL, instead of holding port 67 as an orphan.
            argv = [setpriv, "--pdeathsig", "TERM", *argv]
        with open(self.output_path, "ab") as out:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=out,
                                                        stderr=subprocess.STDOUT)
        self._proc = proc
        self._started_at = time.monotonic()
        deadline = self._started_at + self.start_timeout
        while _read_pid(s.pidfile) != proc.pid:
            if proc.returncode is not None or time.monotonic() > deadline:
                if proc.returncode is None:
                    await self._terminate(proc)
                raise DnsmasqError(f"dnsmasq did not start (exit status {proc.returncode}): {self._tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        log.info("dnsmasq started (pid %d) on %s", proc.pid, s.interface)

    async def start(self) -> int:
        """Start dnsmasq and its supervision; the PID. Raises DnsmasqError."""
        try:
            await asyncio.to_thread(check_config, self.settings.config_path, self.binary)
        except ValueError as exc:
            raise DnsmasqError(str(exc)) from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DnsmasqError(f"cannot run {self.binary} --test: {exc}") from None
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="dnsmasq-supervisor")
        assert self._proc is not None
        return self._proc.pid

    async def _supervise(self) -> None:
        delay = self.min_backoff
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            status = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - self._started_at >= self.stable_after:
                delay = self.min_backoff
            log.error("dnsmasq (pid %d) exited with status %s; starting it again in %.1f s", proc.pid, status, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
            if self._stopping:
                return
            try:
                await self._spawn()
                self.restarts += 1
            except (DnsmasqError, OSError) as exc:
                self._started_at = time.monotonic()
                log.error("dnsmasq did not start again: %s", exc)

    def reload(self) -> bool:
        """SIGHUP: dnsmasq re-reads its hostsfile. False when it is not running (its next start reads it)."""
        pid = self.pid
        if pid is None:
            return False
        try:
            reload(pid)
        except ProcessLookupError:
            return False
        return True

    @staticmethod
    async def _terminate(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 2.0)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop supervising and end dnsmasq by its PID (SIGTERM, SIGKILL after ``timeout`` s)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._proc is not None:
            await self._terminate(self._proc, timeout)
        self.settings.pidfile.unlink(missing_ok=True)


class ReservationSync:
    """Keeps the hostsfile equal to the reservations of the live bindings.

    :meth:`check` (blocking: run it in a thread) costs one small query while nothing
    changed; it rebuilds the reservations when :func:`fingerprint` moves, and anyway every
    ``full_every`` s (for edits the fingerprint cannot see, such as a NIC's MAC changed in
    place). True when the file changed, i.e. dnsmasq must re-read it.
    """

    def __init__(self, store: Store, settings: DhcpSettings, *, full_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.settings = settings
        self.full_every = full_every
        self.clock = clock
        self._seen: tuple[Any, ...] | None = None
        self._full_at = 0.0
        self.count = 0

    def check(self) -> bool:
        with self.store.read() as session:
            seen = fingerprint(session)
            if seen == self._seen and self.clock() - self._full_at < self.full_every:
                return False
            items = reservations(session)
            ignored = foreign_macs(session, None)
        # Remembered before writing: a reservation dnsmasq cannot take is not retried every second.
        self._seen, self._full_at, self.count = seen, self.clock(), len(items)
        return write_hosts(self.settings, items, ignored)

    async def run(self, on_change: Callable[[], object], *, interval: float = 1.0) -> None:
        """Poll every ``interval`` s until cancelled; ``on_change()`` after each rewrite of the file."""
        while True:
            try:
                if await asyncio.to_thread(self.check):
                    log.info("DHCP reservations changed (%d now); dnsmasq re-reads them", self.count)
                    on_change()
            except (SQLAlchemyError, OSError, ValueError):
                # A locked or unreachable store must not end the watcher: the next poll tries again.
                log.exception("cannot update the DHCP reservations")
            await asyncio.sleep(interval)


def current_user() -> tuple[str, str]:
    """The user and group dnsmasq keeps running as: the appliance's own (it reads STATE_DIR/run)."""
    return getpass.getuser(), grp.getgrgid(os.getegid()).gr_name
