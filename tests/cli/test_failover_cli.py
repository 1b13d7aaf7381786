"""anvil failover: domains with a webhook secret that never shows, failover history,
health history, and the operator's fence confirmation."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from sqlalchemy import select

from appliance.assets import asset_dir
from appliance.domain.failover import FailoverState, FenceMethod
from appliance.secrets import SecretBox
from appliance.services.failover import FailoverService, HealthSample
from appliance.store import open_store
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.cli.conftest import Anvil

SECRET = "whsec-cli-0123456789-do-not-show"
BMC = "redfish+http://127.0.0.1:8000/redfish/v1/Systems/00000000-0000-0000-0000-00000000000"
WEB = asset_dir("profiles") / "examples" / "web-01.yaml"


def _secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "hook.secret"
    path.write_text(SECRET + "\n")
    return path


def test_domain_lifecycle_keeps_the_webhook_secret_hidden(anvil: Anvil, tmp_path: Path, state_dir: Path) -> None:
    outputs = []
    res = anvil("failover", "domain", "create", "prod-web", "--webhook-url", "https://hooks.example/anvil?t=1",
                "--webhook-secret-file", str(_secret_file(tmp_path)), "--restart-attempts", "2")
    assert res.out.strip() == "created failover domain prod-web"
    anvil("failover", "domain", "create", "quiet", "--description", "no webhook")
    for fmt in ("table", "yaml", "json"):
        listed = anvil("failover", "domain", "list", "-o", fmt)
        shown = anvil("failover", "domain", "show", "prod-web", "-o", "yaml" if fmt == "json" else fmt)
        outputs += [listed.out, listed.err, shown.out, shown.err]
    rows = json.loads(outputs[-4])
    assert [(r["name"], r["webhookSecret"], r["restartAttempts"]) for r in rows] == [
        ("prod-web", "***", 2), ("quiet", None, 1)]
    assert yaml.safe_load(outputs[-2])["webhookUrl"] == "https://hooks.example/anvil?t=1"
    assert "NAME" in outputs[0] and "SPAREPOOL" in outputs[0]
    # From stdin too, and the secret is replaced in place.
    anvil("failover", "domain", "update", "quiet", "--webhook-url", "http://10.0.0.9/h", "--webhook-secret-file",
          "-", input=SECRET + "-2\n")
    assert json.loads(anvil("failover", "domain", "show", "quiet", "-o", "json").out)["webhookSecret"] == "***"
    anvil("failover", "domain", "update", "quiet", "--remove-webhook")
    assert json.loads(anvil("failover", "domain", "show", "quiet", "-o", "json").out)["webhookUrl"] is None
    audit = anvil("audit", "list", "-o", "json", check=False)
    outputs += [audit.out, audit.err]
    assert all(SECRET not in text for text in outputs)
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    anvil("failover", "domain", "delete", "quiet")
    assert [r["name"] for r in json.loads(anvil("failover", "domain", "list", "-o", "json").out)] == ["prod-web"]


def test_bad_domains_say_what_is_wrong_in_one_line_and_change_nothing(anvil: Anvil, tmp_path: Path) -> None:
    secret = str(_secret_file(tmp_path))
    cases = [
        (["Bad_Name"], "name: "),
        (["d", "--spare-pool", "nope"], "sparePool: blade pool 'nope' does not exist"),
        (["d", "--webhook-url", "https://h/x"], "webhookSecret: is required with a webhook URL"),
        (["d", "--webhook-url", "ftp://h/x", "--webhook-secret-file", secret], "webhookUrl: "),
        (["d", "--webhook-url", "https://h/x", "--webhook-secret-file", str(tmp_path / "missing")], "missing"),
        (["d", "--restart-attempts", "99"], "restartAttempts: 99 is outside 0-10"),
    ]
    for args, message in cases:
        res = anvil("failover", "domain", "create", *args, check=False)
        assert res.code != 0, args
        assert message in res.err, (args, res.err)
        assert len(res.err.strip().splitlines()) == 1, res.err
    assert json.loads(anvil("failover", "domain", "list", "-o", "json").out) == []
    res = anvil("failover", "domain", "show", "ghost", check=False)
    assert res.code == 1 and "failover domain 'ghost' not found" in res.err


def test_history_health_and_confirm_fenced(anvil: Anvil, state_dir: Path) -> None:
    for i in (1, 2):
        anvil("blade", "enroll", f"b{i}", "--bmc", f"{BMC}{i}", "--username", "admin", "--password-stdin",
              "--nic", f"eth0=52:54:00:00:0{i}:01", "--nic", f"eth1=52:54:00:00:0{i}:02", "--cpus", "16",
              "--memory-gib", "128", input="pw\n")
    anvil("profile", "import", str(WEB))
    anvil("failover", "domain", "create", "prod-web")
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}")
    try:
        with store.write() as s:  # web-01 runs on b1
            p = s.scalar(select(ProfileRow).where(ProfileRow.name == "web-01"))
            b = s.scalar(select(BladeRow).where(BladeRow.name == "b1"))
            assert p is not None and b is not None
            s.add(BindingRow(profile_id=p.id, blade_id=b.id, generation=1, state="live"))
            p.state, b.state = "active", "active"
        svc = FailoverService(store, SecretBox(state_dir / "secrets.key"))
        svc.record_health_many([("b1", HealthSample(ok=True, power="on", health="OK", verdict="healthy")),
                                ("b1", HealthSample(ok=False, detail="BMC timed out", verdict="failed"))])
        fo = svc.open_failover(tenant="acme", profile="web-01", reason="BMC and heartbeat lost")
        svc.advance(fo.id, FailoverState.FENCING)
        svc.mark_needs_operator(fo.id, "power off not confirmed and b1 has no cabled port")
    finally:
        store.close()

    health = json.loads(anvil("failover", "health", "b1", "-o", "json").out)
    assert [(h["ok"], h["detail"]) for h in health] == [(False, "BMC timed out"), (True, "")]
    assert "BMC timed out" in anvil("failover", "health", "b1").out
    listed = json.loads(anvil("failover", "list", "--domain", "prod-web", "-o", "json").out)
    assert [(f["profile"], f["state"], f["fromBlade"]) for f in listed] == [("web-01", "needs-operator", "b1")]
    assert [e["event"] for e in listed[0]["timeline"]] == ["detected", "fence-unconfirmed"]
    table = anvil("failover", "list", "--open").out
    assert "acme/web-01" in table and "needs-operator" in table and "detected@" in table
    assert "fence-unconfirmed" in anvil("failover", "show", str(fo.id)).out

    refused = anvil("failover", "confirm-fenced", "b1", input="n\n", check=False)
    assert refused.code != 0 and "aborted" in refused.err
    res = anvil("failover", "confirm-fenced", "b1", "--yes")
    assert f"failover #{fo.id} of acme/web-01 goes on" in res.out
    shown = yaml.safe_load(anvil("failover", "show", str(fo.id), "-o", "yaml").out)
    assert (shown["state"], shown["fence"]) == ("fenced", FenceMethod.OPERATOR.value)
    assert shown["timeline"][-1]["event"] == "fence-confirmed" and shown["timeline"][-1]["detail"].startswith(
        "by local:")
    again = anvil("failover", "confirm-fenced", "b1", "--yes", check=False)
    assert again.code == 1 and "no failover waiting for a fence confirmation" in again.err
    busy = anvil("failover", "clear", "b1", check=False)
    assert busy.code == 1 and "still bound" in busy.err
    no_engine = anvil("failover", "clear", "b1", "--failback", check=False)
    assert no_engine.code != 0 and "no appliance is running" in no_engine.err, no_engine.err
    assert json.loads(anvil("failover", "queue", "prod-web", "-o", "json").out) == [
        {"profile": "acme/web-01", "blade": "b2", "position": None, "reason": "spare chosen"}]
    missing = anvil("failover", "health", "nope", check=False)
    assert missing.code == 1 and "blade 'nope' not found" in missing.err
