"""The boot role: boot HTTP, TFTP and the managed dnsmasq, started and stopped together.

``anvil serve`` (role ``all``) starts them beside the API and the engine; ``anvil serve
--role boot`` runs them alone, as a second process inside the provisioning network's
namespace (DESIGN §7). Nothing here opens the secrets key: boot serves no secret.

* boot HTTP on ``boot.listen``: iPXE scripts, images, callback, heartbeats, discovery;
* TFTP on ``boot.tftp_listen`` when set: the iPXE binaries only (tftpy, in a thread);
* DHCP when ``boot.dhcp`` is ``reservations`` or ``proxy``: a dnsmasq child on
  ``boot.interface``, restarted if it dies; in ``reservations`` mode a watcher polls the
  store every second and, when the live bindings' addresses changed, rewrites dnsmasq's
  hostsfile and SIGHUPs it (no restart, so no DHCP outage).

As a rack controller (``link``: ``anvil serve --role boot --region URL --rack-token FILE``), the
same services take everything from the region instead of the store (appliance.boot.remote): the
rack registers before anything listens, heartbeats while it runs, and its dnsmasq's hostsfile
follows the region's reservations for its blades.

Errors: :class:`BootServiceError` names the service that could not start (``http``,
``tftp`` or ``dhcp``); whatever had started by then is stopped before it is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from aiohttp import web

from appliance.api.hardening import app_runner
from appliance.boot.dhcp import (
    DhcpSettings,
    Dnsmasq,
    DnsmasqError,
    ReservationSync,
    current_user,
    has_global_ipv6,
    interface_ipv4,
    render_config,
    write_atomic,
    write_hosts,
)
from appliance.boot.http import base_url_for, create_boot_app
from appliance.boot.tftp import TftpService, install_binaries
from appliance.config import Settings
from appliance.errors import AnvilError, ListenError
from appliance.metrics import Metrics
from appliance.store import Store

if TYPE_CHECKING:
    from appliance.boot.remote import RackLink

log = logging.getLogger(__name__)

Service = Literal["http", "tftp", "dhcp"]


class BootServiceError(AnvilError):
    """A boot service could not start; ``service`` says which one."""

    def __init__(self, service: Service, message: str) -> None:
        super().__init__(f"boot {service}: {message}")
        self.service = service


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def dhcp_settings(settings: Settings) -> DhcpSettings:
    """dnsmasq's settings from ``[boot]`` and the provisioning interface's own address."""
    boot = settings.boot
    iface = interface_ipv4(boot.interface)
    if iface is None:
        raise BootServiceError("dhcp", f"interface {boot.interface!r} has no IPv4 address in this network "
                                       "namespace (boot.interface)")
    http_base = boot.advertise_url or base_url_for(boot.listen) or f"http://{iface.ip}:{_split(boot.listen)[1]}"
    host = urlsplit(http_base).hostname or ""
    if host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback):
        raise BootServiceError("dhcp", f"blades on {boot.interface} cannot reach boot HTTP at {http_base}: set "
                                       "boot.listen to the interface's address (or 0.0.0.0), or boot.advertise_url")
    start, end = boot.dhcp_range.split(",") if boot.dhcp == "reservations" else (None, None)
    user, group = current_user()
    return DhcpSettings(interface=boot.interface, server=str(iface.ip), run_dir=settings.run_dir, http_base=http_base,
                        range_start=start, range_end=end, prefix=iface.network.prefixlen,
                        enable_ra=has_global_ipv6(boot.interface), user=user, group=group)


@dataclass
class BootServices:
    """What :func:`start_boot_services` started; :meth:`close` stops all of it (idempotent)."""

    http_url: str | None = None
    tftp_port: int | None = None
    dnsmasq: Dnsmasq | None = None
    sync: ReservationSync | None = None
    link: RackLink | None = None        # a rack controller's link to the region (appliance.boot.remote)
    _beat: asyncio.Task[None] | None = field(default=None, repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _tftp: TftpService | None = field(default=None, repr=False)
    _watch: asyncio.Task[None] | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line for the operator: what listens where."""
        parts = []
        if self.http_url:
            parts.append(f"boot HTTP on {self.http_url}")
        if self.tftp_port is not None:
            parts.append(f"TFTP on port {self.tftp_port}")
        if self.dnsmasq is not None:
            s = self.dnsmasq.settings
            mode = "proxy" if s.proxy else f"pool {s.range_start}-{s.range_end}"
            parts.append(f"DHCP ({mode}) on {s.interface} (dnsmasq pid {self.dnsmasq.pid})")
        return ", ".join(parts) or "no boot service"

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.dnsmasq is not None:
            await self.dnsmasq.stop()
            self.dnsmasq = None
        if self._tftp is not None:
            await asyncio.to_thread(self._tftp.stop)
            self._tftp = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.link is not None:
            await self.link.client.close()


async def _start_http(settings: Settings, store: Store | None, out: BootServices, metrics: Metrics | None) -> None:
    host, port = _split(settings.boot.listen)
    if out.link is not None:
        from appliance.boot.remote import create_rack_app

        app = create_rack_app(out.link)
    else:
        app = create_boot_app(settings, store=store, metrics=metrics)
    runner = app_runner(app)
    await runner.setup()
    out._runner = runner
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        listen = ListenError("boot HTTP", settings.boot.listen, "boot.listen", "ANVIL_BOOT_LISTEN", exc)
        raise BootServiceError("http", str(listen)) from None
    out.http_url = settings.boot.advertise_url or f"http://{settings.boot.listen}"


async def _start_tftp(settings: Settings, out: BootServices, metrics: Metrics | None) -> None:
    root = settings.run_dir / "tftp"
    if not await asyncio.to_thread(install_binaries, root):
        log.warning("no iPXE binaries to serve over TFTP (install the Debian package ipxe)")
    host, port = _split(settings.boot.tftp_listen)
    svc = TftpService(root, host=host, port=port, on_request=metrics.count_tftp if metrics else None)
    try:
        out.tftp_port = await asyncio.to_thread(svc.start)
    except RuntimeError as exc:
        await asyncio.to_thread(svc.stop)
        raise BootServiceError("tftp", f"cannot listen on {settings.boot.tftp_listen}: {exc}; choose another "
                                       "address with boot.tftp_listen in the configuration, or "
                                       "ANVIL_BOOT_TFTP_LISTEN=HOST:PORT") from None
    out._tftp = svc


async def _start_dhcp(settings: Settings, store: Store | None, out: BootServices, watch_interval: float,
                      metrics: Metrics | None) -> None:
    s = dhcp_settings(settings)
    tftp_host = _split(settings.boot.tftp_listen)[0] if settings.boot.tftp_listen else ""
    if out._tftp is None or tftp_host not in ("0.0.0.0", "", s.server):
        log.warning("DHCP sends PXE clients to TFTP on %s, where this process serves none (boot.tftp_listen)",
                    s.server)
    try:
        write_atomic(s.config_path, render_config(s))
    except ValueError as exc:
        raise BootServiceError("dhcp", str(exc)) from None
    sync = None
    remote = None
    if s.proxy:
        write_hosts(s, [])      # reservations mean nothing when another server hands out addresses
    elif out.link is not None:
        from appliance.boot.remote import RegionError, RegionReservations

        remote = RegionReservations(out.link, s)
        try:
            await remote.check()
        except RegionError as exc:
            raise BootServiceError("dhcp", f"reservations from the region: {exc}") from None
    else:
        assert store is not None
        sync = ReservationSync(store, s)
        await asyncio.to_thread(sync.check)   # dnsmasq's first read already has every reservation
    dnsmasq = Dnsmasq(s)
    try:
        await dnsmasq.start()
    except DnsmasqError as exc:
        raise BootServiceError("dhcp", str(exc)) from None
    out.dnsmasq, out.sync = dnsmasq, sync
    if metrics is not None:
        metrics.count_dhcp(s.logfile)
    if sync is not None:
        out._watch = asyncio.create_task(sync.run(dnsmasq.reload, interval=watch_interval), name="dhcp-reservations")
    elif remote is not None:
        out._watch = asyncio.create_task(remote.run(dnsmasq.reload, interval=max(watch_interval, 2.0)),
                                         name="dhcp-reservations")


async def start_boot_services(settings: Settings, store: Store | None, *, http: bool = True,
                              tftp: bool | None = None, dhcp: bool | None = None, watch_interval: float = 1.0,
                              metrics: Metrics | None = None, link: RackLink | None = None) -> BootServices:
    """Start the boot services; ``tftp``/``dhcp`` None means "as configured" (``boot.tftp_listen``,
    ``boot.dhcp``). With ``link`` (a rack controller) everything comes from the region and
    ``store`` is None; the rack registers first, and heartbeats while it runs. Raises
    BootServiceError, with nothing left running."""
    want_tftp = bool(settings.boot.tftp_listen) if tftp is None else tftp
    want_dhcp = settings.boot.dhcp != "off" if dhcp is None else dhcp
    if want_tftp and not settings.boot.tftp_listen:
        raise BootServiceError("tftp", "boot.tftp_listen is not set")
    if want_dhcp and settings.boot.dhcp == "off":
        raise BootServiceError("dhcp", "boot.dhcp is 'off'")
    if store is None and link is None:
        raise ValueError("the boot services need a store or a link to the region")
    out = BootServices(link=link)
    try:
        if link is not None:
            from appliance.boot.remote import RegionError

            try:
                await link.register()
            except RegionError as exc:
                raise BootServiceError("http", f"cannot register with the region: {exc}") from None
            out._beat = asyncio.create_task(link.heartbeats(), name="rack-heartbeat")
        if http:
            await _start_http(settings, store, out, metrics)
        if want_tftp:
            await _start_tftp(settings, out, metrics)
        if want_dhcp:
            await _start_dhcp(settings, store, out, watch_interval, metrics)
    except BaseException:
        await out.close()
        raise
    return out
