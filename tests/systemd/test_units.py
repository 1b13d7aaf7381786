"""The unit files in systemd/: `systemd-analyze verify` passes offline, the exposure that
`systemd-analyze security --offline` gives each unit stays under a ceiling, and sysusers.d and
tmpfiles.d make the anvil user and a private state directory in a scratch root."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("anvil.service", "anvil-boot.service")
# "OK" in systemd-analyze's scale is up to 2.5 (issue 17); measured 1.6 and 1.8 with systemd 252.
CEILING = {"anvil.service": 1.6, "anvil-boot.service": 1.8}
SYSTEM_UNITS = Path("/lib/systemd/system")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A scratch root holding the units, the host's stock units (sysinit.target…) and an
    executable where ExecStart= points, so verify checks ours without a running systemd."""
    r = tmp_path / "root"
    (r / "etc/systemd/system").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, r / "usr/lib/systemd/system", symlinks=True)
    exe = r / "opt/anvil/venv/bin/anvil"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for unit in UNITS:
        shutil.copy(REPO / "systemd" / unit, r / "etc/systemd/system" / unit)
    yield r


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(root: Path, unit: str) -> None:
    res = _run("systemd-analyze", "verify", "--man=no", f"--root={root}", unit)
    # verify only warns (exit 0) about unknown keys and bad values: any output is a finding.
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def test_verify_catches_a_broken_unit(root: Path) -> None:
    unit = root / "etc/systemd/system/anvil.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    res = _run("systemd-analyze", "verify", "--man=no", f"--root={root}", "anvil.service")
    assert "Unknown key 'WatchdogSecs'" in res.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_ok(unit: str) -> None:
    res = _run("systemd-analyze", "security", "--offline=true", str(REPO / "systemd" / unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", res.stdout)
    assert m, res.stdout + res.stderr
    exposure = float(m.group(1))
    print(f"{unit}: exposure {exposure} {m.group(2)}")
    assert exposure <= CEILING[unit] and m.group(2) == "OK", res.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_unit_runs_as_anvil_with_only_its_capabilities(unit: str) -> None:
    text = (REPO / "systemd" / unit).read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    caps = {"anvil.service": {"CAP_NET_BIND_SERVICE"},
            "anvil-boot.service": {"CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}}[unit]
    assert settings["Type"] == "notify" and int(settings["WatchdogSec"]) > 0
    assert settings["User"] == "anvil" and settings["ProtectSystem"] == "strict"
    assert set(settings["CapabilityBoundingSet"].split()) == caps == set(settings["AmbientCapabilities"].split())
    assert settings["MemoryDenyWriteExecute"] == "yes" and settings["NoNewPrivileges"] == "yes"
    role = {"anvil.service": "control", "anvil-boot.service": "boot"}[unit]
    assert settings["ExecStart"].endswith(f"serve --role {role}")


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd-sysusers/systemd-tmpfiles are missing")
def test_sysusers_and_tmpfiles_make_the_user_and_private_state_dirs(tmp_path: Path) -> None:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    res = _run("systemd-sysusers", f"--root={r}", str(REPO / "systemd/sysusers.d/anvil.conf"))
    assert res.returncode == 0, res.stderr
    passwd = (r / "etc/passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("anvil:"))
    uid = int(entry.split(":")[2])
    assert entry.endswith(":/var/lib/anvil:/usr/sbin/nologin") and uid < 1000   # a system user
    res = _run("systemd-tmpfiles", f"--root={r}", "--create", str(REPO / "systemd/tmpfiles.d/anvil.conf"))
    assert res.returncode == 0, res.stderr
    for sub in ("", "run", "tls", "images", "backups"):
        st = (r / "var/lib/anvil" / sub).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, uid), sub
