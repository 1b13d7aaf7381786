"""Which CPU the threads of an ``anvil serve`` process run on (``cpus = "one"``, the default).

The threads of one Python process take turns holding the interpreter lock. When the kernel
spreads them over several CPUs, each hand-over of the lock wakes a thread on another CPU (an
inter-processor interrupt: a VM exit under virtualisation), and the server hands it over very
often: Python's sqlite3 releases it for every row it steps, ssl for every record. Measured on
this project's 2-vCPU machine (bench/ironic_compat.py, shipped defaults, one process): with every
thread on one CPU, 100 nodes deploy in 2.1 s instead of 2.8 s, and while 100 deploy, 16 clients
paging 10,000 blades see p99 102-115 ms instead of 200 ms at 2.7-2.9 ms of server CPU per page
instead of 4.8. The process cannot use more than one CPU's worth of Python anyway.

So :func:`hold_one_cpu` puts the process on one CPU of those it may use before it starts any
thread (threads inherit it), and :class:`Keeper` re-checks every ~10 s that nothing else crowds
that CPU: the kernel moves unpinned work away by itself, but not another pinned process (two
``anvil serve`` on one machine, the API workers, the boot role in its namespace). The API
workers get the whole set back at once with :func:`release` and choose their own CPU; dnsmasq
stays where it started (it is idle but for a few packets). ``cpus = "any"`` leaves all of it to
the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_EVERY_S = 10.0     # between checks of the CPU's other load; each check costs ~0.1 ms
FIRST_CHECK_S = 1.0      # the start-up CPU is a guess (the pid's); the first check corrects it soon
MARGIN = 0.25            # a CPU's share the other one must be quieter by before the process moves


@dataclass(frozen=True)
class Busy:
    """Jiffies of one CPU from /proc/stat: ``busy`` of ``total``."""

    busy: int
    total: int


def read_stat(text: str) -> dict[int, Busy]:
    """Each CPU's busy and total jiffies from the text of /proc/stat."""
    out: dict[int, Busy] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        v = [int(x) for x in rest.split()]
        idle = sum(v[3:5])                    # idle, iowait
        busy = sum(v[:8]) - idle              # user .. steal (guest time is counted in user already)
        out[int(name[3:])] = Busy(busy, busy + idle)
    return out


def shares(before: Mapping[int, Busy], after: Mapping[int, Busy]) -> dict[int, float]:
    """Each CPU's busy share (0..1) between two readings."""
    out = {}
    for cpu, b in after.items():
        a = before.get(cpu)
        if a is None or b.total <= a.total:
            continue
        out[cpu] = (b.busy - a.busy) / (b.total - a.total)
    return out


def quieter(current: int, busy: Mapping[int, float], own: float, allowed: Iterable[int]) -> int:
    """The CPU to hold: ``current`` unless another allowed one is quieter, by :data:`MARGIN`, than
    what runs on ``current`` besides this process (``own``: its share of one CPU)."""
    others_here = busy.get(current, 0.0) - own
    candidates = [c for c in allowed if c != current and c in busy]
    if not candidates:
        return current
    best = min(candidates, key=lambda c: (busy[c], c))
    return best if busy[best] + MARGIN < others_here else current


def tasks(pid: int = 0) -> list[int]:
    """Thread ids of a process (0: this one)."""
    root = Path(f"/proc/{pid or os.getpid()}/task")
    try:
        return [int(t.name) for t in root.iterdir()]
    except OSError:
        return []


def put_on(cpu: int, thread_ids: Iterable[int]) -> None:
    for tid in thread_ids:
        with contextlib.suppress(OSError):       # a thread that ended meanwhile
            os.sched_setaffinity(tid, {cpu})


@dataclass
class Keeper:
    """Holds every thread of this process on one CPU of ``allowed`` and moves them to a quieter
    one when something else crowds it. Construct with :func:`hold_one_cpu`."""

    allowed: frozenset[int]
    cpu: int
    stat: Callable[[], str] = field(default=lambda: Path("/proc/stat").read_text())
    own_cpu_s: Callable[[], float] = time.process_time
    clock: Callable[[], float] = time.monotonic
    place: Callable[[int], None] = field(default=lambda cpu: put_on(cpu, tasks()))   # every thread, new ones too
    _last: tuple[float, float, dict[int, Busy]] | None = None

    def check(self) -> int:
        """Measure since the last check, move if a quieter CPU is worth it, put every thread
        (new ones too) on the CPU held; the CPU held after it."""
        now, own, stat = self.clock(), self.own_cpu_s(), read_stat(self.stat())
        last, self._last = self._last, (now, own, stat)
        if last is not None and now > last[0]:
            own_share = (own - last[1]) / (now - last[0])
            chosen = quieter(self.cpu, shares(last[2], stat), own_share, self.allowed)
            if chosen != self.cpu:
                log.info("moving this process's threads from CPU %d to CPU %d (quieter)", self.cpu, chosen)
                self.cpu = chosen
        self.place(self.cpu)
        return self.cpu

    async def run(self) -> None:
        """Check after :data:`FIRST_CHECK_S`, then every :data:`CHECK_EVERY_S` give or take a
        quarter, so two processes checking at once do not keep trading places; until cancelled."""
        delay = 0.0           # the first check only takes the baseline the next one measures from
        while True:
            await asyncio.sleep(delay)
            try:
                self.check()
            except (OSError, ValueError) as exc:   # /proc unreadable or odd: stay where we are
                log.debug("CPU check skipped: %s", exc)
            delay = FIRST_CHECK_S if delay == 0.0 else CHECK_EVERY_S * random.uniform(0.75, 1.25)


def hold_one_cpu() -> Keeper | None:
    """Put this process (before it starts threads) on one CPU of those it may use, or None when
    it may use only one anyway. The start CPU is the pid's pick; the keeper's checks correct it."""
    allowed = frozenset(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    ordered = sorted(allowed)
    keeper = Keeper(allowed, ordered[os.getpid() % len(ordered)])
    keeper.place(keeper.cpu)
    return keeper


def release(pid: int, keeper: Keeper | None) -> None:
    """Give a child process (single-threaded when this runs) every CPU this process may use."""
    if keeper is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, keeper.allowed)
