"""Firmware baselines and a blade's compliance with one — pure logic, no I/O but reading text.

A baseline (``firmware/baselines/<name>.yaml``) names, per component, the version a blade
must run and, for updating, the image (a path under the appliance's ``images/``, served by
its boot HTTP) and its SHA-256::

    name: rack-2026q4
    components:
      BIOS: {version: "2.19.1", image: firmware/bios-2.19.1.fw, sha256: "…64 hex…"}
      BMC: "7.10.30.00"            # version only: checked, never updated by Anvil

Components are matched to a blade's FirmwareInventory by the driver's ``component`` name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from appliance.drivers.protocols import FirmwareItem
from appliance.errors import Issue, ValidationError

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What a stamp does with a blade that does not comply: record it, refuse the blade, or update it first.
POLICIES = ("report", "refuse", "update-first")


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    version: str
    image: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    name: str
    components: tuple[Component, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    component: str
    wanted: str
    found: str | None      # None: the blade reports no such component

    @property
    def ok(self) -> bool:
        return self.found == self.wanted


def parse(text: str, where: str) -> Baseline:
    """A baseline document; ValidationError naming every problem with its place in ``where``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError([Issue(where, f"not YAML: {exc}")]) from None
    if not isinstance(doc, dict):
        raise ValidationError([Issue(where, "a baseline is a mapping with name and components")])
    issues: list[Issue] = []
    name = doc.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        issues.append(Issue(f"{where}: name", f"{name!r} is not a lowercase name"))
    for key in set(doc) - {"name", "components"}:
        issues.append(Issue(f"{where}: {key}", "unknown key (name, components)"))
    raw = doc.get("components")
    if not isinstance(raw, dict) or not raw:
        issues.append(Issue(f"{where}: components", "must map each component to a version or "
                                                    "{version, image, sha256}"))
        raw = {}
    components = []
    for comp, spec in raw.items():
        at = f"{where}: components.{comp}"
        if isinstance(spec, str | int | float):
            components.append(Component(str(comp), str(spec)))
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("version"), str | int | float):
            issues.append(Issue(at, "needs a version"))
            continue
        extra = set(spec) - {"version", "image", "sha256"}
        if extra:
            issues.append(Issue(at, f"unknown keys {sorted(extra)} (version, image, sha256)"))
        image, digest = spec.get("image"), spec.get("sha256")
        if (image is None) != (digest is None):
            issues.append(Issue(at, "image and sha256 go together (the image is checked before it is served)"))
        if image is not None and (not isinstance(image, str) or image.startswith("/") or ".." in image.split("/")):
            issues.append(Issue(f"{at}.image", f"{image!r} must be a path under images/"))
        if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest.lower())):
            issues.append(Issue(f"{at}.sha256", "must be 64 hex digits"))
        components.append(Component(str(comp), str(spec["version"]), image if isinstance(image, str) else None,
                                    digest.lower() if isinstance(digest, str) else None))
    if issues:
        raise ValidationError(issues)
    assert isinstance(name, str)
    return Baseline(name, tuple(components))


def compliance(baseline: Baseline, items: Iterable[FirmwareItem]) -> list[Finding]:
    """One finding per baseline component: the version the blade runs against the wanted one."""
    found: Mapping[str, str] = {i.component.lower(): i.version for i in items}
    return [Finding(c.name, c.version, found.get(c.name.lower())) for c in baseline.components]


def compliant(findings: Iterable[Finding]) -> bool:
    return all(f.ok for f in findings)


def summary(findings: Iterable[Finding]) -> str:
    """``compliant`` or the components that differ, for a table cell."""
    wrong = [f"{f.component} {f.found or 'missing'} (want {f.wanted})" for f in findings if not f.ok]
    return "compliant" if not wrong else "; ".join(wrong)


def as_dict(baseline: Baseline) -> dict[str, Any]:
    return {"name": baseline.name, "components": {c.name: {"version": c.version, "image": c.image,
                                                           "sha256": c.sha256} for c in baseline.components}}


def from_dict(doc: Mapping[str, Any]) -> Baseline:
    """The inverse of :func:`as_dict` (a baseline carried in a job's parameters)."""
    comps = doc.get("components") or {}
    return Baseline(str(doc["name"]), tuple(
        Component(str(name), str(c["version"]), c.get("image"), c.get("sha256")) for name, c in comps.items()))


def findings_dict(findings: Iterable[Finding]) -> dict[str, dict[str, Any]]:
    """Findings as JSON: component -> {wanted, found, ok}."""
    return {f.component: {"wanted": f.wanted, "found": f.found, "ok": f.ok} for f in findings}


def updatable(baseline: Baseline, findings: Iterable[Finding]) -> list[Component]:
    """The baseline's components that differ on the blade and that Anvil can flash (an image)."""
    wrong = {f.component for f in findings if not f.ok}
    return [c for c in baseline.components if c.name in wrong and c.image]
