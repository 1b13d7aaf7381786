"""A minimal profile document for tests that need a few profiles in a store (one NIC, its MAC from ``mac``)."""

from __future__ import annotations

_ONE_NIC = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  identity:
    nics:
      - {{name: eth0, mac: "02:a0:00:00:00:{mac:02x}"}}
"""


def one_nic_profile(name: str, tenant: str, mac: int) -> str:
    """The YAML of profile ``tenant/name`` with one NIC ``eth0`` at 02:a0:00:00:00:``mac``."""
    return _ONE_NIC.format(name=name, tenant=tenant, mac=mac)
