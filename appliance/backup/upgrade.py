"""Upgrading a venv install of Anvil to a new wheel, safely.

A backup first (the caller writes it), the current venv copied aside to ``<venv>.previous``, the
wheel installed with pip (offline: the wheel's folder is the only index), then the store migrated
by the *new* version in a child process. If that fails, the old venv is put back, so the old
version runs again on the store, which the failed migration left as it was (migrations run in
one transaction, and a SQLite store is copied first). The appliance image upgrades by booting a
newer ISO instead: its venv is on a read-only squashfs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import AnvilError

_WHEEL = re.compile(r"anvil_appliance-(?P<version>[0-9][0-9A-Za-z.+!-]*?)-py3-none-any\.whl")


class UpgradeError(AnvilError):
    """An upgrade did not happen; the message says what was put back."""


@dataclass(frozen=True)
class Outcome:
    old: str
    new: str
    schema: str
    previous: Path


def wheel_version(wheel: Path) -> str:
    m = _WHEEL.fullmatch(wheel.name)
    if m is None:
        raise UpgradeError(f"{wheel}: not an Anvil wheel (anvil_appliance-VERSION-py3-none-any.whl)")
    return m.group("version")


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _last_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit status {res.returncode}"


def upgrade_venv(venv: Path, wheel: Path, old: str, config_args: list[str]) -> Outcome:
    """Install ``wheel`` into ``venv`` and migrate the store with it; on failure put ``venv`` back."""
    new = wheel_version(wheel)
    python, anvil = venv / "bin/python", venv / "bin/anvil"
    previous = venv.with_name(venv.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    shutil.copytree(venv, previous, symlinks=True)
    installed = _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                      "--find-links", str(wheel.parent), str(wheel)])
    if installed.returncode == 0:
        migrated = _run([str(anvil), *config_args, "upgrade", "--migrate-only"])
        if migrated.returncode == 0:
            schema = migrated.stdout.strip().rsplit(" ", 1)[-1]
            return Outcome(old, new, schema, previous)
        step, why = "migrating the store", _last_line(migrated)
    else:
        step, why = "installing the wheel", _last_line(installed)
    # Put the old version back exactly as it was (same path, so its scripts still point at it).
    shutil.rmtree(venv)
    previous.rename(venv)
    check = _run([str(anvil), *config_args, "version"])
    state = check.stdout.strip().replace("\n", ", ") if check.returncode == 0 else f"NOT RUNNING: {_last_line(check)}"
    raise UpgradeError(f"upgrade to {new} failed while {step} ({why}); Anvil {old} was put back ({state})")
