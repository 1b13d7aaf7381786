"""anvil vm-host enroll|list|show|delete: libvirt hosts whose domain slots are blades."""

from __future__ import annotations

from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.services.vm_hosts import MAX_SLOTS, VmHostInfo, VmHostService, VmHostSpec


def _row(info: VmHostInfo) -> dict[str, Any]:
    data = info.public()
    data["blades"] = [b["name"] + (f"={b['profile']}" if b["profile"] else "") for b in data["blades"]]
    return data


@click.group("vm-host")
def vm_host() -> None:
    """VM hosts: libvirt hosts whose domain slots are blades (driver libvirt)."""


@vm_host.command("enroll")
@click.argument("name")
@click.option("--uri", required=True, help="libvirt URI: qemu:///system, qemu+ssh://USER@HOST/system, "
              "qemu:///system?socket=PATH (a libvirtd on its own socket).")
@click.option("--slots", type=click.IntRange(1, MAX_SLOTS), default=1, show_default=True,
              help="Domains Anvil defines there, each a blade NAME-01 ….")
@click.option("--bridge", default="br0", show_default=True, help="The host's bridge the slots' NICs join.")
@click.option("--bridge-type", type=click.Choice(["linux", "ovs"]), default="linux", show_default=True,
              help="ovs: profile VLANs become OVS port tags; a Linux bridge takes no VLANs.")
@click.option("--cpus", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--memory-mib", type=click.IntRange(64), default=256, show_default=True)
@click.option("--nics", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--accel", type=click.Choice(["qemu", "kvm"]), default="qemu", show_default=True,
              help="qemu = TCG (no hardware virtualisation needed), kvm where the host has it.")
@pass_ctx
def enroll(ctx: CliContext, name: str, uri: str, slots: int, bridge: str, bridge_type: str, cpus: int,
           memory_mib: int, nics: int, accel: str) -> None:
    """Define SLOTS domains on a libvirt host and enrol each as a blade (driver libvirt)."""
    info = VmHostService(ctx.store(), ctx.box()).enroll(VmHostSpec(
        name=name, uri=uri, bridge=bridge, bridge_type=bridge_type, slots=slots, cpus=cpus, memory_mib=memory_mib,
        nics=nics, accel=accel))
    click.echo(f"enrolled VM host {name}: blades {', '.join(b for b, _, _ in info.blades)}")


@vm_host.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List VM hosts with their slots' blades."""
    rows = VmHostService(ctx.store()).list()
    emit([_row(i) if fmt == "table" else i.public() for i in rows], fmt,
         columns=["name", "uri", "bridge", "slots", "cpus", "memoryMiB", "blades"])


@vm_host.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """One VM host, its slots and what is bound to them."""
    info = VmHostService(ctx.store()).get(name)
    emit(_row(info) if fmt == "table" else info.public(), fmt)


@vm_host.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Undefine a VM host's (idle) slot domains and remove it and its blades."""
    gone = VmHostService(ctx.store()).delete(name)
    click.echo(f"deleted VM host {name} and blades {', '.join(gone)}")


COMMANDS = [vm_host]
