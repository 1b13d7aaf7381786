"""Debian's real ``prometheus`` scrapes a real ``anvil serve`` (HTTPS, a viewer token from a
credentials file, the appliance's own CA) while it stamps blades of the in-process ``fake`` BMC
driver; the test then asks Prometheus' HTTP API, not the appliance, what it stored: the step-duration
histograms per kind and step, the jobs counters, and that a scrape without the token was refused."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from appliance.lab import procs

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = shutil.which("prometheus")
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

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed (dev.sh installs it)")


def _userpath() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_userpath_metrics", REPO / "bench" / "userpath.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _blade(i: int) -> dict[str, Any]:
    return {"name": f"m{i:02d}", "bmc": f"fake://m{i:02d}", "driver": "fake", "username": "u", "password": "p",
            "cpus": 16, "memoryGiB": 64, "chassis": "c0", "slot": i,
            "nics": [{"name": f"eth{k}", "mac": f"aa:cc:00:00:{i:02x}:{k:02x}"} for k in range(2)]}


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def _targets(base: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5) as resp:
        doc = json.loads(resp.read())
    return {t["labels"]["job"]: t for t in doc["data"]["activeTargets"]}


def _until(what: str, check: Any, timeout: float, proc: procs.ProcHandle) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    for _ in range(int(timeout / 0.25) + 1):
        try:
            last = check()
        except OSError as exc:   # Prometheus still starting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r}); prometheus log: {proc.log_tail()}")


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


def test_prometheus_scrapes_step_histograms_and_job_counters_from_anvil_serve(tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    up = _userpath()
    app = up.Appliance(tmp_path)
    with app:
        app.start()
        host_port = app.url.removeprefix("https://")
        token = app.cli("token", "create", "prometheus", "--role", "viewer").strip()
        token_file = tmp_path / "prometheus.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        ca = app.state / "tls" / "cert.pem"
        config = tmp_path / "prometheus.yml"
        # Two jobs at the same target: with the viewer token, and without any (must be refused).
        config.write_text(f"""\
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1m}}
scrape_configs:
  - job_name: anvil
    scheme: https
    authorization: {{type: Bearer, credentials_file: {token_file}}}
    tls_config: {{ca_file: {ca}}}
    static_configs: [{{targets: ["{host_port}"]}}]
  - job_name: anonymous
    scheme: https
    tls_config: {{ca_file: {ca}}}
    static_configs: [{{targets: ["{host_port}"]}}]
""")
        port = procs.free_tcp_port()
        base = f"http://127.0.0.1:{port}"
        prom = procs.start([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                           tmp_path / "prometheus.log")
        try:
            _until("anvil scraped (up == 1)", lambda: [r for r in _query(base, 'up{job="anvil"}')
                                                        if r["value"][1] == "1"], 30, prom)
            ids = asyncio.run(_stamp(up, app))
            assert len(ids) == STAMPS
            finished = _until("the finished stamps counted", lambda: [
                r for r in _query(base, 'anvil_jobs_finished_total{kind="stamp",state="succeeded"}')
                if float(r["value"][1]) == STAMPS], 20, prom)
            assert finished[0]["metric"]["job"] == "anvil"
            in_store = _until("jobs by kind and state", lambda: [
                r for r in _query(base, 'anvil_jobs{kind="stamp",state="succeeded"}')
                if float(r["value"][1]) == STAMPS], 20, prom)
            assert in_store
            buckets = _query(base, 'anvil_job_step_duration_seconds_bucket{kind="stamp",outcome="done"}')
            steps = {r["metric"]["step"] for r in buckets}
            assert {"power-on"} <= steps and len(steps) >= 5, steps
            counts = _query(base, 'anvil_job_step_duration_seconds_count{kind="stamp",step="power-on",'
                                  'outcome="done"}')
            assert [float(r["value"][1]) for r in counts] == [STAMPS]
            inf = [r for r in buckets if r["metric"]["step"] == "power-on" and r["metric"]["le"] == "+Inf"]
            assert float(inf[0]["value"][1]) == STAMPS
            calls = _query(base, 'anvil_bmc_call_duration_seconds_count{driver="fake"}')
            assert {r["metric"]["call"] for r in calls} >= {"set_power"}, calls
            assert _query(base, "anvil_engine_leader == 1") and _query(base, "anvil_engine_leader_known == 1")
            assert _query(base, 'anvil_db_pool_connections{state="size"}')
            # The sample dashboard's every query is valid PromQL here; its step panel shows the stamps.
            dashboard = json.loads((REPO / "examples" / "grafana" / "anvil.json").read_text())
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    expr = target["expr"].replace("$job", "anvil")
                    _query(base, expr)
                    if panel["title"] == "Step duration p95 (done)":   # rate() needs two scrapes since the stamps
                        _until("the dashboard's step panel", lambda e=expr: [
                            r for r in _query(base, e) if r["metric"]["step"] == "power-on"], 10, prom)
            anonymous = _targets(base)["anonymous"]
            assert anonymous["health"] == "down" and "401" in anonymous["lastError"], anonymous
        finally:
            procs.stop(prom, timeout=10)
