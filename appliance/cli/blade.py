"""anvil blade enroll|list|show|delete."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.drivers.protocols import Secret
from appliance.errors import Issue, ValidationError
from appliance.services.blades import BladeService, Enrollment, NicSpec


def parse_nic(text: str) -> NicSpec:
    """``NAME=MAC`` or ``NAME=MAC@SWITCH:PORT``."""
    name, eq, rest = text.partition("=")
    if not eq or not name:
        raise click.BadParameter(f"{text!r} is not NAME=MAC[@SWITCH:PORT]", param_hint="--nic")
    mac, at, cable = rest.partition("@")
    if at:
        switch, colon, port = cable.partition(":")
        if not colon or not switch or not port:
            raise click.BadParameter(f"{text!r}: cabling must be @SWITCH:PORT", param_hint="--nic")
        return NicSpec(name, mac, switch, port)
    return NicSpec(name, mac)


def _facts_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError([Issue("", "facts must be a mapping")], source=str(path))
    return data


def _password(from_stdin: bool) -> Secret:
    if from_stdin:
        line = sys.stdin.readline()
        return Secret(line.rstrip("\r\n"))
    env = os.environ.get("ANVIL_BMC_PASSWORD")
    if env is not None:
        return Secret(env)
    raise click.UsageError("the BMC password comes from --password-stdin or ANVIL_BMC_PASSWORD")


@click.group("blade")
def blade() -> None:
    """Physical blades and their BMCs."""


@blade.command("enroll")
@click.argument("name")
@click.option("--bmc", required=True, help="redfish+https://HOST[:PORT]/redfish/v1/Systems/ID, or ipmi://HOST[:PORT]")
@click.option("--username", required=True, help="BMC user.")
@click.option("--password-stdin", is_flag=True, help="Read the BMC password from standard input.")
@click.option("--driver", default=None, help="Driver name (default: from the URL scheme).")
@click.option("--no-verify-tls", is_flag=True, help="Accept the BMC's self-signed certificate.")
@click.option("--nic", "nics", multiple=True, metavar="NAME=MAC[@SWITCH:PORT]", help="A NIC, in order; repeatable.")
@click.option("--cpus", type=int, default=None)
@click.option("--memory-gib", type=int, default=None)
@click.option("--chassis", default=None)
@click.option("--slot", type=int, default=None)
@click.option("--facts", "facts_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML with more facts (hbas, model, serial, firmware).")
@pass_ctx
def enroll(ctx: CliContext, name: str, bmc: str, username: str, password_stdin: bool, driver: str | None,
           no_verify_tls: bool, nics: tuple[str, ...], cpus: int | None, memory_gib: int | None,
           chassis: str | None, slot: int | None, facts_path: Path | None) -> None:
    """Enrol a blade. The BMC password is read from stdin or ANVIL_BMC_PASSWORD, never an argument."""
    facts = _facts_file(facts_path) if facts_path else {}
    req = Enrollment(name=name, bmc=bmc, username=username, password=_password(password_stdin), driver=driver,
                     verify_tls=not no_verify_tls, cpus=cpus, memory_gib=memory_gib, chassis=chassis, slot=slot,
                     nics=tuple(parse_nic(n) for n in nics), facts=facts)
    info = BladeService(ctx.store(), ctx.box()).enroll(req)
    click.echo(f"enrolled blade {info.name} ({info.driver}, {len(info.nics)} NICs)")


@blade.command("list")
@click.option("--state", default=None, help="Only blades in this state.")
@output_option()
@pass_ctx
def list_(ctx: CliContext, state: str | None, fmt: str) -> None:
    """List blades."""
    rows = [b.public() for b in BladeService(ctx.store(), ctx.box()).list(state=state)]
    emit(rows, fmt, columns=["name", "state", "driver", "bmc", "cpus", "memoryGiB", "chassis", "slot"])


@blade.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one blade (the password is always masked)."""
    emit(BladeService(ctx.store(), ctx.box()).get(name).public(), fmt)


@blade.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Remove a blade that holds no profile."""
    BladeService(ctx.store(), ctx.box()).delete(name)
    click.echo(f"deleted blade {name}")


COMMANDS = [blade]
