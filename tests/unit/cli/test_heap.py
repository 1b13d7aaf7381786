"""anvil serve's collector settings (appliance.heap): what startup loaded is frozen out of the
full collections that stop every thread, and the young generation is wider."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from appliance import heap


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_settle_freezes_what_is_alive_and_widens_the_young_generation(restored: None) -> None:
    gc.unfreeze()
    kept = [{"a": [i]} for i in range(1000)]   # alive at startup: frozen
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    assert not any(d is kept[0] for d in gc.get_objects(generation=2))   # out of the full pass's walk

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    made = Cycle()   # made afterwards: still collected
    gone = weakref.ref(made)
    del made
    gc.collect()
    assert gone() is None


def test_settle_keeps_a_wider_young_threshold_set_before(restored: None) -> None:
    gc.set_threshold(50_000, 10, 10)
    heap.settle()
    assert gc.get_threshold() == (50_000, 10, 10)
