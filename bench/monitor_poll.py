"""Health polling at scale: how long one monitor pass over every blade takes (DESIGN §5: the
health of all blades polled every 30 s, 10,000 blades in one appliance).

    .venv/bin/python bench/monitor_poll.py                    # 1,000 IPMI blades, then 200 Redfish blades
    .venv/bin/python bench/monitor_poll.py --smoke            # CI: 20 IPMI and 10 Redfish blades, 1 pass each
    .venv/bin/python bench/monitor_poll.py --ipmi 2000 --redfish 0

Rack: IPMI BMCs served by ``appliance.lab.ipmi_emulator`` processes (``--per-process`` BMCs
each, one UDP port per BMC; every BMC keeps a SEL), Redfish systems by sushy-tools processes
of 25 systems. The appliance side is the production ``Monitor`` (``[monitor]`` defaults:
64 probes at once, 5 s per probe) with the production ``Hardware`` and drivers on a SQLite
store holding the enrolled blades: each probe reads power and health (IPMI: chassis status
and Get SEL Info; Redfish: the System's Status), and every pass ends by recording each
blade's health sample in the store, as ``anvil serve`` does.

One warm-up pass (logins, sessions) is not counted; then ``--passes`` passes, one after
another. Reported: seconds per pass (median), blades per second, and the pass time that
rate gives for 10,000 blades (target: under the 30 s interval). Emulators and appliance
share the 2 cores, so the projection is a floor on the appliance's own capacity, not a
ceiling: the CPU split per process says how much of the pass went to the emulators.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.drivers.protocols import Secret
from appliance.lab import ipmi_emulator, procs, redfish_emulator
from appliance.monitor.runner import Monitor, MonitorSettings
from appliance.secrets import SecretBox, ensure_key
from appliance.services.blades import BladeService, Enrollment
from appliance.services.hardware import Hardware
from appliance.store import open_store

FLEET = 10_000
INTERVAL_S = 30.0
PASSWORD = "bench-password"


def _start_ipmi(work: Path, count: int, per_process: int) -> tuple[list[Any], list[str]]:
    emulators, addresses = [], []
    for first in range(0, count, per_process):
        ports = [procs.free_udp_port() for _ in range(min(per_process, count - first))]
        emu = ipmi_emulator.start_ipmi(work / f"ipmi-{first}", ports, password=PASSWORD)
        emulators.append(emu)
        addresses += [emu.address(p) for p in ports]
    return emulators, addresses


def _start_redfish(work: Path, count: int, per_process: int) -> tuple[list[Any], list[str]]:
    emulators, addresses = [], []
    for c, first in enumerate(range(0, count, per_process), 1):
        systems = redfish_emulator.make_systems(min(per_process, count - first), seed=100 + c)
        emu = redfish_emulator.start_redfish(work / f"redfish-{c}", procs.free_tcp_port(), systems,
                                             password=PASSWORD)
        emulators.append(emu)
        addresses += [emu.address(s) for s in systems]
    return emulators, addresses


def _stop(kind: str, emulators: list[Any]) -> None:
    for emu in emulators:
        (ipmi_emulator.stop if kind == "ipmi" else redfish_emulator.stop)(emu)


async def _measure(work: Path, kind: str, addresses: list[str], emulators: list[Any], passes: int,
                   concurrency: int) -> dict[str, Any]:
    store = open_store(f"sqlite:///{work / f'{kind}.db'}")
    ensure_key(work / "secrets.key")
    box = SecretBox(work / "secrets.key")
    svc = BladeService(store, box)
    for i, address in enumerate(addresses, 1):
        svc.enroll(Enrollment(name=f"{kind}-{i:05d}", bmc=address, username="admin", password=Secret(PASSWORD)))
    hw = Hardware(store, box)
    monitor = Monitor(store, hw, settings=MonitorSettings(concurrency=concurrency))
    pids = {"appliance (monitor + drivers, this process)": [os.getpid()],
            f"{kind} emulators": [e.proc.pid for e in emulators]}
    try:
        t0 = time.monotonic()
        warm = await monitor.poll_once()
        warm_s = time.monotonic() - t0
        cpu0 = {k: sum(procs.cpu_seconds(p) for p in v) for k, v in pids.items()}
        walls, not_ok = [], 0
        sample = ""
        for _ in range(passes):
            t0 = time.monotonic()
            verdicts = await monitor.poll_once()
            walls.append(time.monotonic() - t0)
            bad = [v for v in verdicts if not v.ok]
            not_ok += len(bad)
            sample = sample or (f"{bad[0].blade}: {bad[0].detail}" if bad else "")
        cpu = {k: round(sum(procs.cpu_seconds(p) for p in v) - cpu0[k], 2) for k, v in pids.items()}
    finally:
        await hw.close()
        store.close()
    median = statistics.median(walls)
    rate = len(addresses) / median
    own_ms = 1000 * cpu["appliance (monitor + drivers, this process)"] / (len(addresses) * passes)
    return {"kind": kind, "blades": len(addresses), "processes": len(emulators), "concurrency": concurrency,
            "warmup_s": round(warm_s, 2), "warm_not_ok": sum(1 for v in warm if not v.ok),
            "pass_s": [round(w, 3) for w in walls], "pass_median_s": round(median, 3),
            "blades_per_s": round(rate, 1), "fleet_pass_s": round(FLEET / rate, 1), "not_ok": not_ok,
            "not_ok_sample": sample, "cpu_s": cpu, "appliance_cpu_ms_per_blade": round(own_ms, 2),
            "fleet_appliance_cpu_s": round(FLEET * own_ms / 1000, 1)}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rows = []
    for kind, count, per_process in (("ipmi", args.ipmi, args.per_process), ("redfish", args.redfish, 25)):
        if not count:
            continue
        start = _start_ipmi if kind == "ipmi" else _start_redfish
        emulators: list[Any] = []
        try:
            emulators, addresses = await asyncio.to_thread(start, work, count, per_process)
            rows.append(await _measure(work, kind, addresses, emulators, args.passes, args.concurrency))
        finally:
            await asyncio.to_thread(_stop, kind, emulators)
    return {"fleet": FLEET, "interval_s": INTERVAL_S, "rows": rows}


def _report(out: dict[str, Any]) -> list[str]:
    lines = ["Anvil monitor polling benchmark (one pass = power + health of every blade, recorded in the store)",
             f"  {'kind':<8}{'blades':>7}{'procs':>6}{'pass s':>9}{'blades/s':>10}"
             f"{'10k pass s':>12}{'not ok':>8}  CPU s in the passes"]
    for r in out["rows"]:
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items())
        lines.append(f"  {r['kind']:<8}{r['blades']:>7}{r['processes']:>6}{r['pass_median_s']:>9.2f}"
                     f"{r['blades_per_s']:>10.1f}{r['fleet_pass_s']:>12.1f}{r['not_ok']:>8}  {cpu}")
        if r["not_ok_sample"]:
            lines.append(f"    first not-ok verdict: {r['not_ok_sample']}")
    for r in out["rows"]:
        ok = r["fleet_pass_s"] <= out["interval_s"]
        lines.append(f"  {r['kind']}: {out['fleet']:,} blades would take {r['fleet_pass_s']:.1f} s per pass at this "
                     f"rate; target under the {out['interval_s']:g} s interval: {'met' if ok else 'MISSED'}")
        lines.append(f"    the appliance's own CPU: {r['appliance_cpu_ms_per_blade']:.2f} ms per blade polled, "
                     f"{r['fleet_appliance_cpu_s']:.1f} CPU-s per pass of {out['fleet']:,} blades "
                     "(the rest of the pass is the emulators' share of the 2 cores)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI: 20 IPMI and 10 Redfish blades, 1 pass")
    ap.add_argument("--ipmi", type=int, default=1000, help="IPMI blades")
    ap.add_argument("--redfish", type=int, default=200, help="Redfish blades (25 per sushy-tools process)")
    ap.add_argument("--per-process", type=int, default=250, help="IPMI BMCs per emulator process")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=MonitorSettings().concurrency)
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.ipmi, args.redfish, args.passes = 20, 10, 1
    with tempfile.TemporaryDirectory(prefix="anvil-bench-monitor-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    for line in _report(out):
        print(line)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if any(r["not_ok"] for r in out["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
