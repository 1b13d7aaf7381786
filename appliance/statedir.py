"""The state directory and the store's files are private to the appliance's user.

They hold password hashes, session CSRF tokens, every tenant's profiles and the audit
trail; systemd's StateDirectoryMode covers the packaged service, and this covers every
other way of running Anvil (``anvil serve`` by hand, the CLI, the lab). Modes are only
ever tightened, and only on what this user owns.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~mode:
        path.chmod(stat.S_IMODE(st.st_mode) & mode)


def secure_dir(path: Path) -> None:
    """Create ``path`` (0700) if missing, else take group and other access away."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing, else take group and other access away."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _tighten(path, FILE_MODE)


def private_sqlite(db: Path) -> None:
    """The database and its WAL and shared-memory files: SQLite gives the last two the
    database file's mode when it creates them, so the database is made private first."""
    private_file(db)
    for suffix in ("-wal", "-shm", "-journal"):
        _tighten(db.with_name(db.name + suffix), FILE_MODE)
