"""anvil serve: run the appliance: API and console, engine, boot services (one process by
default, or one role per process; the monitor role grows in a later issue)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliance import cpus, heap
from appliance.cli.context import CliContext, pass_ctx
from appliance.config import Settings
from appliance.errors import ListenError
from appliance.sdnotify import SystemdNotifier

if TYPE_CHECKING:
    import ssl

    from aiohttp import web

    from appliance.api.workers import Workers
    from appliance.boot.role import BootServices
    from appliance.engine.runner import Engine, LeaderLoop
    from appliance.metrics import Metrics
    from appliance.monitor.runner import Monitor
    from appliance.store import Store

log = logging.getLogger(__name__)
GIL_SWITCH = 0.001   # s: how long a thread keeps the GIL while others wait for it (Python's default 0.005)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _write_ready(ready_file: str | None, url: str) -> None:
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write(f"{url}\n")


def _log_levels(settings: Settings) -> None:
    if logging.getLogger().level > logging.getLevelName(settings.log_level):
        logging.getLogger().setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        # tftpy logs about fifteen INFO lines per transfer.
        logging.getLogger("tftpy").setLevel(logging.WARNING)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _metrics_listen(settings: Settings, metrics: Metrics, key: str) -> web.AppRunner | None:
    """``/metrics`` on ``[metrics] listen`` (or ``boot_listen``), unauthenticated (DESIGN §8)."""
    from appliance.metrics_listen import MetricsListen, start_metrics_listen

    where = MetricsListen(getattr(settings.metrics, key), f"metrics.{key}", f"ANVIL_METRICS_{key.upper()}",
                          explicit=key in settings.metrics.model_fields_set)
    return await start_metrics_listen(metrics, where)


def _describe_metrics(settings: Settings, runner: web.AppRunner | None, key: str) -> None:
    if runner is not None:
        click.echo(f"anvil: metrics on http://{getattr(settings.metrics, key)}/metrics (no authentication)")


async def _boot_beside_api(settings: Settings, store: Store, metrics: Metrics) -> BootServices:
    """Role ``all``: the boot services too. The default boot HTTP address being taken (another
    appliance or test on this machine) costs only boot HTTP; an address given in the
    configuration, TFTP and DHCP are never skipped."""
    from appliance.boot.role import BootServiceError, start_boot_services

    try:
        return await start_boot_services(settings, store, metrics=metrics)
    except BootServiceError as exc:
        if exc.service != "http" or "listen" in settings.boot.model_fields_set:
            raise
        click.echo(f"anvil: warning: {exc}; serving no boot HTTP", err=True)
        return await start_boot_services(settings, store, http=False, metrics=metrics)


def _leader_monitor(monitor: Monitor) -> LeaderLoop:
    async def loop(_engine: Engine, term: asyncio.Event) -> None:
        await monitor.run(term)

    return loop


@dataclass(frozen=True, slots=True)
class RegionOptions:
    """A rack controller's way to the region (``--region``, ``--rack-token``, ``--region-ca``)."""

    url: str
    token_file: Path
    ca: Path | None = None


async def run_boot_role(ctx: CliContext, ready_file: str | None, region: RegionOptions | None = None) -> None:
    """Role ``boot`` alone: no API, no engine, no token and never the secrets key (boot serves no secret).
    With ``region``, a rack controller: its blades' boot data from the region, never the store."""
    from appliance.boot.role import start_boot_services
    from appliance.metrics import Metrics

    settings = ctx.settings
    _log_levels(settings)
    stop = _stop_event()
    # Its own registry and listen (metrics.boot_listen): boot requests, TFTP and DHCP served here.
    metrics = Metrics(boot_only=True)
    if region is not None:
        from appliance.boot.remote import RackLink, RegionClient, read_token

        link = RackLink(RegionClient(region.url, read_token(region.token_file), ca=region.ca), settings)
        boot = await start_boot_services(settings, None, link=link, metrics=metrics)
    else:
        boot = await start_boot_services(settings, ctx.unsealed_store(), metrics=metrics)
    try:
        metrics_runner = await _metrics_listen(settings, metrics, "boot_listen")
    except BaseException:
        await boot.close()
        raise
    notifier = SystemdNotifier()
    watchdog = asyncio.create_task(notifier.watchdog(stop), name="watchdog")
    try:
        rack = boot.link
        where = f"rack {rack.name} of region {rack.client.url}" if rack else f"state {settings.state_dir}"
        click.echo(f"anvil: {boot.describe()} ({where})")
        _describe_metrics(settings, metrics_runner, "boot_listen")
        heap.settle()
        _write_ready(ready_file, boot.http_url or "")
        notifier.ready(boot.describe())
        await stop.wait()
    finally:
        stop.set()
        notifier.stopping()
        await watchdog
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await boot.close()


def _tls(settings: Settings, insecure_http: bool) -> ssl.SSLContext | None:
    """The API's TLS context (None: plain HTTP, on loopback only)."""
    from appliance.api.tls import ensure_self_signed, server_context

    host = settings.api.listen.rpartition(":")[0]
    if settings.api.tls and not insecure_http:
        if settings.api.tls_cert and settings.api.tls_key:
            cert, key = settings.api.tls_cert, settings.api.tls_key
        else:
            cert, key = ensure_self_signed(settings.state_dir / "tls")
        return server_context(cert, key)
    if not _is_loopback(host):
        raise click.UsageError(f"plain HTTP is allowed on loopback only, not on {host}")
    return None


def _listen_socket(listen: str) -> socket.socket:
    """The API's listening socket, opened here and accepted on by the API workers."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family, backlog=1024)
    except OSError as exc:
        raise ListenError("the API and console", listen, "api.listen", "ANVIL_API_LISTEN", exc) from None


async def run_api_worker(ctx: CliContext, spec: str, insecure_http: bool, ready_file: str | None) -> None:
    """One API worker (appliance.api.workers): accept on the inherited socket ``FD``, answer list
    pages, forward the rest to the leader ``PID`` at ``SOCKET`` (``spec`` is ``FD:PID:SOCKET``)."""
    from aiohttp import web

    from appliance.api.app import create_app
    from appliance.api.hardening import app_runner
    from appliance.api.workers import forwarding_middleware, leader_session, watch_parent

    fd, pid, path = spec.split(":", 2)
    settings = ctx.settings
    _log_levels(settings)
    ssl_ctx = _tls(settings, insecure_http)
    listener = socket.socket(fileno=int(fd))
    session = leader_session(Path(path))
    app = create_app(settings, ctx.store())
    app.middlewares.insert(0, forwarding_middleware(lambda: session))
    runner = app_runner(app)
    await runner.setup()
    stop = _stop_event()
    try:
        await web.SockSite(runner, listener, ssl_context=ssl_ctx).start()
        heap.settle()
        _write_ready(ready_file, "worker")
        await watch_parent(stop, int(pid))
    finally:
        await runner.cleanup()
        await session.close()


async def _start_workers(settings: Settings, runner: object, insecure_http: bool,
                         keeper: cpus.Keeper | None) -> Workers:
    """``[api] workers``: open the API's socket here, serve the workers on a private unix socket, start them."""
    from aiohttp import web

    from appliance.api.workers import Workers, child_argv, private_socket_path

    listener = _listen_socket(settings.api.listen)
    path, tmp = private_socket_path(settings.state_dir / "run")
    assert isinstance(runner, web.AppRunner)
    await web.UnixSite(runner, str(path)).start()
    os.chmod(path, 0o600)
    click_ctx = click.get_current_context(silent=True)
    config_path = click_ctx.find_root().params.get("config_path") if click_ctx is not None else None
    argv = child_argv(config_path)
    if insecure_http:
        argv.append("--insecure-http")
    workers = Workers(settings.api.workers, listener, path, argv, dict(os.environ), cleanup_dir=tmp,
                      on_spawn=lambda pid: cpus.release(pid, keeper))
    try:
        await workers.start()
    except BaseException:
        await workers.stop()
        raise
    return workers


async def run_appliance(ctx: CliContext, insecure_http: bool, ready_file: str | None,
                        on_ready: Callable[[str, str], None] | None = None, role: str = "all",
                        region: RegionOptions | None = None, api_worker: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM. ``on_ready(url, token_file)`` runs once listening.

    Role ``all`` runs the API, the engine, the monitor and the boot services in this process;
    ``control`` all but the boot services (systemd/anvil.service, beside anvil-boot.service);
    ``api``, ``engine``, ``monitor`` or ``boot`` runs one of them. With ``cpus = "one"`` every
    thread of the process runs on one CPU (appliance.cpus says why).
    """
    keeper = cpus.hold_one_cpu() if ctx.settings.cpus == "one" else None
    keeping = asyncio.create_task(keeper.run(), name="cpu-keeper") if keeper is not None else None
    try:
        await _run_role(ctx, insecure_http, ready_file, on_ready, role, region, api_worker, keeper)
    finally:
        if keeping is not None:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping


async def _run_role(ctx: CliContext, insecure_http: bool, ready_file: str | None,
                    on_ready: Callable[[str, str], None] | None, role: str, region: RegionOptions | None,
                    api_worker: str | None, keeper: cpus.Keeper | None) -> None:
    if role == "boot":
        await run_boot_role(ctx, ready_file, region)
        return
    if api_worker is not None:
        await run_api_worker(ctx, api_worker, insecure_http, ready_file)
        return
    # Imported here so that other commands do not pay for aiohttp and TLS at start-up.
    from aiohttp import web

    from appliance.api.app import create_app
    from appliance.api.hardening import app_runner
    from appliance.api.readiness import Readiness
    from appliance.engine.model import EngineSettings
    from appliance.engine.runner import Engine
    from appliance.engine.steps import KINDS
    from appliance.metrics import Metrics
    from appliance.monitor.notify import Notifier
    from appliance.monitor.runner import Monitor, monitor_settings
    from appliance.secrets import SecretBox, ensure_key
    from appliance.services.audit import AuditService
    from appliance.services.hardware import Hardware, storage_driver
    from appliance.services.tokens import TokenService
    from appliance.services.users import INITIAL_ADMIN_PASSWORD, UserService
    from appliance.store.audit import Actor, acting_as

    settings = ctx.settings
    _log_levels(settings)
    store = ctx.store()
    ensure_key(settings.secrets_key_path)
    token_file = settings.state_dir / "admin.token"
    # A trail written before the chain was keyed (or none yet) is checked and its tail signed.
    AuditService(store).adopt()
    with acting_as(Actor("system:setup", "serve")):
        token = TokenService(store).ensure_admin_token(token_file)
        password_file = settings.state_dir / "admin.password"
        # The appliance image's first boot leaves the admin's chosen password here (anvil-firstboot).
        chosen = settings.state_dir / INITIAL_ADMIN_PASSWORD
        if UserService(store).ensure_initial_admin(password_file, chosen):
            click.echo(f"console user admin: password written to {password_file}" if password_file.exists()
                       else "console user admin: the password chosen at first boot")
    if token and sys.stdout.isatty():
        click.echo(f"admin API token (also in {token_file}): {token}")
    elif token:
        click.echo(f"admin API token written to {token_file}")
    host, _, port = settings.api.listen.rpartition(":")
    ssl_ctx = _tls(settings, insecure_http)
    box = SecretBox(settings.secrets_key_path)
    # One registry for every role in this process, served at /metrics (appliance.metrics).
    metrics = Metrics()
    # /readyz checks boot HTTP where this process serves it (role all, below), or where the
    # configuration says blades reach a boot role running elsewhere.
    ready = Readiness(boot_url=settings.boot.advertise_url if role != "all" else None)
    hardware = Hardware(store, box, storage=storage_driver(settings), notifier=Notifier(store, box),
                        metrics=metrics)
    engine = None
    monitor = None
    if role in ("all", "control", "engine", "monitor"):
        api_url = f"{'https' if ssl_ctx else 'http'}://{settings.api.listen}"
        monitor = Monitor(store, hardware, settings=monitor_settings(settings, api_url), metrics=metrics)
    if role in ("all", "control", "engine"):
        from appliance.engine.host_delivery import HostWebhookLoop
        from appliance.engine.hostpools import HostPoolLoop
        from appliance.sites.kinds import default_registry
        from appliance.sites.replication import ReplicationLoop

        assert monitor is not None
        # With the engine, the monitor runs only while this node leads (controller HA: several
        # nodes on one database, one of them judging the blades and starting failovers).
        engine = Engine(store, hardware, KINDS, settings=EngineSettings.from_settings(settings),
                        loops=(HostPoolLoop(store).run, HostWebhookLoop(store, box).run,
                               ReplicationLoop(store, box, default_registry()).run, _leader_monitor(monitor)),
                        metrics=metrics)
    # One Hardware for every role: one set of BMC sessions, and one view of the in-process fake driver.
    app = create_app(settings, store, engine=engine, monitor=monitor, hardware=hardware, metrics=metrics,
                     ready=ready)
    workers: Workers | None = None
    if settings.api.workers:
        from appliance.api.workers import trust_forwarded

        app.middlewares.insert(0, trust_forwarded)
    runner = app_runner(app)
    await runner.setup()
    boot = None
    metrics_runner = None
    try:
        if settings.api.workers:
            workers = await _start_workers(settings, runner, insecure_http, keeper)
        else:
            site = web.TCPSite(runner, host, int(port), ssl_context=ssl_ctx)
            try:
                await site.start()
            except OSError as exc:
                raise ListenError("the API and console", settings.api.listen, "api.listen", "ANVIL_API_LISTEN",
                                  exc) from None
        if role == "all":
            boot = await _boot_beside_api(settings, store, metrics)
            ready.boot_url = boot.http_url and f"http://{settings.boot.listen}"
        metrics_runner = await _metrics_listen(settings, metrics, "listen")
    except BaseException:
        if boot is not None:
            await boot.close()
        if workers is not None:
            await _stop_workers(workers)
        await hardware.close()
        await runner.cleanup()
        raise
    scheme = "https" if ssl_ctx else "http"
    click.echo(f"anvil: API and console on {scheme}://{settings.api.listen} (state {settings.state_dir})")
    if boot is not None:
        click.echo(f"anvil: {boot.describe()}")
    _describe_metrics(settings, metrics_runner, "listen")
    heap.settle()
    if on_ready is not None:
        on_ready(f"{scheme}://{settings.api.listen}", str(token_file))
    _write_ready(ready_file, f"{scheme}://{settings.api.listen}")
    stop = _stop_event()
    notifier = SystemdNotifier()
    watchdog = asyncio.create_task(notifier.watchdog(stop), name="watchdog")
    engine_task = asyncio.create_task(engine.run(stop), name="engine") if engine else None
    monitor_task = asyncio.create_task(monitor.run(stop), name="monitor") if monitor and not engine else None
    supervisor = asyncio.create_task(workers.supervise(stop), name="api-workers") if workers else None
    notifier.ready(f"role {role}: API and console on {scheme}://{settings.api.listen}")
    try:
        await stop.wait()
    finally:
        stop.set()
        notifier.stopping()
        await watchdog
        if engine_task is not None:
            await engine_task
        if monitor_task is not None:
            await monitor_task
        if supervisor is not None:
            await supervisor
        if workers is not None:
            await _stop_workers(workers)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        if boot is not None:
            await boot.close()
        await hardware.close()
        await runner.cleanup()


async def _stop_workers(workers: Workers) -> None:
    await workers.stop()
    workers.listener.close()
    with contextlib.suppress(FileNotFoundError):
        workers.socket_path.unlink()
    if workers.cleanup_dir is not None:
        shutil.rmtree(workers.cleanup_dir, ignore_errors=True)


@click.command("serve")
@click.option("--role", type=click.Choice(["all", "control", "api", "engine", "boot", "monitor"]), default="all",
              show_default=True, help="Run one role alone (for the systemd units) or all of them.")
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP (loopback addresses only).")
@click.option("--ready-file", default=None, hidden=True, help="Write the URL here once listening (tests).")
@click.option("--region", "region_url", default=None, metavar="URL",
              help="--role boot as a rack controller: the region's API URL (https://HOST:8443); the blades' boot "
                   "data come from there, and the store is never opened.")
@click.option("--rack-token", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The rack's token file (anvil rack add NAME --token-file FILE); needs --region.")
@click.option("--region-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The region's certificate (or its CA), pinned: the only one trusted.")
@click.option("--api-worker", default=None, hidden=True, metavar="FD:PID:SOCKET",
              help="Run as an API worker of the process that started it (appliance.api.workers).")
@pass_ctx
def serve(ctx: CliContext, role: str, insecure_http: bool, ready_file: str | None, region_url: str | None,
          rack_token: Path | None, region_ca: Path | None, api_worker: str | None) -> None:
    """Run the appliance.

    \b
    --role boot runs only the boot services (HTTP, and TFTP/DHCP when configured in
    [boot]), e.g. inside the provisioning network's namespace:
      ip netns exec NS anvil serve --role boot --config PATH
    It needs no API token and never reads the secrets key. As a rack controller
    (--region URL --rack-token FILE) it never opens the store either.
    The health monitor runs with
    the engine (all, control, engine), or alone (--role monitor). --role control is all
    but the boot services (systemd/anvil.service beside anvil-boot.service).

    Under systemd (Type=notify) it reports READY=1 once listening, STOPPING=1 on SIGTERM,
    and pings the watchdog from the event loop when WatchdogSec= is set."""
    # The appliance's own work (the engine) is nobody's change; each request sets its caller.
    from appliance.store.audit import set_actor

    set_actor(None)
    # Threads hand the GIL over every GIL_SWITCH s instead of Python's 5 ms: a database thread back
    # from a statement waited up to that long for the interpreter while request handlers ran, and
    # under SQLite it waits holding the one writer lock, so every other writer waited too (a
    # hundred deploys at once: the bind step's transaction held the lock 14 ms, 6.5 ms with 1 ms).
    sys.setswitchinterval(GIL_SWITCH)
    region = None
    if region_url is not None or rack_token is not None or region_ca is not None:
        if role != "boot":
            raise click.UsageError("--region, --rack-token and --region-ca are for --role boot (a rack controller)")
        if region_url is None or rack_token is None:
            raise click.UsageError("a rack controller needs both --region URL and --rack-token FILE")
        region = RegionOptions(region_url, rack_token, region_ca)
    asyncio.run(run_appliance(ctx, insecure_http, ready_file, role=role, region=region,
                              api_worker=api_worker))


COMMANDS = [serve]
