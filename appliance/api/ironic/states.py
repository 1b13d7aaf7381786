"""Ironic's provision states, read off Anvil's model; and which verb may start from which state.

Pure: :func:`provision` takes a :class:`~appliance.services.baremetal.NodeRecord` (a blade, its
live binding, the jobs behind it and the API's hold) and names the state as Ironic would.
Anvil's facts come first, in this order:

1. a deploy or undeploy asked through this API and still running: ``deploying`` (``wait
   call-back`` while the stamp waits for the booted image's signal), ``deleting`` (then
   ``cleaning`` once the blade is off and its identities are being cleared);
2. a live binding: ``active``, or ``deploying``/``wait call-back``/``deleting`` while a stamp or
   release made elsewhere (REST, CLI, failover) runs; ``error`` when a release through this API
   failed (running it again converges);
3. a failed stamp through this API, the blade unchanged since: ``deploy failed``;
4. the API's hold: ``enroll``, ``verifying``, ``manageable``, ``inspecting``, ``inspect failed``,
   ``cleaning``, ``clean failed``; a transitional hold older than :data:`STALE_AFTER` (its work
   was cut short by a restart) reads as that work's failure;
5. otherwise ``available``.

Ironic's ``maintenance`` flag is Anvil's maintenance with an admin's reason, or a failed or
fenced blade (``fault``: ``power failure``; a fenced one ``fenced``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from appliance.services.baremetal import HOLD_REASON, NodeRecord

ACTIVE_JOB = frozenset({"pending", "running", "waiting", "rolling_back"})
FAILED_JOB = frozenset({"failed", "rolled_back", "cancelled"})
STALE_AFTER = timedelta(minutes=5)
# A release is "deleting" until the blade is confirmed off, then "cleaning" (identities, ports, LUN).
_UNSTAMP_CLEANING = frozenset({"clear-identity", "park-ports", "revoke-storage", "unbind"})
# What a transitional hold becomes when its work never finished.
_INTERRUPTED = {"verifying": "enroll", "inspecting": "inspect failed", "cleaning": "clean failed"}
TARGET_OF = {"verifying": "manageable", "inspecting": "manageable", "cleaning": "available",
             "deploying": "active", "wait call-back": "active", "deleting": "available"}


@dataclass(frozen=True, slots=True)
class Provision:
    state: str | None           # None: "available" before API 1.2 (Ironic's NOSTATE)
    target: str | None
    maintenance: bool
    maintenance_reason: str | None
    fault: str | None
    last_error: str | None


def _running(kind: str, step: str | None) -> str:
    if kind == "unstamp":
        return "cleaning" if step in _UNSTAMP_CLEANING else "deleting"
    return "wait call-back" if step == "await-boot" else "deploying"


def _flags(r: NodeRecord) -> tuple[bool, str | None, str | None]:
    if r.state == "maintenance" and r.state_reason != HOLD_REASON:
        return True, r.state_reason, None
    if r.state == "failed":
        return True, r.state_reason or "failed", "power failure"
    if r.state == "fenced":
        return True, r.state_reason or "fenced", "fenced"
    return False, None, None


def provision(r: NodeRecord, *, now: datetime | None = None) -> Provision:
    now = now or datetime.now(UTC)
    maint, reason, fault = _flags(r)

    def out(state: str, error: str | None = None, target: str | None = None) -> Provision:
        return Provision(state, target or TARGET_OF.get(state), maint, reason, fault,
                         error if error is not None else r.last_error)

    job = r.job
    if job is not None and job.state in ACTIVE_JOB:
        return out(_running(job.kind, job.step))
    if r.profile is not None:
        if job is not None and job.kind == "unstamp" and job.state in FAILED_JOB:
            return out("error", job.error)
        if r.state in ("stamping", "releasing"):
            bj = r.binding_job
            if bj is not None and bj.state in ACTIVE_JOB:
                return out(_running(bj.kind, bj.step))
            return out("deploying" if r.state == "stamping" else "deleting")
        return out("active")
    if (job is not None and job.kind == "stamp" and job.state in FAILED_JOB and job.finished_at is not None
            and r.updated_at <= job.finished_at + timedelta(seconds=1)):
        return out("deploy failed", job.error, target="active")
    held = r.held
    if held is not None:
        since = r.hold_since or now
        if held in _INTERRUPTED and now - since > STALE_AFTER:
            return out(_INTERRUPTED[held], r.last_error or f"{held} was interrupted (the appliance stopped); "
                                                          "ask again")
        return out(held)
    return out("available")


# Verbs of PUT /nodes/{node}/states/provision → the states each may start from. Ironic's
# aliases (1.73): deploy = active, undeploy = deleted.
VERBS: dict[str, frozenset[str]] = {
    "manage": frozenset({"enroll", "available", "inspect failed", "clean failed"}),
    "inspect": frozenset({"manageable", "inspect failed"}),
    "provide": frozenset({"manageable"}),
    "active": frozenset({"available", "deploy failed"}),
    "deleted": frozenset({"active", "deploy failed", "error", "wait call-back"}),
}
ALIASES = {"deploy": "active", "undeploy": "deleted"}
# Verbs Ironic has and Anvil refuses (501), with the reason a client is given.
REFUSED: dict[str, str] = {
    "clean": "Anvil runs no clean steps (provide powers the blade off and returns it to the spares)",
    "rebuild": "Anvil does not rewrite a running blade; undeploy, then deploy",
    "rescue": "Anvil has no rescue ramdisk",
    "unrescue": "Anvil has no rescue ramdisk",
    "adopt": "Anvil adopts no running server; stamp a profile instead",
    "abort": "a stamp rolls itself back on failure; undeploy a node to stop it",
    "service": "Anvil runs no service steps",
    "unhold": "Anvil holds no steps",
}
