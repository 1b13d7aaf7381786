"""The host pools' reconcile loop, run by the engine leader beside its jobs (DESIGN §8).

Every ``interval`` seconds it runs one pass of appliance.services.host_reconcile on the
engine's database thread (the one writer), and wakes the dispatcher when the pass
submitted jobs. Only the leader runs it, so two appliances never reconcile one pool at
once; a pass that fails is logged and the next one starts from what the store holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.services.host_reconcile import Reconciler
from appliance.store import Store

if TYPE_CHECKING:
    from appliance.engine.runner import Engine

log = logging.getLogger(__name__)


class HostPoolLoop:
    def __init__(self, store: Store, *, interval: float = 0.5, clock: Callable[[], float] = time.time) -> None:
        self.reconciler = Reconciler(store, clock=clock)
        self.interval = interval

    async def run(self, engine: Engine, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                visit = await engine.call(self.reconciler.run_once)
            except asyncio.CancelledError:
                raise
            except Exception:   # a bad pass must not stop the engine: logged, and the next pass retries
                log.exception("host pools: reconcile pass failed")
            else:
                if visit.jobs:
                    engine.wake()
            try:
                async with asyncio.timeout(self.interval):
                    await stop.wait()
            except TimeoutError:
                pass
