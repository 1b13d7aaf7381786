"""Run blocking BMC library calls (pyghmi, DMTF redfish) off the event loop, bounded.

One :class:`BlockingRunner` per driver instance owns:

- a ThreadPoolExecutor of ``max_workers`` threads (default 64);
- one slot counter per BMC endpoint (``key``), at most ``per_bmc`` (default 4) calls
  in flight to one BMC, since BMCs allow few sessions;
- a deadline for every call (``asyncio.timeout``): when it passes the caller gets
  :class:`BmcUnreachable` ("no answer within Ns").

A thread stuck in a library call cannot be interrupted. Its BMC slot is therefore
released only when the thread really returns, not when the caller gives up: a hung
BMC holds at most ``per_bmc`` threads, and the other blades keep the rest of the
pool. Callers set each library's own socket timeout too, so stuck threads come back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

from appliance.drivers.errors import BmcFailure, BmcUnreachable, DriverError

T = TypeVar("T")


class _Slots:
    """Counts calls in flight to one BMC; released from any thread, woken on the loop."""

    __slots__ = ("_busy", "_limit", "_loop", "_waiters")

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self._limit = limit
        self._busy = 0
        self._loop = loop
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def busy(self) -> int:
        return self._busy

    async def acquire(self) -> None:
        while self._busy >= self._limit:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
        self._busy += 1

    def release(self) -> None:
        """Must run on the loop thread (use ``release_threadsafe`` from elsewhere)."""
        self._busy -= 1
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
                break

    def release_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing waits any more
            self._loop.call_soon_threadsafe(self.release)


class BlockingRunner:
    """Bounded executor + per-BMC concurrency cap + per-call deadline for one driver."""

    def __init__(self, driver: str, *, max_workers: int = 64, per_bmc: int = 4) -> None:
        self.driver = driver
        self.per_bmc = per_bmc
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"anvil-{driver}"
        )
        self._slots: dict[tuple[int, str], _Slots] = {}
        self._closed = False

    def _slots_for(self, key: str) -> _Slots:
        loop = asyncio.get_running_loop()
        slot_key = (id(loop), key)
        slots = self._slots.get(slot_key)
        if slots is None:
            slots = self._slots[slot_key] = _Slots(self.per_bmc, loop)
        return slots

    def in_flight(self, key: str) -> int:
        """Calls to BMC ``key`` whose thread has not returned yet (for tests and metrics)."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get((id(loop), key))
        return slots.busy if slots else 0

    async def run(
        self,
        fn: Callable[..., T],
        *args: object,
        key: str,
        blade: str,
        op: str,
        timeout: float,
        attempts: int = 1,
        **kwargs: object,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread; the whole call ends within ``timeout`` s.

        ``key`` names the BMC endpoint (host:port) whose sessions are capped. Time spent
        waiting for a free slot counts against ``timeout``: a BMC so busy or hung that no
        slot frees up is unreachable for this caller too.

        ``attempts`` > 1 retries a *retryable* DriverError with a doubling backoff
        (0.1 s, 0.2 s, … ≤ 2 s) while time remains — only for reads and idempotent
        writes, never for a power-on. The deadline covers all attempts.

        Raises BmcUnreachable when the deadline passes; DriverErrors of ``fn`` pass
        through; any other exception of ``fn`` becomes BmcFailure (a library surprise).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.1
        for attempt in range(1, attempts + 1):
            remaining = deadline - loop.time()
            try:
                return await self._run_once(fn, args, kwargs, key, blade, op, remaining, timeout)
            except DriverError as exc:
                left = deadline - loop.time()
                if not exc.retryable or attempt == attempts or left <= delay:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_once(
        self,
        fn: Callable[..., T],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        key: str,
        blade: str,
        op: str,
        remaining: float,
        timeout: float,
    ) -> T:
        if self._closed:
            raise BmcUnreachable(blade, self.driver, op, "driver is closed")
        slots = self._slots_for(key)
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                await slots.acquire()
                try:
                    cfut = self._executor.submit(call)
                except BaseException:
                    slots.release()
                    raise
                # The slot follows the thread, not this coroutine.
                cfut.add_done_callback(lambda _f: slots.release_threadsafe())
                return await asyncio.wrap_future(cfut, loop=loop)
        except TimeoutError as exc:
            raise BmcUnreachable(blade, self.driver, op, f"no answer within {timeout:g}s") from exc
        except DriverError:
            raise
        except RuntimeError as exc:
            if self._closed or "shutdown" in str(exc):
                raise BmcUnreachable(blade, self.driver, op, "driver is closed") from exc
            raise BmcFailure(blade, self.driver, op, f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise BmcFailure(blade, self.driver, op, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Stop accepting calls; threads still stuck in a library call are not waited for."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

