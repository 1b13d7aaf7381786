"""What a deploy stamps: the profile a node's ``instance_info`` names, or one made for the node.

- ``anvil_profile``: ``NAME`` or ``TENANT/NAME`` of a profile (in the caller's tenant by default).
  Everything a profile carries (identities, VLANs, iSCSI or FC boot, BIOS, failover) is used.
- ``kernel`` and ``ramdisk`` (Ironic's ramdisk deploy), optionally ``kernel_append_params``:
  a profile ``bm-<node>`` that network-boots that kernel and initrd is made for the node (and
  replaced on the next deploy). Paths are relative to the appliance's ``images/`` folder, as in
  every profile. The boot mode is ``uefi`` unless ``capabilities`` (of ``instance_info`` or of
  the node's ``properties``) say ``boot_mode:bios``.
- ``image_source`` alone (a whole-disk image): refused, 501. Anvil writes no disks; its blades
  boot over the network or from a LUN, which a profile describes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from appliance.api.ironic.errors import IronicError, NotImplementedHere
from appliance.domain.profile import Profile
from appliance.errors import Issue, ValidationError
from appliance.services.profiles import ProfileService

PROFILE_KEY = "anvil_profile"
# Profile document paths → the instance_info keys a client wrote them as.
_PATHS = {"spec.boot.source.kernel": "instance_info.kernel", "spec.boot.source.initrd": "instance_info.ramdisk",
          "spec.boot.source.cmdline": "instance_info.kernel_append_params"}


@dataclass(frozen=True, slots=True)
class Plan:
    tenant: str | None          # None: the caller's home tenant
    profile: str
    made: Profile | None        # a profile to save first (made for the node)


def _capabilities(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return dict(p.split(":", 1) for p in value.split(",") if ":" in p)
    return {}


def made_name(node: str) -> str:
    return f"bm-{node}"[:63].rstrip("-")


def plan(node: str, instance_info: dict[str, Any], properties: dict[str, Any], home: str,
         *, parking_vlan: int) -> Plan:
    """The deploy ``instance_info`` asks for; IronicError 400 (nothing usable) or 501 (a whole-disk image)."""
    ref = instance_info.get(PROFILE_KEY)
    if ref is not None:
        if not isinstance(ref, str) or not ref or ref.count("/") > 1:
            raise IronicError(400, f"instance_info.{PROFILE_KEY} must be NAME or TENANT/NAME, not {ref!r}")
        tenant, _, name = ref.rpartition("/")
        return Plan(tenant or None, name, None)
    kernel, ramdisk = instance_info.get("kernel"), instance_info.get("ramdisk")
    if kernel is None and ramdisk is None:
        if instance_info.get("image_source"):
            raise NotImplementedHere(
                "a whole-disk image (instance_info.image_source alone) is not deployed: Anvil writes no disks. "
                "Give instance_info.kernel and ramdisk (paths in the appliance's images folder: the blade boots "
                f"them over the network), or instance_info.{PROFILE_KEY} naming a profile (iSCSI, FC or local "
                "boot)")
        raise IronicError(400, f"instance_info needs {PROFILE_KEY} (a profile to stamp), or kernel and ramdisk "
                               "(an image to boot)")
    if not isinstance(kernel, str) or not isinstance(ramdisk, str):
        raise IronicError(400, "instance_info.kernel and instance_info.ramdisk go together, as paths in the "
                               "appliance's images folder")
    caps = {**_capabilities(properties.get("capabilities")), **_capabilities(instance_info.get("capabilities"))}
    source: dict[str, Any] = {"type": "image", "kernel": kernel, "initrd": ramdisk}
    if instance_info.get("kernel_append_params"):
        source["cmdline"] = instance_info["kernel_append_params"]
    doc = {"apiVersion": "anvil/v1", "kind": "ServerProfile",
           "metadata": {"name": made_name(node), "tenant": home, "labels": {"anvil-baremetal-node": node}},
           "spec": {"identity": {"nics": [{"name": "eth0", "pxe": True}]},
                    "boot": {"mode": "legacy" if caps.get("boot_mode") == "bios" else "uefi", "source": source}}}
    try:
        made = ProfileService.parse(json.dumps(doc), source="instance_info", content_type="application/json",
                                    parking_vlan=parking_vlan)
    except ValidationError as exc:
        raise ValidationError([Issue(_PATHS.get(i.path, i.path), i.reason) for i in exc.issues]) from None
    return Plan(home, made_name(node), made)
