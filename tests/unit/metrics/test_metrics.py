"""Metric names and labels: what a dashboard or an alert rule depends on (appliance.metrics).

The engine and the BMC wrapper are exercised with the unit tests' fakes; the names, label sets and
label values asserted here are the contract examples/grafana/anvil.json is written against."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from appliance import __version__
from appliance.drivers import registry
from appliance.drivers.errors import BmcAuthFailed, BmcUnreachable
from appliance.drivers.protocols import BmcDriver, EventDriver, PowerAction
from appliance.metrics import MeteredBmc, Metrics, Sources, boot_outcome
from appliance.monitor.runner import Monitor, MonitorSettings
from appliance.services.jobs import JobService
from appliance.store import Store
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack, run_until_idle


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition as (name, sorted labels) → value, parsed back from the text."""
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def named(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples(m).items() if n == name}


def test_each_metrics_has_its_own_registry_never_the_global_one() -> None:
    a, b = Metrics(), Metrics()
    a.failovers.labels("started").inc()
    assert named(a, "anvil_failovers_total") == {(("outcome", "started"),): 1.0, (("outcome", "refused"),): 0.0}
    assert named(b, "anvil_failovers_total") == {(("outcome", "started"),): 0.0, (("outcome", "refused"),): 0.0}
    assert REGISTRY.get_sample_value("anvil_failovers_total", {"outcome": "started"}) is None
    assert named(a, "anvil_build_info")


def test_the_exposition_names_every_family_with_its_labels() -> None:
    m = Metrics()
    m.steps.labels("stamp", "power-on", "done").observe(0.2)
    m.jobs_finished.labels("stamp", "succeeded").inc()
    m.bmc_calls.labels("redfish", "get_power").observe(0.01)
    m.bmc_errors.labels("redfish", "get_power", "BmcUnreachable").inc()
    m.monitor_pass.observe(0.5)
    m.boot_requests.labels("/boot/ipxe", "ok").inc()
    m.leadership.labels("acquired").inc()
    m.watch(Sources(jobs=lambda: [("stamp", "succeeded", 3)], pool=lambda: {"size": 8, "checked_out": 1},
                    leader_here=lambda: True, leader_known=lambda: True))
    got = samples(m)
    assert got[("anvil_job_step_duration_seconds_bucket",
                (("kind", "stamp"), ("le", "0.25"), ("outcome", "done"), ("step", "power-on")))] == 1
    assert got[("anvil_job_step_duration_seconds_count", (("kind", "stamp"), ("outcome", "done"),
                                                          ("step", "power-on")))] == 1
    assert got[("anvil_jobs_finished_total", (("kind", "stamp"), ("state", "succeeded")))] == 1
    assert got[("anvil_bmc_call_duration_seconds_count", (("call", "get_power"), ("driver", "redfish")))] == 1
    assert got[("anvil_bmc_call_errors_total", (("call", "get_power"), ("driver", "redfish"),
                                                ("error", "BmcUnreachable")))] == 1
    assert got[("anvil_monitor_pass_duration_seconds_count", ())] == 1
    assert got[("anvil_boot_requests_total", (("outcome", "ok"), ("route", "/boot/ipxe")))] == 1
    assert got[("anvil_engine_leadership_changes_total", (("change", "acquired"),))] == 1
    assert got[("anvil_jobs", (("kind", "stamp"), ("state", "succeeded")))] == 3
    assert got[("anvil_db_pool_connections", (("state", "checked_out"),))] == 1
    assert got[("anvil_engine_leader", ())] == 1 and got[("anvil_engine_leader_known", ())] == 1
    assert got[("anvil_scrape_source_up", (("source", "jobs"),))] == 1


def test_a_failing_source_is_reported_and_the_rest_still_scraped() -> None:
    m = Metrics()

    def down() -> list[tuple[str, str, int]]:
        raise OSError("store down")

    m.watch(Sources(jobs=down, leader_known=lambda: False))
    got = samples(m)
    assert got[("anvil_scrape_source_up", (("source", "jobs"),))] == 0
    assert not [k for k in got if k[0] == "anvil_jobs"]
    assert got[("anvil_engine_leader_known", ())] == 0
    assert ("anvil_build_info", (("version", __version__),)) in got


@pytest.mark.parametrize(("status", "outcome"), [(200, "ok"), (302, "ok"), (403, "client_error"),
                                                 (429, "client_error"), (500, "server_error")])
def test_boot_outcomes(status: int, outcome: str) -> None:
    assert boot_outcome(status) == outcome


async def test_bmc_calls_are_timed_and_errors_counted_per_driver_and_call() -> None:
    m = Metrics()
    inner = registry.create("fake")
    driver = MeteredBmc(inner, "fake", m)
    # The wrapper is what Hardware hands out: still every Protocol the driver itself satisfies.
    assert isinstance(driver, BmcDriver) and isinstance(driver, EventDriver) == isinstance(inner, EventDriver)
    from appliance.drivers.protocols import Bmc, Secret

    bmc = Bmc(blade="m1", address="fake://m1", username="u", password=Secret("p"))
    await driver.set_power(bmc, PowerAction.ON)
    await driver.get_power(bmc)
    inner.fail("fake://m1", "get_power", BmcAuthFailed("m1", "fake", "get_power", "refused"))
    with pytest.raises(BmcAuthFailed):
        await driver.get_power(bmc)
    counts = named(m, "anvil_bmc_call_duration_seconds_count")
    assert counts[(("call", "get_power"), ("driver", "fake"))] == 2
    assert counts[(("call", "set_power"), ("driver", "fake"))] == 1
    assert named(m, "anvil_bmc_call_errors_total") == {
        (("call", "get_power"), ("driver", "fake"), ("error", "BmcAuthFailed")): 1}


async def test_hardware_hands_out_metered_drivers(store: Store, tmp_path: Path) -> None:
    from appliance.secrets import SecretBox, ensure_key
    from appliance.services.hardware import Hardware

    rack(store, tmp_path)
    ensure_key(tmp_path / "secrets.key")
    m = Metrics()
    async with Hardware(store, SecretBox(tmp_path / "secrets.key"), metrics=m) as hw:
        driver, bmc = hw.bmc("b01")
        await driver.get_power(bmc)
        assert hw.bmc("b02")[0] is driver          # one wrapper per driver, kept like the driver
    assert named(m, "anvil_bmc_call_duration_seconds_count")[(("call", "get_power"), ("driver", "fake"))] == 1


async def test_the_engine_times_each_step_and_counts_finished_jobs(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    add_profile(store, "web-02", 2)
    hw = FakeHardware()
    hw.bmcs.fail("fake://b02", "set_next_boot", BmcUnreachable("b02", "fake", "set_next_boot", "timeout"), times=1)
    hw.bmcs.fail("fake://b03", "set_next_boot", BmcAuthFailed("b03", "fake", "set_next_boot", "bad password"))
    jobs = JobService(store)
    ok = jobs.submit_assign("web-01", tenant="acme", blade="b02")
    bad = jobs.submit_assign("web-02", tenant="acme", blade="b03")
    m = Metrics()
    engine = make_engine(store, hw, metrics=m)
    await run_until_idle(engine)
    assert jobs.get(ok.id).state == "succeeded" and jobs.get(bad.id).state == "rolled_back"
    finished = {k: v for k, v in named(m, "anvil_jobs_finished_total").items() if v}
    assert finished == {(("kind", "stamp"), ("state", "succeeded")): 1,
                        (("kind", "stamp"), ("state", "rolled_back")): 1}
    counts = {dict(k)["step"] + "/" + dict(k)["outcome"]: v
              for k, v in named(m, "anvil_job_step_duration_seconds_count").items() if dict(k)["kind"] == "stamp"}
    assert counts["power-on/done"] == 1 and counts["set-boot/retry"] == 1 and counts["set-boot/failed"] == 1
    assert counts["set-boot/done"] == 1 and counts["bind/undone"] == 1
    assert {dict(k)["kind"] for k, v in named(m, "anvil_job_step_duration_seconds_count").items() if v} == {"stamp"}
    assert named(m, "anvil_engine_leadership_changes_total") == {(("change", "acquired"),): 1,
                                                                 (("change", "lost"),): 0,
                                                                 (("change", "released"),): 1}


async def test_the_monitor_times_its_passes(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    m = Metrics()
    monitor = Monitor(store, FakeHardware(), settings=MonitorSettings(interval=0.05, probe_timeout=1), metrics=m)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if named(m, "anvil_monitor_pass_duration_seconds_count").get((), 0) >= 2:
            break
    stop.set()
    await asyncio.wait_for(task, 10)
    assert named(m, "anvil_monitor_pass_duration_seconds_count")[()] >= 2
    assert named(m, "anvil_monitor_pass_errors_total") == {(): 0}


def test_every_step_and_final_state_is_a_series_before_the_first_job(store: Store) -> None:
    # rate() over the first scrapes sees the first tries only if the series was there, at 0, before.
    from appliance.engine.steps import KINDS

    m = Metrics()
    make_engine(store, FakeHardware(), metrics=m)
    steps = named(m, "anvil_job_step_duration_seconds_count")
    assert {(dict(k)["kind"], dict(k)["step"]) for k in steps} == {
        (kind.name, step) for kind in KINDS.values() for step in kind.step_names}
    assert set(steps.values()) == {0}
    finished = named(m, "anvil_jobs_finished_total")
    assert (("kind", "stamp"), ("state", "succeeded")) in finished and set(finished.values()) == {0}
