"""Open vSwitch switch driver: Port VLANs through ovsdbapp, port up/down through ovs-ofctl."""

from appliance.drivers.ovs.driver import OvsSwitchDriver, create, parse_address

__all__ = ["OvsSwitchDriver", "create", "parse_address"]
