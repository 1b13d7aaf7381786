"""The sample Grafana dashboard (examples/grafana/anvil.json) names only metrics the appliance
exposes: a renamed metric or label must fail here, not on an operator's empty panel. (Its PromQL is
run against a real Prometheus in tests/integration/metrics.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from appliance.metrics import Metrics, Sources

DASHBOARD = Path(__file__).resolve().parents[3] / "examples" / "grafana" / "anvil.json"


def exposed(tmp: Path) -> dict[str, set[str]]:
    """Every sample name of a Metrics with each series touched once, with its label names."""
    m = Metrics()
    log = tmp / "dnsmasq.log"
    log.write_text("Dec  6 18:00:02 dnsmasq-dhcp[41]: 1 DHCPDISCOVER(bts) 52:54:00:78:00:01\n")
    m.count_dhcp(log)
    m.count_tftp("ipxe.efi", "sent")
    m.steps.labels("stamp", "power-on", "done").observe(1)
    m.jobs_finished.labels("stamp", "succeeded").inc()
    m.bmc_calls.labels("fake", "get_power").observe(0.1)
    m.bmc_errors.labels("fake", "get_power", "BmcUnreachable").inc()
    m.monitor_pass.observe(1)
    m.monitor_pass_errors.inc()
    m.failovers.labels("started").inc()
    m.leadership.labels("acquired").inc()
    m.boot_requests.labels("/boot/ipxe", "ok").inc()
    m.boot_seconds.labels("/boot/ipxe").observe(0.01)
    m.watch(Sources(jobs=lambda: [("stamp", "running", 1)], pool=lambda: {"size": 1}, leader_here=lambda: True,
                    leader_known=lambda: True))
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in doc["templating"]["list"]]
    return found


def test_every_dashboard_metric_and_label_is_exposed(tmp_path: Path) -> None:
    have = exposed(tmp_path)
    series_labels = {"job", "instance", "le"}     # added by Prometheus, or the histogram's own
    for expr in exprs():
        for name in set(re.findall(r"\banvil_[a-z_]+", expr)):
            assert name in have, f"{name} in {expr!r} is not exposed (exposed: {sorted(have)})"
        for name, selector in re.findall(r"\b(anvil_[a-z_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*[=!~]", selector):
                assert label in have[name] | series_labels, f"{name} has no label {label} ({expr!r})"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert any(label in labels for labels in have.values()) or label in series_labels, (label, expr)


def test_the_dashboard_reads_the_prometheus_data_source_picked_at_import() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    assert {p["datasource"]["uid"] for p in doc["panels"] if p["type"] != "row"} == {"${DS_PROMETHEUS}"}
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
