"""Starting DR runs at the recovery site: rehearse, activate, fail back. Each is a run record and
its job, written in one transaction (appliance.dr.jobs runs them).

An activation needs the primary reachable, to fence it, unless the operator declares it lost:
``primary_lost`` with a reason, written to the audit log with who said so. The caller checks
reachability (an async call to the peer) before submitting; :func:`refuse_unreachable` says
what to do when it is not.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from appliance.dr.jobs import DR_ACTIVATE, DR_FAILBACK, DR_REHEARSE
from appliance.dr.service import APPLIANCE, RunInfo, plan_row, run_info
from appliance.errors import Conflict, Issue, ValidationError
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.audit import record
from appliance.store.repos import jobs as repo
from appliance.store.tables import DrRunRow, JobRow, LocalSiteRow

KIND_OF = {"rehearsal": DR_REHEARSE, "activation": DR_ACTIVATE, "failback": DR_FAILBACK}
MAX_REASON = 1000


def refuse_unreachable(site: str, why: str) -> Conflict:
    return Conflict(f"the primary site {site} cannot be reached to fence its servers ({why}); if it is lost, "
                    "activate with --primary-lost --reason TEXT (written to the audit log)")


def _active(s: Any, plan: str) -> bool:
    """Whether the plan's last activation here succeeded and was not failed back."""
    act = s.scalar(select(DrRunRow).where(DrRunRow.plan == plan, DrRunRow.kind == "activation",
                                          DrRunRow.state == "succeeded").order_by(DrRunRow.started_at.desc())
                   .limit(1))
    return act is not None and not act.detail.get("failed_back")


def submit(store: Store, kind: str, plan: str, *, created_by: str | None = None, primary_lost: bool = False,
           reason: str | None = None, scope: Scope = APPLIANCE) -> RunInfo:
    """Open a ``kind`` run of ``plan`` here and submit its job. NotFound for an unknown plan;
    Conflict for a plan made here (it runs at its recovery site), a run of it in progress, an
    activation of a plan already active or a failback of one that is not; ValidationError for
    ``primary_lost`` without a reason."""
    job_kind = KIND_OF[kind]
    if primary_lost and kind != "activation":
        raise ValidationError([Issue("primaryLost", "only an activation can declare the primary lost")])
    reason = (reason or "").strip() or None
    if primary_lost and not reason:
        raise ValidationError([Issue("reason", "--primary-lost needs --reason TEXT: why the primary is lost "
                                               "(written to the audit log)")])
    if reason and len(reason) > MAX_REASON:
        raise ValidationError([Issue("reason", f"is {len(reason)} characters; at most {MAX_REASON}")])
    with store.write() as s:
        row = plan_row(s, scope, plan)
        if row.origin_site is None:
            raise Conflict(f"dr plan {plan} was made at this site: {kind} runs at its recovery site "
                           f"{row.recovery_site}")
        here = s.scalar(select(LocalSiteRow.name).limit(1))
        if here is not None and here != row.recovery_site:
            raise Conflict(f"dr plan {plan} recovers at site {row.recovery_site}, not at this site ({here})")
        busy = s.scalar(select(DrRunRow).where(DrRunRow.plan == plan, DrRunRow.state == "running"))
        if busy is not None:
            job = s.get(JobRow, busy.job_id) if busy.job_id else None
            if job is None or job.state in ("pending", "running", "waiting", "rolling_back"):
                raise Conflict(f"dr plan {plan} has a {busy.kind} in progress (run {busy.id})")
        if kind == "activation" and _active(s, plan):
            raise Conflict(f"dr plan {plan} is active here already (fail it back first)")
        if kind == "failback" and not _active(s, plan):
            raise Conflict(f"dr plan {plan} is not active here: nothing to fail back")
        if kind == "rehearsal" and _active(s, plan):
            raise Conflict(f"dr plan {plan} is active here: a rehearsal runs only while the primary holds it")
        run_id = str(uuid.uuid4())
        params: dict[str, Any] = {"plan": plan, "run": run_id, "by": created_by}
        if primary_lost:
            params.update(primary_lost=True, reason=reason)
            record(s, action="dr.primary-lost", resource="dr_plan", name=plan,
                   after={"site": row.origin_site, "by": created_by, "reason": reason})
        job = repo.create(s, kind=job_kind.name, subject=f"dr plan {plan}", profile_id=None, tenant=None,
                          params=params, step_names=job_kind.step_names, created_by=created_by)
        run = DrRunRow(id=run_id, plan=plan, kind=kind, state="running", job_id=job.id, created_by=created_by,
                       primary_lost=primary_lost, reason=reason, started_at=datetime.now(UTC), detail={})
        s.add(run)
        record(s, action=f"dr.{kind}", resource="dr_plan", name=plan, after={"run": run_id, "job": job.id})
        s.flush()
        return run_info(s, run)
