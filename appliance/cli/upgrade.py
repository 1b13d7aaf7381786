"""anvil upgrade: a new Anvil wheel into this venv, a backup first, the old version put back on failure."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from appliance.cli.backup import _passphrase, passphrase_file, write_backup
from appliance.cli.context import CliContext, pass_ctx


@click.command("upgrade")
@click.argument("wheel", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=False)
@passphrase_file
@click.option("--migrate-only", is_flag=True, hidden=True,
              help="Migrate the store to this version's schema and print it (the upgrade's own step).")
@pass_ctx
def upgrade(ctx: CliContext, wheel: Path | None, passphrase_file: Path | None, migrate_only: bool) -> None:
    """Install a new Anvil wheel, with a backup first; a failing migration puts the old version back."""
    if migrate_only:
        from appliance.store.migrate import current_revision

        click.echo(f"store schema {current_revision(ctx.store().engine)}")
        return
    if wheel is None:
        raise click.UsageError("give the wheel to install: anvil upgrade anvil_appliance-VERSION-py3-none-any.whl")
    from appliance import __version__
    from appliance.backup.upgrade import upgrade_venv, wheel_version

    settings = ctx.settings
    new = wheel_version(wheel)
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        raise click.UsageError(f"anvil runs from {venv}, not a venv: upgrade works on a venv install")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    archive = settings.state_dir / "backups" / f"before-upgrade-{__version__}-to-{new}-{stamp}.anvil-backup"
    archive.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    click.echo(write_backup(ctx, archive, _passphrase(passphrase_file, confirm=True)))
    ctx.close()     # the new version migrates the store in a child process
    config = ["--config", str(settings.config_file)] if settings.config_file else []
    done = upgrade_venv(venv.absolute(), wheel.absolute(), __version__, config)
    click.echo(f"upgraded Anvil {done.old} -> {done.new}, store schema {done.schema}; the previous version is in "
               f"{done.previous}; restart the services (systemctl restart anvil anvil-boot)")
