"""A DHCPDISCOVER as a PXE ROM or iPXE sends it, and the replies it gets, as JSON on stdout.

Run inside the client's network namespace (root: it binds port 68 on one interface):
``ip netns exec NS python dhcp_probe.py --iface IF --mac MAC [--pxe] [--ipxe] [--arch N]``.
Standard library only, so it runs with any Python 3.11 there.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import struct
import time
from typing import Any

MAGIC = b"\x63\x82\x53\x63"
MESSAGE_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 5: "ACK", 6: "NAK"}


def discover(mac: bytes, xid: int, *, pxe: bool, ipxe: bool, arch: int) -> bytes:
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                       bytes(4), mac.ljust(16, b"\0"), b"", b"")
    opts = [(53, b"\x01"), (55, bytes([1, 3, 6, 43, 54, 60, 66, 67, 175]))]
    if pxe:
        opts += [(60, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()), (93, struct.pack("!H", arch)),
                 (94, b"\x01\x02\x01"), (97, b"\x00" + secrets.token_bytes(16))]
    if ipxe:
        opts += [(77, b"iPXE"), (175, b"\x13\x01\x01")]   # 175/19: iPXE "http" feature
    body = b"".join(bytes([code, len(value)]) + value for code, value in opts)
    return head + MAGIC + body + b"\xff"


def parse(data: bytes) -> dict[str, Any] | None:
    if len(data) < 240 or data[236:240] != MAGIC:
        return None
    xid = struct.unpack("!I", data[4:8])[0]
    yiaddr, siaddr = socket.inet_ntoa(data[16:20]), socket.inet_ntoa(data[20:24])
    file = data[108:236].split(b"\0", 1)[0].decode(errors="replace")
    opts: dict[int, bytes] = {}
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        opts[code] = opts.get(code, b"") + data[i + 2:i + 2 + length]
        i += 2 + length
    return {"xid": xid, "type": MESSAGE_TYPES.get(opts.get(53, b"\0")[0], "?"), "yiaddr": yiaddr, "siaddr": siaddr,
            "file": file or opts.get(67, b"").decode(errors="replace"),
            "server": socket.inet_ntoa(opts[54]) if len(opts.get(54, b"")) == 4 else "",
            "vendor_class": opts.get(60, b"").decode(errors="replace"), "has_pxe_options": 43 in opts,
            "ipxe_options": opts.get(175, b"").hex()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--pxe", action="store_true", help="look like a PXE ROM (vendor class PXEClient)")
    ap.add_argument("--ipxe", action="store_true", help="look like iPXE (user class iPXE, option 175)")
    ap.add_argument("--arch", type=int, default=0, help="client architecture (0 BIOS, 7 UEFI x86-64)")
    ap.add_argument("--wait", type=float, default=2.0, help="seconds to collect replies")
    ap.add_argument("--first", action="store_true", help="stop at the first reply")
    args = ap.parse_args()
    mac = bytes.fromhex(args.mac.replace(":", ""))
    xid = secrets.randbits(32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.iface.encode())
        sock.bind(("0.0.0.0", 68))
        sock.sendto(discover(mac, xid, pxe=args.pxe, ipxe=args.ipxe, arch=args.arch), ("255.255.255.255", 67))
        replies = []
        deadline = time.monotonic() + args.wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _peer = sock.recvfrom(4096)
            except TimeoutError:
                break
            reply = parse(data)
            if reply is not None and reply["xid"] == xid:
                replies.append(reply)
                if args.first:
                    break
    print(json.dumps(replies))


if __name__ == "__main__":
    main()
