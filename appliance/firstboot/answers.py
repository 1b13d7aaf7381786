"""The first-boot answers and how each one is checked (pure: no I/O)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

# The same bounds as appliance.services.users (a test checks): not imported from there, because
# that pulls in SQLAlchemy, and first boot runs on a slow console before anything is cached.
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_IFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


class AnswerError(ValueError):
    """One bad answer: ``where`` names it (``management.address``), the message says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class Management:
    """The management interface: DHCP, or a static address with its gateway and DNS servers."""

    interface: str = "auto"                 # "auto": the first wired interface that is not provisioning
    dhcp: bool = True
    address: str = ""                       # CIDR, when static
    gateway: str = ""
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provisioning:
    """The provisioning interface the boot services (DHCP, TFTP, boot HTTP) serve; none: no boot services."""

    interface: str = ""
    address: str = ""                       # CIDR: the appliance's own address there
    dhcp_range: str = ""                    # START,END inside that subnet


@dataclass(frozen=True)
class Tls:
    """Generated (self-signed on first start) or imported from PEM files."""

    generate: bool = True
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Answers:
    admin_password: str
    management: Management = field(default_factory=Management)
    provisioning: Provisioning = field(default_factory=Provisioning)
    tls: Tls = field(default_factory=Tls)
    ntp: tuple[str, ...] = ()
    hostname: str = "anvil"


def interface(value: str, where: str) -> str:
    if not _IFACE.fullmatch(value):
        raise AnswerError(where, f"{value!r} is not an interface name")
    return value


def cidr(value: str, where: str) -> str:
    """An IPv4 or IPv6 host address with its prefix, like 192.0.2.10/24."""
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise AnswerError(where, f"{value!r} is not an address with a prefix, like 192.0.2.10/24") from None
    if "/" not in value or (iface.ip == iface.network.network_address and iface.network.num_addresses > 2):
        raise AnswerError(where, f"{value!r} is not a host address with a prefix, like 192.0.2.10/24")
    return str(iface)


def address(value: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise AnswerError(where, f"{value!r} is not an IP address") from None


def host(value: str, where: str) -> str:
    """An NTP server or host name: an address or a DNS name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOST.fullmatch(value):
        raise AnswerError(where, f"{value!r} is not a host name or address")
    return value


def password(value: str, where: str = "admin_password") -> str:
    if not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise AnswerError(where, f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return value


def dhcp_range(value: str, subnet_of: str, where: str) -> str:
    """START,END: two IPv4 addresses in the provisioning subnet, START first, neither the appliance's own."""
    try:
        start, end = (ipaddress.IPv4Address(a.strip()) for a in value.split(","))
    except ValueError:
        raise AnswerError(where, f"{value!r} is not START,END (two IPv4 addresses)") from None
    own = ipaddress.IPv4Interface(subnet_of)
    if start > end:
        raise AnswerError(where, f"{value!r}: START is after END")
    if start not in own.network or end not in own.network:
        raise AnswerError(where, f"{value!r} is not inside {own.network}")
    if start <= own.ip <= end:
        raise AnswerError(where, f"{value!r} holds the appliance's own address {own.ip}")
    return f"{start},{end}"


def check_management(m: Management) -> Management:
    if m.interface != "auto":
        interface(m.interface, "management.interface")
    if m.dhcp:
        if m.address or m.gateway:
            raise AnswerError("management", "give either dhcp: true or a static address, not both")
        return m
    if not m.address:
        raise AnswerError("management.address", "required without DHCP")
    own = ipaddress.ip_interface(cidr(m.address, "management.address"))
    if m.gateway:
        gw = ipaddress.ip_address(address(m.gateway, "management.gateway"))
        if gw not in own.network:
            raise AnswerError("management.gateway", f"{gw} is not inside {own.network}")
    for i, server in enumerate(m.dns):
        address(server, f"management.dns[{i}]")
    return m


def check_provisioning(p: Provisioning, management: Management) -> Provisioning:
    if not p.interface:
        if p.address or p.dhcp_range:
            raise AnswerError("provisioning.interface", "required with an address or a DHCP range")
        return p
    interface(p.interface, "provisioning.interface")
    if p.interface == management.interface:
        raise AnswerError("provisioning.interface", f"{p.interface} is the management interface too")
    if not p.address:
        raise AnswerError("provisioning.address", "required with a provisioning interface")
    own = ipaddress.ip_interface(cidr(p.address, "provisioning.address"))
    if own.version != 4:
        raise AnswerError("provisioning.address", "must be IPv4 (DHCP and TFTP serve IPv4)")
    if p.dhcp_range:
        dhcp_range(p.dhcp_range, p.address, "provisioning.dhcp_range")
    return p


def check(a: Answers) -> Answers:
    """Every answer checked; the first bad one raises :class:`AnswerError` naming it."""
    password(a.admin_password)
    if not _HOST.fullmatch(a.hostname) or "." in a.hostname:
        raise AnswerError("hostname", f"{a.hostname!r} is not a host name (letters, digits, '-')")
    check_management(a.management)
    check_provisioning(a.provisioning, a.management)
    if not a.tls.generate and (a.tls.cert is None or a.tls.key is None):
        raise AnswerError("tls", "give both cert and key to import, or generate: true")
    for i, server in enumerate(a.ntp):
        host(server, f"ntp[{i}]")
    return a
