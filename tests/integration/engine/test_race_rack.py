"""20 profiles racing for 10 blades against the emulated rack: real sushy-tools BMCs, an
snmpsim switch, the production engine and drivers (appliance.lab.inproc). The 20 assigns
are submitted at once from 20 threads; what the appliance did is then read back from the
store and, around the appliance, from the emulated BMCs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.lab.inproc import InprocRig, fast_engine
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store.tables import BindingRow, BladeRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: race}}
spec:
  requirements: {{minCpus: 8, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:e0:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:e0:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
"""


async def test_twenty_profiles_racing_for_ten_blades_get_ten_bindings_and_ten_clear_refusals(
        tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[10], engine=fast_engine()) as rig:
        profiles = ProfileService(rig.store)
        names = [f"race-{n:02d}" for n in range(1, 21)]
        for n, name in enumerate(names, 1):
            profiles.import_document(PROFILE.format(name=name, n=n))
        start = threading.Barrier(20)

        def submit(name: str) -> str:
            start.wait(timeout=30)
            return JobService(rig.store).submit_assign(name, tenant="race").id

        with ThreadPoolExecutor(20) as pool:
            ids = await asyncio.to_thread(lambda: list(pool.map(submit, names)))

        jobs = JobService(rig.store)
        final = ("succeeded", "failed", "rolled_back", "cancelled")
        infos = await rig.until("20 jobs final", lambda: (lambda got: got if all(
            i.state in final for i in got) else None)([jobs.get(i) for i in ids]), 180)
        ok = [i for i in infos if i.state == "succeeded"]
        refused = [i for i in infos if i.state != "succeeded"]
        assert len(ok) == 10 and len(refused) == 10, [(i.state, i.error) for i in infos]
        assert all(i.state == "rolled_back" and "no spare blade meets the requirements" in (i.error or "")
                   for i in refused), [(i.state, i.error) for i in refused]

        with rig.store.read() as s:
            live = list(s.scalars(select(BindingRow).where(BindingRow.state == "live")))
            states = dict(s.execute(select(BladeRow.name, BladeRow.state)).all())
        assert len(live) == 10
        assert len({b.blade_id for b in live}) == 10 and len({b.profile_id for b in live}) == 10
        assert set(states.values()) == {"active"}, states
        # Around the appliance: every blade of the chassis is on, exactly once each.
        assert sorted(rig.raw_power(b.name) for b in rig.blades) == ["On"] * 10
