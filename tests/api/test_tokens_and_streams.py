"""Tokens: a name is unique among its owner's live tokens, the audit names a token by id, and
a server-sent event stream ends once the token that opened it is revoked or expires."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from appliance.api.routes import jobs as job_routes
from appliance.errors import Conflict
from appliance.services.jobs import JobService
from appliance.services.tokens import TokenService
from appliance.store.audit import Actor, acting_as
from tests.api.conftest import Api


def test_token_names_are_unique_per_owner_and_revoked_by_id_when_ambiguous(api: Api) -> None:
    svc = TokenService(api.store)
    svc.create("ci", role="viewer", owner="user:1")
    with pytest.raises(Conflict, match="already have a live token named 'ci'"):
        svc.create("ci", role="viewer", owner="user:1")
    svc.create("ci", role="viewer", owner="user:2")          # another owner's "ci" is another token
    with pytest.raises(Conflict, match="several live tokens are named 'ci'"):
        svc.revoke("ci")
    mine = svc.revoke("ci", owner="user:2")
    assert mine.owner == "user:2" and mine.revoked_at is not None
    svc.create("ci", role="viewer", owner="user:2")          # the name is free again once revoked
    left = [t for t in svc.list() if t.name == "ci" and t.revoked_at is None]
    assert len(left) == 2 and svc.revoke("ci", token_id=left[0].id).id == left[0].id


async def test_the_audit_names_a_token_by_name_and_id(api: Api) -> None:
    c = api.client
    resp = await c.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=api.auth("admin"))
    assert resp.status == 201
    again = await c.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=api.auth("admin"))
    assert again.status == 409
    entries = (await (await c.get("/api/v1/audit?resource=token&action=create",
                                  headers=api.auth("admin"))).json())["items"]
    assert entries and all(e["who"].startswith("token:admin#") for e in entries)


@pytest.mark.parametrize("end", ["revoke", "expire"])
async def test_an_event_stream_ends_when_its_token_is_revoked_or_expires(api: Api, end: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_routes, "SSE_RECHECK", 0.3)
    svc = TokenService(api.store)
    token = svc.create("watcher", role="viewer", ttl=timedelta(seconds=2) if end == "expire" else None,
                       owner="test")
    with acting_as(Actor("local:test", "test")):
        job = JobService(api.store).submit_assign("web-02", tenant="acme")   # no engine: it stays pending
    resp = await api.client.get(f"/api/v1/jobs/{job.id}/events", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    if end == "revoke":
        await asyncio.sleep(0.5)
        svc.revoke("watcher")
    body = await asyncio.wait_for(resp.text(), timeout=10)
    assert 'event: end\ndata: {"state": "unauthorized"}' in body
