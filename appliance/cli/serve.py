"""anvil serve: run the appliance (API now; engine, boot and monitor roles grow in later issues)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable

import click

from appliance.cli.context import CliContext, pass_ctx

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def run_appliance(ctx: CliContext, insecure_http: bool, ready_file: str | None,
                        on_ready: Callable[[str, str], None] | None = None, role: str = "all") -> None:
    """Serve until SIGINT or SIGTERM. ``on_ready(url, token_file)`` runs once listening.

    Role ``all`` runs the API and the engine in this process; ``api`` or ``engine`` runs one.
    """
    # Imported here so that other commands do not pay for aiohttp and TLS at start-up.
    from aiohttp import web

    from appliance.api.app import create_app
    from appliance.api.tls import ensure_self_signed, server_context
    from appliance.engine.model import EngineSettings
    from appliance.engine.runner import Engine
    from appliance.engine.steps import KINDS
    from appliance.secrets import SecretBox, ensure_key
    from appliance.services.hardware import Hardware
    from appliance.services.tokens import TokenService
    from appliance.services.users import UserService
    from appliance.store.audit import Actor, acting_as

    settings = ctx.settings
    if logging.getLogger().level > logging.getLevelName(settings.log_level):
        logging.getLogger().setLevel(settings.log_level)
    store = ctx.store()
    ensure_key(settings.secrets_key_path)
    token_file = settings.state_dir / "admin.token"
    with acting_as(Actor("system:setup", "serve")):
        token = TokenService(store).ensure_admin_token(token_file)
        password_file = settings.state_dir / "admin.password"
        if UserService(store).ensure_initial_admin(password_file):
            click.echo(f"console user admin: password written to {password_file}")
    if token and sys.stdout.isatty():
        click.echo(f"admin API token (also in {token_file}): {token}")
    elif token:
        click.echo(f"admin API token written to {token_file}")
    host, _, port = settings.api.listen.rpartition(":")
    ssl_ctx = None
    if settings.api.tls and not insecure_http:
        if settings.api.tls_cert and settings.api.tls_key:
            cert, key = settings.api.tls_cert, settings.api.tls_key
        else:
            cert, key = ensure_self_signed(settings.state_dir / "tls")
        ssl_ctx = server_context(cert, key)
    elif not _is_loopback(host):
        raise click.UsageError(f"plain HTTP is allowed on loopback only, not on {host}")
    hardware = Hardware(store, SecretBox(settings.secrets_key_path))
    engine = None
    if role in ("all", "engine"):
        engine = Engine(store, hardware, KINDS, settings=EngineSettings(parking_vlan=settings.network.parking_vlan))
    runner = web.AppRunner(create_app(settings, store, engine=engine), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port), ssl_context=ssl_ctx)
    await site.start()
    scheme = "https" if ssl_ctx else "http"
    click.echo(f"anvil: API and console on {scheme}://{settings.api.listen} (state {settings.state_dir})")
    if on_ready is not None:
        on_ready(f"{scheme}://{settings.api.listen}", str(token_file))
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write(f"{scheme}://{settings.api.listen}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine_task = asyncio.create_task(engine.run(stop), name="engine") if engine else None
    try:
        await stop.wait()
    finally:
        stop.set()
        if engine_task is not None:
            await engine_task
        await hardware.close()
        await runner.cleanup()


@click.command("serve")
@click.option("--role", type=click.Choice(["all", "api", "engine", "boot", "monitor"]), default="all",
              show_default=True, help="Run one role alone (for the systemd units) or all of them.")
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP (loopback addresses only).")
@click.option("--ready-file", default=None, hidden=True, help="Write the URL here once listening (tests).")
@pass_ctx
def serve(ctx: CliContext, role: str, insecure_http: bool, ready_file: str | None) -> None:
    """Run the appliance."""
    if role not in ("all", "api", "engine"):
        raise click.UsageError(f"role {role!r} is not available yet")
    # The appliance's own work (the engine) is nobody's change; each request sets its caller.
    from appliance.store.audit import set_actor

    set_actor(None)
    asyncio.run(run_appliance(ctx, insecure_http, ready_file, role=role))


COMMANDS = [serve]
