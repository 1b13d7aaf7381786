"""A host keeps its id through a failover: ``host.failed`` when it opens, ``host.ready`` when
it succeeds, the same host (id, UUID, MACs: the profile's), perhaps on another blade.

Called by appliance.services.failover for every failover record that opens or changes
state, inside that transaction, so the host's state and its events commit with the
record (the failover job's end is the record's ``succeeded``). A failover that fails or is
cancelled leaves the host ``failed`` with the reason; with no failover open any more the
reconcile loop replaces it (``host.replaced``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.domain.failover import FailoverState
from appliance.domain.hostpool import HOST_FAILED, HOST_READY, HostState
from appliance.services import host_events
from appliance.store.tables import FailoverRow, HostPoolRow, HostRow


def on_failover(s: Session, record: FailoverRow) -> None:
    """Bring the host of ``record``'s profile (if it is a pool's host) in step with the record."""
    if record.profile_id is None:
        return
    host = s.scalar(select(HostRow).where(HostRow.profile_id == record.profile_id,
                                          HostRow.state.in_([HostState.READY.value, HostState.FAILED.value])))
    if host is None:
        return      # not a pool's host, or one that is requested, releasing or gone
    pool = s.get(HostPoolRow, host.pool_id)
    assert pool is not None
    state = FailoverState(record.state)
    what = "drill" if record.drill else "failover"
    if state is FailoverState.SUCCEEDED:
        if host.state == HostState.FAILED.value and host.failover_id == record.id:
            host.state, host.reason = HostState.READY.value, None
            host.blade = record.to_blade or host.blade
            host_events.append(s, pool, host, HOST_READY, failover=record.id)
        return
    if state in (FailoverState.FAILED, FailoverState.CANCELLED):
        if host.failover_id == record.id:
            host.state = HostState.FAILED.value
            host.reason = f"{what} #{record.id} {state.value}: {record.reason or 'no reason given'}"[:2000]
        return
    if host.failover_id != record.id or host.state != HostState.FAILED.value:
        host.state, host.failover_id = HostState.FAILED.value, record.id
        host.reason = f"{what} #{record.id}: {record.reason or 'failure detected'}"[:2000]
        host_events.append(s, pool, host, HOST_FAILED, failover=record.id, reason=host.reason)
