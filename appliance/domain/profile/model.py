"""The server-profile model (DESIGN §3): one pydantic class tree for YAML, XML and JSON.

Every class forbids unknown fields and is frozen. Field names are the document's keys
(camelCase), so ``model_json_schema()`` is the published schema without aliases.

Identity fields hold either a canonical concrete value (lowercase, via
:mod:`appliance.domain.identities`) or a pool reference ``pool:<name>``.
Rules that span several fields (duplicate names, an identity used twice, a native VLAN
also tagged) are checked by ``after`` model validators that raise one
``profile_issues`` error carrying every problem with its own relative location; the
codecs unfold it into one :class:`~appliance.errors.Issue` per problem.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from appliance.domain.identities import (
    IdentityKind,
    is_pool_ref,
    parse_identity,
    parse_iqn,
    parse_pool_ref,
    parse_wwn,
)

API_VERSION = "anvil/v1"
# The appliance's parking VLAN is configurable (network.parking_vlan); this is only its
# default, used when a caller validates a document without settings at hand.
DEFAULT_PARKING_VLAN = 4094
VLAN_MIN, VLAN_MAX = 1, 4094
# The validation context key carrying the configured parking VLAN (None: not checked).
PARKING_VLAN_CONTEXT = "parking_vlan"

Loc = tuple[str | int, ...]

# Patterns shared by the JSON Schema and the XSD: written in the common subset of
# ECMA-262 and XSD regular expressions (no non-capturing groups, no lookarounds), and
# anchored with ^…$, which the XSD generator strips (XSD patterns are always anchored).
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_POOL = r"pool:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_MAC = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"
_WWN = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){7}"
_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_IQN = r"(iqn\.[0-9]{4}-[0-9]{2}\.\S+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})"
MAC_PATTERN = f"^({_POOL}|{_MAC})$"
WWN_PATTERN = f"^({_POOL}|{_WWN})$"
CONCRETE_WWN_PATTERN = f"^{_WWN}$"
UUID_PATTERN = f"^({_POOL}|{_UUID})$"
IQN_PATTERN = f"^({_POOL}|{_IQN})$"
CONCRETE_IQN_PATTERN = f"^{_IQN}$"
PORT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,14}$"
PORTAL_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
IPV4_IFACE_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"
BASELINE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
IMAGE_PATH_PATTERN = r"^[^/\\].*$"

_NAME_RE = re.compile(NAME_PATTERN)
_PORT_NAME_RE = re.compile(PORT_NAME_PATTERN)
_PORTAL_RE = re.compile(PORTAL_PATTERN)
_BASELINE_RE = re.compile(BASELINE_PATTERN)


def _custom(check: Callable[[str], str]) -> AfterValidator:
    """Run ``check``; turn its ValueError into a pydantic error whose message is the bare reason."""

    def run(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise PydanticCustomError("invalid_value", "{reason}", {"reason": str(exc)}) from None

    return AfterValidator(run)


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f'"{value}" is not a valid name (1-63 lowercase letters, digits or "-", starting and ending alphanumeric)'
        )
    return value


def _port_name(value: str) -> str:
    if not _PORT_NAME_RE.match(value):
        raise ValueError(f'"{value}" is not a valid port name (a letter, then up to 14 letters, digits or "_.:-")')
    return value


def _identity(kind: IdentityKind) -> Callable[[str], str]:
    def check(value: str) -> str:
        if is_pool_ref(value):
            return "pool:" + parse_pool_ref(value)
        return parse_identity(kind, value)

    return check


def _portal(value: str) -> str:
    match = _PORTAL_RE.match(value)
    if not match or not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
        raise ValueError(f'"{value}" is not an iSCSI portal (host:port, port 1-65535)')
    return value


def _image_path(value: str) -> str:
    """Image paths are relative to the appliance's images/ folder and may not leave it (DESIGN §7)."""
    if not value:
        raise ValueError("image path is empty")
    if value.startswith("/") or value.startswith("\\"):
        raise ValueError(f'"{value}" is an absolute path (image paths are relative to images/)')
    if "\\" in value or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f'"{value}" contains a backslash or a control character')
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f'"{value}" leaves images/ (".." is not allowed)')
    if any(p in ("", ".") for p in parts):
        raise ValueError(f'"{value}" is not a clean relative path (empty or "." segment)')
    return value


def _ipv4_interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f'"{value}" needs a prefix length (a.b.c.d/prefix)')
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f'"{value}" is not an IPv4 interface address (a.b.c.d/prefix)') from None
    net = iface.network
    if net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        raise ValueError(f'"{value}" is the network or broadcast address of {net}')
    return str(iface)


def _baseline(value: str) -> str:
    if not _BASELINE_RE.match(value):
        raise ValueError(f'"{value}" is not a valid baseline name')
    return value


def _text(value: str) -> str:
    """Free text must survive XML 1.0 unchanged: no control characters but tab and newline."""
    for c in value:
        if (ord(c) < 0x20 and c not in "\t\n") or 0xD800 <= ord(c) <= 0xDFFF or c in "\ufffe\uffff":
            raise ValueError(f"contains the character U+{ord(c):04X}, which a profile may not carry")
    return value


def _kernel_args(value: str) -> str:
    """A kernel command line goes into one iPXE statement: one line of printable text, and none
    of what iPXE itself would act on (``${…}`` expansion, ``#`` comments, ``&&``/``||`` chaining)
    — or the profile could add statements to its own boot script."""
    for c in value:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            raise ValueError(f"contains the control character U+{ord(c):04X} (a kernel command line is one line)")
    for bad, what in (("$", "iPXE would expand it as a setting"), ("#", "iPXE would read a comment"),
                      ("&&", "iPXE would chain a command"), ("||", "iPXE would chain a command")):
        if bad in value:
            raise ValueError(f'contains "{bad}": {what}')
    if len(value) > 2048:
        raise ValueError(f"is {len(value)} characters long; a kernel command line is at most 2048")
    return value


def _vlan(value: int, info: ValidationInfo) -> int:
    """A VLAN id in 1-4094 that is not the appliance's parking VLAN.

    The parking VLAN comes from the validation context (the configured
    ``network.parking_vlan``); without one (a stored document read back) it is not checked,
    so changing the setting never makes a stored profile unreadable.
    """
    if not VLAN_MIN <= value <= VLAN_MAX:
        raise PydanticCustomError("invalid_value", "VLAN {vlan} is outside 1-4094", {"vlan": value})
    parking = (info.context or {}).get(PARKING_VLAN_CONTEXT)
    if parking is not None and value == parking:
        raise PydanticCustomError(
            "invalid_value",
            "VLAN {vlan} is the parking VLAN, reserved for released switch ports "
            "(network.parking_vlan in the configuration, or ANVIL_NETWORK_PARKING_VLAN)",
            {"vlan": value},
        )
    return value


def _scalar_to_str(value: object) -> object:
    """YAML scalars in string maps become strings, so YAML and XML carry the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _pattern(p: str, **extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": p, **extra})


Name = Annotated[str, Strict(), _custom(_name), _pattern(NAME_PATTERN, maxLength=63)]
PortName = Annotated[str, Strict(), _custom(_port_name), _pattern(PORT_NAME_PATTERN)]
MacRef = Annotated[str, Strict(), _custom(_identity(IdentityKind.MAC)), _pattern(MAC_PATTERN)]
WwpnRef = Annotated[str, Strict(), _custom(_identity(IdentityKind.WWPN)), _pattern(WWN_PATTERN)]
WwnnRef = Annotated[str, Strict(), _custom(_identity(IdentityKind.WWNN)), _pattern(WWN_PATTERN)]
UuidRef = Annotated[str, Strict(), _custom(_identity(IdentityKind.UUID)), _pattern(UUID_PATTERN)]
IqnRef = Annotated[str, Strict(), _custom(_identity(IdentityKind.IQN)), _pattern(IQN_PATTERN)]
Iqn = Annotated[str, Strict(), _custom(parse_iqn), _pattern(CONCRETE_IQN_PATTERN)]
Wwn = Annotated[str, Strict(), _custom(parse_wwn), _pattern(CONCRETE_WWN_PATTERN)]
Portal = Annotated[str, Strict(), _custom(_portal), _pattern(PORTAL_PATTERN)]
ImagePath = Annotated[str, Strict(), _custom(_image_path), _pattern(IMAGE_PATH_PATTERN, minLength=1)]
Ipv4Interface = Annotated[str, Strict(), _custom(_ipv4_interface), _pattern(IPV4_IFACE_PATTERN)]
Baseline = Annotated[str, Strict(), _custom(_baseline), _pattern(BASELINE_PATTERN)]
VlanId = Annotated[
    int,
    Strict(),
    AfterValidator(_vlan),
    WithJsonSchema({"type": "integer", "minimum": VLAN_MIN, "maximum": VLAN_MAX}),
]
MapKey = Annotated[str, BeforeValidator(_scalar_to_str), Strict(), Field(min_length=1), _custom(_text)]
MapValue = Annotated[
    str,
    BeforeValidator(_scalar_to_str),
    Strict(),
    _custom(_text),
    WithJsonSchema({"type": ["string", "integer", "boolean"]}),
]
Text = Annotated[str, Strict(), _custom(_text)]
KernelArgs = Annotated[str, Strict(), _custom(_kernel_args)]
StringMap = dict[MapKey, MapValue]
Count = Annotated[int, Strict(), Field(ge=1)]
Lun = Annotated[int, Strict(), Field(ge=0, le=16383)]


class ProfileKind(StrEnum):
    PROFILE = "ServerProfile"
    TEMPLATE = "ServerProfileTemplate"


class BootMode(StrEnum):
    UEFI = "uefi"
    LEGACY = "legacy"


class FailoverPolicy(StrEnum):
    NONE = "none"
    RESTART = "restart"
    N_PLUS_1 = "n+1"


def _issues(problems: list[tuple[Loc, str]]) -> PydanticCustomError:
    """One error carrying several located problems; the codecs unfold ``ctx["issues"]``."""
    summary = "; ".join(f"{'.'.join(map(str, loc))}: {reason}" for loc, reason in problems)
    return PydanticCustomError("profile_issues", "{summary}", {"summary": summary, "issues": tuple(problems)})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, use_enum_values=False)


class Metadata(_Model):
    name: Name
    tenant: Name = "default"
    labels: StringMap = Field(default_factory=dict)


class Requirements(_Model):
    minCpus: Count | None = None
    minMemoryGiB: Count | None = None
    nics: Annotated[int, Strict(), Field(ge=0)] | None = None


class Vlans(_Model):
    native: VlanId | None = None
    tagged: tuple[VlanId, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Vlans:
        problems: list[tuple[Loc, str]] = []
        seen: set[int] = set()
        for i, vlan in enumerate(self.tagged):
            if vlan == self.native:
                problems.append((("tagged", i), f"VLAN {vlan} is already the native VLAN"))
            elif vlan in seen:
                problems.append((("tagged", i), f"VLAN {vlan} is listed twice"))
            seen.add(vlan)
        if problems:
            raise _issues(problems)
        return self


class Nic(_Model):
    name: PortName
    mac: MacRef | None = None
    vlans: Vlans = Field(default_factory=Vlans)
    pxe: Annotated[bool, Strict()] = False
    ipv4: Ipv4Interface | None = None


class Hba(_Model):
    name: PortName
    wwpn: WwpnRef | None = None
    wwnn: WwnnRef | None = None


# Identity fields: (kind, collection or None, field); collections are walked item by item.
IDENTITY_FIELDS: tuple[tuple[IdentityKind, str | None, str], ...] = (
    (IdentityKind.UUID, None, "uuid"),
    (IdentityKind.IQN, None, "iscsiInitiator"),
    (IdentityKind.MAC, "nics", "mac"),
    (IdentityKind.WWPN, "hbas", "wwpn"),
    (IdentityKind.WWNN, "hbas", "wwnn"),
)


class Identity(_Model):
    uuid: UuidRef | None = None
    iscsiInitiator: IqnRef | None = None
    nics: tuple[Nic, ...] = ()
    hbas: tuple[Hba, ...] = ()

    def located(self) -> list[tuple[IdentityKind, str, Loc]]:
        """Every identity value set here (concrete or pool ref) with its location, in document order."""
        out: list[tuple[IdentityKind, str, Loc]] = []
        for kind, collection, field in IDENTITY_FIELDS:
            if collection is None and getattr(self, field) is not None:
                out.append((kind, getattr(self, field), (field,)))
        for collection in ("nics", "hbas"):
            for i, item in enumerate(getattr(self, collection)):
                for kind, coll, field in IDENTITY_FIELDS:
                    if coll == collection and getattr(item, field) is not None:
                        out.append((kind, getattr(item, field), (collection, i, field)))
        return out

    @model_validator(mode="after")
    def _unique(self) -> Identity:
        problems: list[tuple[Loc, str]] = []
        for collection in ("nics", "hbas"):
            names: dict[str, int] = {}
            for i, item in enumerate(getattr(self, collection)):
                if item.name in names:
                    first = names[item.name]
                    problems.append(
                        ((collection, i, "name"), f'"{item.name}" is already the name of {collection}[{first}]')
                    )
                names.setdefault(item.name, i)
        # WWPNs and WWNNs share one namespace (both are FC world-wide names): a WWPN is
        # unique, and no WWNN may equal a WWPN. A WWNN names the node, so the HBAs of one
        # server may share it (UCS gives each service profile one WWNN for all its vHBAs).
        seen: dict[tuple[str, str], tuple[IdentityKind, Loc]] = {}
        for kind, value, loc in self.located():
            if is_pool_ref(value):
                continue
            space = "wwn" if kind in (IdentityKind.WWPN, IdentityKind.WWNN) else kind.value
            earlier = seen.get((space, value))
            if earlier is None:
                seen[(space, value)] = (kind, loc)
            elif not (kind is IdentityKind.WWNN and earlier[0] is IdentityKind.WWNN):
                problems.append((loc, f'"{value}" is already used at spec.identity.{_dotted(earlier[1])}'))
        if problems:
            raise _issues(problems)
        return self


class IscsiSource(_Model):
    """Boot from an iSCSI LUN: ``sanboot`` of the LUN's own loader, or, with ``kernel`` and
    ``initrd``, ``sanhook`` of the LUN plus an image over HTTP (the image then signals its boot).
    ``image`` and ``sizeMiB`` describe the disk where Anvil's storage driver creates the LUN:
    copied from ``image`` (or empty, ``sizeMiB`` large) once, then kept across stamps."""

    type: Literal["iscsi"]
    portal: Portal
    target: Iqn
    lun: Lun = 0
    kernel: ImagePath | None = None
    initrd: ImagePath | None = None
    cmdline: KernelArgs | None = None
    image: ImagePath | None = None
    sizeMiB: Annotated[int, Strict(), Field(ge=1, le=16 * 1024 * 1024)] | None = None

    @model_validator(mode="after")
    def _kernel_with_initrd(self) -> IscsiSource:
        if (self.kernel is None) != (self.initrd is None):
            missing = "initrd" if self.initrd is None else "kernel"
            raise _issues([((missing,), "kernel and initrd go together (sanhook boots both over HTTP)")])
        if self.cmdline is not None and self.kernel is None:
            raise _issues([(("cmdline",), "a cmdline needs kernel and initrd")])
        return self


class FcSource(_Model):
    type: Literal["fc"]
    targetWwpn: Wwn
    lun: Lun = 0


class ImageSource(_Model):
    type: Literal["image"]
    kernel: ImagePath
    initrd: ImagePath
    cmdline: KernelArgs | None = None


class LocalSource(_Model):
    type: Literal["local"]


BootSource = Annotated[IscsiSource | FcSource | ImageSource | LocalSource, Field(discriminator="type")]
BOOT_SOURCE_TYPES = ("iscsi", "fc", "image", "local")


class Boot(_Model):
    mode: BootMode = BootMode.UEFI
    source: BootSource


class Firmware(_Model):
    """The firmware baseline the blade should run (firmware/baselines/<baseline>.yaml). At stamp a
    blade that does not comply is only reported (``report``, the default: the stamp goes on), refused
    (``refuse``) or updated first (``update-first``)."""

    baseline: Baseline
    policy: Literal["report", "refuse", "update-first"] = "report"


class Failover(_Model):
    """How the profile is protected: domain names the failover domain whose spares take it
    over; policy none protects nothing, so it needs no domain."""

    # The same rule for JSON Schema readers (the XSD cannot say it; the model does).
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"policy": {"not": {"const": "none"}}}},
        "then": {"required": ["domain"]},
    })

    domain: Name | None = None
    priority: Annotated[int, Strict(), Field(ge=-(2**31), le=2**31 - 1)] = 0
    policy: FailoverPolicy

    @model_validator(mode="after")
    def _domain_unless_none(self) -> Failover:
        if self.domain is None and self.policy is not FailoverPolicy.NONE:
            raise _issues([(("domain",), f"is required with policy {self.policy.value} (only policy none "
                                         "needs no failover domain)")])
        return self


class Spec(_Model):
    requirements: Requirements = Field(default_factory=Requirements)
    identity: Identity = Field(default_factory=Identity)
    boot: Boot | None = None
    bios: StringMap = Field(default_factory=dict)
    firmware: Firmware | None = None
    failover: Failover | None = None


class Profile(_Model):
    """A server profile or template; ``kind`` tells which."""

    apiVersion: Literal["anvil/v1"]
    kind: ProfileKind
    metadata: Metadata
    spec: Spec = Field(default_factory=Spec)

    @property
    def is_template(self) -> bool:
        return self.kind is ProfileKind.TEMPLATE


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
