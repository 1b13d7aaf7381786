"""The emulated rack: BMC and switch emulators run as separate processes on
127.0.0.1, started and stopped by PID (see :mod:`appliance.lab.procs`)."""
