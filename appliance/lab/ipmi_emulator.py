"""IPMI BMCs for the lab: N pyghmi ``Bmc`` instances in ONE separate process.

Run: ``python -m appliance.lab.ipmi_emulator --ports 9001,9002 --state-file S.json
[--power-delay 0,0.2] [--user admin --password password]``. Each port is one BMC
(IPMI 2.0 / RMCP+ over UDP on 127.0.0.1) for one blade. Power and boot flags are kept
in memory and written to the state file (JSON, replaced atomically) after every change
so tests and the lab can read them; the file first appears once every port is bound.

Workaround (pyghmi 1.6.19 client ↔ its own server): the server always answers cipher
suite 3 (RAKP-HMAC-SHA1) with status 0 even when the client proposed SHA-256, and the
client then fails in ``_got_rakp2`` (``struct.error: pack expected 32 items``). We make
the server refuse non-SHA1 proposals (status 0x11, "invalid authentication algorithm")
so the client falls back to SHA1. Also, the stock server drops the boot flags'
persistent/UEFI bits; this one keeps them. Each BMC keeps a System Event Log
(:mod:`appliance.lab.sel_log`): faults are injected with a standard Add SEL Entry.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.lab import procs
from appliance.lab.emulated_os import BladeHooks, EmulatedOs
from appliance.lab.sel_log import NETFN_STORAGE, SelLog

HOST = "127.0.0.1"


def guid_for(port: int) -> str:
    """The system GUID a BMC on ``port`` reports (deterministic, so tests can check it)."""
    return str(uuid.UUID(f"00000000-0000-4000-9000-{port:012x}"))


@dataclass(slots=True)
class IpmiEmulator:
    proc: procs.ProcHandle
    ports: list[int]
    state_file: Path
    username: str
    password: str

    def address(self, port: int) -> str:
        return f"ipmi://{HOST}:{port}"

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data


def start_ipmi(
    dir: Path,
    ports: list[int],
    *,
    power_delay: tuple[float, float] = (0.0, 0.2),
    username: str = "admin",
    password: str = "password",
    ready_timeout: float = 20.0,
    boot_url: str | None = None,
    macs: list[str] | None = None,
) -> IpmiEmulator:
    """Start one process serving a BMC on each of ``ports``; returns once all are bound.

    ``boot_url`` and ``macs`` (the PXE MAC of each port's blade): the blades' emulated OS.
    """
    dir.mkdir(parents=True, exist_ok=True)
    state_file = dir / "ipmi-state.json"
    state_file.unlink(missing_ok=True)
    proc = procs.start(
        [
            sys.executable, "-m", "appliance.lab.ipmi_emulator",
            "--ports", ",".join(str(p) for p in ports),
            "--state-file", str(state_file),
            "--power-delay", f"{power_delay[0]},{power_delay[1]}",
            "--user", username,
            *(["--boot-url", boot_url, "--macs", ",".join(macs or [])] if boot_url else []),
        ],
        dir / "ipmi-emulator.log",
        # The password goes through the environment, not argv (ps shows argv).
        env={"ANVIL_LAB_IPMI_PASSWORD": password},
    )
    emu = IpmiEmulator(proc=proc, ports=list(ports), state_file=state_file, username=username, password=password)
    try:
        procs.wait_until(state_file.exists, proc, ready_timeout, f"ipmi emulator {ports[:3]}…")
    except BaseException:
        procs.stop(proc)
        raise
    return emu


def stop(emu: IpmiEmulator, timeout: float = 5.0) -> None:
    procs.stop(emu.proc, timeout)


# ---- the emulator process ---------------------------------------------------------


def _patch_sha1_only() -> None:  # pragma: no cover - runs in the child
    from pyghmi.ipmi.private import serversession

    stock = serversession.ServerSession.create_open_session_response

    def sha1_only(self: Any, request: bytearray) -> Any:
        if len(request) > 12 and request[12] != 1:  # proposed auth algorithm is not RAKP-HMAC-SHA1
            return bytearray([request[0], 0x11, 0, 0]) + request[4:8] + bytearray(4)
        return stock(self, request)

    serversession.ServerSession.create_open_session_response = sha1_only


class _Rack:  # pragma: no cover - runs in the child
    """All BMCs' state, written to the state file after each change."""

    def __init__(self, state_file: Path, delay: tuple[float, float], emulated_os: EmulatedOs | None = None,
                 macs: dict[int, str] | None = None) -> None:
        self.state_file = state_file
        self.delay = delay
        self.blades: dict[int, dict[str, Any]] = {}
        self.emulated_os = emulated_os
        self.macs = macs or {}

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(p): b for p, b in self.blades.items()}, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)


def _make_bmc_class() -> type:  # pragma: no cover - runs in the child
    from pyghmi.ipmi import bmc as pyghmi_bmc

    class LabBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
        def __init__(self, rack: _Rack, port: int, users: dict[str, str]) -> None:
            super().__init__(users, port=port, address=HOST)
            self.rack = rack
            self.lab_port = port
            self.guid = uuid.UUID(guid_for(port))
            rack.blades[port] = {
                "power": "off", "pending": None, "apply_at": 0.0,
                "bootdev": 0, "bootflags": 0, "calls": {},
            }
            self.sel = SelLog()

        def handle_raw_request(self, request: dict[str, Any], session: Any) -> Any:
            # The stock server answers 0xC1 to every storage command; a real BMC keeps a SEL.
            if request["netfn"] == NETFN_STORAGE:
                code, data = self.sel.answer(request["command"], bytes(request.get("data") or b""))
                return session.send_ipmi_response(code=code, data=list(data))
            return super().handle_raw_request(request, session)

        @property
        def st(self) -> dict[str, Any]:
            return self.rack.blades[self.lab_port]

        def _count(self, name: str) -> None:
            calls = self.st["calls"]
            calls[name] = calls.get(name, 0) + 1

        def _settle(self) -> None:
            st = self.st
            if st["pending"] is not None and time.monotonic() >= st["apply_at"]:
                st["power"], st["pending"] = st["pending"], None
                self.rack.save()

        def _change(self, target: str, name: str) -> int:
            self._count(name)
            self._settle()
            st = self.st
            was_on = st["power"] == "on"
            if st["power"] != target or st["pending"] not in (None, target):
                lo, hi = self.rack.delay
                st["pending"] = target
                st["apply_at"] = time.monotonic() + random.uniform(lo, hi)
            self.rack.save()
            self._settle()
            if target == "off":
                self._os_stop()
            elif not was_on:
                self._os_start()
            return 0

        def _os_start(self) -> None:
            emulated = self.rack.emulated_os
            mac = self.rack.macs.get(self.lab_port)
            if emulated is None or not mac:
                return

            def powered_on() -> bool:
                self._settle()
                return bool(self.st["power"] == "on")

            emulated.power_on(str(self.lab_port), BladeHooks(
                pxe_mac=lambda: mac,
                powered_on=powered_on,
                # Boot flags parameter 5, data 2: device selector in bits 5:2, 0001b = force PXE.
                network_boot=lambda: (int(self.st["bootdev"]) >> 2) & 0x0F == 1,
                power_off=self._os_poweroff,
                uuid=lambda: str(self.guid),
            ), after=max(0.0, float(self.st["apply_at"]) - time.monotonic()))

        def _os_poweroff(self) -> None:
            self._change("off", "os_poweroff")

        def _os_stop(self) -> None:
            if self.rack.emulated_os is not None:
                self.rack.emulated_os.power_off(str(self.lab_port))

        def get_power_state(self) -> str:
            self._settle()
            return str(self.st["power"])

        def power_on(self) -> int:
            return self._change("on", "power_on")

        def power_off(self) -> int:
            return self._change("off", "power_off")

        def power_shutdown(self) -> int:
            return self._change("off", "power_shutdown")

        def power_reset(self) -> int:
            self._count("power_reset")
            self._settle()
            if self.st["power"] != "on":
                return 0xD5  # "not supported in present state"
            self._os_start()
            return 0

        def power_cycle(self) -> int:
            return self.power_reset()

        def get_system_guid(self) -> uuid.UUID:
            return self.guid

        def get_system_boot_options(self, request: dict[str, Any], session: Any) -> Any:
            if request["data"][0] == 5:
                st = self.st
                return session.send_ipmi_response(data=[1, 5, st["bootflags"], st["bootdev"], 0, 0, 0])
            return session.send_ipmi_response(code=0x80)

        def set_system_boot_options(self, request: dict[str, Any], session: Any) -> Any:
            data = request["data"]
            if data[0] in (0, 3, 4):
                return session.send_ipmi_response()
            if data[0] == 5 and len(data) >= 3:
                self._count("set_bootdev")
                self.st["bootflags"], self.st["bootdev"] = data[1], data[2]
                self.rack.save()
                return session.send_ipmi_response()
            return session.send_ipmi_response(code=0xCC)

    return LabBmc


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the child
    ap = argparse.ArgumentParser(prog="python -m appliance.lab.ipmi_emulator")
    ap.add_argument("--ports", required=True, help="comma-separated UDP ports, one BMC each")
    ap.add_argument("--state-file", required=True, type=Path)
    ap.add_argument("--power-delay", default="0,0.2", help="lo,hi seconds before a power change shows")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--boot-url", default=None, help="boot service the blades' emulated OS boots from")
    ap.add_argument("--macs", default="", help="comma-separated PXE MACs, one per port")
    args = ap.parse_args(argv)
    password = os.environ.get("ANVIL_LAB_IPMI_PASSWORD", "password")
    lo, hi = (float(x) for x in args.power_delay.split(","))
    ports = [int(p) for p in args.ports.split(",") if p]

    _patch_sha1_only()
    from pyghmi.ipmi import bmc as pyghmi_bmc

    macs = dict(zip(ports, [m for m in args.macs.split(",") if m], strict=False))
    rack = _Rack(args.state_file, (lo, hi), EmulatedOs(args.boot_url) if args.boot_url else None, macs)
    cls = _make_bmc_class()
    bmcs = [cls(rack, port, {args.user: password}) for port in ports]
    rack.save()  # also the readiness signal
    print(f"ipmi emulator: {len(bmcs)} BMCs on {HOST} ports {ports[0]}..{ports[-1]}", flush=True)
    # The same pyghmi socket race as in the client (see the IPMI driver's quirks module)
    # stalls this process's one I/O thread under load; the fix applies to servers too.
    from appliance.drivers.ipmi._pyghmi_quirks import fix_io_race

    fix_io_race()
    pyghmi_bmc.Bmc.listen(timeout=0.5)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
