"""`anvil failover run` and `anvil failover test` through the real CLI and a real `anvil serve`
against the emulated rack."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.store.tables import BindingRow, BladeRow, BmcEventSubscriptionRow
from tests.integration.engine.rig import PROFILE, rig

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(300)
def test_failover_run_moves_the_profile_and_the_drill_moves_it_out_and_back(tmp_path: Path) -> None:
    with rig(tmp_path, redfish=3) as (anvil, lab, serve):
        anvil.env.update(ANVIL_MONITOR_INTERVAL="60", ANVIL_MONITOR_FAIL_AFTER="2")
        doc = PROFILE.format(name="web", tenant="acme", n=1) + \
            "  failover: {domain: prod, priority: 5, policy: n+1}\n"
        (tmp_path / "web.yaml").write_text(doc)
        anvil("profile", "import", str(tmp_path / "web.yaml"))
        anvil("failover", "domain", "create", "prod")
        serve.start()
        anvil("profile", "assign", "web", "--tenant", "acme", "--blade", "rf-01", timeout=120)

        drill = anvil("failover", "test", "prod", timeout=180)
        assert "drill out: failover #1" in drill.out and "drill back: failover #2" in drill.out, drill.out
        assert "drill done: acme/web is back on rf-01" in drill.out

        ran = anvil("failover", "run", "web", "--tenant", "acme", "--reason", "planned move", timeout=120)
        assert "failover #3 of acme/web" in ran.out, ran.out
        shown = anvil("failover", "show", "3", "-o", "json")
        assert '"state": "succeeded"' in shown.out and '"fence": "power"' in shown.out
        blades = anvil("blade", "list", "-o", "json").out
        assert '"rf-01"' in blades and '"failed"' in blades   # the blade it left awaits repair
        moved_to = json.loads(shown.out)["toBlade"]
        back = anvil("failover", "clear", "rf-01", "--failback", timeout=120)
        assert "blade rf-01 is a spare again" in back.out and "failback #4 of acme/web to rf-01" in back.out, back.out
        blades = {b["name"]: b["state"] for b in json.loads(anvil("blade", "list", "-o", "json").out)}
        assert blades["rf-01"] == "active" and blades[moved_to] == "spare", blades
        again = anvil("failover", "clear", "rf-01", "--failback", check=False)
        assert again.code != 0 and "is active, not failed or fenced" in again.err, again.err

        # The monitor polls once a minute here, yet a blade that dies is failed over in
        # seconds: its BMC's Redfish event reaches `anvil serve`, which polls it at once.
        store = anvil.store()
        try:
            with store.read() as s:
                subs = s.execute(select(BmcEventSubscriptionRow.destination, BmcEventSubscriptionRow.uri)).all()
                host = s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                                .where(BindingRow.state == "live"))
            system_url = lab.inventory(store)[str(host)][0]
        finally:
            store.close()
        assert len(subs) == 1 and subs[0].uri, subs
        assert subs[0].destination.startswith(f"{serve.url}/events/redfish/"), (subs, serve.url)
        began = time.monotonic()
        lab.crash(system_url)
        for _ in range(150):
            shown = json.loads(anvil("failover", "list", "-o", "json").out)
            if len(shown) >= 5:
                break
            time.sleep(0.1)
        took = time.monotonic() - began
        assert len(shown) >= 5, (shown, serve.log_tail())
        newest = max(shown, key=lambda f: f["id"])
        assert newest["fromBlade"] == host and "powered off" in newest["reason"], newest
        assert took < 20, took
