"""First boot of the appliance image: the data disk, then the answers (management address,
provisioning interface, admin password, TLS certificate, NTP) from a seed file or a text dialogue
on the console, then the configuration they make.

``answers`` (what may be asked and how it is checked), ``seed`` (the unattended answers),
``dialogue`` (the same questions on a terminal), ``disk`` (which disk holds the state),
``render`` (files made from answers) are pure or take their streams and commands as arguments;
``setup`` runs them on the appliance as root (``anvil-firstboot``, from anvil-setup.service).
"""
