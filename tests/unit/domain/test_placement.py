"""Placement: best fit first, then least recently failed; every rejection says why."""

from __future__ import annotations

from datetime import UTC, datetime

from appliance.domain.placement import Candidate, Requirements, place
from appliance.domain.states import BladeState

REQ = Requirements(min_cpus=8, min_memory_gib=64, nics=2)


def c(name: str, cpus: int | None = 16, mem: int | None = 128, nics: int = 2, **kw: object) -> Candidate:
    return Candidate(name=name, state=kw.pop("state", BladeState.SPARE), cpus=cpus, memory_gib=mem,  # type: ignore[arg-type]
                     nics=nics, **kw)  # type: ignore[arg-type]


def test_fewest_surplus_resources_first() -> None:
    pl = place(REQ, [c("big", 64, 512), c("exact", 8, 64), c("mid", 16, 128)])
    assert pl.chosen == ("exact", "mid", "big")
    assert pl.best == "exact"


def test_ties_go_to_the_least_recently_failed() -> None:
    old = datetime(2026, 1, 1, tzinfo=UTC)
    new = datetime(2026, 11, 1, tzinfo=UTC)
    pl = place(REQ, [c("recent", last_failed_at=new), c("never"), c("long-ago", last_failed_at=old)])
    assert pl.chosen == ("never", "long-ago", "recent")


def test_rejections_carry_a_reason() -> None:
    pl = place(REQ, [
        c("maint", state=BladeState.MAINTENANCE), c("broken", state=BladeState.FAILED),
        c("busy", bound_to="web-02"), c("small", cpus=4), c("tiny", mem=32), c("onenic", nics=1),
        c("unknown", mem=None), c("stamping", state=BladeState.STAMPING), c("other", in_pool=False),
    ])
    assert pl.best is None
    assert {r.blade: r.reason for r in pl.rejected} == {
        "maint": "in maintenance",
        "broken": "failed (an admin must clear it)",
        "busy": "bound to profile web-02",
        "small": "too few CPUs (4 < 8)",
        "tiny": "too little memory (32 GiB < 64 GiB)",
        "onenic": "too few NICs (1 < 2)",
        "unknown": "memory unknown (inspect the blade)",
        "stamping": "not spare (stamping)",
        "other": "not in the requested pool",
    }


def test_no_requirements_accepts_any_spare() -> None:
    pl = place(Requirements(), [c("a", cpus=None, mem=None, nics=0)])
    assert pl.chosen == ("a",)


def test_physical_blades_first_unless_the_pool_prefers_virtual_ones_or_neither() -> None:
    # The VM slot fits best on resources, yet a physical blade that fits goes first (DESIGN §8).
    blades = [c("vm-slot", 8, 64, virtual=True), c("phys-big", 64, 512)]
    assert place(REQ, blades).chosen == ("phys-big", "vm-slot")
    assert place(REQ, blades, prefer="virtual").chosen == ("vm-slot", "phys-big")
    assert place(REQ, blades, prefer="any").chosen == ("vm-slot", "phys-big")    # best fit again


def test_an_unknown_preference_is_refused_by_name() -> None:
    import pytest

    with pytest.raises(ValueError, match="prefer 'cloud' is not one of physical, virtual, any"):
        place(REQ, [c("a")], prefer="cloud")
