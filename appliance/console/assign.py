"""What the profile page's assign form offers, worked out by the placement dry run.

Every blade pool in sight is offered once, marked when no blade of it fits; an appliance-wide
operator also gets the blades themselves: those that fit first (the best one first), then,
greyed out, those that do not, each with the dry run's reason. The form's first choice is
the best one, its confirmation names the blade the stamp would take, and with nothing that
fits there is nothing to assign. A tenant-scoped user chooses a pool and is never shown a
blade by name (as the API's dry run shows it none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.services.blade_pools import DEFAULT_POOL, BladePoolService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileInfo
from appliance.services.scope import Scope
from appliance.store import Store

GREYED_SHOWN = 200      # blades that do not fit, listed with their reason (the rest are counted)


@dataclass
class Choice:
    value: str                  # pool:NAME | blade:NAME
    label: str
    fits: bool
    reason: str | None = None   # why not, when it does not fit
    blade: str | None = None    # the blade a stamp would take (never shown to a tenant)


@dataclass
class AssignForm:
    pools: list[Choice] = field(default_factory=list)
    blades: list[Choice] = field(default_factory=list)
    more_greyed: int = 0
    selected: str | None = None
    confirm: str = ""

    @property
    def any_fits(self) -> bool:
        return self.selected is not None


def _blade_label(b: dict[str, Any] | None, name: str) -> str:
    if b is None or b.get("cpus") is None:
        return name
    return f"{name} ({b['cpus']} CPUs, {b['memoryGiB']} GiB)"


def assign_form(store: Store, info: ProfileInfo, scope: Scope, facts: dict[str, dict[str, Any]]) -> AssignForm:
    """The choices for stamping ``info``; ``facts`` are the blades by name (CPUs, memory) for labels."""
    jobs = JobService(store)
    names = [DEFAULT_POOL, *(p.name for p in BladePoolService(store).list(scope=scope) if p.name != DEFAULT_POOL)]
    form = AssignForm()
    for pool in dict.fromkeys(names):      # each pool once
        pl = jobs.dry_run(info.name, tenant=info.tenant, pool=pool, scope=scope)
        shown = pl.best if scope.unscoped else None
        label = f"pool {pool}" + (f" → {shown}" if shown else "" if pl.best else " (no blade fits)")
        form.pools.append(Choice(f"pool:{pool}", label, pl.best is not None,
                                 None if pl.best else "no blade of this pool fits", shown))
    if scope.unscoped:
        pl = jobs.dry_run(info.name, tenant=info.tenant, pool=DEFAULT_POOL, scope=scope)
        for i, name in enumerate(pl.chosen):
            label = _blade_label(facts.get(name), name) + (" — best fit" if i == 0 else "")
            form.blades.append(Choice(f"blade:{name}", label, True, blade=name))
        for r in pl.rejected[:GREYED_SHOWN]:
            form.blades.append(Choice(f"blade:{r.blade}", f"{_blade_label(facts.get(r.blade), r.blade)} — {r.reason}",
                                      False, r.reason, r.blade))
        form.more_greyed = max(0, len(pl.rejected) - GREYED_SHOWN)
    first = next((c for c in form.pools + form.blades if c.fits), None)
    if first is not None:
        form.selected = first.value
        target = f"blade {first.blade}" if first.blade and scope.unscoped else f"the best blade of {first.label}"
        form.confirm = f"Stamp {info.tenant}/{info.name} onto {target}?"
    return form
