"""Redfish BMC driver (entry point ``anvil.drivers.bmc: redfish``)."""

from __future__ import annotations

from typing import Any

from appliance.drivers.redfish.driver import RedfishDriver


def create(**options: Any) -> RedfishDriver:
    """Factory for the registry: options are RedfishDriver's keyword arguments."""
    return RedfishDriver(**options)


__all__ = ["RedfishDriver", "create"]
