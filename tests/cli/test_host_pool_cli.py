"""anvil host-pool: the README's KVM host template in a pool, its size moved, refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.assets import asset_dir
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox, ensure_key
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.host_reconcile import Reconciler
from appliance.store import Store, open_store
from tests.cli.conftest import Anvil

KVM = asset_dir("profiles") / "examples" / "kvm-host-template.yaml"


def _pools(anvil: Anvil) -> None:
    # As the README's demo makes them: the template's identities come from these.
    anvil("pool", "create", "macs", "--kind", "mac", "--start", "02:a0:00:00:00:00", "--end", "02:a0:00:00:ff:ff")
    anvil("pool", "create", "iqns", "--kind", "iqn", "--prefix", "iqn.2026-11.io.anvil:host-", "--start", "1",
          "--end", "9999")
    anvil("pool", "create", "uuids", "--kind", "uuid", "--start", "4c4c4544-0000-0000-0000-000000000000",
          "--end", "4c4c4544-0000-0000-0000-00000000ffff")
    anvil("profile", "import", str(KVM))


def _blades(store: Store, state_dir: Path) -> None:
    ensure_key(state_dir / "secrets.key")
    svc = BladeService(store, SecretBox(state_dir / "secrets.key"))
    for i, chassis in ((1, "c1"), (2, "c2")):
        svc.enroll(Enrollment(name=f"b{i}", bmc=f"fake://b{i}", username="u", password=Secret("p"), cpus=32,
                              memory_gib=256, chassis=chassis,
                              nics=(NicSpec("eth0", f"aa:00:00:00:{i:02x}:01"),
                                    NicSpec("eth1", f"aa:00:00:00:{i:02x}:02"))))


def test_a_pool_of_the_example_kvm_template_is_created_grown_and_shown(anvil: Anvil, state_dir: Path) -> None:
    _pools(anvil)
    made = anvil("host-pool", "create", "kvm", "--template", "kvm-host", "--max", "3")
    assert made.out.strip() == "created host pool default/kvm (template kvm-host, size 0)"
    grown = anvil("host-pool", "grow", "kvm", "2")
    assert grown.out.strip().startswith("host pool default/kvm: size 2 (was 0), 0 ready")
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}")
    try:
        Reconciler(store).run_once()    # what the running appliance's engine does
        assert ("waiting: 2 more host(s) wanted: no spare blade meets the requirements (no blades enrolled)" in
                anvil("host-pool", "show", "kvm").out)
        _blades(store, state_dir)
        Reconciler(store).run_once()
    finally:
        store.close()
    shown = anvil("host-pool", "show", "kvm").out
    assert "size 2 (min 0, max 3), 0 ready" in shown
    assert "kvm-001" in shown and "kvm-002" in shown and "requested" in shown
    hosts = json.loads(anvil("host-pool", "hosts", "kvm", "-o", "json").out)
    assert [h["name"] for h in hosts] == ["kvm-001", "kvm-002"]
    assert all(h["uuid"].startswith("4c4c4544-") and h["iqn"].startswith("iqn.2026-11.io.anvil:host-")
               and len(h["macs"]) == 2 for h in hosts)
    listed = anvil("host-pool", "list").out
    assert "kvm" in listed and "converging" in listed
    assert anvil("host-pool", "shrink", "kvm", "1").out.startswith("host pool default/kvm: size 1 (was 2)")
    assert anvil("host-pool", "scale", "kvm", "3").out.startswith("host pool default/kvm: size 3 (was")
    assert "will be released" in anvil("host-pool", "release", "kvm", hosts[0]["id"]).out
    feed = anvil("host-pool", "events", "kvm").out.splitlines()
    assert [line.split()[2:4] for line in feed] == [["host.requested", "kvm-001"], ["host.requested", "kvm-002"]]
    assert anvil("host-pool", "events", "kvm", "--after", feed[0].split()[0][1:]).out.count("host.requested") == 1


def test_webhooks_are_added_listed_and_removed_and_the_secret_never_shows(anvil: Anvil, tmp_path: Path) -> None:
    _pools(anvil)
    anvil("host-pool", "create", "kvm", "--template", "kvm-host")
    secret = tmp_path / "hook.secret"
    secret.write_text("a-secret-of-twenty-chars\n")
    added = anvil("host-pool", "webhook", "add", "kvm", "https://vm.example/hook", "--secret-file", str(secret))
    assert added.out.strip() == "webhook #1 of host pool kvm: events after #0 go to https://vm.example/hook"
    listed = anvil("host-pool", "webhook", "list", "kvm", "-o", "json").out
    assert json.loads(listed)[0]["url"] == "https://vm.example/hook" and "twenty" not in listed
    assert "AT" in anvil("host-pool", "webhook", "log", "kvm", "1").out
    assert anvil("host-pool", "webhook", "remove", "kvm", "1").out.strip() == "removed webhook #1 of host pool kvm"
    res = anvil("host-pool", "webhook", "log", "kvm", "1", check=False)
    assert res.code == 1 and "webhook '#1' not found" in res.err


def test_refusals_are_one_line_and_change_nothing(anvil: Anvil) -> None:
    _pools(anvil)
    anvil("host-pool", "create", "kvm", "--template", "kvm-host", "--max", "3")
    res = anvil("host-pool", "scale", "kvm", "4", check=False)
    assert res.code == 1
    assert res.err.strip() == ("anvil: error: host pool default/kvm has max 3; 4 hosts asked (raise its max "
                               "first)")
    assert anvil("host-pool", "quota", "default", "--max-hosts", "1").out.strip() == (
        "tenant default: quota 1 hosts; its pools hold 0")
    res = anvil("host-pool", "grow", "kvm", "2", check=False)
    assert res.code == 1 and "tenant default's quota is 1 hosts; its pools would hold 2 (kvm 2)" in res.err
    res = anvil("host-pool", "show", "kmv", check=False)
    assert res.code == 1 and "host pool 'kmv' not found in tenant 'default'; did you mean kvm?" in res.err
    res = anvil("host-pool", "policy", "kvm", "--grow-above", "20", "--shrink-below", "40", check=False)
    assert res.code == 2 and "policy.shrinkBelow: 40 % is not below growAbove 20 %" in res.err
    assert "size 0 (min 0, max 3)" in anvil("host-pool", "show", "kvm").out
    policy = anvil("host-pool", "policy", "kvm", "--for", "2m", "--cooldown", "90s").out
    assert policy.strip() == ("host pool kvm: grow when average cpu > 75% for 120 s, shrink below 30%, cool-down "
                              "90 s")
