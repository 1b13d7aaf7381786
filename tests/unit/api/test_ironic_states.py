"""Ironic's provision states, read off Anvil's facts (appliance.api.ironic.states)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from appliance.api.ironic.states import STALE_AFTER, VERBS, provision
from appliance.services.baremetal import HOLD_REASON, JobFacts, NodeRecord

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def node(**kw: object) -> NodeRecord:
    base = NodeRecord(id=1, uuid="u", name="b01", driver="fake", bmc="fake://b01", username="u", verify_tls=True,
                      state="spare", state_reason=None, cpus=8, memory_gib=64, facts={}, created_at=T0,
                      updated_at=T0)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def job(kind: str, state: str, step: str | None = None, error: str | None = None,
        finished: datetime | None = None) -> JobFacts:
    return JobFacts("j1", kind, state, step, error, finished)


BOUND = {"profile": ("acme", "web-01")}


@pytest.mark.parametrize(("facts", "state", "target"), [
    ({}, "available", None),
    ({"state": "maintenance", "state_reason": HOLD_REASON, "hold": "enroll"}, "enroll", None),
    ({"state": "maintenance", "state_reason": HOLD_REASON, "hold": "verifying", "hold_since": T0}, "verifying",
     "manageable"),
    ({"state": "maintenance", "state_reason": HOLD_REASON, "hold": "manageable"}, "manageable", None),
    ({"state": "maintenance", "state_reason": HOLD_REASON, "hold": "cleaning", "hold_since": T0}, "cleaning",
     "available"),
    ({"job": job("stamp", "pending")}, "deploying", "active"),
    ({"job": job("stamp", "running", "power-on"), "state": "stamping", **BOUND}, "deploying", "active"),
    ({"job": job("stamp", "running", "await-boot"), "state": "stamping", **BOUND}, "wait call-back", "active"),
    ({"state": "active", **BOUND}, "active", None),
    ({"job": job("unstamp", "running", "power-off"), "state": "releasing", **BOUND}, "deleting", "available"),
    ({"job": job("unstamp", "running", "park-ports"), "state": "releasing", **BOUND}, "cleaning", "available"),
    ({"job": job("unstamp", "failed", error="BMC gone"), "state": "releasing", **BOUND}, "error", None),
    ({"state": "stamping", **BOUND, "binding_job": job("stamp", "running", "await-boot")}, "wait call-back",
     "active"),
    ({"job": job("stamp", "rolled_back", error="no boot signal", finished=T0 + timedelta(seconds=5))},
     "deploy failed", "active"),
])
def test_each_anvil_situation_reads_as_ironic_names_it(facts: dict[str, object], state: str,
                                                        target: str | None) -> None:
    p = provision(node(**facts), now=T0 + timedelta(seconds=10))
    assert (p.state, p.target) == (state, target)


def test_a_failed_deploy_is_forgotten_once_the_blade_changed_since() -> None:
    failed = job("stamp", "rolled_back", error="no boot signal", finished=T0)
    assert provision(node(job=failed, updated_at=T0)).state == "deploy failed"
    assert provision(node(job=failed, updated_at=T0)).last_error == "no boot signal"
    assert provision(node(job=failed, updated_at=T0 + timedelta(minutes=1))).state == "available"


def test_work_cut_short_by_a_restart_reads_as_its_failure() -> None:
    held = {"state": "maintenance", "state_reason": HOLD_REASON, "hold_since": T0}
    later = T0 + STALE_AFTER + timedelta(seconds=1)
    assert provision(node(hold="verifying", **held), now=later).state == "enroll"
    assert "interrupted" in (provision(node(hold="verifying", **held), now=later).last_error or "")
    assert provision(node(hold="cleaning", **held), now=later).state == "clean failed"
    assert provision(node(hold="inspecting", **held), now=later).state == "inspect failed"


def test_maintenance_is_an_admins_reason_or_a_failure_never_the_apis_own_hold() -> None:
    assert not provision(node(state="maintenance", state_reason=HOLD_REASON, hold="manageable")).maintenance
    admin = provision(node(state="maintenance", state_reason="DIMM swap", hold="manageable"))
    assert (admin.state, admin.maintenance, admin.maintenance_reason) == ("manageable", True, "DIMM swap")
    spare_in_maint = provision(node(state="maintenance", state_reason="DIMM swap"))
    assert (spare_in_maint.state, spare_in_maint.maintenance) == ("available", True)
    failed = provision(node(state="failed", state_reason="BMC unreachable"))
    assert (failed.maintenance, failed.fault) == (True, "power failure")


def test_a_hold_an_admin_overrode_no_longer_applies() -> None:
    # `anvil blade maintenance off` made the blade spare: it is available, whatever the API held.
    assert provision(node(state="spare", hold="manageable")).state == "available"


def test_verbs_start_only_where_ironic_allows_them() -> None:
    assert "enroll" in VERBS["manage"] and "available" not in VERBS["provide"]
    assert VERBS["active"] == {"available", "deploy failed"}
    assert "active" in VERBS["deleted"] and "manageable" not in VERBS["deleted"]
