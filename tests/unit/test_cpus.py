"""appliance.cpus: reading /proc/stat, and when a process moves to a quieter CPU."""

from __future__ import annotations

import os
import subprocess

import pytest

from appliance import cpus

STAT = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 200 0 50 400 10 5 5 0 0 0
cpu1 100 0 50 600 0 0 0 20 7 0
intr 12345
"""


def test_read_stat_counts_busy_and_total_jiffies_per_cpu() -> None:
    got = cpus.read_stat(STAT)
    assert got == {0: cpus.Busy(260, 670), 1: cpus.Busy(170, 770)}   # guest (7) is already in user


def test_shares_are_busy_fractions_between_two_readings() -> None:
    before = {0: cpus.Busy(100, 1000), 1: cpus.Busy(100, 1000)}
    after = {0: cpus.Busy(190, 1100), 1: cpus.Busy(110, 1100), 2: cpus.Busy(5, 10)}
    assert cpus.shares(before, after) == {0: pytest.approx(0.9), 1: pytest.approx(0.1)}


@pytest.mark.parametrize(("busy", "own", "expected"), [
    ({0: 0.9, 1: 0.1}, 0.8, 0),   # busy with this process only: stays
    ({0: 1.0, 1: 0.1}, 0.5, 1),   # another process takes half of CPU 0 while CPU 1 idles: moves
    ({0: 1.0, 1: 0.4}, 0.5, 0),   # the other CPU is not quieter by the margin: stays
    ({0: 1.0, 1: 0.0, 2: 0.0}, 0.2, 1),   # the quietest, the lowest number first
    ({0: 1.0}, 0.1, 0),           # nothing else to go to
])
def test_a_process_moves_only_when_others_crowd_its_cpu(busy: dict[int, float], own: float, expected: int) -> None:
    assert cpus.quieter(0, busy, own, allowed=busy.keys()) == expected


def test_quieter_never_picks_a_cpu_the_process_may_not_use() -> None:
    assert cpus.quieter(0, {0: 1.0, 1: 0.0, 2: 0.5}, 0.1, allowed={0, 2}) == 2


def test_the_keeper_measures_between_checks_moves_and_places_every_thread_each_check() -> None:
    stats = iter([
        "cpu0 0 0 0 1000\ncpu1 0 0 0 1000\n",
        "cpu0 100 0 0 1000\ncpu1 0 0 0 1100\n",    # CPU 0 fully busy, half of it this process
        "cpu0 150 0 0 1050\ncpu1 50 0 0 1150\n",    # now on CPU 1: this process alone there
    ])
    own = iter([0.0, 0.5, 1.0])
    clock = iter([0.0, 1.0, 2.0])
    placed: list[int] = []
    keeper = cpus.Keeper(frozenset({0, 1}), 0, stat=lambda: next(stats), own_cpu_s=lambda: next(own),
                         clock=lambda: next(clock), place=placed.append)
    assert [keeper.check(), keeper.check(), keeper.check()] == [0, 1, 1]
    assert placed == [0, 1, 1]


def test_release_gives_a_child_every_cpu_back() -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU: nothing to release")   # not on the allow-list: CI machines have 2 cores
    child = subprocess.Popen(["sleep", "30"])
    try:
        os.sched_setaffinity(child.pid, {min(allowed)})   # as it inherits from a process holding one CPU
        cpus.release(child.pid, cpus.Keeper(allowed, min(allowed), place=lambda cpu: None))
        assert os.sched_getaffinity(child.pid) == allowed
    finally:
        child.kill()
        child.wait(timeout=5)


def test_the_keeper_keeps_checking_when_proc_stat_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    calls: list[int] = []

    def unreadable() -> str:
        calls.append(1)
        raise OSError("no /proc here")

    async def fast_sleep(_delay: float) -> None:
        if len(calls) >= 3:
            raise asyncio.CancelledError
    monkeypatch.setattr(cpus.asyncio, "sleep", fast_sleep)
    keeper = cpus.Keeper(frozenset({0, 1}), 0, stat=unreadable, place=lambda cpu: None)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(keeper.run())
    assert len(calls) == 3 and keeper.cpu == 0
