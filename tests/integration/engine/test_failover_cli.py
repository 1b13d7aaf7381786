"""`anvil failover run` and `anvil failover test` through the real CLI and a real `anvil serve`
against the emulated rack."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.engine.rig import PROFILE, rig

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(300)
def test_failover_run_moves_the_profile_and_the_drill_moves_it_out_and_back(tmp_path: Path) -> None:
    with rig(tmp_path, redfish=3) as (anvil, _lab, serve):
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
        anvil("failover", "clear", "rf-01")
        assert '"failed"' not in anvil("blade", "list", "-o", "json").out
