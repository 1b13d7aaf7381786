"""anvil switch enroll|list|show|delete|cable|port-vlans."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.domain.vlans import parse_vlan_list, vlan_ranges
from appliance.drivers.protocols import PortConfig, Secret
from appliance.services.hardware import Hardware
from appliance.services.switches import SwitchService


def _secret(from_stdin: bool, env: str) -> Secret | None:
    if from_stdin:
        return Secret(sys.stdin.readline().rstrip("\r\n"))
    value = os.environ.get(env)
    return Secret(value) if value is not None else None


@click.group("switch")
def switch() -> None:
    """Network switches, the cabling of blade NICs to their ports, and port VLANs."""


@switch.command("enroll")
@click.argument("name")
@click.option("--address", required=True,
              help="snmp://HOST[:PORT][?context=…], ovs:unix:/path/db.sock?bridge=BR, "
                   "or linuxbridge://netns/NS?bridge=BR")
@click.option("--username", default="", help="SNMPv3 user (empty: v2c, the community is the password).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password (v2c community or v3 auth key) from the first line of standard input "
                   "(else ANVIL_SWITCH_PASSWORD).")
@click.option("--privacy-stdin", is_flag=True,
              help="Read the SNMPv3 privacy key from the next line of standard input (else ANVIL_SWITCH_PRIVACY).")
@click.option("--driver", default=None, help="Driver name (default: from the address scheme).")
@pass_ctx
def enroll(ctx: CliContext, name: str, address: str, username: str, password_stdin: bool, privacy_stdin: bool,
           driver: str | None) -> None:
    """Enrol a switch. Secrets come from stdin or the environment, never from arguments."""
    password = _secret(password_stdin, "ANVIL_SWITCH_PASSWORD")
    privacy = _secret(privacy_stdin, "ANVIL_SWITCH_PRIVACY")
    info = SwitchService(ctx.store(), ctx.box()).enroll(name, address, username=username, password=password,
                                                        privacy=privacy, driver=driver)
    click.echo(f"enrolled switch {info.name} ({info.driver})")


@switch.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List switches."""
    rows = [s.public() for s in SwitchService(ctx.store(), ctx.box()).list()]
    emit(rows, fmt, columns=["name", "driver", "address", "username", "password", "cabled"])


@switch.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one switch and what is cabled to it (secrets are always masked)."""
    data = SwitchService(ctx.store(), ctx.box()).get(name).public()
    if fmt == "table":
        data["cables"] = [f"{c['port']}={c['blade']}/{c['nic']}" for c in data["cables"]]
    emit(data, fmt)


@switch.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Remove a switch that no blade NIC is cabled to."""
    SwitchService(ctx.store(), ctx.box()).delete(name)
    click.echo(f"deleted switch {name}")


@switch.command("cable")
@click.argument("blade")
@click.argument("nic")
@click.argument("switch_name", metavar="SWITCH")
@click.argument("port")
@pass_ctx
def cable(ctx: CliContext, blade: str, nic: str, switch_name: str, port: str) -> None:
    """Record that blade NIC (by name or MAC) is cabled to SWITCH PORT (re-cabling moves it)."""
    SwitchService(ctx.store(), ctx.box()).cable(blade, nic, switch_name, port)
    click.echo(f"cabled {blade}/{nic} to {switch_name} port {port}")


def _vlan_list(text: str) -> frozenset[int]:
    try:
        return parse_vlan_list(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tagged") from None


def _port_row(switch_name: str, port: str, cfg: PortConfig) -> dict[str, Any]:
    return {"switch": switch_name, "port": port, "native": cfg.native, "tagged": sorted(cfg.tagged),
            "up": cfg.up}


@switch.command("port-vlans")
@click.argument("switch_name", metavar="SWITCH")
@click.argument("port")
@click.option("--native", default=None, metavar="VLAN|none", help="Untagged VLAN (none: no untagged VLAN).")
@click.option("--tagged", default=None, metavar="LIST", help="Tagged VLANs, e.g. 10,20,30-32 ('' for none).")
@click.option("--up/--down", "up", default=None, help="Bring the port up, or shut it.")
@output_option()
@pass_ctx
def port_vlans(ctx: CliContext, switch_name: str, port: str, native: str | None, tagged: str | None,
               up: bool | None, fmt: str) -> None:
    """Show a port's native and tagged VLANs and admin state as read from the switch; with
    --native/--tagged/--up/--down, change them first (what is not given stays)."""
    want_native: int | None = None
    if native is not None and native.lower() != "none":
        if native.isdigit() and 1 <= int(native) <= 4094:
            want_native = int(native)
        else:
            raise click.BadParameter(f"{native!r} is not a VLAN 1..4094 or none", param_hint="--native")
    want_tagged = _vlan_list(tagged) if tagged is not None else None
    change = native is not None or tagged is not None or up is not None

    async def run() -> PortConfig:
        async with Hardware(ctx.store(), ctx.box()) as hw:
            driver, ref = hw.switch(switch_name)
            cfg = await driver.get_port(ref, port)
            if not change:
                return cfg
            want = PortConfig(
                native=cfg.native if native is None else want_native,
                tagged=cfg.tagged if want_tagged is None else want_tagged,
                up=cfg.up if up is None else up,
            )
            await driver.set_port(ref, port, want)
            return await driver.get_port(ref, port)

    got = asyncio.run(run())
    row = _port_row(switch_name, port, got)
    if fmt == "table":
        tagged_text = vlan_ranges(got.tagged)
        click.echo(f"{switch_name} port {port}: native {got.native if got.native is not None else '-'} "
                   f"tagged {tagged_text} {'up' if got.up else 'down'}")
    else:
        emit(row, fmt)


COMMANDS = [switch]
