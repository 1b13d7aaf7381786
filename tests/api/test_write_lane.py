"""The requests VM managers send a hundred at a time (Bare Metal API node changes and provision
states, /api/v1 assign and release) write on the API's writer thread (appliance.api.offload,
``WRITES``): on SQLite one at a time, in the caller's context (its audit actor), and never in the
process's default pool, where six of them at once crowded the list pages off the CPU."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from appliance.services.baremetal import BaremetalService
from appliance.services.jobs import JobService
from appliance.store.tables import AuditRow
from tests.api.conftest import Api
from tests.api.test_baremetal import V1, h


class Watch:
    """Wraps a service method: which threads ran it and how many calls overlapped at most."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.running = self.most = 0
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.threads.add(threading.current_thread().name)
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(0.05)   # long enough for the other requests' calls to overlap, if they may
                return real(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1
        return watched


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    w = Watch()
    for cls, name in ((BaremetalService, "update"), (BaremetalService, "set_hold"), (JobService, "submit_assign"),
                      (JobService, "submit_release")):
        monkeypatch.setattr(cls, name, w.wrap(getattr(cls, name)))
    yield w


async def test_patches_of_one_node_from_many_clients_all_land_written_one_at_a_time(
        api: Api, watch: Watch) -> None:
    c = api.client
    patches = [c.patch(f"{V1}/nodes/b0{i % 4 + 1}", json=[{"op": "add", "path": f"/extra/k{i}", "value": i}],
                       headers=h(api)) for i in range(12)]
    answers = await asyncio.gather(*patches)
    assert [a.status for a in answers] == [200] * 12
    shown = await (await c.get(f"{V1}/nodes/b01", headers=h(api))).json()
    assert {k: shown["extra"][k] for k in ("k0", "k4", "k8")} == {"k0": 0, "k4": 4, "k8": 8}
    assert watch.threads and all(t.startswith("anvil-write") for t in watch.threads), watch.threads
    if api.store.is_sqlite:
        assert watch.most == 1, "SQLite has one writer: a second writing thread only takes CPU from the pages"


async def test_provision_states_and_job_submissions_write_on_the_writer_thread_as_their_caller(
        api: Api, watch: Watch) -> None:
    c = api.client
    await c.patch(f"{V1}/nodes/b03", json=[{"op": "add", "path": "/instance_info/anvil_profile",
                                            "value": "acme/web-02"}], headers=h(api))
    deploy, manage, release = await asyncio.gather(
        c.put(f"{V1}/nodes/b03/states/provision", json={"target": "active"}, headers=h(api)),
        c.put(f"{V1}/nodes/b04/states/provision", json={"target": "manage"}, headers=h(api)),
        c.post("/api/v1/profiles/web-01/release", json={"tenant": "acme"}, headers=api.auth("operator")))
    assert (deploy.status, manage.status, release.status) == (202, 202, 202), await release.text()
    assert watch.threads and all(t.startswith("anvil-write") for t in watch.threads), watch.threads
    if api.store.is_sqlite:
        assert watch.most == 1
    with api.store.read() as s:   # the audit names the token's principal: the context went with the call
        who = set(s.scalars(select(AuditRow.who).where(AuditRow.resource == "job")))
    assert who and all(w.startswith("token:") for w in who), who
