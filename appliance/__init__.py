"""Anvil: bare-metal provisioning and stateless-server appliance."""

__version__ = "0.1.0"
