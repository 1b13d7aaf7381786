"""`anvil upgrade WHEEL` on a venv install: a backup first, the new wheel installed, the store
migrated by the new version; a deliberately failing migration puts the old version back, which
still runs on the store it left as it was.

The venv under test holds this checkout as a wheel (the "old" version) and sees the
dependencies of this checkout's .venv through a .pth file; the "new" wheels are this checkout
with a higher version and one more migration, which works or raises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import __version__
from appliance.store.migrate import HEAD

REPO = Path(__file__).resolve().parents[2]
NEXT = f"{int(HEAD) + 1:04d}"
MIGRATION = f'''"""upgrade test
Revision ID: {NEXT}
Revises: {HEAD}
"""
import sqlalchemy as sa
from alembic import op

revision = "{NEXT}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("upgrade_probe", sa.Column("id", sa.Integer, primary_key=True))
    FAIL
'''

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def build_wheel(src: Path, out: Path) -> Path:
    res = subprocess.run([str(REPO / ".venv/bin/uv"), "build", "-q", "--wheel", "--out-dir", str(out), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wheel,) = out.glob("anvil_appliance-*.whl")
    return wheel


def new_version(tmp: Path, version: str, fail: bool) -> Path:
    src = tmp / f"src-{version}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("appliance", "pxe", "profiles", "firmware"):
        shutil.copytree(REPO / part, src / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, src / part)
    init = src / "appliance/__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', f'__version__ = "{version}"'))
    pyproject = src / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{__version__}"', f'version = "{version}"', 1))
    migrate = src / "appliance/store/migrate.py"
    migrate.write_text(migrate.read_text().replace(f'HEAD = "{HEAD}"', f'HEAD = "{NEXT}"'))
    body = MIGRATION.replace("FAIL", 'raise RuntimeError("deliberately failing migration")' if fail else "pass")
    (src / f"appliance/store/migrations/versions/{NEXT}_upgrade_probe.py").write_text(body)
    return build_wheel(src, tmp / f"wheel-{version}")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("upgrade-wheels")
    return {"old": build_wheel(REPO, tmp / "wheel-old"), "bad": new_version(tmp, "0.99.1", fail=True),
            "good": new_version(tmp, "0.99.2", fail=False)}


@pytest.fixture
def install(tmp_path: Path, wheels: dict[str, Path]) -> tuple[Path, list[str], dict[str, str]]:
    """A venv holding the old wheel, a state directory with a user in its store, and the env to run it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    deps = next((REPO / ".venv/lib").glob("python3.*/site-packages"))
    (site / "zz_checkout_deps.pth").write_text(f"{deps}\n")
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheels["old"])], check=True, timeout=300)
    state = tmp_path / "state"
    conf = tmp_path / "anvil.toml"
    conf.write_text(f'state_dir = "{state}"\n')
    (tmp_path / "pass").write_text("backup-passphrase-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANVIL_", "PIP_", "VIRTUAL_ENV"))}
    args = ["--config", str(conf)]
    res = subprocess.run([str(venv / "bin/anvil"), *args, "user", "add", "alice", "--role", "operator",
                          "--password-stdin"], input="alice-pass-1\n", capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return venv, args, env


def anvil(venv: Path, args: list[str], env: dict[str, str], *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin/anvil"), *args, *more], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_failing_migration_puts_the_old_version_back_on_an_intact_store(
        install: tuple[Path, list[str], dict[str, str]], wheels: dict[str, Path], tmp_path: Path) -> None:
    venv, args, env = install
    res = anvil(venv, args, env, "upgrade", str(wheels["bad"]), "--passphrase-file", str(tmp_path / "pass"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "upgrade to 0.99.1 failed while migrating the store" in res.stderr, res.stderr
    assert "deliberately failing migration" in res.stderr and f"Anvil {__version__} was put back" in res.stderr
    assert "backup written to" in res.stdout
    version = anvil(venv, args, env, "version")
    assert version.stdout.splitlines() == [f"anvil {__version__}", f"store schema {HEAD} (this version's head: {HEAD})"]
    users = anvil(venv, args, env, "user", "list", "-o", "json")
    assert users.returncode == 0 and '"alice"' in users.stdout, users.stderr
    assert len(list((tmp_path / "state/backups").glob(f"before-upgrade-{__version__}-to-0.99.1-*.anvil-backup"))) == 1


def test_an_upgrade_migrates_the_store_and_keeps_the_previous_version(
        install: tuple[Path, list[str], dict[str, str]], wheels: dict[str, Path], tmp_path: Path) -> None:
    venv, args, env = install
    res = anvil(venv, args, env, "upgrade", str(wheels["good"]), "--passphrase-file", str(tmp_path / "pass"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(rf"upgraded Anvil {re.escape(__version__)} -> 0\.99\.2, store schema {NEXT}", res.stdout)
    version = anvil(venv, args, env, "version")
    assert version.stdout.splitlines() == ["anvil 0.99.2", f"store schema {NEXT} (this version's head: {NEXT})"]
    assert '"alice"' in anvil(venv, args, env, "user", "list", "-o", "json").stdout
    previous = subprocess.run([str(tmp_path / "venv.previous/bin/python"), "-c",
                               "import appliance; print(appliance.__version__)"], capture_output=True, text=True)
    assert previous.stdout.strip() == __version__


def test_a_file_that_is_not_an_anvil_wheel_changes_nothing(
        install: tuple[Path, list[str], dict[str, str]], tmp_path: Path) -> None:
    venv, args, env = install
    bogus = tmp_path / "something-1.0-py3-none-any.whl"
    bogus.write_bytes(b"PK")
    res = anvil(venv, args, env, "upgrade", str(bogus), "--passphrase-file", str(tmp_path / "pass"))
    assert res.returncode != 0 and "not an Anvil wheel" in res.stderr, res.stderr
    assert not (tmp_path / "state/backups").exists() or not any((tmp_path / "state/backups").iterdir())
    assert not (tmp_path / "venv.previous").exists()
