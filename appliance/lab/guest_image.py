"""The VM lab's boot image: Debian's kernel and our busybox initramfs, under ``images/lab/``.

``ensure_lab_image(images_dir, cache_dir)`` makes ``images_dir/lab/vmlinuz`` and
``images_dir/lab/initrd.img`` exist and returns them relative to ``images_dir``
(``("lab/vmlinuz", "lab/initrd.img")``), the form profiles and the boot service use
(DESIGN §7).

The guest kernel comes from the Debian archive without being installed on the host:
``apt-cache depends linux-image-amd64`` names the ABI package, ``apt-get download``
fetches it into ``cache_dir`` and ``dpkg-deb -x`` unpacks it there (~70 MB download,
~400 MB unpacked, a few seconds). An unpacked kernel is reused: the archive is not
asked again while ``cache_dir/kernel/PKG/.unpacked`` exists. The initramfs is rebuilt
by ``pxe/initramfs/build.py`` only when its inputs changed (a stamp beside it holds
their digest), so a warm call takes milliseconds and runs no command.

Concurrent callers (pytest-xdist workers, ``anvil lab up`` while a test runs) are
serialised by an exclusive ``flock``: on ``cache_dir/.lock`` for the download, on
``images_dir/lab/.lock`` for the build; outputs are written to a temporary name and
renamed, so a reader never sees half a file.

Errors: :class:`LabImageError` (a :class:`~appliance.lab.rack.LabError`) naming the
command or file that failed; never retryable except a failed download.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from appliance.assets import asset_dir
from appliance.lab.rack import LabError

KERNEL_META = "linux-image-amd64"
LAB_SUBDIR = "lab"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
_UNPACKED = ".unpacked"
_LOCK_WAIT = 600.0   # a cold download + unpack on a slow mirror; a warm call holds the lock for ms


class LabImageError(LabError):
    """The lab image could not be made; the message names the step and what failed."""

    def __init__(self, step: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"lab image: {step}: {message}")
        self.step = step
        self.retryable = retryable


def _run(step: str, argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 300.0) -> str:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise LabImageError(step, f"{argv[0]} is not installed (Debian/Ubuntu host with apt needed)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabImageError(step, f"{' '.join(argv)}: no result within {timeout:g}s", retryable=True) from exc
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip()[-800:]
        raise LabImageError(step, f"{' '.join(argv)}: exit {res.returncode}: {tail}",
                            retryable=step == "download")
    return res.stdout


def kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on, e.g. ``linux-image-6.1.0-56-amd64``."""
    out = _run("find kernel package", ["apt-cache", "depends", KERNEL_META], timeout=60)
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        name = value.strip()
        if key.strip().lstrip("|") == "Depends" and name.startswith("linux-image-") and name != KERNEL_META:
            return name
    raise LabImageError("find kernel package", f"`apt-cache depends {KERNEL_META}` names no linux-image-* "
                        f"package (run apt-get update?): {out.strip()[:300]!r}")


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "a+") as fh:
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabImageError("lock", f"{cache_dir}/.lock held by another process for "
                                        f"{_LOCK_WAIT:g}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cached_kernels(cache_dir: Path) -> list[str]:
    """Kernel packages already unpacked in ``cache_dir``, most recently unpacked last."""
    marks = sorted((cache_dir / "kernel").glob(f"*/{_UNPACKED}"), key=lambda p: p.stat().st_mtime)
    return [m.parent.name for m in marks]


def unpacked_kernel(cache_dir: Path, package: str | None = None) -> Path:
    """Download and unpack the kernel package once; returns the unpack root (has boot/ and lib/modules/).

    Without ``package``, a kernel already in the cache is used as is (the archive is not
    asked); only an empty cache asks ``apt-cache`` which one is current.
    """
    cached = cached_kernels(cache_dir)
    pkg = package or (cached[-1] if cached else kernel_package())
    if "/" in pkg or not pkg.startswith("linux-image-"):
        raise LabImageError("find kernel package", f"{pkg!r} is not a linux-image-* package name")
    pkg_dir = cache_dir / "kernel" / pkg
    root = pkg_dir / "root"
    if (pkg_dir / _UNPACKED).is_file():
        return root
    if pkg_dir.exists():  # an interrupted earlier attempt
        shutil.rmtree(pkg_dir)
    pkg_dir.mkdir(parents=True)
    _run("download", ["apt-get", "download", pkg], cwd=pkg_dir, timeout=600)
    debs = sorted(pkg_dir.glob(f"{pkg}_*.deb"))
    if not debs:
        raise LabImageError("download", f"apt-get download {pkg} left no .deb in {pkg_dir}")
    _run("unpack", ["dpkg-deb", "-x", str(debs[-1]), str(root)], timeout=600)
    for deb in debs:
        deb.unlink()  # 70 MB we never read again
    (pkg_dir / _UNPACKED).write_text(pkg + "\n")
    return root


def _kernel_files(root: Path) -> tuple[Path, Path]:
    """(vmlinuz, lib/modules/ABI) inside an unpacked kernel package."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabImageError("unpack", f"expected one boot/vmlinuz-* in {root}, found {[k.name for k in kernels]}")
    abi = kernels[0].name.removeprefix("vmlinuz-")
    modules = root / "lib" / "modules" / abi
    if not modules.is_dir():
        raise LabImageError("unpack", f"no {modules} beside {kernels[0].name}")
    return kernels[0], modules


def initramfs_dir() -> Path:
    """``pxe/initramfs`` (checkout) or its copy in the wheel."""
    path = asset_dir("pxe") / "initramfs"
    if not (path / "build.py").is_file():
        raise LabImageError("find build script", f"{path}/build.py is missing (incomplete install?)")
    return path


def _inputs_digest(recipe: Path, vmlinuz: Path) -> str:
    digest = hashlib.sha256(vmlinuz.name.encode())
    for path in sorted(p for p in recipe.iterdir() if p.is_file() and p.suffix in (".py", ".sh")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for tool in ("busybox", "iscsistart"):
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found:
            st = os.stat(found)
            digest.update(f"{found}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def ensure_lab_image(images_dir: Path, cache_dir: Path, *, kernel_pkg: str | None = None) -> tuple[str, str]:
    """Make ``images_dir/lab/vmlinuz`` and ``images_dir/lab/initrd.img``; return them relative to ``images_dir``.

    Idempotent: a warm cache (kernel unpacked, stamp matching) does no work. Needs
    ``apt-cache``, ``apt-get`` and ``dpkg-deb`` on a cold cache, and ``busybox``
    (static) and ``iscsistart`` always. Raises LabImageError naming the failed step.
    """
    out_dir = images_dir / LAB_SUBDIR
    kernel_out, initrd_out = out_dir / KERNEL_NAME, out_dir / INITRD_NAME
    stamp = out_dir / ".initrd.stamp"
    recipe = initramfs_dir()
    with _locked(cache_dir):
        root = unpacked_kernel(cache_dir, kernel_pkg)
    vmlinuz, modules = _kernel_files(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A lock per output folder, not the cache's: one worker's build must not stall another's warm call.
    with _locked(out_dir):
        want = _inputs_digest(recipe, vmlinuz)
        fresh = (kernel_out.is_file() and initrd_out.is_file() and stamp.is_file()
                 and stamp.read_text().strip() == want)
        if not fresh:
            _copy_atomic(vmlinuz, kernel_out)
            tmp = out_dir / f".{INITRD_NAME}.{os.getpid()}.tmp"
            _run("build initramfs", [sys.executable, str(recipe / "build.py"), "--modules-dir", str(modules),
                                     "--out", str(tmp)], timeout=120)
            os.replace(tmp, initrd_out)
            stamp.write_text(want + "\n")
    return f"{LAB_SUBDIR}/{KERNEL_NAME}", f"{LAB_SUBDIR}/{INITRD_NAME}"
