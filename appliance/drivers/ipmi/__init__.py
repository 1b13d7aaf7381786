"""IPMI BMC driver on pyghmi (entry point ``anvil.drivers.bmc: ipmi``)."""

from __future__ import annotations

from typing import Any

from appliance.drivers.ipmi.driver import IpmiDriver


def create(**options: Any) -> IpmiDriver:
    """Factory for the registry: options are IpmiDriver's keyword arguments."""
    return IpmiDriver(**options)


__all__ = ["IpmiDriver", "create"]
