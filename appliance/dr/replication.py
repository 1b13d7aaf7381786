"""DR plans replicate to the recovery site (a record kind of appliance.sites.registry).

At the primary a plan is exported when it was made there (``origin_site`` NULL). At the
recovery site it lands with ``origin_site`` = the primary: it can be rehearsed and activated
there, not edited. A plan of the same name made at the recovery site itself is refused, not
overwritten. A deletion at the primary deletes the replica (its run records stay).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.dr import plan as plans
from appliance.errors import Conflict
from appliance.sites.registry import ApplyContext, RecordKind
from appliance.store.tables import DrPlanRow

KIND = "dr_plan"


def export_plans(s: Session) -> dict[str, dict[str, Any]]:
    return {p.name: {"document": p.document, "version": p.version}
            for p in s.scalars(select(DrPlanRow).where(DrPlanRow.origin_site.is_(None)).order_by(DrPlanRow.name))}


def apply_plan(s: Session, ctx: ApplyContext, key: str, data: dict[str, Any] | None) -> None:
    row = s.scalar(select(DrPlanRow).where(DrPlanRow.name == key))
    if row is not None and row.origin_site != ctx.origin:
        where = "this site" if row.origin_site is None else f"site {row.origin_site}"
        raise Conflict(f"dr plan {key} from site {ctx.origin}: a plan of that name from {where} exists here")
    if data is None:
        if row is not None:
            s.delete(row)
        return
    plan = plans.from_dict(data["document"], source=f"dr plan {key} from site {ctx.origin}")
    if row is None:
        s.add(DrPlanRow(name=key, recovery_site=plan.recovery_site, origin_site=ctx.origin,
                        document=plan.document, version=int(data.get("version", 1))))
    else:
        row.document, row.recovery_site = plan.document, plan.recovery_site
        row.version = int(data.get("version", row.version))


DR_PLAN = RecordKind(KIND, export_plans, apply_plan)
