"""Debian's real ``prometheus`` scrapes a real ``anvil serve`` while it stamps blades of the
in-process ``fake`` BMC driver: through the API (HTTPS, a viewer token from a credentials file, the
appliance's own CA), through its own metrics listen (``[metrics] listen``, plain, no token), and a
``serve --role boot`` process through its ``metrics.boot_listen``. The test then asks Prometheus'
HTTP API, not the appliance, what it stored: every family the issue lists with real values (jobs by
kind and state, step-duration histograms, BMC call latency and errors per driver, monitor passes,
failovers, boot requests, TFTP reads, the DB pool, leadership), and that a scrape without the token
was refused on the API port."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tftpy

from appliance.boot.tftp import IPXE_SOURCE
from appliance.lab import procs
from tests.support.boot_role import BootRole

REPO = Path(__file__).resolve().parents[3]
STAMPS = 4
PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: obs}}
spec:
  requirements: {{minCpus: 8, minMemoryGiB: 32, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:c0:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:c0:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: local}}}}
"""



def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}_metrics", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


promrig = _bench("promrig")
pytestmark = pytest.mark.skipif(promrig.BINARY is None,
                                reason="Debian's prometheus is not installed (dev.sh installs it)")


def _blade(i: int) -> dict[str, Any]:
    return {"name": f"m{i:02d}", "bmc": f"fake://m{i:02d}", "driver": "fake", "username": "u", "password": "p",
            "cpus": 16, "memoryGiB": 64, "chassis": "c0", "slot": i,
            "nics": [{"name": f"eth{k}", "mac": f"aa:cc:00:00:{i:02x}:{k:02x}"} for k in range(2)]}


def _boot_role(tmp_path: Path, app: object) -> BootRole:
    """A boot role alone on loopback, beside the appliance (its store, read only): boot HTTP, TFTP
    and its own metrics listen."""
    config = tmp_path / "boot.toml"
    config.write_text(f'[boot]\nlisten = "127.0.0.1:{procs.free_tcp_port()}"\n'
                      f'tftp_listen = "127.0.0.1:{procs.free_udp_port()}"\n'
                      f'[metrics]\nlisten = ""\nboot_listen = "127.0.0.1:{procs.free_tcp_port()}"\n')
    return BootRole(state=app.state, config=config)   # type: ignore[attr-defined]


def _value(rows: list[dict[str, Any]]) -> float:
    assert len(rows) == 1, rows
    return float(rows[0]["value"][1])


async def _unreachable_bmc(up: ModuleType, app: Any) -> None:
    """A Redfish blade whose BMC does not answer (a closed loopback port), asked for its power:
    the driver's error is what anvil_bmc_call_errors_total counts."""
    closed = procs.free_tcp_port()
    async with up.Rest(app, connections=1) as rest:
        await rest.call("POST", "/api/v1/blades", {
            "name": "gone", "bmc": f"redfish+http://127.0.0.1:{closed}/redfish/v1/Systems/1", "driver": "redfish",
            "username": "u", "password": "p", "cpus": 4, "memoryGiB": 8, "chassis": "c9", "slot": 1,
            "nics": [{"name": "eth0", "mac": "aa:cc:00:00:99:00"}]})
        try:
            await rest.call("GET", "/api/v1/blades/gone/power")
        except RuntimeError as exc:
            assert "502" in str(exc) and "connection refused" in str(exc), exc
        else:
            raise AssertionError("a closed port answered a power read")


async def _stamp(up: ModuleType, app: Any) -> list[str]:
    async with up.Rest(app, connections=4) as rest:
        await up.enroll(rest, (_blade(i) for i in range(1, STAMPS + 1)))
        await up.import_profiles(rest, (PROFILE.format(name=f"p{i}", n=i) for i in range(1, STAMPS + 1)))
        jobs = [await rest.call("POST", f"/api/v1/profiles/p{i}/assign", {"tenant": "obs"})
                for i in range(1, STAMPS + 1)]
        ids = {str(j["id"]) for j in jobs}
        for _ in range(300):
            page = await rest.call("GET", "/api/v1/jobs", params={"tenant": "obs", "limit": "100"})
            done = {j["id"]: j["state"] for j in page["items"] if j["id"] in ids and j["state"] in up.FINAL}
            if len(done) == len(ids):
                assert set(done.values()) == {"succeeded"}, done
                return sorted(ids)
            await asyncio.sleep(0.1)
        raise AssertionError(f"stamps not over in 30 s: {page['items']}")


def test_prometheus_scrapes_every_listed_family_from_the_api_the_metrics_listen_and_the_boot_role(
        tmp_path: Path) -> None:
    up = _bench("userpath")
    app = up.Appliance(tmp_path, overrides={"ANVIL_MONITOR_INTERVAL": "1"})
    with app:
        app.start()
        host_port = app.url.removeprefix("https://")
        token = app.cli("token", "create", "prometheus", "--role", "viewer").strip()
        token_file = tmp_path / "prometheus.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        ca = app.state / "tls" / "cert.pem"
        boot = _boot_role(tmp_path, app).start()
        try:
            boot_settings = (tmp_path / "boot.toml").read_text()
            boot_metrics = boot_settings.split('boot_listen = "')[1].split('"')[0]
            tftp_port = int(boot_settings.split('tftp_listen = "127.0.0.1:')[1].split('"')[0])
            # The boot role's own listen answers without a token; the appliance's API port needs one.
            with urllib.request.urlopen(f"http://{boot_metrics}/metrics", timeout=5) as resp:
                assert b"anvil_boot_requests" in resp.read()
            https = f"scheme: https, tls_config: {{ca_file: {ca}}}"
            targets = [
                promrig.Target("anvil", host_port, f"{https}, authorization: {{type: Bearer, "
                                                   f"credentials_file: {token_file}}}"),
                promrig.Target("anonymous", host_port, https),     # no token: must be refused
                promrig.Target("anvil-metrics", app.metrics_address),
                promrig.Target("anvil-boot", boot_metrics),
            ]
            with promrig.Prometheus(tmp_path / "prometheus", targets) as prom:
                prom.until("anvil, anvil-metrics and anvil-boot scraped", lambda: {
                    r["metric"]["job"] for r in prom.query("up == 1")} >= {"anvil", "anvil-metrics", "anvil-boot"}, 30)
                _exercise_and_check(up, app, prom, boot.url, tftp_port, tmp_path)
        finally:
            boot.stop()


def _exercise_and_check(up: ModuleType, app: Any, prom: Any, boot_url: str, tftp_port: int, tmp_path: Path) -> None:
    q = prom.query
    ids = asyncio.run(_stamp(up, app))
    assert len(ids) == STAMPS
    # Boot traffic at the boot role: an iPXE binary over TFTP, a script asked for by an unknown MAC.
    if (IPXE_SOURCE / "ipxe.efi").is_file():
        tftpy.TftpClient("127.0.0.1", tftp_port).download("ipxe.efi", str(tmp_path / "got.efi"), timeout=2)
    # What it answers an unknown blade is the boot tests' business; here it is counted.
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(f"{boot_url}/boot/ipxe?mac=02:00:00:00:00:99", timeout=5).close()

    for job in ("anvil", "anvil-metrics"):   # the same registry, behind the API and on its own listen
        prom.until(f"{job}: the finished stamps counted", lambda j=job: [
            r for r in q(f'anvil_jobs_finished_total{{job="{j}",kind="stamp",state="succeeded"}}')
            if float(r["value"][1]) == STAMPS], 20)
    prom.until("jobs by kind and state", lambda: [
        r for r in q('anvil_jobs{job="anvil-metrics",kind="stamp",state="succeeded"}')
        if float(r["value"][1]) == STAMPS], 20)
    buckets = q('anvil_job_step_duration_seconds_bucket{job="anvil",kind="stamp",outcome="done"}')
    ran = {r["metric"]["step"] for r in buckets if r["metric"]["le"] == "+Inf" and float(r["value"][1]) > 0}
    assert {"power-on"} <= ran and len(ran) >= 5, ran
    assert _value(q('anvil_job_step_duration_seconds_count{job="anvil",kind="stamp",step="power-on",'
                    'outcome="done"}')) == STAMPS
    # The step quantiles a bench reads: histogram_quantile over the rate of the buckets, per step.
    quantiles = prom.until("step quantiles from the histograms", lambda: promrig.step_quantiles(prom, "2m"), 10)
    assert "power-on" in quantiles and 0 < quantiles["power-on"]["p50"] <= quantiles["power-on"]["p99"], quantiles
    calls = q('anvil_bmc_call_duration_seconds_count{job="anvil",driver="fake"}')
    assert {r["metric"]["call"] for r in calls} >= {"set_power"}, calls
    asyncio.run(_unreachable_bmc(up, app))
    errors = prom.until("the power read's error counted", lambda: [
        r for r in q('anvil_bmc_call_errors_total{job="anvil-metrics"}') if r["metric"]["call"] == "get_power"], 10)
    assert {(r["metric"]["driver"], r["metric"]["error"]) for r in errors} == {("redfish", "BmcUnreachable")}, errors
    # (the monitor's event subscription to that BMC fails too, and is counted under its own call)
    assert {r["metric"]["driver"] for r in q('anvil_bmc_call_errors_total{job="anvil-metrics"}')} == {"redfish"}
    assert _value(q('anvil_bmc_call_duration_seconds_count{job="anvil-metrics",driver="redfish",'
                    'call="get_power"}')) >= 1
    prom.until("monitor passes timed", lambda: _value(q(
        'anvil_monitor_pass_duration_seconds_count{job="anvil-metrics"}')) >= 2, 20)
    assert _value(q('anvil_failovers_total{job="anvil-metrics",outcome="started"}')) == 0
    assert _value(q('anvil_engine_leader{job="anvil-metrics"}')) == 1
    assert _value(q('anvil_engine_leader_known{job="anvil-metrics"}')) == 1
    assert _value(q('anvil_db_pool_connections{job="anvil-metrics",state="size"}')) >= 1
    assert _value(q('anvil_engine_leadership_changes_total{job="anvil-metrics",change="acquired"}')) == 1
    # The boot role's own registry: its requests and TFTP reads; none of the engine's series.
    prom.until("boot requests at the boot role", lambda: [
        r for r in q('anvil_boot_requests_total{job="anvil-boot",route="/boot/ipxe"}')
        if float(r["value"][1]) >= 1], 10)
    if (IPXE_SOURCE / "ipxe.efi").is_file():
        prom.until("TFTP reads at the boot role", lambda: [
            r for r in q('anvil_tftp_requests_total{job="anvil-boot",file="ipxe.efi",outcome="sent"}')
            if float(r["value"][1]) == 1], 10)
    assert q('anvil_monitor_pass_duration_seconds_count{job="anvil-boot"}') == []
    assert q('anvil_build_info{job="anvil-boot"}')
    # The sample dashboard's every query is valid PromQL here; its step panel shows the stamps.
    dashboard = json.loads((REPO / "examples" / "grafana" / "anvil.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$job", "anvil")
            q(expr)
            if panel["title"] == "Step duration p95 (done)":   # rate() needs two scrapes since the stamps
                prom.until("the dashboard's step panel", lambda e=expr: [
                    r for r in q(e) if r["metric"]["step"] == "power-on"], 10)
            if panel["title"] == "TFTP reads per minute" and (IPXE_SOURCE / "ipxe.efi").is_file():
                boot_expr = target["expr"].replace("$job", "anvil-boot")
                prom.until("the dashboard's TFTP panel over the boot role", lambda e=boot_expr: [
                    r for r in q(e) if r["metric"]["file"] == "ipxe.efi"], 10)
    anonymous = prom.targets_by_job()["anonymous"]
    assert anonymous["health"] == "down" and "401" in anonymous["lastError"], anonymous
