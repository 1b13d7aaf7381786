"""Host pools against the emulated rack: time from ``grow N`` to all N hosts ready, and webhook
delivery latency.

    .venv/bin/python bench/hostpool.py            # N = 1, 10, 50 (64 blades in 4 chassis)
    .venv/bin/python bench/hostpool.py --smoke    # CI: N = 1, 2 (4 blades in 2 chassis)
    .venv/bin/python bench/hostpool.py --sizes 1 5 --json out.json

The user's path (bench/userpath.py): a real ``anvil serve`` over TLS in a fresh state
directory with no configuration file (shipped timers), sushy-tools chassis (power changes
take 0-0.2 s) and an snmpsim switch, every blade enrolled through the REST API. For each N a
new pool of the example KVM host template (``profiles/examples/kvm-host-template.yaml``, its
second NIC on VLAN 100: the lab switch has no VLAN 40) is created at size 0 with a webhook to
the reference VM manager's receiver (examples/vm-manager, signatures checked), then
``PUT .../size {"size": N}``; the pools of one run are grown one after another, each on
blades no earlier pool holds.

- grow → all ready: from the PUT's answer to the arrival of the Nth ``host.ready`` webhook
  (the pool's own ``converged`` is checked too);
- webhook latency: for every event delivered, its arrival at the receiver minus the time
  the appliance recorded the event (its ``at``; one machine, one clock), p50/p99/max over all.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import userpath  # bench/userpath.py: the script's own folder is first on sys.path
import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "profiles" / "examples" / "kvm-host-template.yaml"
SECRET = "the-benchmarks-webhook-secret"
FULL_SIZES = (1, 10, 50)
SMOKE_SIZES = (1, 2)


def _client() -> ModuleType:
    """The reference VM manager (examples/vm-manager/vm_manager.py): a file, not a package."""
    path = REPO / "examples" / "vm-manager" / "vm_manager.py"
    spec = importlib.util.spec_from_file_location("vm_manager", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vm_manager"] = module
    spec.loader.exec_module(module)
    return module


class Arrivals:
    """Every accepted webhook's event with its arrival time (the receiver's thread writes, we read)."""

    def __init__(self) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def ready(self, pool: str) -> list[float]:
        with self.lock:
            return [t for t, e in self.items if e["pool"] == pool and e["event"] == "host.ready"]

    def latencies(self, pool: str | None = None) -> list[float]:
        with self.lock:
            return sorted(t - datetime.fromisoformat(e["at"]).timestamp() for t, e in self.items
                          if pool is None or e["pool"] == pool)


def percentiles(lat: list[float]) -> dict[str, float]:
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
    return {"delivered": len(lat), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(max(lat) * 1000, 1)}


def receiver(vm: ModuleType, arrivals: Arrivals) -> Any:
    class Timed(vm.Receiver):  # type: ignore[name-defined,misc]
        def take(self, raw: bytes, headers: Any) -> int:
            now = time.time()
            code = int(super().take(raw, headers))
            if code == 200:
                with arrivals.lock:
                    arrivals.items.append((now, json.loads(raw)["data"]))
            return code

    return Timed(SECRET.encode())


def setup(app: userpath.Appliance, rack: userpath.Rack, api: Any) -> None:
    for b in rack.blades:     # the template asks 16 CPUs and 128 GiB: the emulated systems are smaller
        api.call("POST", "/blades", {**rack.enrollment(b), "cpus": 32, "memoryGiB": 256})
    for body in ({"name": "macs", "kind": "mac", "start": "02:a0:00:00:00:00", "end": "02:a0:00:00:ff:ff"},
                 {"name": "iqns", "kind": "iqn", "prefix": "iqn.2026-11.io.anvil:host-", "start": "1",
                  "end": "9999"},
                 {"name": "uuids", "kind": "uuid", "start": "4c4c4544-0000-0000-0000-000000000000",
                  "end": "4c4c4544-0000-0000-0000-00000000ffff"}):
        api.call("POST", "/identity-pools", body)
    template = yaml.safe_load(TEMPLATE.read_text())
    template["spec"]["identity"]["nics"][1]["vlans"]["native"] = 100
    api.call("POST", "/profiles", template)
    api.call("POST", "/failover-domains", {"name": "kvm-pool"})


def grow(api: Any, arrivals: Arrivals, url: str, n: int, timeout: float) -> dict[str, Any]:
    name = f"bench-{n}"
    api.create_pool(name, "kvm-host", max=n)
    api.add_webhook(name, url, SECRET)
    start = time.time()
    api.set_size(name, n)
    answered = time.time()
    deadline = time.monotonic() + timeout
    while len(arrivals.ready(name)) < n:
        if time.monotonic() > deadline:
            pool = api.pool(name)
            raise TimeoutError(f"pool {name}: {len(arrivals.ready(name))} of {n} hosts ready within {timeout:g} s "
                               f"(hosts {pool['hosts']}, waiting: {pool.get('waiting')})")
        time.sleep(0.05)
    last = max(arrivals.ready(name))
    pool = api.pool(name)
    assert pool["converged"], pool
    ready = sorted(arrivals.ready(name))
    return {"n": n, "ready_s": round(last - start, 2), "first_ready_s": round(ready[0] - start, 2),
            "put_answer_s": round(answered - start, 3)}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = tuple(args.sizes) if args.sizes else SMOKE_SIZES if args.smoke else FULL_SIZES
    per_chassis = -(-(sum(sizes) + 2) // args.chassis)
    vm = _client()
    arrivals = Arrivals()
    hooks = receiver(vm, arrivals)
    app = userpath.Appliance(work)
    rounds = []
    with app, userpath.Rack(work, app.boot_url, [per_chassis] * args.chassis, (0.0, 0.2)) as rack, \
            userpath.StallWatch() as watch:
        app.start()
        rack.enroll_switch(app)
        api = vm.Anvil(app.url, app.token(), ca_cert=str(app.state / "tls" / "cert.pem"))
        setup(app, rack, api)
        url = hooks.start()
        try:
            for n in sizes:
                rounds.append(grow(api, arrivals, url, n, args.timeout))
                print(f"grow {n:>3}: all ready in {rounds[-1]['ready_s']:7.2f} s "
                      f"(first in {rounds[-1]['first_ready_s']:.2f} s)", flush=True)
            time.sleep(1.0)     # the last events' webhooks
        finally:
            hooks.stop()
        lat = arrivals.latencies()
        for r in rounds:      # the events of one grow: a burst of 2N events queues behind one another
            r["webhooks"] = percentiles(arrivals.latencies(f"bench-{r['n']}"))
        cpu = app.cpu()
        timers = app.timers()
        machine = watch.summary()
        stalls = watch.describe()
    webhooks = {**percentiles(lat), "rejected": hooks.rejected, "duplicates": hooks.duplicates}
    return {"sizes": list(sizes), "blades": per_chassis * args.chassis, "chassis": args.chassis, "rounds": rounds,
            "webhooks": webhooks, "serve_cpu_s": round(cpu, 1), "timers": timers, "machine": machine,
            "stalls": stalls}


def report(out: dict[str, Any]) -> list[str]:
    w = out["webhooks"]
    lines = [f"host pools: {out['blades']} emulated blades in {out['chassis']} chassis, anvil serve over TLS, "
             "shipped timers; grow N = PUT .../size N until the Nth host.ready webhook arrives",
             f"{'N':>4} {'all ready s':>12} {'first ready s':>14} {'s per host':>11} {'webhook p50 ms':>15} "
             f"{'p99 ms':>8}"]
    for r in out["rounds"]:
        h = r["webhooks"]
        lines.append(f"{r['n']:>4} {r['ready_s']:>12.2f} {r['first_ready_s']:>14.2f} {r['ready_s'] / r['n']:>11.2f} "
                     f"{h['p50_ms']:>15.1f} {h['p99_ms']:>8.1f}")
    lines.append(f"webhooks: {w['delivered']} delivered, latency (event recorded -> received) p50 {w['p50_ms']} ms, "
                 f"p99 {w['p99_ms']} ms, max {w['max_ms']} ms; {w['rejected']} bad signatures, "
                 f"{w['duplicates']} duplicates")
    lines.append(f"anvil serve CPU {out['serve_cpu_s']} s; {out['stalls']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI mode: N = 1, 2 on 2 chassis")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="pool sizes to grow, one pool each")
    ap.add_argument("--chassis", type=int, default=None, help="emulated chassis (default 4; --smoke 2)")
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on each grow, s")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.chassis is None:
        args.chassis = 2 if args.smoke else 4
    if any(n < 1 for n in args.sizes or ()) or args.chassis < 1:
        ap.error("--sizes and --chassis must be 1 or more")
    with tempfile.TemporaryDirectory(prefix="anvil-hostpool-bench-") as tmp:
        out = run(args, Path(tmp))
    for line in report(out):
        print(line)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
