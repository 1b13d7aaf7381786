"""iSCSI StorageDriver for the Linux userspace target (tgtd), driven through ``tgtadm``."""

from appliance.drivers.tgt.driver import TgtDriver, TgtSettings, check_name, create, serial_for

__all__ = ["TgtDriver", "TgtSettings", "check_name", "create", "serial_for"]
