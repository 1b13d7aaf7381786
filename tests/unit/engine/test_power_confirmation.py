"""Power changes: confirmed by reading back; a request lost in a crash is sent again, once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from appliance.drivers.protocols import PowerState
from appliance.engine.model import EngineSettings, StepContext, StepFailed
from appliance.engine.steps.common import ensure_power
from tests.unit.engine.fakes import FakeHardware


def _ctx(hw: FakeHardware, data: dict[str, Any], **settings: float) -> StepContext:
    async def nothing(*_a: object) -> None:
        return None

    async def checkpoint(values: dict[str, Any]) -> None:
        data.update(values)

    return StepContext(job_id="j", kind="stamp", params={}, data=data, store=None, hw=hw,  # type: ignore[arg-type]
                       settings=EngineSettings(**{"poll_interval": 0.01, **settings}), db=None, read=None,  # type: ignore[arg-type]
                       progress=nothing, checkpoint=checkpoint)


async def test_power_on_is_sent_once_and_confirmed() -> None:
    hw = FakeHardware(power_delay=0.1)
    out = await ensure_power(_ctx(hw, {}), "b1", PowerState.ON, marker="power_on")
    assert out == {"power_on_confirmed": True}
    assert hw.bmcs.calls.count(("fake://b1", "set_power")) == 1


async def test_a_request_lost_between_checkpoint_and_send_is_sent_again_after_the_wait() -> None:
    hw = FakeHardware()
    # The appliance died after checkpointing the send time but before the request left.
    data = {"power_on_sent_at": time.time()}
    started = time.monotonic()
    await ensure_power(_ctx(hw, data, power_resend_after=0.3), "b1", PowerState.ON, marker="power_on")
    assert time.monotonic() - started >= 0.3          # it waited for the earlier request first
    assert hw.bmcs.calls.count(("fake://b1", "set_power")) == 1


async def test_already_in_state_sends_nothing() -> None:
    hw = FakeHardware()
    await ensure_power(_ctx(hw, {}), "b1", PowerState.OFF, marker="power_off")
    assert ("fake://b1", "set_power") not in hw.bmcs.calls


async def test_a_bmc_that_never_changes_state_fails_the_step_in_time() -> None:
    hw = FakeHardware(power_delay=60)
    with pytest.raises(StepFailed, match=r"did not report power on within 0\.5 s"):
        await ensure_power(_ctx(hw, {}, power_timeout=0.5, power_resend_after=10), "b1", PowerState.ON,
                           marker="power_on")


async def test_a_bmc_that_applies_power_at_once_is_confirmed_soon_after_the_send() -> None:
    """The first read-back comes FIRST_READ_BACK after the request, not a whole poll later
    (a hundred fake blades deploying waited the 0.25 s poll each), then every poll_interval."""
    from appliance.engine.steps.common import FIRST_READ_BACK

    hw = FakeHardware()
    started = time.monotonic()
    await ensure_power(_ctx(hw, {}, poll_interval=1.0), "b1", PowerState.ON, marker="power_on")
    assert time.monotonic() - started < FIRST_READ_BACK + 0.5
    assert hw.bmcs.calls.count(("fake://b1", "get_power")) == 2      # before the send, and once after
    slow = FakeHardware(power_delay=0.3)
    await ensure_power(_ctx(slow, {}, poll_interval=0.2), "b1", PowerState.ON, marker="power_on")
    # reads at 0, 0.05, 0.25, 0.45 s: one read more than polling alone, never a burst
    assert slow.bmcs.calls.count(("fake://b1", "get_power")) <= 4
    assert slow.bmcs.calls.count(("fake://b1", "set_power")) == 1
