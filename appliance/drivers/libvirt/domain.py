"""A VM host's slot as a libvirt domain: the whole domain XML from a :class:`Slot`, and back.

Pure (no libvirt): the driver reads a domain's XML, turns it into a Slot, changes a field
(identity, boot device) and defines the XML rendered from the new Slot. Anvil owns these
domains whole, so rendering the complete document (libvirt fills in addresses and
controllers again) is simpler and safer than patching whatever libvirt returned.

A slot keeps its *own* identity — the "burned-in" UUID and MACs it was created with —
in ``<metadata>`` (namespace ``urn:anvil:libvirt:v1``), so clearing a profile's identity
puts them back, as a blade's factory MACs come back when a virtual MAC is removed.

VLANs: on an Open vSwitch bridge each NIC is an OVS port (``<virtualport
type='openvswitch'/>``) whose tags libvirt sets when it plugs the port: a native VLAN
only → an access port; tagged VLANs → a trunk (``nativeMode='untagged'`` for the native
one). A Linux bridge has no VLANs here: a profile asking for them is refused on it.

The guest is a ``type='qemu'`` domain (TCG) unless the slot says ``kvm``; its serial
console goes to a file beside libvirt's own QEMU log, and SeaBIOS prints there too
(``useserial``), so a boot can be followed from the host.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

from defusedxml import ElementTree as SafeET

from appliance.drivers.protocols import BootDevice, BootMode, NicVlans

NS = "urn:anvil:libvirt:v1"
SERIAL_DIR = "/var/log/libvirt/qemu"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
BRIDGE_TYPES = ("linux", "ovs")
ACCELS = ("qemu", "kvm")


class SlotError(ValueError):
    """A slot description or a domain XML that Anvil cannot use; the message says which field."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One domain Anvil manages on a VM host. ``own_*`` are the slot's burned-in identity;
    ``uuid``/``macs`` what the domain carries now (a profile's, while one is applied)."""

    name: str
    host: str
    index: int
    cpus: int
    memory_mib: int
    bridge: str
    bridge_type: str
    own_uuid: str
    own_macs: tuple[str, ...]
    uuid: str
    macs: tuple[str, ...]
    vlans: tuple[NicVlans, ...] = ()
    boot: BootDevice = BootDevice.NETWORK
    mode: BootMode = BootMode.LEGACY
    accel: str = "qemu"

    def check(self) -> Slot:
        """This slot, or SlotError naming the first bad field."""
        if not _NAME.match(self.name):
            raise SlotError(f"domain name {self.name!r}: 1-63 letters, digits, '_', '.', '-'")
        if self.cpus < 1 or self.memory_mib < 64:
            raise SlotError(f"{self.name}: at least 1 CPU and 64 MiB (got {self.cpus}, {self.memory_mib} MiB)")
        if self.bridge_type not in BRIDGE_TYPES:
            raise SlotError(f"{self.name}: bridge type {self.bridge_type!r} is not one of {', '.join(BRIDGE_TYPES)}")
        if not self.bridge or not re.match(r"^[A-Za-z0-9_.-]{1,15}$", self.bridge):
            raise SlotError(f"{self.name}: bridge {self.bridge!r} is not an interface name")
        if self.accel not in ACCELS:
            raise SlotError(f"{self.name}: accel {self.accel!r} is not one of {', '.join(ACCELS)}")
        for uuid in (self.own_uuid, self.uuid):
            if not _UUID.match(uuid):
                raise SlotError(f"{self.name}: {uuid!r} is not a UUID")
        if not self.own_macs or len(self.macs) != len(self.own_macs):
            raise SlotError(f"{self.name}: {len(self.macs)} MACs for {len(self.own_macs)} NICs")
        for mac in (*self.own_macs, *self.macs):
            if not _MAC.match(mac):
                raise SlotError(f"{self.name}: {mac!r} is not a MAC address (lowercase, colons)")
        if self.vlans and len(self.vlans) != len(self.macs):
            raise SlotError(f"{self.name}: VLANs for {len(self.vlans)} NICs, the slot has {len(self.macs)}")
        if any(v.native is not None or v.tagged for v in self.vlans) and self.bridge_type != "ovs":
            raise SlotError(f"{self.name}: VLANs need an Open vSwitch bridge; {self.bridge} is a Linux bridge "
                            "without VLANs (enrol the VM host with --bridge-type ovs)")
        return self

    def with_identity(self, uuid: str | None, macs: tuple[str, ...], vlans: tuple[NicVlans, ...]) -> Slot:
        """The slot carrying a profile's identity; NICs the profile does not name keep their own MAC."""
        if len(macs) > len(self.own_macs):
            raise SlotError(f"{self.name}: the profile has {len(macs)} MACs, the slot {len(self.own_macs)} NICs")
        merged = tuple(m.lower() for m in macs) + self.own_macs[len(macs):]
        padded = vlans[:len(self.own_macs)] + (NicVlans(),) * (len(self.own_macs) - len(vlans[:len(self.own_macs)]))
        return replace(self, uuid=(uuid or self.own_uuid).lower(), macs=merged,
                       vlans=padded if any(v.native is not None or v.tagged for v in padded) else ()).check()

    def cleared(self) -> Slot:
        return replace(self, uuid=self.own_uuid, macs=self.own_macs, vlans=())

    @property
    def serial_log(self) -> str:
        return f"{SERIAL_DIR}/{self.name}.serial.log"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def render(slot: Slot) -> str:
    """The domain XML of ``slot`` (checked first)."""
    slot.check()
    dom = ET.Element("domain", {"type": slot.accel})
    _sub(dom, "name", slot.name)
    _sub(dom, "uuid", slot.uuid)
    _sub(dom, "title", f"Anvil slot {slot.index} of VM host {slot.host}")
    meta = _sub(dom, "metadata")
    own = ET.SubElement(meta, f"{{{NS}}}slot", {"host": slot.host, "index": str(slot.index),
                                               "bridgeType": slot.bridge_type})
    _sub(own, f"{{{NS}}}uuid", slot.own_uuid)
    for mac in slot.own_macs:
        _sub(own, f"{{{NS}}}mac", mac)
    _sub(dom, "memory", str(slot.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(slot.cpus))
    os_attrs = {"firmware": "efi"} if slot.mode is BootMode.UEFI else {}
    os_el = _sub(dom, "os", **os_attrs)
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    # The next boot device first, the other after it (a blade's boot order, as a BMC sets it).
    order = [BootDevice.NETWORK, BootDevice.DISK] if slot.boot is BootDevice.NETWORK else [BootDevice.DISK,
                                                                                            BootDevice.NETWORK]
    for dev in order:
        _sub(os_el, "boot", dev="network" if dev is BootDevice.NETWORK else "hd")
    _sub(os_el, "bios", useserial="yes", rebootTimeout="5000")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for i, mac in enumerate(slot.macs):
        nic = _sub(devices, "interface", type="bridge")
        _sub(nic, "source", bridge=slot.bridge)
        _sub(nic, "mac", address=mac)
        _sub(nic, "model", type="virtio")
        if slot.bridge_type == "ovs":
            _sub(nic, "virtualport", type="openvswitch")
            vlans = slot.vlans[i] if slot.vlans else NicVlans()
            if vlans.tagged:
                vl = _sub(nic, "vlan", trunk="yes")
                if vlans.native is not None:
                    _sub(vl, "tag", id=str(vlans.native), nativeMode="untagged")
                for tag in vlans.tagged:
                    _sub(vl, "tag", id=str(tag))
            elif vlans.native is not None:
                vl = _sub(nic, "vlan")
                _sub(vl, "tag", id=str(vlans.native))
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=slot.serial_log)
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=slot.serial_log)
    _sub(console, "target", type="serial", port="0")
    ET.register_namespace("anvil", NS)
    return ET.tostring(dom, encoding="unicode")


def _text(el: ET.Element | None, what: str, name: str) -> str:
    if el is None or not (el.text or "").strip():
        raise SlotError(f"domain {name}: no {what}")
    return (el.text or "").strip()


def parse(xml: str) -> Slot:
    """The Slot a domain XML describes; SlotError for a domain Anvil did not define."""
    try:
        dom = SafeET.fromstring(xml)
    except SafeET.ParseError as exc:
        raise SlotError(f"domain XML does not parse: {exc}") from None
    name = _text(dom.find("name"), "name", "?")
    own = dom.find(f"metadata/{{{NS}}}slot")
    if own is None:
        raise SlotError(f"domain {name} is not an Anvil slot (no {NS} metadata)")
    own_macs = tuple(_text(m, "slot MAC", name).lower() for m in own.findall(f"{{{NS}}}mac"))
    macs: list[str] = []
    vlans: list[NicVlans] = []
    bridge, bridge_type = "", own.get("bridgeType", "linux")
    for nic in dom.findall("devices/interface"):
        mac_el, src = nic.find("mac"), nic.find("source")
        macs.append((mac_el.get("address", "") if mac_el is not None else "").lower())
        bridge = bridge or (src.get("bridge", "") if src is not None else "")
        native: int | None = None
        tagged: list[int] = []
        vl = nic.find("vlan")
        if vl is not None:
            trunk = vl.get("trunk") == "yes"
            for tag in vl.findall("tag"):
                vid = int(tag.get("id", "0"))
                if not trunk or tag.get("nativeMode") == "untagged":
                    native = vid
                else:
                    tagged.append(vid)
        vlans.append(NicVlans(native=native, tagged=tuple(tagged)))
    boots = [b.get("dev") for b in dom.findall("os/boot")]
    os_el = dom.find("os")
    memory = dom.find("memory")
    unit = (memory.get("unit", "KiB") if memory is not None else "KiB").lower()
    amount = int(_text(memory, "memory", name))
    mib = {"kib": amount // 1024, "k": amount // 1024, "mib": amount, "m": amount,
           "gib": amount * 1024, "g": amount * 1024}.get(unit, amount // 1024)
    slot = Slot(
        name=name, host=own.get("host", ""), index=int(own.get("index", "0")),
        cpus=int(_text(dom.find("vcpu"), "vcpu", name)), memory_mib=mib, bridge=bridge, bridge_type=bridge_type,
        own_uuid=_text(own.find(f"{{{NS}}}uuid"), "slot UUID", name).lower(), own_macs=own_macs,
        uuid=_text(dom.find("uuid"), "uuid", name).lower(), macs=tuple(macs),
        vlans=tuple(vlans) if any(v.native is not None or v.tagged for v in vlans) else (),
        boot=BootDevice.DISK if boots and boots[0] == "hd" else BootDevice.NETWORK,
        mode=BootMode.UEFI if os_el is not None and os_el.get("firmware") == "efi" else BootMode.LEGACY,
        accel=dom.get("type", "qemu"))
    return slot.check()


def domain_name(host: str, index: int) -> str:
    return f"anvil-{host}-{index:02d}"


def new_slot(host: str, index: int, *, cpus: int, memory_mib: int, bridge: str, bridge_type: str = "linux",
             nics: int = 1, accel: str = "qemu") -> Slot:
    """Slot ``index`` of VM host ``host``, with a burned-in UUID and MACs derived from both
    (the same on every enrolment, so enrolling again finds the same slots)."""
    import hashlib
    import uuid as uuidlib

    if nics < 1 or nics > 8:
        raise SlotError(f"{nics} NICs per slot: 1..8")
    own_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"anvil-vm-slot:{host}/{index}"))
    macs = []
    for n in range(nics):
        digest = hashlib.sha256(f"anvil-vm-slot:{host}/{index}/{n}".encode()).digest()
        macs.append("52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3]))
    return Slot(name=domain_name(host, index), host=host, index=index, cpus=cpus, memory_mib=memory_mib,
                bridge=bridge, bridge_type=bridge_type, own_uuid=own_uuid, own_macs=tuple(macs), uuid=own_uuid,
                macs=tuple(macs), accel=accel).check()
