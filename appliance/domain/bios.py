"""A profile's BIOS settings against what a blade's BIOS knows — pure logic, no I/O.

Profiles carry BIOS attributes as text (``spec.bios``: YAML and XML agree on strings); a
BIOS registry types them. The reserved key ``enforce`` is not an attribute: ``enforce:
false`` lets a profile be stamped where BIOS settings cannot be set (an IPMI blade),
which otherwise fails early.
"""

from __future__ import annotations

from collections.abc import Mapping

from appliance.drivers.protocols import BiosAttribute, BiosRegistry, BiosValue

ENFORCE_KEY = "enforce"
_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


def wanted(bios: Mapping[str, str]) -> dict[str, str]:
    """The attributes a profile asks for (without ``enforce``)."""
    return {k: v for k, v in bios.items() if k != ENFORCE_KEY}


def enforced(bios: Mapping[str, str]) -> bool:
    """False only when the profile says ``enforce: false``."""
    return str(bios.get(ENFORCE_KEY, "true")).strip().lower() not in _FALSE


def coerce(attr: BiosAttribute, text: str) -> BiosValue:
    """The profile's text as the registry's type; ValueError saying what is wrong."""
    if attr.kind == "Integer":
        try:
            number = int(text.strip())
        except ValueError:
            raise ValueError(f"{attr.name}: {text!r} is not an integer") from None
        if (attr.lower is not None and number < attr.lower) or (attr.upper is not None and number > attr.upper):
            raise ValueError(f"{attr.name}: {number} is outside {attr.lower}..{attr.upper}")
        return number
    if attr.kind == "Boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{attr.name}: {text!r} is not a boolean")
    if attr.kind == "Enumeration" and attr.values and text not in attr.values:
        raise ValueError(f"{attr.name}: {text!r} is not one of {', '.join(attr.values)}")
    return text


def plan(want: Mapping[str, str], registry: BiosRegistry) -> tuple[dict[str, BiosValue], list[str]]:
    """The typed attributes to write, and every problem (an attribute the BIOS does not know,
    a read-only one, a value it does not take), each naming the attribute."""
    typed: dict[str, BiosValue] = {}
    problems: list[str] = []
    for name, text in want.items():
        attr = registry.attributes.get(name)
        if attr is None and registry.any_name:
            typed[name] = str(text)
            continue
        if attr is None:
            problems.append(f"BIOS attribute {name!r} is unknown to this blade (per {registry.source})")
            continue
        if attr.read_only:
            problems.append(f"BIOS attribute {name!r} is read-only on this blade")
            continue
        try:
            typed[name] = coerce(attr, str(text))
        except ValueError as exc:
            problems.append(f"BIOS attribute {exc}")
    return typed, problems


def same(a: BiosValue | None, b: BiosValue | None) -> bool:
    """Equal as a BIOS means it: ``True`` and ``"true"``, ``3`` and ``"3"`` are the same."""
    return _text(a) == _text(b)


def _text(v: BiosValue | None) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    # A Boolean attribute read back as JSON true equals the profile's text "true".
    return v.strip().lower() if isinstance(v, str) and v.strip().lower() in ("true", "false") else str(v)


def differences(want: Mapping[str, BiosValue], current: Mapping[str, BiosValue]) -> dict[str, tuple[str, str]]:
    """Attribute → (wanted, found) for every wanted attribute the BIOS does not hold."""
    return {k: (str(v), "(missing)" if k not in current else str(current[k]))
            for k, v in want.items() if not same(v, current.get(k))}
