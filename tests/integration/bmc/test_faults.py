"""Faulty BMCs: wrong password, silence, refusals, 500s — and hung BMCs never stall healthy ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.drivers.errors import BmcAuthFailed, BmcFailure, BmcUnreachable, DriverError
from appliance.drivers.ipmi import IpmiDriver
from appliance.drivers.protocols import Bmc, BmcDriver, PowerState, Secret
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import ipmi_emulator, procs, redfish_emulator

from .conftest import Rack

pytestmark = pytest.mark.timeout(60)


def _with_password(bmc: Bmc, password: str) -> Bmc:
    return Bmc(bmc.blade, bmc.address, bmc.username, Secret(password), timeout=bmc.timeout)


async def test_wrong_password_is_auth_failed(rack: Rack, driver: BmcDriver) -> None:
    bmc, _ = rack.take()
    with pytest.raises(BmcAuthFailed) as err:
        await driver.get_power(_with_password(bmc, "wrong"))
    assert not err.value.retryable
    # The right password still works on the same driver afterwards.
    assert await driver.get_power(bmc) in (PowerState.ON, PowerState.OFF)


async def test_redfish_bmc_that_never_answers_is_unreachable_within_its_timeout(
    silent_tcp: Callable[[], int],
) -> None:
    driver = RedfishDriver()
    bmc = Bmc("hung", f"redfish+http://127.0.0.1:{silent_tcp()}/redfish/v1/Systems/x", "admin", Secret("p"),
              timeout=1.5)
    start = time.monotonic()
    try:
        with pytest.raises(BmcUnreachable) as err:
            await driver.get_power(bmc)
        took = time.monotonic() - start
    finally:
        await driver.close()
    assert took < 1.5 + 0.5
    assert err.value.retryable


@pytest.mark.parametrize("peer", ["silent-socket", "nobody-listens"])
async def test_ipmi_bmc_that_never_answers_is_unreachable_within_its_timeout(
    silent_udp: Callable[[], int], peer: str
) -> None:
    port = silent_udp() if peer == "silent-socket" else procs.free_udp_port()
    driver = IpmiDriver()
    bmc = Bmc("hung", f"ipmi://127.0.0.1:{port}", "admin", Secret("p"), timeout=1.5)
    start = time.monotonic()
    try:
        with pytest.raises(BmcUnreachable):
            await driver.get_power(bmc)
        took = time.monotonic() - start
    finally:
        await driver.close()
    assert took < 1.5 + 0.5


async def test_closed_tcp_port_is_unreachable_fast() -> None:
    driver = RedfishDriver()
    bmc = Bmc("closed", f"redfish+http://127.0.0.1:{procs.free_tcp_port()}/redfish/v1/Systems/x", "admin",
              Secret("p"), timeout=5)
    start = time.monotonic()
    try:
        with pytest.raises(BmcUnreachable) as err:
            await driver.get_power(bmc)
    finally:
        await driver.close()
    assert "refused" in str(err.value)
    assert time.monotonic() - start < 2.0   # refused at once (3 attempts with 0.1 s, 0.2 s backoff)


async def test_http_500_is_bmc_failure(http_500: int) -> None:
    driver = RedfishDriver(read_attempts=1)
    bmc = Bmc("sick", f"redfish+http://127.0.0.1:{http_500}/redfish/v1/Systems/x", "admin", Secret("p"), timeout=5)
    try:
        with pytest.raises(BmcFailure) as err:
            await driver.get_power(bmc)
    finally:
        await driver.close()
    assert "HTTP 500" in str(err.value)


async def _poll_all(driver: BmcDriver, bmcs: list[Bmc]) -> dict[str, tuple[float, object]]:
    """get_power on every blade at once; per blade: seconds until it finished, and the result or error."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    out: dict[str, tuple[float, object]] = {}

    async def one(b: Bmc) -> None:
        try:
            result: object = await driver.get_power(b)
        except DriverError as exc:
            result = exc
        out[b.blade] = (loop.time() - start, result)

    async with asyncio.TaskGroup() as tg:
        for b in bmcs:
            tg.create_task(one(b))
    return out


HUNG_TIMEOUT = 8.0


@pytest.mark.slow
async def test_fifty_redfish_blades_are_not_delayed_by_ten_hung_bmcs(
    tmp_path: Path, silent_tcp: Callable[[], int]
) -> None:
    """With connections warm, 50 healthy blades answer long before 10 hung BMCs time out.

    One emulator process serves all 50 (about 120 requests/s here), so a poll of 50 takes
    about half a second on its own; if hung BMCs held the threads or slots healthy polls
    need, those would end near the hung timeout instead.
    """
    systems = redfish_emulator.make_systems(50, seed=21)
    emu = redfish_emulator.start_redfish(tmp_path, procs.free_tcp_port(), systems)
    driver = RedfishDriver()
    try:
        healthy = [Bmc(f"ok-{i}", emu.address(s), "admin", Secret("password"), timeout=HUNG_TIMEOUT)
                   for i, s in enumerate(systems)]
        hung = [Bmc(f"hung-{i}", f"redfish+http://127.0.0.1:{silent_tcp()}/redfish/v1/Systems/x", "admin",
                    Secret("p"), timeout=HUNG_TIMEOUT) for i in range(10)]
        await _poll_all(driver, healthy)
        alone = await _poll_all(driver, healthy)
        results = await _poll_all(driver, hung[:5] + healthy + hung[5:])
    finally:
        await driver.close()
        redfish_emulator.stop(emu)
    baseline = max(t for t, _ in alone.values())
    ok = [results[b.blade] for b in healthy]
    assert all(r is PowerState.OFF for _, r in ok), ok
    worst = max(t for t, _ in ok)
    assert worst < 0.25 * HUNG_TIMEOUT, f"slowest healthy poll {worst:.2f}s (without hung BMCs: {baseline:.2f}s)"
    hung_took = [results[b.blade] for b in hung]
    assert all(isinstance(r, BmcUnreachable) for _, r in hung_took), hung_took
    assert min(t for t, _ in hung_took) >= 0.5 * HUNG_TIMEOUT, hung_took


IPMI_HUNG_TIMEOUT = 8.0


@pytest.mark.slow
async def test_fifty_ipmi_blades_are_not_delayed_by_ten_hung_bmcs(
    tmp_path: Path, silent_udp: Callable[[], int]
) -> None:
    """With sessions warm, a poll of 50 healthy blades ends long before 10 hung BMCs time out.

    Logging in is done once per BMC and is not what this proves, so the healthy sessions
    are opened first (an unmeasured poll). If hung BMCs held threads, slots or pyghmi's
    shared I/O loop that healthy polls need, those polls would end near the hung timeout
    (8 s); healthy ones must end within a quarter of it, on a loaded 2-core CI machine.
    """
    ports = [procs.free_udp_port() for _ in range(50)]
    emu = ipmi_emulator.start_ipmi(tmp_path, ports)
    driver = IpmiDriver()
    try:
        healthy = [Bmc(f"ok-{p}", emu.address(p), "admin", Secret("password"), timeout=IPMI_HUNG_TIMEOUT)
                   for p in ports]
        hung = [Bmc(f"hung-{i}", f"ipmi://127.0.0.1:{silent_udp()}", "admin", Secret("p"), timeout=IPMI_HUNG_TIMEOUT)
                for i in range(10)]
        warm = await _poll_all(driver, healthy)
        alone = await _poll_all(driver, healthy)
        results = await _poll_all(driver, hung[:5] + healthy + hung[5:])
    finally:
        await driver.close()
        ipmi_emulator.stop(emu)
    assert all(r is PowerState.OFF for _, r in warm.values()), warm
    baseline = max(t for t, _ in alone.values())
    ok = [results[b.blade] for b in healthy]
    assert all(r is PowerState.OFF for _, r in ok), ok
    worst = max(t for t, _ in ok)
    assert worst < 0.25 * IPMI_HUNG_TIMEOUT, f"slowest healthy poll {worst:.2f}s (without hung BMCs: {baseline:.2f}s)"
    hung_took = [results[b.blade] for b in hung]
    assert all(isinstance(r, BmcUnreachable) for _, r in hung_took), hung_took
    # The hung ones were still hanging well after the healthy bound, so the race above was real.
    assert min(t for t, _ in hung_took) >= 0.5 * IPMI_HUNG_TIMEOUT, hung_took
