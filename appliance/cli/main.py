"""Entry point: builds the settings once, maps errors to a one-line reason and exit status."""

from __future__ import annotations

import getpass
import logging
import sys
from pathlib import Path

import click

from appliance import __version__
from appliance.cli import (
    audit,
    blade,
    blade_pool,
    config_cmd,
    demo,
    discovered,
    failover,
    job,
    lab,
    pool,
    profile,
    serve,
    switch,
    template,
    user,
)
from appliance.cli.context import CliContext
from appliance.cli.errors import bug, report
from appliance.config import load_settings
from appliance.store.audit import Actor, set_actor


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    settings = load_settings(config_path)
    # Commands stay quiet unless -v; `serve` raises the level to the configured one.
    logging.basicConfig(level="DEBUG" if verbose else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Changes made by this command are audited as the OS user (DESIGN §7).
    set_actor(Actor(who=f"local:{getpass.getuser()}", origin="cli"))
    ctx.call_on_close(lambda: set_actor(None))  # the actor is this command's, not the process's
    obj = CliContext(settings=settings)
    if url:
        from appliance.cli.remote import Remote

        obj.remote = Remote(url, token, ca_cert=ca_cert, insecure=insecure)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


for module in (profile, template, pool, blade, discovered, blade_pool, switch, lab, demo, job, config_cmd, serve, user,
               audit, failover):
    for command in module.COMMANDS:
        cli.add_command(command)


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
