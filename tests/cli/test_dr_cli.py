"""anvil dr plan create|list|show|delete and dr report; bad plans refused in one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Anvil

PLAN = """\
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: prod}
spec:
  recoverySite: site-b
  profiles: [{all: true}]
  vlans: {20: 220}
  rehearsalVlans: {20: 920}
  dependencies: ["db-* before web-*"]
"""


def test_a_plan_is_created_listed_shown_reported_and_deleted(anvil: Anvil, tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(PLAN)
    assert "created dr plan prod: 0 profiles in 0 waves, recovering at site site-b" in anvil("dr", "plan", "create",
                                                                                            str(f)).out
    assert anvil("dr", "plan", "create", str(f), check=False).code != 0
    anvil("dr", "plan", "create", str(f), "--replace")
    items = json.loads(anvil("dr", "plan", "list", "-o", "json").out)
    assert [(p["name"], p["version"], p["originSite"]) for p in items] == [("prod", 2, None)]
    shown = json.loads(anvil("dr", "plan", "show", "prod", "-o", "json").out)
    assert shown["document"]["spec"]["rehearsalVlans"] == {"20": 920}
    assert "last successful rehearsal: none" in anvil("dr", "report", "prod").out
    anvil("dr", "plan", "delete", "prod")
    res = anvil("dr", "plan", "show", "prod", check=False)
    assert res.code != 0 and "prod" in res.err


def test_a_bad_plan_is_refused_naming_the_field(anvil: Anvil, tmp_path: Path) -> None:
    f = tmp_path / "plan.yaml"
    f.write_text(PLAN.replace("rehearsalVlans: {20: 920}", "rehearsalVlans: {20: 220}"))
    res = anvil("dr", "plan", "create", str(f), check=False)
    assert res.code != 0
    assert res.err.startswith("anvil: error: ") and "spec.rehearsalVlans.20" in res.err
    assert "VLAN 220 is a production VLAN" in res.err
    f.write_text(PLAN.replace('["db-* before web-*"]', '["db-* before web-*", "web-* before db-*"]'))
    (tmp_path / "p.yaml").write_text("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: db-01}\n"
                                     "spec: {}\n")
    (tmp_path / "w.yaml").write_text("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: web-01}\n"
                                     "spec: {}\n")
    anvil("profile", "import", str(tmp_path / "p.yaml"))
    anvil("profile", "import", str(tmp_path / "w.yaml"))
    res = anvil("dr", "plan", "create", str(f), check=False)
    assert res.code != 0 and "cycle" in res.err and "default/db-01" in res.err and "default/web-01" in res.err
    assert json.loads(anvil("dr", "plan", "list", "-o", "json").out) == []
