"""Hardware access. The engine reaches BMCs, switches and storage only through
the Protocols in :mod:`appliance.drivers.protocols`; implementations live in
sub-packages and are registered through entry points (see registry.py)."""
