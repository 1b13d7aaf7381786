"""SNMP switch driver: Q-BRIDGE-MIB VLANs and IF-MIB admin status over pysnmp 7 (asyncio)."""

from appliance.drivers.snmp.driver import SnmpSwitchDriver, create, parse_address

__all__ = ["SnmpSwitchDriver", "create", "parse_address"]
