"""_blocking.BlockingRunner: deadlines, per-BMC caps that follow the thread, bounded retries."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from appliance.drivers._blocking import BlockingRunner
from appliance.drivers.errors import BadSettings, BmcBusy, BmcFailure, BmcUnreachable

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def runner():
    r = BlockingRunner("test", max_workers=16, per_bmc=2)
    yield r
    r.close()


async def test_a_call_past_its_deadline_is_unreachable(runner: BlockingRunner) -> None:
    release = threading.Event()
    start = time.monotonic()
    with pytest.raises(BmcUnreachable, match=r"no answer within 0\.2s") as err:
        await runner.run(release.wait, 5, key="bmc1", blade="b1", op="get_power", timeout=0.2)
    assert time.monotonic() - start < 0.5
    assert (err.value.blade, err.value.driver, err.value.op) == ("b1", "test", "get_power")
    release.set()


async def test_a_timed_out_thread_keeps_its_bmc_slot_until_it_returns(runner: BlockingRunner) -> None:
    release = threading.Event()
    for _ in range(2):
        with pytest.raises(BmcUnreachable):
            await runner.run(release.wait, 5, key="bmc1", blade="b1", op="op", timeout=0.05)
    assert runner.in_flight("bmc1") == 2
    # Both slots are held by stuck threads: a third call cannot start and times out too.
    with pytest.raises(BmcUnreachable):
        await runner.run(lambda: "never", key="bmc1", blade="b1", op="op", timeout=0.1)
    release.set()
    assert await runner.run(lambda: "ok", key="bmc1", blade="b1", op="op", timeout=2) == "ok"


async def test_a_hung_bmc_does_not_delay_another(runner: BlockingRunner) -> None:
    release = threading.Event()
    hung = [asyncio.create_task(runner.run(release.wait, 5, key="hung", blade="h", op="op", timeout=1))
            for _ in range(4)]
    start = time.monotonic()
    results = await asyncio.gather(*(runner.run(lambda: 1, key=f"ok{i}", blade="o", op="op", timeout=1)
                                     for i in range(10)))
    assert results == [1] * 10
    assert time.monotonic() - start < 0.3
    release.set()
    await asyncio.gather(*hung, return_exceptions=True)


async def test_no_more_than_per_bmc_calls_run_at_once(runner: BlockingRunner) -> None:
    lock = threading.Lock()
    now = peak = 0

    def work() -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.05)
        with lock:
            now -= 1

    await asyncio.gather(*(runner.run(work, key="bmc", blade="b", op="op", timeout=5) for _ in range(8)))
    assert peak == 2


async def test_retryable_errors_are_retried_within_the_deadline(runner: BlockingRunner) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BmcBusy("b", "test", "op", "busy")
        return "ok"

    assert await runner.run(flaky, key="k", blade="b", op="op", timeout=5, attempts=3) == "ok"
    assert len(calls) == 3


async def test_fatal_errors_and_single_attempts_are_not_retried(runner: BlockingRunner) -> None:
    calls = []

    def fatal() -> None:
        calls.append(1)
        raise BadSettings("b", "test", "op", "no")

    with pytest.raises(BadSettings):
        await runner.run(fatal, key="k", blade="b", op="op", timeout=5, attempts=3)
    with pytest.raises(BmcBusy):
        await runner.run(lambda: (_ for _ in ()).throw(BmcBusy("b", "t", "o", "r")), key="k", blade="b", op="o",
                         timeout=5)
    assert len(calls) == 1


async def test_library_surprises_become_bmc_failure(runner: BlockingRunner) -> None:
    def boom() -> None:
        raise KeyError("PowerState")

    with pytest.raises(BmcFailure, match="KeyError"):
        await runner.run(boom, key="k", blade="b", op="op", timeout=1)


async def test_a_closed_runner_refuses_work() -> None:
    r = BlockingRunner("test")
    r.close()
    with pytest.raises(BmcUnreachable, match="closed"):
        await r.run(lambda: 1, key="k", blade="b", op="op", timeout=1)
