"""Entry point: builds the settings once, maps errors to a one-line reason and exit status."""

from __future__ import annotations

import getpass
import importlib
import logging
import sys
from pathlib import Path

import click

from appliance import __version__
from appliance.cli.errors import bug, report

# Every command, by name: its module and object, and the line `anvil --help` shows for it. A
# command's module is imported only when that command runs: `anvil --help` imports none, and
# `anvil blade list` only what blades need (DESIGN §5: the CLI starts in well under a second).
# tests/cli/test_config_and_help.py checks these lines against each command's own docstring.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": ("appliance.cli.audit", "audit", "The append-only, hash-chained record of every change."),
    "backup": ("appliance.cli.backup", "backup",
               "Write the whole appliance to one encrypted archive: store, secrets key, audit head, TLS, config."),
    "blade": ("appliance.cli.blade", "blade", "Physical blades and their BMCs."),
    "blade-pool": ("appliance.cli.blade_pool", "blade_pool",
                   "Blade pools that profiles are assigned from (`spares` holds every blade)."),
    "capacity": ("appliance.cli.metering", "capacity",
                 "Blades, CPUs and memory per blade pool, chassis and tenant: spare, committed, in use, failed."),
    "changes": ("appliance.cli.metering", "changes",
                "Change records of blades, profiles, bindings, VLANs, LUN grants, firmware and BIOS, oldest first."),
    "config": ("appliance.cli.config_cmd", "config", "The effective configuration."),
    "demo": ("appliance.cli.demo", "demo", "Start an emulated rack and the appliance; Ctrl-C stops both."),
    "dr": ("appliance.cli.dr", "dr",
           "Disaster recovery: plans, rehearsals, activation and failback at the recovery site."),
    "failover": ("appliance.cli.failover", "failover",
                 "Failover domains, failover history, blade health and manual fence confirmation."),
    "host-pool": ("appliance.cli.host_pool", "host_pool",
                  "Pools of hypervisor hosts that VM managers grow and shrink."),
    "firmware": ("appliance.cli.firmware", "firmware",
                 "Firmware baselines, each blade's compliance, and rolling firmware updates."),
    "job": ("appliance.cli.job", "job", "Durable jobs: stamp, unstamp, failover."),
    "lab": ("appliance.cli.lab", "lab",
            "An emulated rack on this machine: BMC and switch emulators, enrolled in the inventory."),
    "pool": ("appliance.cli.pool", "pool", "Identity pools: ranges of MACs, WWPNs, WWNNs, UUIDs or IQNs."),
    "profile": ("appliance.cli.profile", "profile", "Server profiles: the portable identity of a server."),
    "rack": ("appliance.cli.rack", "rack",
             "Rack controllers: boot services on each rack's provisioning network, registered with this appliance."),
    "restore": ("appliance.cli.backup", "restore",
                "Bring an appliance back from `anvil backup`'s archive, into a fresh state directory."),
    "serve": ("appliance.cli.serve", "serve", "Run the appliance."),
    "site": ("appliance.cli.site", "site", "Paired sites (peer appliances) and the replication of profiles to them."),
    "switch": ("appliance.cli.switch", "switch",
               "Network switches, the cabling of blade NICs to their ports, and port VLANs."),
    "template": ("appliance.cli.template", "template", "Profile templates: identities left as pool:<name>."),
    "token": ("appliance.cli.user", "token", "Bearer tokens for the API."),
    "upgrade": ("appliance.cli.upgrade", "upgrade",
                "Install a new Anvil wheel, with a backup first; a failing migration puts the old version back."),
    "usage": ("appliance.cli.metering", "usage",
              "Blade-hours per profile, tenant and host pool in [--from, --to), from the binding change records."),
    "user": ("appliance.cli.user", "user", "Local users of the console and API."),
    "version": ("appliance.cli.backup", "version", "This Anvil's version and its store's schema revision."),
    "vm-host": ("appliance.cli.vm_host", "vm_host",
                "VM hosts: libvirt hosts whose domain slots are blades (driver libvirt)."),
}
# Modules that add subcommands to another command's group when imported.
EXTENDS: dict[str, tuple[str, ...]] = {"blade": ("appliance.cli.discovered",)}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attr, _ = entry
        command = getattr(importlib.import_module(module), attr)
        for extra in EXTENDS.get(cmd_name, ()):
            importlib.import_module(extra)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The short help from the table: listing the commands imports none of them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry[2]) for name, entry in sorted(COMMANDS.items())])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Configuration file (default: ANVIL_CONFIG, the per-user state dir, "
              "or /etc/anvil/anvil.toml for the service).")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.option("--url", envvar="ANVIL_URL", default=None,
              help="Act on a remote appliance through its API (https://HOST:8443); env ANVIL_URL.")
@click.option("--token", envvar="ANVIL_TOKEN", default=None, help="API token for --url; env ANVIL_TOKEN.")
@click.option("--ca-cert", envvar="ANVIL_CA_CERT", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CA certificate (or the appliance's self-signed one) to check --url against.")
@click.option("--insecure", is_flag=True, help="Do not check the remote appliance's TLS certificate.")
@click.version_option(__version__, prog_name="anvil")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: bool, url: str | None, token: str | None,
        ca_cert: Path | None, insecure: bool) -> None:
    """Anvil: stamp server profiles onto bare-metal blades."""
    from appliance.cli.context import CliContext
    from appliance.store.actor import Actor, set_actor

    # The settings now: a bad configuration fails every command (the context validates it,
    # or sees that it names only where the state and store are, which cannot be bad).
    obj = CliContext.load(config_path)
    # Commands stay quiet unless -v; `serve` raises the level to the configured one.
    logging.basicConfig(level="DEBUG" if verbose else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Changes made by this command are audited as the OS user (DESIGN §7).
    set_actor(Actor(who=f"local:{getpass.getuser()}", origin="cli"))
    ctx.call_on_close(lambda: set_actor(None))  # the actor is this command's, not the process's
    if url:
        from appliance.cli.remote import Remote

        obj.remote = Remote(url, token, ca_cert=ca_cert, insecure=insecure)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


# click ≥ 8.2 raises this for a group called without a command (8.1 printed the help itself).
_HELP_ASKED: type[click.UsageError] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """Run one command; every failure is reported in one format (appliance.cli.errors)."""
    try:
        rv = cli.main(prog_name="anvil", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except _HELP_ASKED as exc:   # `anvil`, `anvil blade`: the help, as asked
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        found = report(exc)
        if found is None:   # a bug: say so in one line; -v shows the traceback
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            found = bug(exc)
        found.print()
        sys.exit(found.status)
    sys.exit(rv if isinstance(rv, int) else 0)
