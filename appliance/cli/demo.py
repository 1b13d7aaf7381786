"""anvil demo: an emulated rack (``lab up``) and the appliance (``serve``) in one command.

The lab comes down again when the appliance stops (Ctrl-C or SIGTERM), or when serving
fails to start. ``--vms N`` (root) adds QEMU blades; the lab is up before the appliance
starts, so the appliance finds the VM lab's tgtd for iSCSI boot LUNs in lab.json.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.lab import _opts, describe, lab_down, lab_options, lab_up, say_down
from appliance.cli.serve import run_appliance

log = logging.getLogger(__name__)


@click.command("demo")
@lab_options
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP (loopback addresses only).")
@click.option("--ready-file", default=None, hidden=True, help="Write the URL here once listening (tests).")
@pass_ctx
def demo(ctx: CliContext, redfish: int, ipmi: int, switch_kind: str, realistic_power: bool, vms: int, uefi_vms: int,
         vm_host_slots: int, netns: str, subnet: str, insecure_http: bool, ready_file: str | None) -> None:
    """Start an emulated rack and the appliance; Ctrl-C stops both."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # a SIGTERM while the lab starts: unwind, so the lab is taken down

    from appliance.progress import for_terminal

    previous = signal.signal(signal.SIGTERM, interrupted)
    progress = for_terminal("lab up")
    try:
        state = lab_up(ctx, _opts(ctx.settings, redfish, ipmi, switch_kind, realistic_power, vms, netns, uefi_vms,
                                  vm_host_slots, subnet), progress)
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"lab up: {describe(state, redfish, ipmi, vms, switch_kind)}; `anvil blade list` shows them")

    def ready(url: str, token_file: str) -> None:
        click.echo(f"console: {url}/")
        click.echo(f"admin token: in {token_file} (mode 0600)")
        click.echo("Ctrl-C stops the appliance and takes the lab down")

    try:
        asyncio.run(run_appliance(ctx, insecure_http, ready_file, on_ready=ready))
    finally:
        say_down(ctx, lab_down(ctx))


COMMANDS = [demo]
