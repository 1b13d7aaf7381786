"""The tgt driver's refusals: bad input is rejected before anything runs, and a tgtd
that cannot be asked gives a typed, retryable error."""

from __future__ import annotations

import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.drivers.errors import BadSettings, BmcUnreachable, DriverError
from appliance.drivers.protocols import DiskSpec, LunRef
from appliance.drivers.tgt import TgtDriver, create
from appliance.lab import tgt as lab_tgt

pytestmark = pytest.mark.timeout(60)

DISK = LunRef("iqn.2026-11.io.anvil.san:web-01", 1)
A = "iqn.2026-11.io.anvil:web-01"


@pytest.fixture
def spy(tmp_path: Path) -> tuple[TgtDriver, Path]:
    """A driver whose "tgtadm" only records that it ran."""
    ran = tmp_path / "tgtadm-ran"
    script = tmp_path / "tgtadm"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return create({"tgtadm": str(script), "roots": [tmp_path]}), ran


@pytest.mark.parametrize(("call", "reason"), [
    (lambda d, p: d.bind(DISK, "iqn.2026-11.io.anvil:Web-01"), "canonical form"),
    (lambda d, p: d.bind(DISK, "web-01; rm -rf /"), "not an iSCSI name"),
    (lambda d, p: d.unbind(DISK, "--initiator-address=ALL"), "not an iSCSI name"),
    (lambda d, p: d.bindings(LunRef("iqn.2026-11.io.anvil.san:web 01")), "not an iSCSI name"),
    (lambda d, p: d.sessions(LunRef("san:web-01")), "not an iSCSI name"),
    (lambda d, p: d.remove_lun(LunRef(DISK.target, 0)), "LUN 0 is not 1..16383"),
    (lambda d, p: d.bind(LunRef(DISK.target, 16384), A), "LUN 16384"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(Path("relative.img"), 1 << 20)), "not an absolute path"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(p / "a.img", 1000)), "multiple of 512"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(p / "a.img", 0)), "multiple of 512"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(Path("/etc/shadow"), 1 << 20)), "outside"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(p / "a.img", 1 << 20, seed=Path("/etc/hostname"))), "outside"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(p / "a.img", 1 << 20, seed=p / "missing.img")), "missing.img"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(p / "a\nb.img", 1 << 20)), "newline"),
    (lambda d, p: d.ensure_lun(DISK, DiskSpec(p, 1 << 20)), "not a regular file"),
])
async def test_bad_input_is_refused_before_anything_runs(
        spy: tuple[TgtDriver, Path], tmp_path: Path, call: Callable[[TgtDriver, Path], Awaitable[object]],
        reason: str) -> None:
    driver, ran = spy
    with pytest.raises(BadSettings, match=reason) as info:
        await call(driver, tmp_path)
    assert not info.value.retryable and info.value.driver == "tgt"
    assert not ran.exists(), ran.read_text()
    assert not (tmp_path / "a.img").exists()


async def test_seed_larger_than_the_disk_is_refused(spy: tuple[TgtDriver, Path], tmp_path: Path) -> None:
    driver, ran = spy
    big = tmp_path / "big.img"
    big.write_bytes(bytes(4096))
    with pytest.raises(BadSettings, match="larger than the disk"):
        await driver.ensure_lun(DISK, DiskSpec(tmp_path / "a.img", 2048, seed=big))
    assert not ran.exists() and not (tmp_path / "a.img").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


async def test_lun_backed_by_another_file_is_not_replaced(driver: TgtDriver, disks: Path) -> None:
    await driver.ensure_lun(DISK, DiskSpec(disks / "web-01.img", 1 << 20))
    with pytest.raises(BadSettings, match=r"is backed by .*web-01\.img"):
        await driver.ensure_lun(DISK, DiskSpec(disks / "other.img", 1 << 20))


async def test_bind_without_the_target_says_to_ensure_first(driver: TgtDriver) -> None:
    with pytest.raises(DriverError, match="call ensure_lun first") as info:
        await driver.bind(DISK, A)
    assert not info.value.retryable


async def test_tgtd_down_is_unreachable_and_retryable(tmp_path: Path) -> None:
    reason = lab_tgt.missing_tools()
    if reason:
        pytest.skip(reason)
    port = lab_tgt.free_control_port()
    driver = create({"control_port": port, "timeout": 5.0})
    for call in (driver.bindings(DISK), driver.sessions(DISK), driver.remove_lun(DISK),
                 driver.ensure_lun(DISK, DiskSpec(tmp_path / "a.img", 1 << 20))):
        with pytest.raises(BmcUnreachable, match=f"control port {port}.*cannot be reached") as info:
            await call
        assert info.value.retryable


async def test_missing_tgtadm_or_namespace_is_unreachable_and_retryable(tmp_path: Path) -> None:
    for settings, reason in (({"tgtadm": str(tmp_path / "no-tgtadm")}, "no-tgtadm is not installed"),
                             ({"netns": "anvil-no-such-ns", "control_port": 1}, "anvil-no-such-ns")):
        with pytest.raises(BmcUnreachable, match=reason) as info:
            await create(settings).bindings(DISK)
        assert info.value.retryable


async def test_hung_tgtadm_is_cut_off_at_the_timeout(tmp_path: Path) -> None:
    script = tmp_path / "tgtadm"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    with pytest.raises(BmcUnreachable, match=r"no answer within 0\.3s") as info:
        await create({"tgtadm": str(script), "timeout": 0.3}).sessions(DISK)
    assert info.value.retryable

