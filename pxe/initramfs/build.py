#!/usr/bin/env python3
"""Build the VM lab's boot image: a gzip'd newc cpio initramfs whose /init is the lab agent.

    build.py --modules-dir /…/lib/modules/6.1.0-56-amd64 --out initrd.img [--no-iscsi] [--module NAME …]

Contents: static busybox (+ one symlink per applet), ``init.sh`` as ``/init``,
``udhcpc.sh``, ``acpi-power.sh`` (busybox acpid's power-button action), the kernel
modules the lab needs with their dependencies (read from each ``.ko``'s ``.modinfo``
``depends=``, since Debian's package ships no ``modules.dep``), their load order in
``/etc/anvil/modules``, and ``iscsistart`` with the shared libraries ``ldd`` lists
(``--no-iscsi`` leaves it out: ~1.3 MB instead of ~5.2 MB).

Standalone on purpose (stdlib only, no appliance import): it also runs from a source
tree or a wheel's ``_assets/pxe`` on a build host. Runs as any user: device nodes are
written into the archive, not created on disk. Takes about a second.

Exit status 0 on success, 2 with one ``build.py: …`` line on stderr otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
import os
import stat
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# button + evdev: the ACPI power button reaches busybox acpid (IPMI soft off shuts the image down)
BASE_MODULES = ("af_packet", "virtio_net", "virtio_pci", "e1000", "button", "evdev")
# crc32c_generic is a crypto-API dependency of iscsi_tcp that is not in its depends=;
# without it the login fails with "crc32c loading error" (lab/boot-vm.md §3c).
ISCSI_MODULES = ("crc32c_generic", "iscsi_tcp", "iscsi_ibft", "sd_mod")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
ISCSISTART_CANDIDATES = ("/usr/sbin/iscsistart", "/sbin/iscsistart")
PT_INTERP = 3


class BuildError(Exception):
    """Something the image needs is missing or unreadable; the message says what."""


# ---- ELF: just enough to read a module's .modinfo and spot a dynamic binary ----------


def _elf_header(data: bytes, what: str) -> None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{what} is not a 64-bit little-endian ELF file")


def modinfo(data: bytes, what: str) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's ``.modinfo`` section, values grouped by key."""
    _elf_header(data, what)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name_off, offset, size = section(i)
        end = data.index(b"\0", str_off + name_off)
        if data[str_off + name_off:end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for entry in data[offset:offset + size].split(b"\0"):
                key, sep, value = entry.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    raise BuildError(f"{what} has no .modinfo section (not a kernel module?)")


def is_static(data: bytes, what: str) -> bool:
    _elf_header(data, what)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != PT_INTERP for i in range(phnum))


# ---- kernel modules ---------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return _norm(name.removesuffix(".ko"))


def index_modules(modules_dir: Path) -> tuple[dict[str, Path], set[str]]:
    """({module name: .ko path}, names built into the kernel)."""
    if not (modules_dir / "kernel").is_dir():
        raise BuildError(f"{modules_dir} has no kernel/ folder (pass lib/modules/ABI of an unpacked kernel)")
    found = {_module_name(p): p for p in (modules_dir / "kernel").rglob("*.ko*") if p.is_file()}
    builtin: set[str] = set()
    with_builtin = modules_dir / "modules.builtin"
    if with_builtin.is_file():
        builtin = {_module_name(Path(line.strip())) for line in with_builtin.read_text().splitlines() if line.strip()}
    return found, builtin


def read_module(path: Path) -> bytes:
    """The module's ELF bytes; busybox insmod cannot decompress, so .ko.xz is unpacked here."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith((".zst", ".gz")):
        raise BuildError(f"{path}: compressed modules other than .xz are not supported")
    return data


def resolve_modules(wanted: Iterable[str], found: dict[str, Path], builtin: set[str]) -> list[tuple[str, bytes]]:
    """``wanted`` plus dependencies, dependencies first, each once; built-in ones skipped."""
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = found.get(name)
        if path is None:
            via = f" (needed by {chain[-1]})" if chain else ""
            raise BuildError(f"module {name}{via} is neither a .ko under kernel/ nor built in")
        data = read_module(path)
        for dep_list in modinfo(data, str(path)).get("depends", []):
            for dep in filter(None, dep_list.split(",")):
                visit(_norm(dep.strip()), (*chain, name))
        done.add(name)
        order.append((name, data))

    for name in wanted:
        visit(_norm(name), ())
    return order


# ---- shared libraries -------------------------------------------------------------------


def shared_libs(binary: Path) -> list[Path]:
    """The libraries and the loader ``ldd`` lists for ``binary`` (absolute paths as the loader sees them)."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"ldd {binary} failed: {exc}") from exc
    libs: list[Path] = []
    for line in out.splitlines():
        words = line.split()
        if "=>" in words:
            target = words[words.index("=>") + 1]
            if target.startswith("/"):
                libs.append(Path(target))
            elif target == "not":
                raise BuildError(f"{binary}: library {words[0]} not found (ldd)")
        elif words and words[0].startswith("/"):
            libs.append(Path(words[0]))
    return libs


# ---- cpio (newc) ------------------------------------------------------------------------


class Cpio:
    """A newc archive built in memory; parents of every entry are added as directories."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/") or "."
        if name in self.names:
            return
        self.names.add(name)
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def _parents(self, name: str) -> None:
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def dir(self, name: str) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


# ---- the image ----------------------------------------------------------------------------


def _first_existing(candidates: Iterable[str], what: str) -> Path:
    for c in candidates:
        if Path(c).is_file():
            return Path(c)
    raise BuildError(f"{what} not found (looked in {', '.join(candidates)})")


def build(modules_dir: Path, *, busybox: Path | None = None, iscsistart: Path | None = None,
          iscsi: bool = True, extra_modules: Iterable[str] = ()) -> bytes:
    """The gzip'd initramfs as bytes."""
    bb = busybox or _first_existing(BUSYBOX_CANDIDATES, "busybox (apt-get install busybox-static)")
    bb_data = bb.read_bytes()
    if not is_static(bb_data, str(bb)):
        raise BuildError(f"{bb} is dynamically linked; the image needs busybox-static")
    found, builtin = index_modules(modules_dir)
    wanted = [*BASE_MODULES, *(ISCSI_MODULES if iscsi else ()), *extra_modules]
    modules = resolve_modules(wanted, found, builtin)

    img = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc/anvil", "lib/modules", "mnt"):
        img.dir(d)
    img.chardev("dev/console", 5, 1)   # the kernel opens it for /init before devtmpfs is mounted
    img.file("bin/busybox", bb_data, 0o755)
    try:
        applets = subprocess.run([str(bb), "--list-full"], capture_output=True, text=True, timeout=10,
                                 check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"{bb} --list-full failed: {exc}") from exc
    for applet in applets:
        if applet.strip("/") not in ("bin/busybox", "init", "linuxrc"):
            img.symlink(applet, "/bin/busybox")
    img.file("init", (HERE / "init.sh").read_bytes(), 0o755)
    img.file("etc/anvil/udhcpc.sh", (HERE / "udhcpc.sh").read_bytes(), 0o755)
    img.file("etc/acpi/PWRF/00000080", (HERE / "acpi-power.sh").read_bytes(), 0o755)
    for name, data in modules:
        img.file(f"lib/modules/{name}.ko", data)
    img.file("etc/anvil/modules", "".join(f"{name}\n" for name, _ in modules).encode())
    if iscsi:
        tool = iscsistart or _first_existing(ISCSISTART_CANDIDATES, "iscsistart (apt-get install open-iscsi)")
        img.file("usr/sbin/iscsistart", tool.read_bytes(), 0o755)
        for lib in shared_libs(tool):
            img.file(str(lib), lib.resolve().read_bytes(), 0o755)
        img.file("etc/iscsi/initiatorname.iscsi", b"")  # iscsistart -b takes the name from the iBFT
    img.file("etc/anvil/build-info", f"modules-dir={modules_dir}\niscsi={int(iscsi)}\n".encode())
    return gzip.compress(img.finish(), compresslevel=6, mtime=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules-dir", required=True, type=Path, help="lib/modules/ABI of the guest kernel")
    ap.add_argument("--out", required=True, type=Path, help="where to write the gzip'd cpio")
    ap.add_argument("--busybox", type=Path, help="a STATIC busybox (default: /bin/busybox)")
    ap.add_argument("--iscsistart", type=Path, help="default: /usr/sbin/iscsistart")
    ap.add_argument("--no-iscsi", action="store_true", help="leave out iscsistart and the iSCSI modules")
    ap.add_argument("--module", action="append", default=[], help="one more module to load (repeatable)")
    args = ap.parse_args(argv)
    try:
        data = build(args.modules_dir, busybox=args.busybox, iscsistart=args.iscsistart,
                     iscsi=not args.no_iscsi, extra_modules=args.module)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.build")
        tmp.write_bytes(data)
        os.replace(tmp, args.out)
    except (BuildError, OSError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    print(f"build.py: wrote {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
