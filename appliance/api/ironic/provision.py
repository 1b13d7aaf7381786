"""Provision and power states, maintenance and validation: ``PUT /nodes/{node}/states/...``.

The verbs, as Anvil does them (202 at once; the node's state shows the work, as Ironic's does):

- ``manage`` (enroll → verifying → manageable): read the power state from the BMC (its address
  and credentials work), then read the blade's facts into the inventory, as ``anvil blade
  inspect`` does. *Manageable* means: Anvil reaches the BMC and knows the blade; it is still held
  out of placement. A failure returns to ``enroll`` with ``last_error``. From ``available`` it
  only takes the blade out of the spares.
- ``inspect`` (manageable → inspecting → manageable, or ``inspect failed``): the facts again.
- ``provide`` (manageable → cleaning → available): power the blade off, confirmed by reading it
  back (Ironic's cleaning ends powered off), then return it to the spares: *available* means
  placement may take it. A failure stays ``clean failed`` until ``manage``.
- ``deploy``/``active`` (available → deploying → wait call-back → active): a stamp job of the
  profile ``instance_info`` names (or one made for the node, appliance.api.ironic.deploy) onto
  this blade; the state follows the job, ``deploy failed`` with its error if it rolls back.
- ``undeploy``/``deleted`` (active → deleting → cleaning → available): a release job.

The work of manage, inspect and provide runs beside the request (:class:`NodeWork`), bounded by
:data:`WORK_TIMEOUT`; a restart cuts it short, and the node then reads as that work's failure.
Power (``power on``, ``power off``, ``rebooting``, ``soft power off``) is sent to the BMC in the
request. A node with work or a job in progress answers 409, as Ironic's locked nodes do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from appliance.api.ironic import deploy, edge
from appliance.api.ironic.errors import IronicError, NotImplementedHere
from appliance.api.ironic.nodes import live_power, render, service
from appliance.api.ironic.states import ALIASES, REFUSED, VERBS, provision
from appliance.api.keys import ENGINE, HARDWARE, READS, SETTINGS, STORE, WRITES
from appliance.api.spec import Forbidden, caller, scope_of
from appliance.drivers.protocols import BladeFacts, PowerAction, PowerState
from appliance.errors import AnvilError
from appliance.services.baremetal import BaremetalService, NodeRecord, note_job
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.services.scope import Scope
from appliance.store.tables import JobRow

log = logging.getLogger(__name__)

WORK_TIMEOUT = 120.0
POWER_CONFIRM = 60.0
TRANSITIONAL = frozenset({"verifying", "inspecting", "cleaning", "deploying", "wait call-back", "deleting"})


class NodeWork:
    """The manage/inspect/provide work running beside requests; cancelled when the app stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, name: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


WORK = web.AppKey("ironic_work", NodeWork)


def _locked(r: NodeRecord, state: str | None) -> IronicError:
    return IronicError(409, f"Node {r.uuid} is locked by host anvil ({state}), please retry after the current "
                            "operation is completed.")


async def _run(request: web.Request, r: NodeRecord, doing: str, then: str, failed: str,
               work: Callable[[], Awaitable[BladeFacts | None]]) -> None:
    """Hold the node in ``doing`` now; run ``work`` beside the request; then hold it in ``then``
    (None: available) with the facts it read, or in ``failed`` with the error."""
    svc, scope = service(request), scope_of(request)
    before = r.held
    await request.app[WRITES].run(svc.set_hold, scope, r.uuid, doing, expect=frozenset({before}))

    async def job() -> None:
        outcome, error, facts = (None if then == "available" else then), None, None
        try:
            async with asyncio.timeout(WORK_TIMEOUT):
                facts = await work()
        except asyncio.CancelledError:
            # The appliance is stopping: back where it was, so the client can simply ask again.
            await request.app[WRITES].run(svc.set_hold, scope, r.uuid, before, expect=frozenset({doing}))
            raise
        except (AnvilError, TimeoutError) as exc:
            outcome, error = failed, str(exc) or f"{doing} took longer than {WORK_TIMEOUT:g} s"
        try:
            await request.app[WRITES].run(svc.set_hold, scope, r.uuid, outcome, expect=frozenset({doing}), error=error,
                                          facts=facts if error is None else None)
        except AnvilError:
            log.warning("bare metal API: node %s left %s meanwhile", r.name, doing, exc_info=True)

    request.app[WORK].start(f"baremetal {doing} {r.name}", job())


def _inspect(request: web.Request, r: NodeRecord, *, verify: bool) -> Callable[[], Awaitable[BladeFacts | None]]:
    """Read the blade's facts (after its power state, which verifies the BMC's credentials); they are
    written with the hold that ends the work, in one transaction."""
    async def work() -> BladeFacts | None:
        driver, bmc = await request.app[READS].run(request.app[HARDWARE].bmc, r.name)
        if verify:
            await driver.get_power(bmc)
        return await driver.facts(bmc)
    return work


def _power_off(request: web.Request, r: NodeRecord) -> Callable[[], Awaitable[BladeFacts | None]]:
    async def work() -> BladeFacts | None:
        await _confirm(request, r.name, PowerState.OFF, PowerAction.OFF)
        return None
    return work


async def _confirm(request: web.Request, name: str, want: PowerState, action: PowerAction) -> None:
    driver, bmc = await request.app[READS].run(request.app[HARDWARE].bmc, name)
    if await driver.get_power(bmc) is want:
        return
    await driver.set_power(bmc, action)
    async with asyncio.timeout(POWER_CONFIRM):
        while await driver.get_power(bmc) is not want:
            await asyncio.sleep(0.25)


async def _deploy(request: web.Request, r: NodeRecord, body: dict[str, Any]) -> None:
    for key, why in (("configdrive", "Anvil writes no config drive; a profile carries the server's identity"),
                     ("deploy_steps", "Anvil's stamp has fixed steps"), ("runbook", "Anvil runs no runbooks")):
        if body.get(key):
            raise NotImplementedHere(f"{key}: {why}")
    scope: Scope = scope_of(request)
    wanted = deploy.plan(r.name, r.instance_info, r.properties, scope.home(),
                         parking_vlan=request.app[SETTINGS].network.parking_vlan)
    store = request.app[STORE]
    made_id = None
    if wanted.made is not None:
        made_id = await request.app[WRITES].run(_save_made, store, wanted.made)
    def remember(s: Session, job: JobRow) -> None:
        note_job(s, r.id, job.id, profile_id=made_id, made_profile=made_id is not None)

    await request.app[WRITES].run(JobService(store).submit_assign, wanted.profile, tenant=wanted.tenant, blade=r.name,
                                  created_by=caller(request).who, scope=scope, then=remember)
    _wake(request)


def _save_made(store: Any, profile: Any) -> int:
    """Save (or replace) the profile made for the node; Conflict while it is in use."""
    from sqlalchemy import select

    from appliance.errors import Conflict
    from appliance.store.tables import ProfileRow

    svc = ProfileService(store)
    with store.read() as s:
        row = s.scalar(select(ProfileRow).where(ProfileRow.kind == "ServerProfile",
                                                ProfileRow.tenant == profile.metadata.tenant,
                                                ProfileRow.name == profile.metadata.name))
        if row is not None and row.state != "unassigned":
            raise Conflict(f"profile {row.tenant}/{row.name} is {row.state}; undeploy it first")
    svc.save(profile, replace=True, source="instance_info")
    with store.read() as s:
        got = s.scalar(select(ProfileRow.id).where(ProfileRow.kind == "ServerProfile",
                                                   ProfileRow.tenant == profile.metadata.tenant,
                                                   ProfileRow.name == profile.metadata.name))
        assert got is not None
        return int(got)


async def _undeploy(request: web.Request, r: NodeRecord, state: str | None) -> None:
    scope = scope_of(request)
    svc = service(request)
    if r.profile is None:   # deploy failed: nothing is bound; the node is simply available again
        await request.app[WRITES].run(svc.record_job, scope, r.uuid, None)
        return
    tenant, name = r.profile

    def remember(s: Session, job: JobRow) -> None:
        # Ironic forgets instance_info once a node is torn down; the next deploy names what to stamp.
        note_job(s, r.id, job.id, instance_info={})

    await request.app[WRITES].run(JobService(request.app[STORE]).submit_release, name, tenant=tenant,
                                  created_by=caller(request).who, scope=scope, then=remember)
    _wake(request)


def _wake(request: web.Request) -> None:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()


async def set_provision(request: web.Request) -> web.Response:
    body = await edge.json_body(request)
    target = body.get("target") if isinstance(body, dict) else None
    if not isinstance(target, str):
        raise IronicError(400, "target is required: manage, provide, inspect, active (deploy), deleted (undeploy)")
    if target in ALIASES and not edge.at_least(request, 73):
        raise IronicError(406, f"the {target!r} verb needs API version 1.73 (use "
                               f"{'active' if target == 'deploy' else 'deleted'})")
    verb = ALIASES.get(target, target)
    if verb in REFUSED:
        raise NotImplementedHere(f"{target}: {REFUSED[verb]}")
    if verb not in VERBS:
        raise IronicError(400, f"{target!r} is not a provision target")
    r = await request.app[READS].run(service(request).node, scope_of(request), request.match_info["node"])
    if caller(request).tenant is not None and verb != "deleted":
        raise Forbidden(f"a tenant-scoped {caller(request).kind} may only undeploy its nodes")
    state = provision(r).state or "available"
    if state not in VERBS[verb]:
        if state in TRANSITIONAL:
            raise _locked(r, state)
        raise IronicError(400, f'The requested action "{target}" can not be performed on node "{r.uuid}" while '
                               f'it is in state "{state}".')
    if verb == "manage" and state == "enroll":
        await _run(request, r, "verifying", "manageable", "enroll", _inspect(request, r, verify=True))
    elif verb == "manage":
        await request.app[WRITES].run(service(request).set_hold, scope_of(request), r.uuid, "manageable",
                                      expect=frozenset({r.held}), clear_job=True)
    elif verb == "inspect":
        await _run(request, r, "inspecting", "manageable", "inspect failed", _inspect(request, r, verify=False))
    elif verb == "provide":
        await _run(request, r, "cleaning", "available", "clean failed", _power_off(request, r))
    elif verb == "active":
        await _deploy(request, r, body)
    else:
        await _undeploy(request, r, state)
    resp = web.Response(status=202)
    resp.headers["Location"] = f"{request.scheme}://{request.host}/baremetal/v1/nodes/{r.uuid}/states"
    return resp


POWER_TARGETS = {"power on": (PowerAction.ON, 1), "power off": (PowerAction.OFF, 1),
                 "rebooting": (PowerAction.RESET, 1), "soft power off": (PowerAction.SOFT_OFF, 27)}


async def set_power(request: web.Request) -> web.Response:
    body = await edge.json_body(request)
    target = body.get("target") if isinstance(body, dict) else None
    if target == "soft rebooting":
        raise NotImplementedHere("soft rebooting: Anvil's drivers reset or power off softly, not both")
    if target not in POWER_TARGETS or not edge.at_least(request, POWER_TARGETS[target][1]):
        raise IronicError(400, f"target must be one of {', '.join(POWER_TARGETS)}, not {target!r}")
    r = await request.app[READS].run(service(request).node, scope_of(request), request.match_info["node"])
    state = provision(r).state
    if state in TRANSITIONAL:
        raise _locked(r, state)
    driver, bmc = await request.app[READS].run(request.app[HARDWARE].bmc, r.name)
    await driver.set_power(bmc, POWER_TARGETS[target][0])
    return web.Response(status=202)


async def get_states(request: web.Request) -> web.Response:
    r = await request.app[READS].run(service(request).node, scope_of(request), request.match_info["node"])
    full = render(request, r, provision(r), await live_power(request, r))
    keys = ("power_state", "target_power_state", "provision_state", "target_provision_state", "last_error",
            "console_enabled", "provision_updated_at", "raid_config", "target_raid_config")
    return web.json_response({k: full[k] for k in keys if k in full})


async def set_maintenance(request: web.Request) -> web.Response:
    reason = None
    if request.can_read_body:
        body = await edge.json_body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
    await request.app[WRITES].run(BaremetalService.set_maintenance, service(request), scope_of(request),
                                  request.match_info["node"], True, reason if isinstance(reason, str) else None)
    return web.Response(status=202)


async def unset_maintenance(request: web.Request) -> web.Response:
    await request.app[WRITES].run(BaremetalService.set_maintenance, service(request), scope_of(request),
                                  request.match_info["node"], False)
    return web.Response(status=202)


async def validate(request: web.Request) -> web.Response:
    """Which of Ironic's interfaces would work for this node: power and management when its BMC
    driver is installed; deploy and boot when ``instance_info`` names something to stamp."""
    r = await request.app[READS].run(service(request).node, scope_of(request), request.match_info["node"])
    ok: dict[str, Any] = {"result": True}
    try:
        deploy.plan(r.name, r.instance_info, r.properties, scope_of(request).home(),
                    parking_vlan=request.app[SETTINGS].network.parking_vlan)
        dep = ok
    except AnvilError as exc:
        dep = {"result": False, "reason": str(exc)}
    none = {"result": False, "reason": "not supported by Anvil"}
    return web.json_response({"power": ok, "management": ok, "boot": dep, "deploy": dep, "console": none,
                              "inspect": ok, "network": ok, "storage": ok, "raid": none, "rescue": none,
                              "bios": none})
