"""anvil blade discovered [list] | dismiss MAC | enroll MAC NAME: machines that network-booted
unknown and posted their facts (appliance.services.discovered)."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli.blade import _facts_file, _password, blade, parse_nic
from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option

# The services are imported by the commands: this module is loaded with every blade command,
# `anvil blade list` among them (CLI start-up, issue 20).


@blade.group("discovered", invoke_without_command=True)
@output_option()
@pass_ctx
@click.pass_context
def discovered(click_ctx: click.Context, ctx: CliContext, fmt: str) -> None:
    """Machines that booted on the provisioning network unknown: list (default), dismiss, enroll."""
    if click_ctx.invoked_subcommand is not None:
        return
    from appliance.services.discovered import DiscoveredService

    rows = [d.public() for d in DiscoveredService(ctx.store()).list()]
    if fmt == "table":
        rows = [{"mac": r["mac"], "uuid": r["uuid"] or "", "from": r["peer"] or "", "lastSeen": r["lastSeen"][:19],
                 "facts": len(r["facts"])} for r in rows]
    emit(rows, fmt, columns=["mac", "uuid", "from", "lastSeen", "facts"])


@discovered.command("dismiss")
@click.argument("mac")
@pass_ctx
def dismiss(ctx: CliContext, mac: str) -> None:
    """Forget a discovered machine (it posts again when it next boots unknown)."""
    from appliance.services.discovered import DiscoveredService

    DiscoveredService(ctx.store()).dismiss(mac)
    click.echo(f"dismissed {mac}")


@discovered.command("enroll")
@click.argument("mac")
@click.argument("name")
@click.option("--bmc", required=True, help="redfish+https://HOST[:PORT]/redfish/v1/Systems/ID, or ipmi://HOST[:PORT]")
@click.option("--username", required=True, help="BMC user.")
@click.option("--password-stdin", is_flag=True, help="Read the BMC password from standard input.")
@click.option("--driver", default=None, help="Driver name (default: from the URL scheme).")
@click.option("--no-verify-tls", is_flag=True, help="Accept the BMC's self-signed certificate.")
@click.option("--nic", "nics", multiple=True, help="NAME=MAC[@SWITCH:PORT]; default: the discovered MAC as nic0.")
@click.option("--facts-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="More facts (YAML mapping).")
@pass_ctx
def enroll(ctx: CliContext, mac: str, name: str, bmc: str, username: str, password_stdin: bool, driver: str | None,
           no_verify_tls: bool, nics: tuple[str, ...], facts_file: Path | None) -> None:
    """Enrol a discovered machine as blade NAME (its MAC becomes a NIC, its facts the blade's)."""
    from appliance.services.blades import BladeService, Enrollment
    from appliance.services.discovered import DiscoveredService

    req = Enrollment(name=name, bmc=bmc, username=username, password=_password(password_stdin), driver=driver,
                     verify_tls=not no_verify_tls, nics=tuple(parse_nic(n) for n in nics),
                     facts=_facts_file(facts_file) if facts_file else {})
    info = DiscoveredService(ctx.store()).enroll(mac, BladeService(ctx.store(), ctx.box()), req)
    click.echo(f"enrolled blade {info.name} from discovered {mac}")


COMMANDS: list[click.Command] = []    # attached to `anvil blade` above
