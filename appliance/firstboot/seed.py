"""The seed file: the first-boot answers for an unattended install, cloud-init style.

A YAML file on a small volume labelled ``ANVIL-SEED`` (``anvil-seed.yaml`` at its top, or the path
that ``anvil.seed=`` on the kernel command line names on it). Unknown keys are errors, so a typo
never silently falls back to a default. Certificate files are read relative to the seed's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from appliance.firstboot.answers import AnswerError, Answers, Management, Provisioning, Tls, check

SEED_LABEL = "ANVIL-SEED"
DEFAULT_NAME = "anvil-seed.yaml"
_TOP = {"admin_password", "hostname", "management", "provisioning", "tls", "ntp", "data_disk"}


@dataclass(frozen=True)
class Seed:
    answers: Answers
    format_data_disk: bool | str        # True: format the one empty disk found; a path: that device only


def seed_path_from_cmdline(cmdline: str) -> str | None:
    """The file ``anvil.seed=`` names on the seed volume; ``DEFAULT_NAME`` when absent, None for ``none``."""
    value = DEFAULT_NAME
    for word in cmdline.split():
        if word.startswith("anvil.seed="):
            value = word.removeprefix("anvil.seed=")
    if value in ("", "none", "off"):
        return None
    if ".." in Path(value).parts:
        raise AnswerError("anvil.seed", f"{value!r} leaves the seed volume")
    return value.lstrip("/")


def _section(doc: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise AnswerError(key, "must be a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise AnswerError(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(allowed))})")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise AnswerError(where, "must be a string")
    return str(value)


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise AnswerError(where, "must be a list of strings")
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(value))


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise AnswerError(where, "must be true or false")
    return value


def parse(text: str, folder: Path) -> Seed:
    """The seed's answers, checked; :class:`AnswerError` names the first bad key."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "seed"
        raise AnswerError(where, f"not YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(doc, dict):
        raise AnswerError("seed", "must be a YAML mapping")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise AnswerError(unknown[0], f"unknown key (known: {', '.join(sorted(_TOP))})")
    if "admin_password" not in doc:
        raise AnswerError("admin_password", "required")
    m = _section(doc, "management", {"interface", "dhcp", "address", "gateway", "dns"})
    p = _section(doc, "provisioning", {"interface", "address", "dhcp_range"})
    t = _section(doc, "tls", {"generate", "cert", "key"})
    d = _section(doc, "data_disk", {"format"})
    static = "address" in m
    management = Management(
        interface=_str(m.get("interface", "auto"), "management.interface"),
        dhcp=_bool(m.get("dhcp", not static), "management.dhcp"),
        address=_str(m.get("address", ""), "management.address"),
        gateway=_str(m.get("gateway", ""), "management.gateway"),
        dns=_strs(m.get("dns"), "management.dns"),
    )
    provisioning = Provisioning(
        interface=_str(p.get("interface", ""), "provisioning.interface"),
        address=_str(p.get("address", ""), "provisioning.address"),
        dhcp_range=_str(p.get("dhcp_range", ""), "provisioning.dhcp_range"),
    )
    imported = "cert" in t or "key" in t
    tls = Tls(
        generate=_bool(t.get("generate", not imported), "tls.generate"),
        cert=folder / _str(t["cert"], "tls.cert") if "cert" in t else None,
        key=folder / _str(t["key"], "tls.key") if "key" in t else None,
    )
    fmt = d.get("format", False)
    if not isinstance(fmt, bool) and not (isinstance(fmt, str) and fmt.startswith("/dev/")):
        raise AnswerError("data_disk.format", "must be true, false or a device path like /dev/vdb")
    answers = Answers(
        admin_password=_str(doc["admin_password"], "admin_password"),
        hostname=_str(doc.get("hostname", "anvil"), "hostname"),
        management=management,
        provisioning=provisioning,
        tls=tls,
        ntp=_strs(doc.get("ntp"), "ntp"),
    )
    return Seed(check(answers), fmt)
