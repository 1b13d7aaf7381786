"""What every command gets: the settings, and the store and secrets opened on first use."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from appliance.config import Settings
from appliance.secrets import SecretBox, audit_seal
from appliance.statedir import secure_dir
from appliance.store import Store, open_store

if TYPE_CHECKING:     # the remote client is imported only when --url is given (cli.main)
    from appliance.cli.remote import Remote


@dataclass
class CliContext:
    settings: Settings
    _store: Store | None = field(default=None, repr=False)
    _box: SecretBox | None = field(default=None, repr=False)
    remote: Remote | None = None   # --url: every supported command goes to this appliance's API

    def unsealed_store(self) -> Store:
        """The store without the audit seal, for the boot role: it never reads the secrets key
        (boot serves no secret) and acts for nobody, so it writes no audit entry."""
        if self.remote is not None:
            raise click.UsageError("this command works on the local appliance only (drop --url)")
        if self._store is None:
            secure_dir(self.settings.state_dir)
            self._store = open_store(self.settings.store_url)
        return self._store

    def store(self) -> Store:
        if self.remote is not None:
            raise click.UsageError("this command works on the local appliance only (drop --url)")
        if self._store is None:
            secure_dir(self.settings.state_dir)
            self._store = open_store(self.settings.store_url,
                                     seal=audit_seal(self.settings.secrets_key_path, self.settings.state_dir))
        return self._store

    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox(self.settings.secrets_key_path)
        return self._box

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(CliContext)


def local_who() -> str:
    """The local admin as the audit, jobs and token owners name it (DESIGN §7: ``local:NAME``)."""
    return f"local:{getpass.getuser()}"
