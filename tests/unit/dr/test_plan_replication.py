"""DR plans replicate to the recovery site: exported where made, applied with the primary as
origin, a local plan of the same name refused, a deletion applied."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from appliance.dr.replication import DR_PLAN, apply_plan, export_plans
from appliance.dr.service import PlanService
from appliance.errors import Conflict
from appliance.sites.kinds import default_registry
from appliance.sites.registry import ApplyContext
from appliance.store import Store
from appliance.store.tables import DrPlanRow

PLAN = """
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: prod}
spec:
  recoverySite: b
  profiles: [{all: true}]
  vlans: {20: 220}
  rehearsalVlans: {20: 920}
"""
CTX = ApplyContext(origin="a", site_id=1)


def test_dr_plans_are_a_replicated_kind() -> None:
    assert default_registry().get("dr_plan") is DR_PLAN


def test_a_plan_made_here_is_exported_and_lands_as_a_replica_there(store: Store) -> None:
    PlanService(store).create(PLAN)
    with store.read() as s:
        out = export_plans(s)
    assert list(out) == ["prod"] and out["prod"]["version"] == 1
    # the same record applied at another site's store: here, under another name
    data = dict(out["prod"], document={**out["prod"]["document"], "metadata": {"name": "prod2"}})
    with store.write() as s:
        apply_plan(s, CTX, "prod2", data)
    info = PlanService(store).get("prod2")
    assert info.origin_site == "a" and info.recovery_site == "b"
    with store.read() as s:
        assert list(export_plans(s)) == ["prod"]          # a replica is never sent on
    with store.write() as s:
        apply_plan(s, CTX, "prod2", None)
        assert s.scalar(select(DrPlanRow).where(DrPlanRow.name == "prod2")) is None


def test_a_plan_of_this_site_is_not_overwritten_by_a_replica(store: Store) -> None:
    PlanService(store).create(PLAN)
    with store.read() as s:
        data = export_plans(s)["prod"]
    with pytest.raises(Conflict, match="from this site exists here"), store.write() as s:
        apply_plan(s, CTX, "prod", data)
    with pytest.raises(Conflict, match="replicated here"):
        PlanService(store).create(PLAN.replace("name: prod", "name: prod3"))
        with store.write() as s:
            s.scalar(select(DrPlanRow).where(DrPlanRow.name == "prod3")).origin_site = "a"  # type: ignore[union-attr]
        PlanService(store).create(PLAN.replace("name: prod", "name: prod3"), replace=True)
