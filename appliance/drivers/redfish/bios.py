"""BIOS attributes and firmware inventory in Redfish documents — pure mapping, no I/O.

``Bios`` holds the attributes in effect; its ``@Redfish.Settings.SettingsObject`` (the
"SD" resource) takes a PATCH of ``Attributes`` that the BIOS applies at the next boot. An
``AttributeRegistry`` (DSP0270, found through ``/redfish/v1/Registries`` by the id the Bios
names) says which attributes exist and what they take; a service that publishes none
(DMTF's public-rackmount1 mockup, many BMCs) still lists every attribute it has in ``Bios``,
so then those names are the known ones and their current values' JSON types their types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from appliance.drivers.protocols import BiosAttribute, BiosRegistry, BiosValue, FirmwareItem

CURRENT = "current attributes"


def attributes(doc: Mapping[str, Any]) -> dict[str, BiosValue]:
    attrs = doc.get("Attributes")
    if not isinstance(attrs, dict):
        return {}
    return {str(k): v for k, v in attrs.items() if isinstance(v, str | int | bool)}


def settings_path(bios: Mapping[str, Any]) -> str | None:
    settings = bios.get("@Redfish.Settings")
    if not isinstance(settings, dict):
        return None
    obj = settings.get("SettingsObject")
    if isinstance(obj, dict) and obj.get("@odata.id"):
        return str(obj["@odata.id"])
    return None


def pending(current: Mapping[str, BiosValue], staged: Mapping[str, BiosValue]) -> dict[str, BiosValue]:
    """What the settings resource would change: a service may list every attribute there, or only
    the staged ones; either way what equals the current value is not pending."""
    return {k: v for k, v in staged.items() if current.get(k) != v}


def registry_from_doc(doc: Mapping[str, Any]) -> BiosRegistry:
    entries = doc.get("RegistryEntries") or {}
    out: dict[str, BiosAttribute] = {}
    for entry in entries.get("Attributes") or [] if isinstance(entries, dict) else []:
        if not isinstance(entry, dict) or not entry.get("AttributeName"):
            continue
        values = tuple(str(v["ValueName"]) for v in entry.get("Value") or []
                       if isinstance(v, dict) and v.get("ValueName") is not None)
        lower, upper = entry.get("LowerBound"), entry.get("UpperBound")
        out[str(entry["AttributeName"])] = BiosAttribute(
            name=str(entry["AttributeName"]), kind=str(entry.get("Type") or "String"), values=values,
            read_only=bool(entry.get("ReadOnly")), lower=lower if isinstance(lower, int) else None,
            upper=upper if isinstance(upper, int) else None)
    return BiosRegistry(out, str(doc.get("Id") or "AttributeRegistry"))


def registry_from_current(current: Mapping[str, BiosValue]) -> BiosRegistry:
    def kind(v: BiosValue) -> str:
        return "Boolean" if isinstance(v, bool) else "Integer" if isinstance(v, int) else "String"
    return BiosRegistry({k: BiosAttribute(k, kind(v)) for k, v in current.items()}, CURRENT)


def registry_location(files: Iterable[Mapping[str, Any]], registry_id: str) -> str | None:
    """The URI of the registry ``registry_id`` among MessageRegistryFile documents (matched on
    ``Registry`` or ``Id``, with or without the version), or None."""
    base = registry_id.split(".")[0]
    for f in files:
        names = {str(f.get("Registry") or ""), str(f.get("Id") or "")}
        if registry_id in names or base in {n.split(".")[0] for n in names if n}:
            for loc in f.get("Location") or []:
                if isinstance(loc, dict) and loc.get("Uri"):
                    return str(loc["Uri"])
    return None


# ---- firmware inventory ---------------------------------------------------------------------

def _systems_named(doc: Mapping[str, Any]) -> set[str]:
    """The systems a SoftwareInventory's ``RelatedItem`` names (a system, or a part of one)."""
    out = set()
    for item in doc.get("RelatedItem") or []:
        path = str(item.get("@odata.id") or "") if isinstance(item, dict) else ""
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[:3] == ["redfish", "v1", "Systems"]:
            out.add(parts[3])
    return out


def firmware_items(docs: Iterable[tuple[str, Mapping[str, Any]]], system_path: str) -> tuple[FirmwareItem, ...]:
    """The blade's firmware from FirmwareInventory members. Where one service speaks for many systems
    (a chassis manager, the lab), members name their system in ``RelatedItem``: when any member names
    another system, only those naming this one are the blade's; otherwise the whole inventory is (a
    rack server's BMC relates its BIOS to the System, its own firmware to the Manager: all the blade's)."""
    docs = list(docs)
    system_id = system_path.rstrip("/").rsplit("/", 1)[-1]
    shared = any(_systems_named(d) - {system_id} for _, d in docs)
    chosen = [(p, d) for p, d in docs if system_id in _systems_named(d)] if shared else docs
    out = []
    for path, doc in chosen:
        version = doc.get("Version")
        if version is None:
            continue
        out.append(FirmwareItem(component=component_of(doc, system_path), version=str(version), uri=path,
                                name=str(doc.get("Name") or ""), updateable=bool(doc.get("Updateable"))))
    return tuple(out)


def component_of(doc: Mapping[str, Any], system_path: str) -> str:
    """How a baseline names this item: its ``Id``, less a ``<system id>-`` prefix a shared inventory
    puts before it to keep Ids unique (the lab's ``<uuid>-BIOS``)."""
    ident = str(doc.get("Id") or "")
    system_id = system_path.rstrip("/").rsplit("/", 1)[-1]
    prefix = f"{system_id}-"
    return ident[len(prefix):] if system_id and ident.startswith(prefix) else ident
