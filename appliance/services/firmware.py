"""Firmware baselines on the appliance: where they are found, their images checked, and each
blade's compliance read from its BMC (Redfish FirmwareInventory through the FirmwareDriver).

Baselines are ``<state dir>/firmware/baselines/<name>.yaml`` (the site's own, looked at first)
and the shipped ``firmware/baselines/``. An image named by a baseline is a path under the
appliance's ``images/``, the folder boot HTTP serves at ``/boot/images/``; its SHA-256 is
checked before a BMC is told to fetch it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy import select

from appliance.assets import asset_dir
from appliance.domain import firmware as fw
from appliance.domain.states import ACTIVE_JOB_STATES
from appliance.domain.suggest import close_names, did_you_mean
from appliance.drivers.protocols import Bmc, BmcDriver, FirmwareDriver
from appliance.errors import AnvilError, Conflict, Issue, NotFound, ValidationError
from appliance.services import scope as lookup
from appliance.services.inventory import COMPLIANCE_FACT
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BladeRow, JobRow


def baseline_dirs(state_dir: Path) -> tuple[Path, ...]:
    return (state_dir / "firmware" / "baselines", asset_dir("firmware") / "baselines")


def baseline_names(dirs: Sequence[Path]) -> list[str]:
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def load_baseline(dirs: Sequence[Path], name: str) -> fw.Baseline:
    """The baseline ``name`` (the first folder holding it wins); NotFound, or ValidationError naming
    the file and the place of every problem."""
    if not fw.NAME.match(name):
        raise ValidationError([Issue("baseline", f"{name!r} is not a lowercase baseline name")])
    for d in dirs:
        path = d / f"{name}.yaml"
        if path.is_file():
            baseline = fw.parse(path.read_text(encoding="utf-8"), str(path))
            if baseline.name != name:
                raise ValidationError([Issue(f"{path}: name", f"says {baseline.name!r}, the file is {name}.yaml")])
            return baseline
    raise NotFound("firmware baseline", name, hint=did_you_mean(close_names(name, baseline_names(dirs))))


def baseline_name(store: Store, baseline: str | None, pool: str | None) -> str:
    """The baseline asked for, else the one blade pool ``pool`` names; ValidationError when neither says."""
    from appliance.services.blade_pools import pool_firmware

    if baseline:
        return baseline
    if not pool:
        raise ValidationError([Issue("baseline", "give a baseline (or a blade pool that names one)")])
    with store.read() as s:
        named = pool_firmware(s, pool)
    if named is None:
        raise ValidationError([Issue("baseline", f"blade pool {pool} names no firmware baseline: give one")])
    return named.baseline


class ImageProblem(AnvilError):
    """A baseline's image is missing or does not match its checksum: nothing is offered to a BMC."""


def check_image(images_dir: Path, comp: fw.Component) -> Path:
    """The image file of ``comp``, once its SHA-256 matches the baseline's (blocking: reads it)."""
    assert comp.image and comp.sha256
    path = images_dir / comp.image
    try:
        root = images_dir.resolve(strict=True)
        real = path.resolve(strict=True)
    except OSError:
        raise ImageProblem(f"{comp.name} image {comp.image} is not in {images_dir}") from None
    if not real.is_relative_to(root) or not real.is_file():
        raise ImageProblem(f"{comp.name} image {comp.image} is not a file under {images_dir}")
    digest = hashlib.sha256()
    with real.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != comp.sha256:
        raise ImageProblem(f"{comp.name} image {comp.image} has SHA-256 {digest.hexdigest()}, the baseline "
                           f"says {comp.sha256}: not offered to any BMC")
    return real


def image_url(boot_url: str, image: str) -> str:
    """Where a BMC fetches ``image``: the boot role's image route."""
    return f"{boot_url.rstrip('/')}/boot/images/{quote(image, safe='/')}"


def firmware_driver(driver: BmcDriver) -> FirmwareDriver | None:
    return driver if isinstance(driver, FirmwareDriver) else None


@dataclass(frozen=True, slots=True)
class BladeCompliance:
    blade: str
    baseline: str
    findings: tuple[fw.Finding, ...] = ()
    error: str = ""      # the BMC could not say (no firmware inventory, unreachable)

    @property
    def compliant(self) -> bool:
        return not self.error and fw.compliant(self.findings)

    @property
    def summary(self) -> str:
        return f"unknown: {self.error}" if self.error else fw.summary(self.findings)

    def public(self) -> dict[str, Any]:
        return {"blade": self.blade, "baseline": self.baseline, "compliant": self.compliant,
                "summary": self.summary, "error": self.error or None,
                "components": fw.findings_dict(self.findings)}


class BmcSource(Protocol):
    def bmc(self, blade: str) -> tuple[BmcDriver, Bmc]: ...


async def read_compliance(hw: BmcSource, blade: str, baseline: fw.Baseline) -> BladeCompliance:
    driver, bmc = hw.bmc(blade)
    fwd = firmware_driver(driver)
    if fwd is None:
        return BladeCompliance(blade, baseline.name, error=f"its BMC ({driver.name}) reports no firmware inventory")
    try:
        items = await fwd.firmware(bmc)
    except AnvilError as exc:
        return BladeCompliance(blade, baseline.name, error=str(exc))
    return BladeCompliance(blade, baseline.name, tuple(fw.compliance(baseline, items)))


async def compliance_of(hw: BmcSource, blades: Sequence[str], baseline: fw.Baseline,
                        limit: int = 16) -> list[BladeCompliance]:
    """Each blade's compliance, ``limit`` BMCs asked at once, in ``blades`` order."""
    gate = asyncio.Semaphore(limit)

    async def one(blade: str) -> BladeCompliance:
        async with gate:
            return await read_compliance(hw, blade, baseline)
    return list(await asyncio.gather(*(one(b) for b in blades)))


def record(store: Store, results: Sequence[BladeCompliance]) -> None:
    """Keep each blade's last compliance read in its facts (what the console's blade list shows)."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_name = {r.blade: r for r in results}
    with store.write() as s:
        for row in s.scalars(select(BladeRow).where(BladeRow.name.in_(list(by_name)))):
            r = by_name[row.name]
            row.facts = {**(row.facts or {}), COMPLIANCE_FACT: {
                "baseline": r.baseline, "compliant": r.compliant, "summary": r.summary, "at": at}}


@dataclass(frozen=True, slots=True)
class Targets:
    blades: tuple[str, ...]
    pool: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def targets(store: Store, *, blade: str | None = None, pool: str | None = None,
            scope: Scope | None = None) -> Targets:
    """The blades named (``--blade``, repeatable as a comma list) or the members of ``pool``, by name."""
    if bool(blade) == bool(pool):
        raise Conflict("give --blade or --pool (one of them)")
    scope = scope or Scope.appliance()
    with store.read() as s:
        if blade:
            names = [b.strip() for b in blade.split(",") if b.strip()]
            for b in names:
                lookup.blade_row(s, scope, b)
            return Targets(tuple(dict.fromkeys(names)))
        assert pool is not None
        members = lookup.pool_members(s, scope, pool)
        if members is None:
            members = set(s.scalars(select(BladeRow.name)))
        return Targets(tuple(sorted(members)), pool)


def submit_update(store: Store, baseline: fw.Baseline, target: Targets, *, wave: int = 1, budget: int = 0,
                  created_by: str | None = None) -> Any:
    """Submit a firmware-update job of ``target``'s blades to ``baseline`` (a JobInfo). Conflict
    when one of the blades is in another firmware update still running."""
    from appliance.engine.steps.firmware import FIRMWARE_UPDATE
    from appliance.services.jobs import _info
    from appliance.store.repos import jobs as repo

    if not 1 <= wave <= 64:
        raise ValidationError([Issue("wave", f"{wave} is not 1..64 (blades updated at once)")])
    if not 0 <= budget <= 10_000:
        raise ValidationError([Issue("failureBudget", f"{budget} is not 0..10000")])
    if not target.blades:
        raise ValidationError([Issue("pool", f"blade pool {target.pool} has no blades")])
    with store.write() as s:
        busy = s.scalars(select(JobRow).where(JobRow.kind == FIRMWARE_UPDATE.name,
                                              JobRow.state.in_([j.value for j in ACTIVE_JOB_STATES])))
        for job in busy:
            both = sorted(set(job.params.get("blades") or ()) & set(target.blades))
            if both:
                raise Conflict(f"blade(s) {', '.join(both)} are in firmware update job {job.id} still running")
        subject = f"firmware {baseline.name} on " + (f"pool {target.pool}" if target.pool else ", ".join(target.blades))
        row = repo.create(s, kind=FIRMWARE_UPDATE.name, subject=subject[:255], profile_id=None, tenant=None,
                          params={"baseline": fw.as_dict(baseline), "blades": list(target.blades), "wave": wave,
                                  "budget": budget, "pool": target.pool},
                          step_names=FIRMWARE_UPDATE.step_names, created_by=created_by)
        return _info(s, row)
