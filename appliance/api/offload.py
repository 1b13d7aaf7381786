"""Work a request needs that would hold the event loop, on small pools of threads of their own.

:class:`Offload`: parsing a profile document (YAML, XML) is pure Python and CPU-bound. The pool
is bounded twice: ``workers`` threads, and at most ``waiting`` requests queued behind them;
past that a request is refused at once with :class:`Busy` (HTTP 503 with Retry-After) instead
of piling up memory and latency for everyone.

:class:`Lane` (``READS``): list pages (a store read and a render of up to 1,000 items). Sixteen clients
paging at once filled the process's default pool (``asyncio.to_thread``: 6 threads on 2 cores),
in which the deploy requests' and the monitor's store calls then queued; and more threads than
cores running Python only take the interpreter lock from each other and from the event loop.
Pages queue for their own few threads instead (no refusal: a page is short). Every request's
token check has a small pool of its own too (``CHECKS``): in the default pool it waited behind
a hundred deploy requests' writes, and behind pages it would wait as long as a slow store made
them.

``WRITES`` (a :class:`Lane` of one thread on SQLite): the store writes of the requests VM
managers send a hundred at a time (Bare Metal API node changes and provision states, /api/v1
assign and release). SQLite has one writer, so more threads only ran their Python beside each
other and beside the pages on the process's one CPU: with six at once in the default pool, 16
clients paging 10,000 blades while 100 nodes deployed saw p99 104-127 ms; on one thread 90-95 ms
(`bench/ironic_compat.py --fill 10000`). The single nodes those
clients poll are read on ``READS``, in turn with the pages.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import orjson
from aiohttp import web

from appliance.errors import AnvilError

T = TypeVar("T")


class Busy(AnvilError):
    """Too many documents are being parsed already; try again in a moment (HTTP 503)."""

    retryable = True


class Offload:
    def __init__(self, *, workers: int = 2, waiting: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anvil-parse")
        self._limit = workers + waiting
        self._pending = 0

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pending >= self._limit:
            raise Busy(f"{self._pending} documents are being checked already; retry in a moment")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Lane:
    """A few threads of their own for one kind of request work (``READS``, ``CHECKS``, ``WRITES``)."""

    def __init__(self, *, workers: int = 4, name: str = "anvil-read") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on a thread of the pool, in the caller's context (its audit actor), as ``asyncio.to_thread``."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, ctx.run, partial(fn, *args, **kwargs))

    async def json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> web.Response:
        """``fn``'s document as a JSON response, read and encoded (orjson: a tenth of the
        standard encoder's time for a page) in the pool."""
        def encoded() -> bytes:
            return orjson.dumps(fn(*args, **kwargs))
        return web.Response(body=await self.run(encoded), content_type="application/json")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
