"""The ``anvil`` command line: one module per noun, thin over appliance.services."""
