"""What a job is made of: named idempotent steps, each with an optional undo.

A step *ensures* a state: it reads first and skips what is already true, so
running it again after a crash is safe. It returns a small dict that is merged
into the job's ``data`` and committed together with the step's completion.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from appliance.assets import asset_dir
from appliance.boot.tokens import KEY_FILE, BootKey
from appliance.config import Settings
from appliance.drivers.protocols import Bmc, BmcDriver, StorageDriver, SwitchDriver, SwitchRef
from appliance.errors import AnvilError

if TYPE_CHECKING:
    from appliance.monitor.notify import Notifier
from appliance.store import Store


class StepFailed(AnvilError):
    """A step cannot succeed: the job rolls back (or fails, for forward-only jobs)."""


class NoSpareBlade(StepFailed):
    pass


class StepRetry(AnvilError):
    """A transient problem: the runner tries the step again after a back-off."""

    retryable = True


T = TypeVar("T")


class DbRunner(Protocol):
    """Runs a blocking store function off the event loop."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


class HardwarePort(Protocol):
    """Where the engine gets drivers (appliance.services.hardware.Hardware in production)."""

    def bmc(self, blade: str) -> tuple[BmcDriver, Bmc]: ...
    def prefetch(self, blades: list[str]) -> None: ...   # blocking: fills bmc()'s cache in bulk
    def switch(self, name: str) -> tuple[SwitchDriver, SwitchRef]: ...
    def storage(self) -> StorageDriver | None: ...
    def notifier(self) -> Notifier | None: ...


@dataclass(frozen=True, slots=True)
class EngineSettings:
    parking_vlan: int = 4094
    power_timeout: float = 90.0      # sushy-tools' fake driver takes up to 11 s; real BMCs more
    power_resend_after: float = 15.0  # a power request not seen to take effect by then is sent again
    poll_interval: float = 0.25
    lease_ttl: float = 30.0
    max_jobs: int = 256              # jobs driven at once by one engine
    # Woken by a submit, the dispatcher waits this long before it looks: a burst of submits (a
    # hundred deploy requests, one writer thread apart) is claimed in a few writes, not one each.
    claim_gather: float = 0.03
    retry_backoff: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    boot_timeout: float = 600.0       # power-on to boot signal; TCG VMs take ~10-25 s, real servers minutes
    boot_poll: float = 0.5
    images_dir: Path | None = None    # where profiles' seed images for LUNs live
    luns_dir: Path | None = None      # backing files of the boot LUNs the storage driver serves
    lun_size_mib: int = 64
    fence_timeout: float = 10.0      # power off read back as off, or ports read back as down
    spare_poll: float = 1.0          # a failover waiting in line looks for a spare this often
    # When failed profiles outnumber spares, one detected less than this ago waits before taking a
    # spare: failures that land together (seen a monitor pass or an event apart) are ranked by
    # priority, not by which was seen first. Spares enough: no wait.
    spare_settle: float = 2.0
    # Boot tokens are derived with this key; the boot service must hold the same one (its
    # state-dir file). None: a key of this process only (an engine and boot service sharing it).
    boot_key: BootKey | None = None
    # Firmware: the base URL BMCs fetch images from (boot HTTP), where baselines are, and how
    # long one component's update may take on the BMC.
    boot_url: str = ""
    baselines: tuple[Path, ...] = ()
    firmware_timeout: float = 1800.0
    firmware_poll: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineSettings:
        """The engine's settings from the appliance configuration."""
        return cls(parking_vlan=settings.network.parking_vlan, boot_timeout=settings.engine.boot_timeout,
                   images_dir=settings.images_dir, luns_dir=settings.luns_dir,
                   lun_size_mib=settings.storage.default_size_mib,
                   boot_key=BootKey.load(settings.state_dir / KEY_FILE),
                   boot_url=settings.boot.advertise_url or _listen_url(settings.boot.listen),
                   baselines=(settings.state_dir / "firmware" / "baselines", asset_dir("firmware") / "baselines"))


def _listen_url(listen: str) -> str:
    """The boot HTTP URL from its listen address, when that is a concrete one (else advertise_url is needed)."""
    host, _, port = listen.rpartition(":")
    return "" if host in ("", "0.0.0.0", "::", "[::]") else f"http://{host}:{port}"


@dataclass(slots=True)
class StepContext:
    job_id: str
    kind: str
    params: Mapping[str, Any]
    data: dict[str, Any]
    store: Store
    hw: HardwarePort
    settings: EngineSettings
    db: DbRunner       # the writer thread: every write goes here (SQLite has one writer)
    read: DbRunner     # reader threads: read-only work does not queue behind writes
    progress: Callable[[str], Awaitable[None]]
    checkpoint: Callable[[dict[str, Any]], Awaitable[None]]
    events: list[tuple[str, str]] = field(default_factory=list)
    # Change records of hardware this step changed (appliance.store.changes.hardware), written
    # with the step's completion.
    changes: list[dict[str, Any]] = field(default_factory=list)
    # Kept by the engine for the job's run in this process (lost on restart): caches only.
    memo: dict[str, Any] = field(default_factory=dict)

    def note(self, message: str) -> None:
        self.events.append(("info", message))


StepFn = Callable[[StepContext], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    run: StepFn
    undo: StepFn | None = None
    timeout: float = 120.0
    attempts: int = 5


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    steps: tuple[Step, ...]
    # On a fatal error: undo the completed steps in reverse (stamp), or stop as failed for an
    # operator (release: its steps only move forward, and running it again converges).
    rollback: bool = True

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]
