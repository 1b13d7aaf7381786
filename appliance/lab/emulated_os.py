"""The operating system of an emulated blade: what a network-booted lab image would do.

Blades of the emulated rack (sushy-tools systems, IPMI fakes) have no CPU to run an OS,
so their emulator process plays one (DESIGN §7): when a blade comes on with network boot
set, it asks the boot service for its iPXE script by its PXE MAC, as iPXE would; if the
script boots an image carrying ``anvil.callback=`` and ``anvil.token=``, it posts the
callback as the lab image's agent does, then heartbeats with the secret it got back
until the blade is powered off (mode ``agent``) or powers itself off (``oneshot``).
Scripts that boot locally, sanboot a LUN or ask for discovery end the emulation there.

Standard library only: it runs inside the emulator processes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("anvil.lab.os")

_ARG = re.compile(r"(?:^|\s)(anvil\.[a-z_]+)=(\S+)")
BOOT_RETRY_FOR = 120.0      # s: a PXE ROM and the agent keep trying while the appliance restarts
MAX_LIFETIME = 24 * 3600.0  # s: bounds the heartbeat loop of a blade nobody powers off


@dataclass(frozen=True, slots=True)
class BladeHooks:
    """How the OS of one blade sees its hardware (all called from the OS thread)."""

    pxe_mac: Callable[[], str]          # the MAC iPXE reports: the virtual one where applied
    powered_on: Callable[[], bool]
    network_boot: Callable[[], bool]    # boot override says PXE at this power-on
    power_off: Callable[[], None]       # the OS shutting the blade down (oneshot mode)
    uuid: Callable[[], str] = lambda: ""


def parse_script(text: str) -> dict[str, str]:
    """The ``anvil.*`` kernel arguments of an iPXE script (empty when it boots no image of ours)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("kernel "):
            return {k: urllib.parse.unquote(v) for k, v in _ARG.findall(line)}
    return {}


class EmulatedOs:
    """One per emulator process; one thread per blade that is booting or running."""

    def __init__(self, boot_url: str, *, timeout: float = 5.0) -> None:
        self.boot_url = boot_url.rstrip("/")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._runs: dict[str, threading.Event] = {}

    def power_on(self, key: str, hooks: BladeHooks, *, after: float = 0.0) -> None:
        """Blade ``key`` was asked to come on; its OS starts once the power shows, ``after`` s."""
        stop = threading.Event()
        with self._lock:
            old = self._runs.get(key)
            if old is not None:
                old.set()
            self._runs[key] = stop
        threading.Thread(target=self._run, args=(key, hooks, after, stop), name=f"os-{key}", daemon=True).start()

    def power_off(self, key: str) -> None:
        with self._lock:
            stop = self._runs.pop(key, None)
        if stop is not None:
            stop.set()

    # ---- the OS thread ------------------------------------------------------------------

    def _run(self, key: str, hooks: BladeHooks, after: float, stop: threading.Event) -> None:
        try:
            if stop.wait(max(0.0, after) + 0.05):
                return
            if not self._wait_on(hooks, stop) or not hooks.network_boot():
                return
            self._boot(key, hooks, stop)
        except Exception:  # an emulated OS dying must never take its emulator down
            log.exception("emulated OS of %s stopped", key)

    def _wait_on(self, hooks: BladeHooks, stop: threading.Event) -> bool:
        for _ in range(100):       # the power shows within the emulator's delay (≤ 11 s)
            if hooks.powered_on():
                return True
            if stop.wait(0.2):
                return False
        return False

    def _boot(self, key: str, hooks: BladeHooks, stop: threading.Event) -> None:
        mac = hooks.pxe_mac()
        query = urllib.parse.urlencode({"mac": mac, **({"uuid": hooks.uuid()} if hooks.uuid() else {})})
        script = self._retry(stop, hooks, lambda: self._get(f"{self.boot_url}/boot/ipxe?{query}"))
        if script is None:
            log.warning("%s: no iPXE script from %s", key, self.boot_url)
            return
        args = parse_script(script)
        token, callback = args.get("anvil.token"), args.get("anvil.callback")
        if not token or not callback:
            return   # local boot, sanboot or discovery: nothing of ours runs
        facts = {"token": token, "mac": mac, "ip": "", "uptime": "1", "hostname": f"emulated-{key}",
                 "kernel": "emulated", "mode": args.get("anvil.mode", "agent"),
                 "profile": args.get("anvil.profile", ""), "uuid": args.get("anvil.uuid", ""), "disk": "none"}
        answer = self._retry(stop, hooks, lambda: self._post(callback, facts), give_up_on_403=True)
        if answer is None:
            log.warning("%s: boot callback to %s not accepted", key, callback)
            return
        log.info("%s: booted (%s)", key, facts["profile"])
        if facts["mode"] == "oneshot":
            hooks.power_off()
            return
        reply = dict(line.split("=", 1) for line in answer.splitlines() if "=" in line)
        secret, url = reply.get("heartbeat_secret", ""), reply.get("heartbeat_url", "")
        try:
            interval = max(1.0, float(reply.get("heartbeat_interval", "10")))
        except ValueError:
            interval = 10.0
        if not secret or not url:
            return
        ends = time.monotonic() + MAX_LIFETIME
        while time.monotonic() < ends and not stop.wait(interval):
            if not hooks.powered_on():
                return
            try:
                self._post(url, {"secret": secret})
            except urllib.error.HTTPError as exc:
                if exc.code == 403:      # a newer boot of this blade, or its binding ended
                    return
            except OSError:
                pass                     # the appliance restarting: keep beating

    def _retry(self, stop: threading.Event, hooks: BladeHooks, fn: Callable[[], str], *,
               give_up_on_403: bool = False) -> str | None:
        ends = time.monotonic() + BOOT_RETRY_FOR
        while time.monotonic() < ends:
            try:
                return fn()
            except urllib.error.HTTPError as exc:
                if give_up_on_403 and exc.code == 403:
                    return None
            except OSError:
                pass
            if stop.wait(1.0) or not hooks.powered_on():
                return None
        return None

    def _get(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=self.timeout) as resp:
            return str(resp.read(65536).decode("utf-8", "replace"))

    def _post(self, url: str, fields: dict[str, str]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return str(resp.read(65536).decode("utf-8", "replace"))
