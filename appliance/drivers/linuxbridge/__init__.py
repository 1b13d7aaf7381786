"""Linux-bridge switch driver for the VM lab: port shut = tap link down; no VLANs."""

from appliance.drivers.linuxbridge.driver import LinuxBridgeDriver, create, parse_address

__all__ = ["LinuxBridgeDriver", "create", "parse_address"]
