"""Backing files of LUNs: checked against the spec, created once, never rewritten.

A new file appears atomically: it is written under a temporary name of its own beside
its final place, flushed, then hard-linked into place (``link`` never replaces an
existing file, unlike ``rename``), so a crash mid-copy never leaves a half-seeded disk
that a later call would take for the profile's data, and two callers racing to create
the same disk both end up with one and the same file. Seeds are copied with ``cp
--sparse=always --reflink=auto`` in a subprocess: the copy can take minutes for a big
image, must not block the event loop, and keeps holes (and shares extents where the
file system can).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.drivers.protocols import DiskSpec

SECTOR = 512


class BackingError(Exception):
    """The spec is unusable (``fatal``) or the file could not be made (``not fatal``)."""

    def __init__(self, reason: str, *, fatal: bool) -> None:
        super().__init__(reason)
        self.reason, self.fatal = reason, fatal


@dataclass(frozen=True, slots=True)
class CheckedDisk:
    """A DiskSpec with its paths resolved (symlinks followed) and checked."""

    path: Path
    size: int
    seed: Path | None


def _resolved_inside(p: Path, roots: tuple[Path, ...], what: str) -> Path:
    text = str(p)
    if not p.is_absolute():
        raise BackingError(f"{what} {text!r} is not an absolute path", fatal=True)
    if "\n" in text or "\0" in text:
        raise BackingError(f"{what} {text!r} contains a newline or NUL", fatal=True)
    resolved = p.resolve()
    if roots and not any(resolved.is_relative_to(r.resolve()) for r in roots):
        where = ", ".join(str(r) for r in roots)
        raise BackingError(f"{what} {text!r} resolves to {resolved}, outside {where}", fatal=True)
    return resolved


def check(disk: DiskSpec, roots: tuple[Path, ...] = ()) -> CheckedDisk:
    """Validate ``disk`` without touching anything (both paths inside one of ``roots``
    when any are given); raises fatal BackingError."""
    if isinstance(disk.size, bool) or not isinstance(disk.size, int) or disk.size <= 0 or disk.size % SECTOR:
        raise BackingError(f"disk size {disk.size!r} is not a positive multiple of {SECTOR} bytes", fatal=True)
    path = _resolved_inside(disk.path, roots, "backing file")
    seed = _resolved_inside(disk.seed, roots, "seed image") if disk.seed is not None else None
    if seed is not None and seed == path:
        raise BackingError(f"the seed image {disk.seed} is the backing file itself", fatal=True)
    return CheckedDisk(path, disk.size, seed)


def _existing(path: Path) -> bool:
    """True when ``path`` is already a regular file; raises for anything else in the way."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise BackingError(f"cannot stat backing file {path}: {exc.strerror}", fatal=False) from exc
    if not stat.S_ISREG(st.st_mode):
        raise BackingError(f"backing file {path} exists but is not a regular file", fatal=True)
    return True


async def _copy(seed: Path, dest: Path, timeout: float) -> None:
    argv = ["cp", "--sparse=always", "--reflink=auto", "--", str(seed), str(dest)]
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise BackingError(f"cannot run cp: {exc}", fatal=False) from exc
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await proc.wait()
        raise BackingError(f"copying {seed} took longer than {timeout:g}s", fatal=False) from None
    if proc.returncode != 0:
        raise BackingError(f"cp {seed}: {err.decode(errors='replace').strip()}", fatal=False)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_sparse(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _sweep_partials(path: Path, stale_after: float) -> None:
    """Delete temporary files of attempts that died (a crash mid-copy leaves them).

    A live attempt writes its file until it is done or cut off at ``copy_timeout``, so
    one untouched for longer than that belongs to nobody.
    """
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > stale_after:
                tmp.unlink()


async def ensure(disk: CheckedDisk, *, copy_timeout: float) -> bool:
    """Create the backing file unless it exists; True when it was created now.

    Fatal BackingError: a seed missing or larger than the disk, something not a file in
    the way. Non-fatal: the copy or the file system failed (worth another try).
    """
    if _existing(disk.path):
        return False
    if disk.seed is not None:
        try:
            seed_size = disk.seed.stat().st_size
        except OSError as exc:
            raise BackingError(f"seed image {disk.seed}: {exc.strerror}", fatal=True) from exc
        if not disk.seed.is_file():
            raise BackingError(f"seed image {disk.seed} is not a regular file", fatal=True)
        if seed_size > disk.size:
            raise BackingError(f"seed image {disk.seed} ({seed_size} bytes) is larger than the disk "
                               f"({disk.size} bytes)", fatal=True)
    tmp = disk.path.with_name(f".{disk.path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        disk.path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_partials(disk.path, stale_after=copy_timeout + 60)
        if disk.seed is not None:
            await _copy(disk.seed, tmp, copy_timeout)
            os.chmod(tmp, 0o600)   # tenant data: the copy took the seed's (world-readable) mode
            if tmp.stat().st_size < disk.size:
                os.truncate(tmp, disk.size)
        else:
            _new_sparse(tmp, disk.size)
        await asyncio.to_thread(_fsync, tmp)
        try:
            os.link(tmp, disk.path)
        except FileExistsError:
            return False   # someone else created it meanwhile: theirs is the disk now
        await asyncio.to_thread(_fsync, disk.path.parent)
        return True
    except OSError as exc:
        raise BackingError(f"cannot create backing file {disk.path}: {exc}", fatal=False) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
