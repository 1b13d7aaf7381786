"""Drivers: Anvil's BMC drivers under Ironic's hardware-type names, and ``driver_info`` → a BMC.

``fake`` is Ironic's ``fake-hardware``; ``ipmi`` and ``redfish`` keep their names; any other
installed BMC driver (a vendor's, libvirt) is listed under its own name. ``driver_info`` is read
as Ironic's drivers define it:

- ``ipmi``: ``ipmi_address``, ``ipmi_port`` (623), ``ipmi_username``, ``ipmi_password``;
- ``redfish``: ``redfish_address`` (``https://host[:port]``), ``redfish_system_id``
  (``/redfish/v1/Systems/ID``), ``redfish_username``, ``redfish_password``, ``redfish_verify_ca``;
- ``fake-hardware``: nothing (the blade is ``fake://NAME``);
- any driver: ``anvil_bmc`` (Anvil's BMC URL), ``anvil_username``, ``anvil_password``.

Other keys (``deploy_kernel``, ``deploy_ramdisk``…) are kept and shown back, except any whose
name says it is a secret. A BMC's address and credentials are set at enrolment only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from appliance.api.ironic.errors import IronicError
from appliance.api.ironic.versions import links
from appliance.drivers import registry

TO_IRONIC = {"fake": "fake-hardware"}
FROM_IRONIC = {v: k for k, v in TO_IRONIC.items()}
BMC_KEYS = frozenset({"ipmi_address", "ipmi_port", "ipmi_username", "ipmi_password", "redfish_address",
                      "redfish_system_id", "redfish_username", "redfish_password", "redfish_verify_ca",
                      "anvil_bmc", "anvil_username", "anvil_password"})
_SECRET_WORDS = ("password", "secret", "token", "key")


def ironic_name(driver: str) -> str:
    return TO_IRONIC.get(driver, driver)


def anvil_name(driver: str) -> str:
    return FROM_IRONIC.get(driver, driver)


def without_secrets(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in BMC_KEYS and not any(w in k.lower() for w in _SECRET_WORDS)}


@dataclass(frozen=True, slots=True)
class BmcSpec:
    driver: str
    address: str
    username: str
    password: str
    verify_tls: bool = True
    leftover: dict[str, Any] = field(default_factory=dict)


def _need(info: dict[str, Any], key: str) -> str:
    value = info.get(key)
    if value in (None, ""):
        raise IronicError(400, f"driver_info.{key} is required: Anvil enrols a blade with its BMC")
    return str(value)


def _verify(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value) if value is not None else True


def bmc_from(driver: str, info: dict[str, Any], name: str) -> BmcSpec:
    """The BMC ``driver_info`` describes for a node of ``driver`` (an Ironic name); 400 naming the
    key that is missing, 400 for a driver not installed."""
    anvil = anvil_name(driver)
    if anvil not in registry.available():
        raise IronicError(400, f"driver {driver!r} is not enabled (enabled: "
                               f"{', '.join(ironic_name(d) for d in registry.available())})")
    rest = without_secrets(info)
    if info.get("anvil_bmc"):
        return BmcSpec(anvil, _need(info, "anvil_bmc"), _need(info, "anvil_username"), _need(info, "anvil_password"),
                       leftover=rest)
    if anvil == "fake":
        return BmcSpec(anvil, f"fake://{name}", "fake", "fake", leftover=rest)
    if anvil == "ipmi":
        host = _need(info, "ipmi_address")
        port = info.get("ipmi_port")
        where = f"[{host}]" if ":" in host else host
        return BmcSpec(anvil, f"ipmi://{where}" + (f":{int(port)}" if port not in (None, "") else ""),
                       _need(info, "ipmi_username"), _need(info, "ipmi_password"), leftover=rest)
    if anvil == "redfish":
        address = urlsplit(_need(info, "redfish_address") if "://" in str(info.get("redfish_address", ""))
                           else f"https://{_need(info, 'redfish_address')}")
        system = _need(info, "redfish_system_id")
        return BmcSpec(anvil, f"redfish+{address.scheme}://{address.netloc}{system}",
                       _need(info, "redfish_username"), _need(info, "redfish_password"),
                       _verify(info.get("redfish_verify_ca")), leftover=rest)
    raise IronicError(400, f"driver {driver!r}: give driver_info.anvil_bmc, anvil_username and anvil_password")


def _driver(request: web.Request, name: str) -> dict[str, Any]:
    return {"name": name, "hosts": ["anvil"], "type": "dynamic", "links": links(request, f"drivers/{name}"),
            "properties": links(request, f"drivers/{name}/properties")}


async def list_drivers(request: web.Request) -> web.Response:
    names = await asyncio.to_thread(registry.available)
    return web.json_response({"drivers": [_driver(request, ironic_name(n)) for n in names]})


async def get_driver(request: web.Request) -> web.Response:
    name = request.match_info["driver"]
    if anvil_name(name) not in await asyncio.to_thread(registry.available):
        raise IronicError(404, f"Driver {name} could not be found.")
    return web.json_response(_driver(request, name))
