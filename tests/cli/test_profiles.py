"""Profiles, templates and identity pools from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from appliance.assets import asset_dir
from appliance.domain.profile import parse_yaml
from tests.cli.conftest import Anvil

EXAMPLES = asset_dir("profiles") / "examples"


def test_import_export_round_trip_through_xml(anvil: Anvil, tmp_path: Path) -> None:
    res = anvil("profile", "import", str(EXAMPLES / "web-01.yaml"), str(EXAMPLES / "db-01.yaml"))
    assert "imported ServerProfile acme/web-01" in res.out
    xml = anvil("profile", "export", "web-01", "--tenant", "acme", "-f", "xml").out
    assert xml.lstrip().startswith("<") and "urn:anvil:profile:v1" in xml
    anvil("profile", "delete", "web-01", "--tenant", "acme")
    (tmp_path / "web-01.xml").write_text(xml)
    anvil("profile", "import", str(tmp_path / "web-01.xml"))
    again = anvil("profile", "export", "web-01", "--tenant", "acme").out
    assert parse_yaml(again) == parse_yaml((EXAMPLES / "web-01.yaml").read_text())
    rows = json.loads(anvil("profile", "list", "-o", "json").out)
    assert {(r["name"], r["tenant"], r["boot"]) for r in rows} == {("web-01", "acme", "local"),
                                                                    ("db-01", "acme", "iscsi")}
    shown = json.loads(anvil("profile", "show", "db-01", "--tenant", "acme", "-o", "json").out)
    assert {i["path"] for i in shown["heldIdentities"]} >= {"spec.identity.iscsiInitiator"}


def test_validate_reports_every_problem_with_path_and_line(anvil: Anvil, tmp_path: Path) -> None:
    bad = (EXAMPLES / "web-01.yaml").read_text().replace("02:a0:00:00:00:01", "02:zz:00:00:00:01", 1)
    bad = bad.replace("native: 100", "native: 4095", 1)
    (tmp_path / "bad.yaml").write_text(bad)
    res = anvil("profile", "validate", str(tmp_path / "bad.yaml"), check=False)
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert any('spec.identity.nics[0].mac: "02:zz:00:00:00:01" is not a MAC address' in ln for ln in lines)
    assert any("spec.identity.nics[0].vlans.native" in ln for ln in lines)
    assert all("line " in ln and "bad.yaml" in ln for ln in lines)
    res = anvil("profile", "import", str(tmp_path / "bad.yaml"), check=False)
    assert res.code == 2
    assert json.loads(anvil("profile", "list", "-o", "json").out) == []


def test_oversized_and_hostile_xml_is_refused(anvil: Anvil, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1024 * 1024) + "\n")
    res = anvil("profile", "import", str(big), check=False)
    assert res.code != 0 and "1 MiB" in res.err
    laughs = tmp_path / "laughs.xml"
    laughs.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
                      '<ServerProfile xmlns="urn:anvil:profile:v1"><apiVersion>&lol2;</apiVersion></ServerProfile>')
    res = anvil("profile", "import", str(laughs), check=False)
    assert res.code == 2 and "DTD" in res.err


def test_pools_and_template_instantiation(anvil: Anvil) -> None:
    anvil("pool", "create", "macs", "--kind", "mac", "--start", "02:a0:00:00:00:00", "--end", "02:a0:00:00:00:ff")
    anvil("pool", "create", "iqns", "--kind", "iqn", "--prefix", "iqn.2026-11.io.anvil:host-", "--start", "1",
          "--end", "99")
    anvil("pool", "create", "uuids", "--kind", "uuid", "--start", "4c4c4544-0000-0000-0000-000000000000",
          "--end", "4c4c4544-0000-0000-0000-0000000000ff")
    anvil("profile", "import", str(EXAMPLES / "kvm-host-template.yaml"))
    res = anvil("template", "instantiate", "kvm-host", "kvm-01", "kvm-02")
    assert "kvm-01" in res.out and "iqn.2026-11.io.anvil:host-2" in res.out
    pools = {p["name"]: p for p in json.loads(anvil("pool", "list", "-o", "json").out)}
    assert pools["macs"]["used"] == 4 and pools["macs"]["free"] == 252
    assert yaml.safe_load(anvil("pool", "show", "iqns", "-o", "yaml").out)["used"] == 2
    res = anvil("pool", "create", "bad", "--kind", "mac", "--start", "02:a0:00:00:00:ff", "--end",
                "02:a0:00:00:00:00", check=False)
    assert res.code == 2 and "end: " in res.err
    res = anvil("pool", "delete", "macs", check=False)
    assert res.code == 1 and "still has 4 identities in use" in res.err


def test_validate_checks_pools_as_import_would_or_says_it_checked_the_document_only(anvil: Anvil,
                                                                                   state_dir: Path) -> None:
    template = str(EXAMPLES / "kvm-host-template.yaml")
    fresh = anvil("profile", "validate", template)   # no appliance here yet: nothing to look into
    assert f"checked the document only (no store at {state_dir / 'anvil.db'}" in fresh.out
    assert not (state_dir / "anvil.db").exists()

    anvil("pool", "create", "macs", "--kind", "mac", "--start", "02:a0:00:00:00:00", "--end", "02:a0:00:00:00:ff")
    anvil("pool", "create", "uuids", "--kind", "wwpn", "--start", "20:00:00:25:b5:00:00:00",
          "--end", "20:00:00:25:b5:00:00:ff")
    res = anvil("profile", "validate", template, check=False)
    assert res.code == 2, res
    assert [ln.split(f"{template}: ", 1)[1] for ln in res.err.strip().splitlines()] == [
        "spec.identity.uuid: identity pool 'uuids' holds wwpn identities, not uuid",
        "spec.identity.iscsiInitiator: identity pool 'iqns' does not exist",
    ]
    imported = anvil("profile", "import", template, check=False)
    assert imported.code == 2 and imported.err == res.err   # import refuses it in the same words

    only = anvil("profile", "validate", "--document-only", template)
    assert "kvm-host; checked the document only (--document-only" in only.out
    anvil("pool", "delete", "uuids")
    anvil("pool", "create", "uuids", "--kind", "uuid", "--start", "4c4c4544-0000-0000-0000-000000000000",
          "--end", "4c4c4544-0000-0000-0000-0000000000ff")
    anvil("pool", "create", "iqns", "--kind", "iqn", "--prefix", "iqn.2026-11.io.anvil:host-", "--start", "1",
          "--end", "99")
    ok = anvil("profile", "validate", template)
    assert ok.out.strip() == (f"{template}: valid ServerProfileTemplate default/kvm-host; checked the document and "
                              "the store (identity pools, identities held)")
    anvil("profile", "import", template)


def test_the_parking_vlan_refused_is_the_configured_one(anvil: Anvil, anvil_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    Path(anvil_env["ANVIL_CONFIG"]).write_text("[network]\nparking_vlan = 100\n")
    web = str(EXAMPLES / "web-01.yaml")   # eth0's native VLAN is 100
    for command in ("validate", "import"):
        res = anvil("profile", command, web, check=False)
        assert res.code == 2, res
        [line] = res.err.strip().splitlines()
        assert line.endswith("line 22: spec.identity.nics[0].vlans.native: VLAN 100 is the parking VLAN, reserved "
                             "for released switch ports (network.parking_vlan in the configuration, or "
                             "ANVIL_NETWORK_PARKING_VLAN)"), line
    moved = tmp_path / "web-01.yaml"
    moved.write_text((EXAMPLES / "web-01.yaml").read_text().replace("native: 100", "native: 4094"))
    anvil("profile", "import", str(moved))   # 4094 is a VLAN like any other once it is not the parking one


def test_a_name_in_another_tenant_is_pointed_at_and_a_missing_failover_domain_is_warned_of(anvil: Anvil) -> None:
    res = anvil("profile", "import", str(EXAMPLES / "web-01.yaml"))
    assert res.err.strip() == (f"anvil: warning: {EXAMPLES / 'web-01.yaml'}: spec.failover.domain: failover domain "
                               "'prod-web' does not exist; acme/web-01 is not protected until it is created (anvil "
                               "failover domain create prod-web)")
    missing = anvil("profile", "export", "web-01", check=False)
    assert missing.code == 1
    assert missing.err.strip() == ("anvil: error: profile 'web-01' not found in tenant 'default'; web-01 exists in "
                                   "tenant acme")
    typo = anvil("profile", "show", "web01", "--tenant", "acme", check=False)
    assert typo.err.strip().endswith("did you mean web-01?")
    listed = anvil("profile", "list", "--tenant", "acm")
    assert "no tenant 'acm'; did you mean acme?" in listed.err
    anvil("failover", "domain", "create", "prod-web")
    checked = anvil("profile", "validate", str(EXAMPLES / "web-01.yaml"), str(EXAMPLES / "db-01.yaml"))
    assert "prod-web" not in checked.err and "failover domain 'prod-db' does not exist" in checked.err
