"""Backing files: made once (sparse, or from a seed), atomically, never touched again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from appliance.drivers.protocols import DiskSpec, LunRef
from appliance.drivers.tgt import TgtDriver, backing
from appliance.drivers.tgt._parse import parse_targets
from appliance.lab import tgt as lab_tgt

pytestmark = pytest.mark.timeout(60)


async def test_a_new_disk_is_sparse_and_private(tmp_path: Path) -> None:
    disk = backing.check(DiskSpec(tmp_path / "sub" / "d.img", 64 << 20), (tmp_path,))
    assert await backing.ensure(disk, copy_timeout=10) is True
    st = disk.path.stat()
    assert st.st_size == 64 << 20 and st.st_blocks * 512 < (1 << 20) and st.st_mode & 0o777 == 0o600
    assert await backing.ensure(disk, copy_timeout=10) is False


async def test_an_existing_disk_is_never_rewritten_or_resized(tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    path.write_bytes(b"OLD" + bytes(509))
    seed = tmp_path / "seed.img"
    seed.write_bytes(b"NEW" + bytes(509))
    assert await backing.ensure(backing.check(DiskSpec(path, 4096, seed), (tmp_path,)), copy_timeout=10) is False
    assert path.read_bytes() == b"OLD" + bytes(509)


async def test_racing_creators_end_with_one_file_and_no_leftovers(tmp_path: Path) -> None:
    seed = tmp_path / "seed.img"
    seed.write_bytes(os.urandom(1 << 20))
    disk = backing.check(DiskSpec(tmp_path / "d.img", 2 << 20, seed), (tmp_path,))
    created = await asyncio.gather(*(backing.ensure(disk, copy_timeout=10) for _ in range(4)))
    assert created.count(True) == 1
    assert disk.path.read_bytes()[: 1 << 20] == seed.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.img", "seed.img"]


async def test_partials_of_a_crashed_copy_are_swept_later(tmp_path: Path) -> None:
    stale = tmp_path / ".d.img.999-deadbeef.partial"
    fresh = tmp_path / ".d.img.998-cafebabe.partial"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    await backing.ensure(backing.check(DiskSpec(tmp_path / "d.img", 4096), (tmp_path,)), copy_timeout=60)
    assert not stale.exists() and fresh.exists()


async def test_concurrent_ensures_of_many_luns_take_distinct_tids(
        driver: TgtDriver, tgtd: lab_tgt.TgtdHandle, disks: Path, seed: Path) -> None:
    luns = [LunRef(f"iqn.2026-11.io.anvil.san:web-{i:02d}", 1) for i in range(6)]
    specs = [DiskSpec(disks / f"web-{i:02d}.img", 1 << 20, seed) for i in range(6)]
    await asyncio.gather(*(driver.ensure_lun(lu, sp) for lu, sp in zip(luns * 2, specs * 2, strict=True)))
    show = subprocess.run(["tgtadm", "-C", str(tgtd.control_port), "--lld", "iscsi", "--op", "show", "--mode",
                           "target"], capture_output=True, text=True, timeout=10, check=True).stdout
    targets = {t.name: t.tid for t in parse_targets(show)}
    assert set(targets) == {lu.target for lu in luns} and sorted(targets.values()) == [1, 2, 3, 4, 5, 6]
