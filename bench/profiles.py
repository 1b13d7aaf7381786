"""The server profile every bench stamps: two NICs on the lab switch's VLANs, booting the lab
image (emulated rack) or locally (fake driver). One builder, so the benches measure the same
document; each bench passes its own MAC prefix so two benches' profiles never clash."""

from __future__ import annotations

_TEMPLATE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: bench}}
spec:
  requirements: {{minCpus: 8, minMemoryGiB: 32, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "{mac}:01", vlans: {{native: 100, tagged: [200]}}, pxe: true}}
      - {{name: eth1, mac: "{mac}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {boot}}}
"""
_IMAGE = "{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}"
_LOCAL = "{type: local}"


def bench_profile(name: str, serial: int, *, prefix: str, image: bool = True) -> str:
    """Profile ``name`` whose MACs are ``02:PREFIX:00:HI:LO:0n`` from ``serial`` (< 65,536)."""
    mac = f"02:{prefix}:00:{serial >> 8:02x}:{serial & 0xFF:02x}"
    return _TEMPLATE.format(name=name, mac=mac, boot=_IMAGE if image else _LOCAL)
