"""The wheel ships pxe/, profiles/ and firmware/ so an installed appliance finds them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from appliance.assets import asset_dir

REPO = Path(__file__).resolve().parents[3]


def test_wheel_contains_assets_and_console_script(tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path), str(REPO)], check=True,
                   capture_output=True, timeout=240)
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("pxe", "profiles", "firmware"):
        for src in (REPO / folder).rglob("*"):
            if src.is_file() and "__pycache__" not in src.parts:   # bytecode caches are not assets
                assert f"appliance/_assets/{src.relative_to(REPO)}" in names
    # snmpsim loads the lab switch's variation module from this directory, not by import.
    assert "appliance/lab/snmpsim_modules/writecache.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "anvil = appliance.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_assets_resolve_in_a_checkout() -> None:
    assert (asset_dir("firmware") / "baselines").is_dir()
