"""anvil backup | restore | version."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.errors import BackupError

PASSPHRASE_ENV = "ANVIL_BACKUP_PASSPHRASE"
passphrase_file = click.option(
    "--passphrase-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help=f"Read the passphrase from this file (first line); else env {PASSPHRASE_ENV}, else a prompt.")


def _passphrase(path: Path | None, confirm: bool) -> str:
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise BackupError(f"{path}: cannot read the passphrase file ({exc.strerror})") from None
        if not lines or not lines[0]:
            raise BackupError(f"{path}: the passphrase file is empty")
        return lines[0]
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    return str(click.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm))


@click.command("backup")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@passphrase_file
@pass_ctx
def backup(ctx: CliContext, archive: Path, passphrase_file: Path | None) -> None:
    """Write the whole appliance to one encrypted archive: store, secrets key, audit head, TLS, config."""
    click.echo(write_backup(ctx, archive, _passphrase(passphrase_file, confirm=True)))


def write_backup(ctx: CliContext, archive: Path, passphrase: str) -> str:
    """Seal the appliance into ``archive``; the line that says what was written."""
    from appliance.backup.archive import seal
    from appliance.backup.snapshot import pack, take
    from appliance.progress import for_terminal

    settings = ctx.settings
    progress = for_terminal("backup")
    try:
        progress.stage("reading the store (one transaction) and the state files")
        store = ctx.store()     # migrated to head, and the secrets key exists
        snap = take(store.engine, settings.state_dir, settings.config_file, progress)
        rows = sum(len(r) for r in snap.tables.values())
        progress.stage(f"compressing and encrypting {rows} rows (scrypt key from the passphrase)")
        data = seal(pack(snap), passphrase)
        progress.stage(f"writing {len(data)} bytes to {archive}")
        tmp = archive.with_name(archive.name + ".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        tmp.replace(archive)
    finally:
        progress.close()
    rows = sum(len(r) for r in snap.tables.values())
    return (f"backup written to {archive}: {rows} rows in {len(snap.tables)} tables at schema "
            f"{snap.revision}, {len(snap.files)} state files{', config' if snap.config else ''} "
            f"({len(data)} bytes, Anvil {snap.version})")


@click.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@passphrase_file
@pass_ctx
def restore(ctx: CliContext, archive: Path, passphrase_file: Path | None) -> None:
    """Bring an appliance back from `anvil backup`'s archive, into a fresh state directory."""
    from appliance.backup.archive import open_sealed
    from appliance.backup.snapshot import load, store_is_empty, unpack
    from appliance.config import default_config_path
    from appliance.progress import for_terminal
    from appliance.statedir import private_file, secure_dir
    from appliance.store.db import make_engine

    settings = ctx.settings
    if ctx.remote is not None:
        raise click.UsageError("restore works on the local appliance only (drop --url)")
    passphrase = _passphrase(passphrase_file, confirm=False)
    progress = for_terminal("restore")
    try:
        progress.stage(f"decrypting and checking {archive}")
        # Everything is read and checked before anything is written.
        snap = unpack(open_sealed(archive, passphrase))
        secure_dir(settings.state_dir)
        engine = make_engine(settings.store_url)
        try:
            if not store_is_empty(engine):
                raise BackupError(f"the store at {settings.state_dir} already holds blades, profiles or audit "
                                  "entries; restore into a fresh state directory (or an empty store.url)")
            progress.stage(f"writing {len(snap.files)} state files")
            for rel, data in snap.files.items():
                path = settings.state_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                tmp = path.with_name(path.name + ".restoring")
                tmp.unlink(missing_ok=True)
                private_file(tmp)
                tmp.write_bytes(data)
                tmp.replace(path)
            progress.stage(f"loading the store (schema {snap.revision}), then migrating it to this version's")
            load(engine, snap, progress)
        finally:
            engine.dispose()
    finally:
        progress.close()
    note = ""
    if snap.config is not None:
        target = settings.config_file or default_config_path(os.environ)
        if target.exists() and target.read_bytes() != snap.config:
            target = target.with_name(target.name + ".restored")
            note = f"; the backup's configuration is in {target} (the current one was kept)"
        else:
            note = f"; configuration in {target}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(snap.config)
    rows = sum(len(r) for r in snap.tables.values())
    click.echo(f"restored {rows} rows from {archive} (schema {snap.revision}, Anvil {snap.version}) into "
               f"{settings.state_dir}{note}")


@click.command("version")
@pass_ctx
def version(ctx: CliContext) -> None:
    """This Anvil's version and its store's schema revision."""
    from appliance import __version__
    from appliance.store.db import make_engine
    from appliance.store.migrate import HEAD, current_revision

    click.echo(f"anvil {__version__}")
    engine = make_engine(ctx.settings.store_url) if ctx.settings.store.url or \
        (ctx.settings.state_dir / "anvil.db").exists() else None
    found = current_revision(engine) if engine is not None else None
    if engine is not None:
        engine.dispose()
    click.echo(f"store schema {found or 'none yet'} (this version's head: {HEAD})")
