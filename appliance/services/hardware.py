"""Hardware: the one place the appliance gets a driver for a blade or a switch.

The driver is chosen by the inventory's ``driver`` column through the registry, and
one instance per driver name is kept for the life of this object, because drivers
hold sessions (IPMI sessions, Redfish connections, SNMP engines). Credentials are
decrypted here, just before the call, and handed to the driver in ``Bmc`` /
``SwitchRef`` values. :meth:`close` closes every driver it created.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import cast

from appliance.config import Settings
from appliance.drivers import registry
from appliance.drivers.protocols import Bmc, BmcDriver, StorageDriver, SwitchDriver, SwitchRef
from appliance.metrics import MeteredBmc, Metrics
from appliance.monitor.notify import Notifier
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService
from appliance.services.switches import SwitchService
from appliance.store import Store

log = logging.getLogger(__name__)


def storage_driver(settings: Settings) -> StorageDriver | None:
    """The iSCSI target driver for boot LUNs: the one ``[storage] driver`` names; when it names
    none, the VM lab's tgtd if ``anvil lab up --vms`` recorded one in lab.json; else None.

    The lab's tgtd is reached by its control port alone (tgtd's control socket is a file in
    /var/run/tgtd, the same from every namespace), so this process need not enter the lab's
    namespace. The choice is made once, when the appliance starts: bring the lab up first.
    """
    # Backing files and seed images must stay inside the appliance's own directories.
    roots = [settings.luns_dir, settings.images_dir]
    cfg = settings.storage
    if cfg.driver:
        return registry.create_storage(cfg.driver, {
            "control_port": cfg.tgt_control_port, "netns": cfg.tgt_netns or None, "roots": roots})
    lab_file = settings.lab_dir / "lab.json"
    try:
        lab = json.loads(lab_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # The lab's file is not the appliance's configuration: a broken one costs the lab's
        # storage only, said loudly, rather than the whole appliance.
        log.warning("storage: %s is unreadable (%s); no storage driver from the lab", lab_file, exc)
        return None
    storage = lab.get("storage") if isinstance(lab, dict) else None
    if not isinstance(storage, dict) or storage.get("driver") != "tgt":
        return None
    port = storage.get("controlPort")
    if not isinstance(port, int) or isinstance(port, bool):
        log.warning("storage: %s names tgtd control port %r, not a number; no storage driver from the lab",
                    lab_file, port)
        return None
    log.info("storage: the VM lab's tgtd (control port %d, portal %s) from %s", port, storage.get("portal"),
             lab_file)
    return registry.create_storage("tgt", {"control_port": port, "netns": None, "roots": roots})


class Hardware:
    """``ttl``: how long a blade's or switch's decrypted details are reused. A job makes a dozen
    driver calls per blade in a few seconds; reading and decrypting the row for each of them
    would put a store read on the event loop every time."""

    def __init__(self, store: Store, box: SecretBox, *, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, storage: StorageDriver | None = None,
                 notifier: Notifier | None = None, metrics: Metrics | None = None) -> None:
        # Every BMC driver handed out is timed here, at the Protocol boundary (appliance.metrics).
        self.metrics = metrics or Metrics()
        self.box = box          # DR jobs decrypt a paired site's token with it (appliance.dr.remote)
        self._storage = storage
        self._notifier = notifier
        self._blades = BladeService(store, box)
        self._switches = SwitchService(store, box)
        self._bmc_drivers: dict[str, BmcDriver] = {}
        self._switch_drivers: dict[str, SwitchDriver] = {}
        self._ttl, self._clock = ttl, clock
        self._bmc_cache: dict[str, tuple[float, str, Bmc]] = {}
        self._switch_cache: dict[str, tuple[float, str, SwitchRef]] = {}

    def bmc(self, blade: str) -> tuple[BmcDriver, Bmc]:
        """The driver for ``blade`` and its BMC details (password decrypted). NotFound, BadSettings."""
        now = self._clock()
        hit = self._bmc_cache.get(blade)
        if hit is not None and now - hit[0] < self._ttl:
            name, bmc = hit[1], hit[2]
        else:
            name, bmc = self._blades.driver_and_bmc(blade)
            self._bmc_cache[blade] = (now, name, bmc)
        driver = self._bmc_drivers.get(name)
        if driver is None:
            driver = self._bmc_drivers[name] = cast(BmcDriver, MeteredBmc(registry.create(name), name, self.metrics))
        return driver, bmc

    def prefetch(self, blades: list[str]) -> None:
        """Read and decrypt the details of every blade in ``blades`` not cached, in bulk. Blocking:
        call it on a worker thread before many :meth:`bmc` calls on the event loop (the monitor's
        pass over 10,000 blades would otherwise read and decrypt 10,000 rows on the loop)."""
        now = self._clock()
        missing = [b for b in blades if (hit := self._bmc_cache.get(b)) is None or now - hit[0] >= self._ttl]
        if not missing:
            return
        for name, (driver, bmc) in self._blades.drivers_and_bmcs(missing).items():
            self._bmc_cache[name] = (now, driver, bmc)

    def switch(self, name: str) -> tuple[SwitchDriver, SwitchRef]:
        """The driver for switch ``name`` and how to reach it (secrets decrypted). NotFound, BadSettings."""
        now = self._clock()
        hit = self._switch_cache.get(name)
        if hit is not None and now - hit[0] < self._ttl:
            driver_name, ref = hit[1], hit[2]
        else:
            driver_name, ref = self._switches.driver_and_ref(name)
            self._switch_cache[name] = (now, driver_name, ref)
        driver = self._switch_drivers.get(driver_name)
        if driver is None:
            driver = self._switch_drivers[driver_name] = registry.create_switch(driver_name)
        return driver, ref

    def storage(self) -> StorageDriver | None:
        """The iSCSI target driver for boot LUNs, when one is configured."""
        return self._storage

    def notifier(self) -> Notifier | None:
        """Where failover events go out (the domains' webhooks), when the appliance sends them."""
        return self._notifier

    async def close(self) -> None:
        """Close every cached driver; a driver failing to close is logged, the others still close."""
        drivers: list[BmcDriver | SwitchDriver | StorageDriver] = [
            *self._bmc_drivers.values(), *self._switch_drivers.values(), *([self._storage] if self._storage else [])]
        self._storage = None
        if self._notifier is not None:
            await self._notifier.close()
            self._notifier = None
        self._bmc_drivers.clear()
        self._switch_drivers.clear()
        for driver in drivers:
            try:
                await driver.close()
            except Exception:  # closing is best effort; one bad driver must not keep others open
                log.warning("closing driver %s failed", getattr(driver, "name", "?"), exc_info=True)

    async def __aenter__(self) -> Hardware:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
