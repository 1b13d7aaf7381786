"""Files made from the answers (pure): the Anvil configuration, systemd-networkd units, timesyncd.

They are kept on the data disk and put in place again at every boot, since the image's /etc is
a throw-away overlay on a read-only squashfs."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from appliance.firstboot.answers import Answers

API_PORT = 443                 # DESIGN §7: the console's HTTPS port in the appliance image
TLS_DIR = Path("/var/lib/anvil/tls")
IMPORTED_CERT = TLS_DIR / "imported-cert.pem"
IMPORTED_KEY = TLS_DIR / "imported-key.pem"


def _toml_str(value: str) -> str:
    return json.dumps(value)     # a JSON string is a valid TOML basic string


def anvil_toml(a: Answers) -> str:
    lines = ['# Written by anvil-firstboot from the first-boot answers.', 'state_dir = "/var/lib/anvil"', "",
             "[api]", f"listen = {_toml_str(f'0.0.0.0:{API_PORT}')}", "tls = true"]
    if not a.tls.generate:
        lines += [f"tls_cert = {_toml_str(str(IMPORTED_CERT))}", f"tls_key = {_toml_str(str(IMPORTED_KEY))}"]
    p = a.provisioning
    if p.interface:
        own = ipaddress.ip_interface(p.address).ip
        lines += ["", "[boot]", f"listen = {_toml_str(f'{own}:8080')}", f"tftp_listen = {_toml_str(f'{own}:69')}",
                  f"interface = {_toml_str(p.interface)}"]
        if p.dhcp_range:
            lines += ['dhcp = "reservations"', f"dhcp_range = {_toml_str(p.dhcp_range)}"]
    return "\n".join(lines) + "\n"


def network_units(a: Answers) -> dict[str, str]:
    """systemd-networkd ``.network`` files by name. Provisioning sorts first: networkd gives an
    interface the first file that matches, so "auto" management never takes the provisioning NIC."""
    units: dict[str, str] = {}
    p = a.provisioning
    if p.interface:
        units["10-anvil-provisioning.network"] = (
            f"[Match]\nName={p.interface}\n\n[Network]\nAddress={p.address}\nLinkLocalAddressing=no\n"
            "IPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n")
    m = a.management
    match = "en* eth*" if m.interface == "auto" else m.interface
    body = f"[Match]\nName={match}\n\n[Network]\n"
    if m.dhcp:
        body += "DHCP=yes\n"
    else:
        body += f"Address={m.address}\n"
        body += f"Gateway={m.gateway}\n" if m.gateway else ""
        body += "".join(f"DNS={d}\n" for d in m.dns)
    units["20-anvil-management.network"] = body
    return units


def timesyncd_conf(a: Answers) -> str | None:
    if not a.ntp:
        return None
    return "[Time]\nNTP=" + " ".join(a.ntp) + "\n"
