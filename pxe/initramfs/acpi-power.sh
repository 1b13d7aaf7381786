#!/bin/sh
# busybox acpid runs this on the ACPI power button (IPMI soft off = QMP system_powerdown),
# so the lab image shuts down like an OS would instead of ignoring the request.
echo "anvil-agent: ACPI power button: powering off" > /dev/console
sync
poweroff -f
