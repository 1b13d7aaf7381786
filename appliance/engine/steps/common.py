"""What stamp and unstamp steps share: loading rows, moving states, driving power."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.domain.profile import Profile, from_dict
from appliance.domain.states import (
    BLADE_TRANSITIONS,
    PROFILE_TRANSITIONS,
    BladeState,
    ProfileState,
    transition,
)
from appliance.drivers.protocols import PortConfig, PowerAction, PowerState
from appliance.engine.model import StepContext, StepFailed
from appliance.errors import NotFound
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, ProfileRow, SwitchRow

FIRST_READ_BACK = 0.05   # s from a power request to its first read-back (then every poll_interval)


def profile_row(s: Session, ctx: StepContext) -> ProfileRow:
    row = s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile",
                                            ProfileRow.tenant == ctx.params["tenant"],
                                            ProfileRow.name == ctx.params["profile"]))
    if row is None:
        raise StepFailed(f"profile {ctx.params['tenant']}/{ctx.params['profile']} no longer exists")
    return row


def blade_row(s: Session, name: str) -> BladeRow:
    row = s.scalar(select(BladeRow).where(BladeRow.name == name))
    if row is None:
        raise NotFound("blade", name)
    return row


def live_binding(s: Session, *, profile_id: int | None = None, blade_id: int | None = None) -> BindingRow | None:
    stmt = select(BindingRow).where(BindingRow.state == "live")
    if profile_id is not None:
        stmt = stmt.where(BindingRow.profile_id == profile_id)
    if blade_id is not None:
        stmt = stmt.where(BindingRow.blade_id == blade_id)
    return s.scalar(stmt)


def next_generation(s: Session, profile_id: int) -> int:
    top = s.scalar(select(func.max(BindingRow.generation)).where(BindingRow.profile_id == profile_id))
    return int(top or 0) + 1


def move_blade(row: BladeRow, wanted: BladeState) -> None:
    row.state = transition(BLADE_TRANSITIONS, BladeState(row.state), wanted, what=f"blade {row.name}").value


def move_profile(row: ProfileRow, wanted: ProfileState) -> None:
    row.state = transition(PROFILE_TRANSITIONS, ProfileState(row.state), wanted,
                           what=f"profile {row.tenant}/{row.name}").value


@dataclass(frozen=True, slots=True)
class Port:
    switch: str
    port: str


def cabled_ports(s: Session, blade_id: int) -> list[Port | None]:
    """The switch port of each blade NIC, in inventory order (None where not cabled)."""
    rows = s.execute(
        select(BladeNicRow.position, SwitchRow.name, BladeNicRow.port)
        .outerjoin(SwitchRow, SwitchRow.id == BladeNicRow.switch_id)
        .where(BladeNicRow.blade_id == blade_id).order_by(BladeNicRow.position)
    ).all()
    return [Port(r[1], r[2]) if r[1] and r[2] else None for r in rows]


async def load_profile(ctx: StepContext) -> Profile:
    """The job's profile, read and parsed once per job run (its steps all want it)."""
    cached = ctx.memo.get("profile")
    if isinstance(cached, Profile):
        return cached

    def _load() -> dict[str, Any]:
        with ctx.store.read() as s:
            return dict(profile_row(s, ctx).document)
    profile = from_dict(await ctx.read(_load))
    ctx.memo["profile"] = profile
    return profile


async def ensure_power(ctx: StepContext, blade: str, want: PowerState, *, marker: str) -> dict[str, Any]:
    """Bring the blade to ``want`` and confirm it by reading the state back.

    A request is sent only after a read shows the blade is not there yet, and the time
    it was sent is checkpointed first. After a crash the step first waits out an earlier
    request; if the state still has not changed ``power_resend_after`` seconds after the
    last request (it may never have left: the appliance can die between the checkpoint
    and the send), it reads again and sends once more. Never blindly, never in a burst.
    """
    driver, bmc = ctx.hw.bmc(blade)
    deadline = time.monotonic() + ctx.settings.power_timeout
    key = f"{marker}_sent_at"
    action = PowerAction.ON if want is PowerState.ON else PowerAction.OFF
    await ctx.progress(f"{blade}: power {want.value} confirmation from the BMC")
    while True:
        if await driver.get_power(bmc) is want:
            return {f"{marker}_confirmed": True}
        sent_at = ctx.data.get(key)
        pause = ctx.settings.poll_interval
        if sent_at is None or time.time() - float(sent_at) >= ctx.settings.power_resend_after:
            await ctx.checkpoint({key: time.time()})
            await driver.set_power(bmc, action)
            ctx.note(f"power {want.value} sent to {blade}")
            # The first read-back soon after a send: a BMC that applies it at once is confirmed
            # then, not a whole poll later (one read more for one that takes seconds).
            pause = min(pause, FIRST_READ_BACK)
        if time.monotonic() >= deadline:
            raise StepFailed(f"{blade}: the BMC did not report power {want.value} within "
                             f"{ctx.settings.power_timeout:g} s")
        await asyncio.sleep(pause)


async def set_ports(ctx: StepContext, ports: list[tuple[Port, PortConfig]]) -> None:
    for port, want in ports:
        driver, ref = ctx.hw.switch(port.switch)
        await driver.set_port(ref, port.port, want)
