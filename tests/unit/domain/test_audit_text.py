"""Audit entries read as what happened, with who did it in words."""

from __future__ import annotations

from appliance.domain.audit_text import actor_text, describe

ROLES = {"user:alice": "operator", "token:3": "viewer"}


def test_actors_read_as_role_and_name() -> None:
    assert actor_text("user:alice", ROLES) == "operator alice"
    assert actor_text("user:gone", ROLES) == "user gone"
    assert actor_text("token:ci#3", ROLES) == "viewer token ci"
    assert actor_text("local:root", ROLES) == "local admin root"
    assert actor_text("system:setup", ROLES) == "the appliance"


def job(kind: str, **params: str) -> dict[str, object]:
    return {"action": "create", "resource": "job", "name": "46ed6afe-8fd3-419a-9e34-991f1eaef4a8", "tenant": "acme",
            "after": {"kind": kind, "subject": "profile acme/web-01",
                      "params": {"profile": "web-01", "tenant": "acme", **params}}}


def test_jobs_say_what_was_asked_and_name_the_job() -> None:
    assert describe(job("stamp", blade="rf-02", pool="spares"), "operator alice") == (
        "operator alice assigned acme/web-01 to blade rf-02, job 46ed6afe")
    assert describe(job("stamp", pool="web"), "operator alice") == (
        "operator alice assigned acme/web-01 to the best spare of pool web, job 46ed6afe")
    assert describe(job("unstamp"), "x") == "x released acme/web-01 from its blade, job 46ed6afe"
    assert describe(job("failover", to="rf-01"), "x") == "x started a failover of acme/web-01 to rf-01, job 46ed6afe"


def test_other_changes_read_as_sentences() -> None:
    blade = {"name": "rf-02", "resource": "blade", "action": "update",
             "before": {"state": "spare"}, "after": {"state": "maintenance", "state_reason": "DIMM swap"}}
    assert describe(blade, "admin bob") == "admin bob put blade rf-02 into maintenance (DIMM swap)"
    back = {**blade, "before": {"state": "maintenance"}, "after": {"state": "spare"}}
    assert describe(back, "a") == "a returned blade rf-02 from maintenance"
    assert describe({"name": "rf-01", "resource": "blade", "action": "power", "after": {"action": "on"}}, "a") == (
        "a powered blade rf-01 on")
    token = {"name": "ci", "resource": "token", "action": "create", "after": {"role": "viewer", "tenant": None}}
    assert describe(token, "a") == "a created token ci (viewer)"
    revoked = {"name": "ci", "resource": "token", "action": "update", "after": {"revoked_at": "2026-12-01"}}
    assert describe(revoked, "a") == "a revoked token ci"
    user = {"name": "alice", "resource": "user", "action": "create", "after": {"role": "operator", "tenant": "acme"}}
    assert describe(user, "a") == "a added user alice (operator, tenant acme)"
    grant = {"name": "web", "resource": "blade-pool", "action": "update", "before": {"tenant": None},
             "after": {"tenant": "acme"}}
    assert describe(grant, "a") == "a granted blade pool web to tenant acme"
    prof = {"name": "kvm-host", "tenant": "default", "resource": "profile", "action": "create",
            "after": {"kind": "ServerProfileTemplate"}}
    assert describe(prof, "a") == "a imported template default/kvm-host"
    odd = {"name": "x", "resource": "gizmo", "action": "frob", "tenant": "t"}
    assert describe(odd, "a") == "a frob gizmo x (tenant t)"
