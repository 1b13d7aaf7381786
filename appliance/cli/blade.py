"""anvil blade enroll|list|show|delete, and power|boot|inspect|health through the driver at once.

Imported for every blade command, ``anvil blade list`` among them, which must start in 0.3 s
(issue 20): the services, the store and asyncio are imported by the commands that use them,
and ``list`` reads a local SQLite store without SQLAlchemy (appliance.services.inventory_lite).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import Column, emit, output_option, table
from appliance.drivers.protocols import (
    Bmc,
    BmcDriver,
    BootDevice,
    BootMode,
    BootSetting,
    PowerAction,
    PowerState,
    Secret,
)
from appliance.errors import AnvilError, Issue, ValidationError
from appliance.services.blade_rows import SORTS, age_text

if TYPE_CHECKING:
    from appliance.services.blades import NicSpec

T = TypeVar("T")


def parse_nic(text: str) -> NicSpec:
    """``NAME=MAC`` or ``NAME=MAC@SWITCH:PORT``."""
    from appliance.services.blades import NicSpec

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
    import yaml

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
@click.option("--rack", default=None, help="The rack controller that network-boots it (default: this appliance's "
                                           "own boot role).")
@pass_ctx
def enroll(ctx: CliContext, name: str, bmc: str, username: str, password_stdin: bool, driver: str | None,
           no_verify_tls: bool, nics: tuple[str, ...], cpus: int | None, memory_gib: int | None,
           chassis: str | None, slot: int | None, facts_path: Path | None, rack: str | None) -> None:
    """Enrol a blade. The BMC password is read from stdin or ANVIL_BMC_PASSWORD, never an argument."""
    from appliance.services.blades import BladeService, Enrollment

    facts = _facts_file(facts_path) if facts_path else {}
    if rack is not None:
        from appliance.services.racks import RackService

        RackService(ctx.store()).get(rack)      # a missing rack is refused before anything is enrolled
    req = Enrollment(name=name, bmc=bmc, username=username, password=_password(password_stdin), driver=driver,
                     verify_tls=not no_verify_tls, cpus=cpus, memory_gib=memory_gib, chassis=chassis, slot=slot,
                     nics=tuple(parse_nic(n) for n in nics), facts=facts)
    info = BladeService(ctx.store(), ctx.box()).enroll(req)
    if rack is not None:
        RackService(ctx.store()).set_blade_rack(info.name, rack)
    click.echo(f"enrolled blade {info.name} ({info.driver}, {len(info.nics)} NICs)"
               + (f", served by rack {rack}" if rack else ""))


BLADE_COLUMNS: list[Column] = ["name", "state", "profile", "power", ("healthText", "HEALTH (AGE)"), "chassis", "slot",
                               "cpus", ("memoryGiB", "MEM GiB")]
BLADE_WIDE: list[Column] = [*BLADE_COLUMNS, ("nicCount", "NICS"), "driver", "bmc", ("stateReason", "REASON")]
FILTER_KEYS = ("state", "chassis", "profile", "tenant")


def parse_filters(items: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, str]:
    """``--filter KEY=VALUE`` (repeatable) as a dict; a key not in ``keys`` is a usage error."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in keys or not value:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE with KEY one of {', '.join(keys)}",
                                     param_hint="--filter")
        out[key] = value
    return out


def blade_row(b: dict[str, Any]) -> dict[str, Any]:
    """A blade of the inventory as a table row: health with the age of the sample it comes from."""
    health = f"{b['health']} ({age_text(b['healthAge'])})" if b.get("health") else None
    return {**b, "healthText": health, "nicCount": len(b.get("nics") or [])}


@blade.command("list")
@click.option("--state", default=None, help="Only blades in this state.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="state, chassis, profile (NAME or TENANT/NAME) or tenant of the bound profile; repeatable.")
@click.option("--search", default=None, help="Text in the name, chassis, state, bound profile or its tenant.")
@click.option("--sort", type=click.Choice(SORTS), default="name", show_default=True)
@output_option(wide=True)
@pass_ctx
def list_(ctx: CliContext, state: str | None, filters: tuple[str, ...], search: str | None, sort: str,
          fmt: str) -> None:
    """List blades: state, the profile each runs, and power and health as the monitor last saw them.

    The BMC's URL and the driver are in -o wide (and show, json, yaml)."""
    f = parse_filters(filters, FILTER_KEYS)
    state = f.get("state", state)
    if ctx.remote is not None:
        rows: list[dict[str, Any]] = []
        after, offset = None, 0
        while True:   # page by page
            page = ctx.remote.json("GET", "/blades", query={
                "state": state, "chassis": f.get("chassis"), "profile": f.get("profile"), "tenant": f.get("tenant"),
                "search": search, "sort": sort, "limit": 1000, "after": after, "offset": offset or None})
            rows += page["items"]
            after, offset = page["next"], offset + len(page["items"])
            if not page["items"] or (sort == "name" and not after) or (sort != "name" and offset >= page["total"]):
                break
    else:
        rows = _read_local(ctx, state, f, search, sort)
    emit([blade_row(b) for b in rows] if fmt in ("table", "wide") else rows, fmt, columns=BLADE_COLUMNS,
         wide=BLADE_WIDE)


def _read_local(ctx: CliContext, state: str | None, f: dict[str, str], search: str | None,
                sort: str) -> list[dict[str, Any]]:
    """The local inventory's blades: read straight from a SQLite store when it can be (no
    SQLAlchemy to import), else through the Inventory service, which opens (creates, migrates)
    the store. The same rows either way."""
    db = None if search else ctx.sqlite_file()
    if db is not None:
        from appliance.services.inventory_lite import read_blades

        got = read_blades(db, state=state, chassis=f.get("chassis"), profile=f.get("profile"),
                          tenant=f.get("tenant"), sort=sort)
        if got is not None:
            return got
    from appliance.services.inventory import BladeFilter, Inventory

    return Inventory(ctx.store()).page(
        BladeFilter(state=state, chassis=f.get("chassis"), profile=f.get("profile"),
                    bound_tenant=f.get("tenant"), search=search), limit=1_000_000, sort=sort)[0]


@blade.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """Show one blade: its facts, NICs and cabling, the profile it runs, and the monitor's last
    power and health sample (the password is always masked)."""
    info = ctx.remote.json("GET", f"/blades/{name}") if ctx.remote is not None else _local_detail(ctx, name)
    if fmt != "table":
        emit(info, fmt)
        return
    nics = info.pop("nics", [])
    facts = info.pop("facts", {}) or {}
    health = f"{info['health']}, sampled {age_text(info['healthAge'])} ago" if info.get("health") else "no sample yet"
    summary = {k: info.get(k) for k in ("name", "state", "profile", "power", "driver", "bmc", "username",
                                        "password", "chassis", "slot", "cpus", "memoryGiB")}
    summary["health"] = health + (f" ({info['healthDetail']})" if info.get("healthDetail") not in (None, "ok")
                                  else "")
    summary.update({f"facts.{key}": _fact(value) for key, value in facts.items()})
    emit(summary, fmt)
    click.echo("")
    click.echo(table(nics, ["name", "mac", "switch", "port"]) if nics else "no NICs enrolled")


def _local_detail(ctx: CliContext, name: str) -> dict[str, Any]:
    """What `blade show` shows: the blade, its profile and its last health sample."""
    from appliance.services.blades import BladeService
    from appliance.services.inventory import Inventory

    inv = Inventory(ctx.store())
    info = BladeService(ctx.store(), ctx.box()).get(name).public()
    info["profile"] = inv.bound_profile(name)
    info["tenant"] = info["profile"].partition("/")[0] if info["profile"] else None
    info.update(inv.health_of(name))
    return info


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(", ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else str(item)
                         for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


@blade.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Remove a blade that holds no profile."""
    from appliance.services.blades import BladeService

    BladeService(ctx.store(), ctx.box()).delete(name)
    click.echo(f"deleted blade {name}")


def _with_driver(ctx: CliContext, name: str, fn: Callable[[BmcDriver, Bmc], Awaitable[T]]) -> T:
    """Run ``fn`` with the blade's driver on a fresh event loop; the driver is closed afterwards."""
    import asyncio


    async def run() -> T:
        # Imported here: listing blades needs no driver (and drivers cost CLI start-up time).
        from appliance.services.hardware import Hardware

        async with Hardware(ctx.store(), ctx.box()) as hw:
            driver, bmc = hw.bmc(name)
            return await fn(driver, bmc)

    return asyncio.run(run())


class PowerNotConfirmed(AnvilError):
    retryable = True


async def confirm_power(driver: BmcDriver, bmc: Bmc, want: PowerState, timeout: float,
                        interval: float = 0.2) -> PowerState:
    """Poll ``get_power`` until it reads ``want``; PowerNotConfirmed after ``timeout`` s.

    A retryable driver error while polling (a BMC busy with the change) is tried again
    until the deadline; a fatal one is raised at once.
    """
    import asyncio

    from appliance.drivers.errors import DriverError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: PowerState | str = "unknown"
    while True:
        try:
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                last = await driver.get_power(bmc)
        except TimeoutError:
            pass
        except DriverError as exc:
            if not exc.retryable:
                raise
            last = f"unknown ({exc.reason})"
        if last == want:
            return want
        if loop.time() + interval > deadline:
            raise PowerNotConfirmed(f"blade {bmc.blade}: power not {want} within {timeout:g}s (reads {last})")
        await asyncio.sleep(interval)


POWER_CHOICES = ["on", "off", "soft-off", "reset", "status"]


@blade.command("set-rack")
@click.argument("name")
@click.argument("rack", required=False)
@click.option("--none", "no_rack", is_flag=True, help="Served by the appliance's own boot role again.")
@pass_ctx
def set_rack(ctx: CliContext, name: str, rack: str | None, no_rack: bool) -> None:
    """Say which rack controller serves a blade's network boot (DHCP, TFTP, boot HTTP)."""
    from appliance.services.racks import RackService

    if (rack is None) == (not no_rack):
        raise click.UsageError("give a RACK, or --none for the appliance's own boot role")
    RackService(ctx.store()).set_blade_rack(name, None if no_rack else rack)
    click.echo(f"blade {name} is served by " + (f"rack {rack}" if rack else "the appliance's own boot role"))


@blade.command("maintenance")
@click.argument("name")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("--reason", default="", help="Why (shown with the blade).")
@pass_ctx
def maintenance(ctx: CliContext, name: str, mode: str, reason: str) -> None:
    """Take a blade out of the spare pool for maintenance, or return it."""
    if ctx.remote is not None:
        got = ctx.remote.json("POST", f"/blades/{name}/maintenance", json_body={"on": mode == "on", "reason": reason})
        click.echo(f"blade {name} is {got['state']}")
        return
    from appliance.services.blades import BladeService

    info = BladeService(ctx.store(), ctx.box()).set_maintenance(name, mode == "on", reason=reason)
    click.echo(f"blade {name} is {info.state}")


@blade.command("power")
@click.argument("name")
@click.argument("action", type=click.Choice(POWER_CHOICES))
@click.option("--no-wait", is_flag=True, help="Do not confirm on/off by polling the power state.")
@click.option("--timeout", type=click.FloatRange(0.5, 600), default=60.0, show_default=True,
              help="Seconds to wait for on/off to be confirmed.")
@pass_ctx
def power(ctx: CliContext, name: str, action: str, no_wait: bool, timeout: float) -> None:
    """Power a blade on, off (hard), soft-off (ACPI), reset it, or read its power state.

    on and off are confirmed by reading the state back until it matches (at most
    --timeout seconds), unless --no-wait.
    """
    if ctx.remote is not None:
        if action == "status":
            got = ctx.remote.json("GET", f"/blades/{name}/power")
            click.echo(f"{name}: {got['power']}")
        else:
            got = ctx.remote.json("POST", f"/blades/{name}/power", json_body={"action": action})
            click.echo(f"{name}: {action} accepted (reads {got['power']})")
        return

    async def act(driver: BmcDriver, bmc: Bmc) -> str:
        if action == "status":
            return str(await driver.get_power(bmc))
        await driver.set_power(bmc, PowerAction(action))
        if action in ("on", "off") and not no_wait:
            return str(await confirm_power(driver, bmc, PowerState(action), timeout))
        return f"{action} accepted"

    click.echo(f"{name}: {_with_driver(ctx, name, act)}")


@blade.command("boot")
@click.argument("name")
@click.argument("device", type=click.Choice([d.value for d in BootDevice]))
@click.option("--persistent", is_flag=True, help="Keep this device for every boot (default: next boot only).")
@click.option("--mode", type=click.Choice([BootMode.UEFI.value, BootMode.LEGACY.value]), default=None,
              help="Firmware boot mode (default: leave it as the BMC has it).")
@pass_ctx
def boot(ctx: CliContext, name: str, device: str, persistent: bool, mode: str | None) -> None:
    """Set the boot device of a blade's next boot (or every boot), then print what the BMC reads back."""
    want = BootSetting(BootDevice(device), BootMode(mode) if mode else BootMode.UNKNOWN, persistent)

    async def act(driver: BmcDriver, bmc: Bmc) -> BootSetting:
        await driver.set_next_boot(bmc, want)
        return await driver.get_next_boot(bmc)

    got = _with_driver(ctx, name, act)
    click.echo(f"{name}: boot {got.device} mode {got.mode} {'persistent' if got.persistent else 'once'}")


@blade.command("inspect")
@click.argument("name")
@output_option()
@pass_ctx
def inspect(ctx: CliContext, name: str, fmt: str) -> None:
    """Read the blade's facts from its BMC into the inventory.

    CPUs, threads, memory, NICs by their burned-in MACs (each NIC keeps its name and
    cabling; the MAC it uses now is recorded beside it when it differs), HBAs, firmware
    versions, system UUID, model and serial. VLAN and team interfaces and the BMC's host
    interface are not NICs. Inspecting again changes nothing that did not change.
    """

    async def act(driver: BmcDriver, bmc: Bmc) -> Any:
        return await driver.facts(bmc)

    from appliance.services.blades import BladeService

    found = _with_driver(ctx, name, act)
    info = BladeService(ctx.store(), ctx.box()).apply_facts(name, found)
    if fmt == "table":
        click.echo(f"inspected blade {name}: {info.cpus} CPUs, {info.memory_gib} GiB, {len(info.nics)} NICs, "
                   f"{len(info.facts.get('hbas') or [])} HBAs")
    else:
        emit(_local_detail(ctx, name), fmt)


@blade.command("health")
@click.argument("name")
@pass_ctx
def health(ctx: CliContext, name: str) -> None:
    """Read the blade's health from its BMC."""

    async def act(driver: BmcDriver, bmc: Bmc) -> Any:
        return await driver.health(bmc)

    got = _with_driver(ctx, name, act)
    click.echo(f"{name}: {got.state}" + (f" ({got.reason})" if got.reason else ""))


COMMANDS = [blade]
