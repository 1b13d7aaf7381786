"""What every command gets: the settings, and the store and secrets opened on first use.

Light on purpose (CLI start-up, issue 20): the validated Settings (pydantic), the store
(SQLAlchemy) and the secrets (cryptography) are imported when a command first asks for them.
When the configuration sets nothing but where the state and the store are, the settings are
not even loaded until asked for (:func:`appliance.configsource.quick_location`); any other
configuration is loaded and validated at once, so a bad one fails every command, as before.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliance.configsource import Location, quick_location

if TYPE_CHECKING:     # the remote client is imported only when --url is given (cli.main)
    from appliance.cli.remote import Remote
    from appliance.config import Settings
    from appliance.secrets import SecretBox
    from appliance.store import Store


class CliContext:
    def __init__(self, settings: Settings | None = None, *, config_path: Path | None = None,
                 location: Location | None = None) -> None:
        if settings is None and location is None:
            raise ValueError("a CliContext needs the settings or the location they would give")
        self._settings = settings
        self._config_path = config_path
        self._location = location
        self._store: Store | None = None
        self._box: SecretBox | None = None
        self.remote: Remote | None = None   # --url: every supported command goes to this appliance's API

    @classmethod
    def load(cls, config_path: Path | None) -> CliContext:
        """From ``--config`` (or the default file) and the environment: the quick location when
        that is all they set, else the full settings, validated now."""
        quick = quick_location(config_path, os.environ)
        if quick is not None:
            return cls(config_path=config_path, location=quick)
        from appliance.config import load_settings

        return cls(load_settings(config_path), config_path=config_path)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from appliance.config import load_settings

            self._settings = load_settings(self._config_path)
        return self._settings

    @property
    def location(self) -> Location:
        """Where the state directory and the store are."""
        if self._location is None:
            self._location = Location(self.settings.state_dir, self.settings.store_url)
        return self._location

    def _local(self) -> None:
        if self.remote is not None:
            raise click.UsageError("this command works on the local appliance only (drop --url)")

    def unsealed_store(self) -> Store:
        """The store without the audit seal, for the boot role: it never reads the secrets key
        (boot serves no secret) and acts for nobody, so it writes no audit entry."""
        self._local()
        if self._store is None:
            from appliance.statedir import secure_dir
            from appliance.store import open_store

            secure_dir(self.settings.state_dir)
            self._store = open_store(self.settings.store_url)
        return self._store

    def store(self) -> Store:
        self._local()
        if self._store is None:
            from appliance.secrets import audit_seal
            from appliance.statedir import secure_dir
            from appliance.store import open_store

            secure_dir(self.settings.state_dir)
            self._store = open_store(self.settings.store_url,
                                     seal=audit_seal(self.settings.secrets_key_path, self.settings.state_dir))
        return self._store

    def sqlite_file(self) -> Path | None:
        """The local store's SQLite file, for reads made without SQLAlchemy
        (appliance.services.inventory_lite); None when the store is not an existing SQLite
        file (PostgreSQL, or not created yet: :meth:`store` creates it). The state directory's
        and the file's modes are tightened as :meth:`store` would."""
        self._local()
        from appliance.services.inventory_lite import sqlite_file
        from appliance.statedir import private_sqlite, secure_dir

        where = self.location
        db = sqlite_file(where.store_url)
        if db is None or not db.is_file():
            return None
        secure_dir(where.state_dir)
        private_sqlite(db)
        return db

    def box(self) -> SecretBox:
        if self._box is None:
            from appliance.secrets import SecretBox

            self._box = SecretBox(self.settings.secrets_key_path)
        return self._box

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(CliContext)


def local_who() -> str:
    """The local admin as the audit, jobs and token owners name it (DESIGN §7: ``local:NAME``)."""
    return f"local:{getpass.getuser()}"
