"""The SLA policy drives a pool through the engine's reconcile loop from the hosts' reported
utilisation, on a compressed clock: 30 s of policy time pass at each turn of the test's loop,
so a 5 min window and a 10 min cool-down take a few real seconds."""

from __future__ import annotations

import contextlib
from pathlib import Path

from appliance.errors import Conflict
from appliance.services.hostpools import HostPoolService
from appliance.store import Store
from tests.unit.engine.fakes import FakeHardware
from tests.unit.engine.hostpool_rig import drive, ready, rig

T0 = 1_900_000_000.0
TICK = 30.0          # policy seconds per turn
POLICY = {"metric": "cpu", "growAbove": 75, "shrinkBelow": 30, "forSeconds": 300, "cooldownSeconds": 600,
          "maxAgeSeconds": 120}


async def test_the_policy_grows_on_sustained_load_and_shrinks_after_the_cool_down(store: Store,
                                                                                 tmp_path: Path) -> None:
    rig(store, tmp_path)
    clock = [T0]
    svc = HostPoolService(store, clock=lambda: clock[0])
    svc.create("east", template="kvm-host", tenant="acme", size=1, min_size=1, max_size=2, policy=POLICY)
    hw = FakeHardware()
    await drive(store, hw, lambda: ready(store, 1), clock=lambda: clock[0])
    load = [90.0]

    def tick() -> None:
        """Policy time moves on; every ready host reports the current load (as a VM manager would)."""
        clock[0] += TICK
        for h in svc.hosts("east", tenant="acme", state="ready"):
            with contextlib.suppress(Conflict):     # released since listed: it reports nothing any more
                svc.report("east", h.id, cpu=load[0], tenant="acme")

    # Busy: grows once the average has stayed above 75 % for 5 minutes, not before.
    await drive(store, hw, lambda: svc.get("east", tenant="acme").size == 2, clock=lambda: clock[0], between=tick)
    grown_at = clock[0]
    assert grown_at - T0 >= 300
    info = svc.get("east", tenant="acme")
    grow = info.decisions[0]
    assert (grow["action"], grow["from"], grow["to"]) == ("grow", 1, 2)
    assert grow["reason"].startswith("average cpu 90.0% > 75% for 5m") and "(1 of 1 ready hosts reporting)" in \
        grow["reason"]
    assert grow["inputs"]["samples"] and grow["inputs"]["forSeconds"] == 300
    await drive(store, hw, lambda: ready(store, 2), clock=lambda: clock[0], between=tick)

    # At max, still busy: a hold is said once (why it did not grow), not at every pass.
    await drive(store, hw, lambda: svc.get("east", tenant="acme").decisions[0]["action"] == "hold",
                clock=lambda: clock[0], between=tick)
    assert "would grow but the pool is at its max (2)" in svc.get("east", tenant="acme").decisions[0]["reason"]

    # Idle: shrinks back to min, and no sooner than the cool-down after the last change.
    load[0] = 10.0
    await drive(store, hw, lambda: svc.get("east", tenant="acme").size == 1, clock=lambda: clock[0], between=tick)
    assert clock[0] - grown_at >= 600
    info = svc.get("east", tenant="acme")
    shrink = info.decisions[0]
    assert (shrink["action"], shrink["from"], shrink["to"]) == ("shrink", 2, 1)
    assert shrink["reason"].startswith("average cpu 10.0% < 30%")
    assert [d["action"] for d in info.decisions] == ["shrink", "hold", "grow"]
    await drive(store, hw, lambda: svc.get("east", tenant="acme").converged, clock=lambda: clock[0], between=tick)
    assert svc.get("east", tenant="acme").hosts == {"ready": 1}
