"""A real tgtd per test on 127.0.0.1 (free portal port, own control port), stopped by PID.

Needs root (tgtd's control socket lives in /var/run/tgtd) and the apt packages ``tgt``
and ``libiscsi-bin``. Ports are random per test, so the suite is safe under pytest-xdist.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.drivers.tgt import TgtDriver, create
from appliance.lab import procs
from appliance.lab import tgt as lab_tgt

SECTOR = 512


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "tgtd needs root (its control socket is in /var/run/tgtd)"
    for tool in ("tgtd", "tgtadm", "iscsi-ls", "iscsi-inq", "iscsi-perf"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install tgt libiscsi-bin)"
    return None


def start_tgtd(run_dir: Path, *, port: int | None = None, control_port: int | None = None,
               netns: str | None = None) -> lab_tgt.TgtdHandle:
    """Start a tgtd; with ports left open, try fresh ones when another worker took them first."""
    last: procs.ProcError | None = None
    for _ in range(3):
        try:
            return lab_tgt.start(run_dir, "127.0.0.1", port or procs.free_tcp_port(),
                                 control_port if control_port is not None else lab_tgt.free_control_port(),
                                 netns)
        except procs.ProcError as exc:
            if port is not None and control_port is not None:
                raise
            last = exc
    assert last is not None
    raise last


@pytest.fixture
def tgtd(tmp_path: Path) -> Iterator[lab_tgt.TgtdHandle]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    handle = start_tgtd(tmp_path / "run")
    try:
        yield handle
    finally:
        lab_tgt.stop(handle)


@pytest.fixture
def disks(tmp_path: Path) -> Path:
    """Where this test's backing files and seed images live (the driver's ``roots``)."""
    root = tmp_path / "images"
    root.mkdir()
    return root


@pytest.fixture
async def driver(tgtd: lab_tgt.TgtdHandle, disks: Path) -> AsyncIterator[TgtDriver]:
    drv = create({**tgtd.settings(), "roots": [disks], "timeout": 5.0})
    yield drv
    await drv.close()


@pytest.fixture
def seed(disks: Path) -> Path:
    """A 64 KiB seed image: a marker in sector 0, zeros after."""
    path = disks / "seed.img"
    path.write_bytes(b"SEED-SECTOR-0".ljust(SECTOR, b"\0") + bytes(127 * SECTOR))
    return path
