"""TFTP for the iPXE binaries only (tftpy, which blocks, in a thread).

Served names are the plain file names of ``IPXE_BINARIES`` inside the root directory;
anything else (paths, ``..``, absolute names, symlinks leaving the root, uploads) is
refused. tftpy's own root is an empty private directory, so every read goes through
:meth:`TftpService._open`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import tftpy

log = logging.getLogger(__name__)

IPXE_SOURCE = Path("/usr/lib/ipxe")
IPXE_BINARIES = ("undionly.kpxe", "ipxe.efi", "snponly.efi")


def install_binaries(root: Path, source: Path = IPXE_SOURCE) -> list[str]:
    """Copy the iPXE binaries (Debian package ``ipxe``) into ``root``; the names copied."""
    root.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in IPXE_BINARIES:
        src = source / name
        if src.is_file():
            dst = root / name
            tmp = root / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            copied.append(name)
    return copied


def open_binary(root: Path, requested: str) -> IO[bytes] | None:
    """The requested iPXE binary opened for reading, or None if it is not one we serve."""
    name = requested.strip()
    if name not in IPXE_BINARIES:
        return None
    try:
        real_root = root.resolve(strict=True)
        path = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if path.parent != real_root or not path.is_file():
        return None
    return path.open("rb")


class TftpService:
    """A tftpy server in a daemon thread: ``start()`` returns the bound port; ``stop()`` joins it."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 69,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        self.root = root
        # (file, outcome) per read request: file is an iPXE binary's name or "other" (a label value
        # per name asked would let any client on the provisioning network grow the metrics).
        self.on_request = on_request
        self.host = host
        self.port = port
        self._empty = tempfile.TemporaryDirectory(prefix="anvil-tftp-")
        self._server = tftpy.TftpServer(self._empty.name, dyn_file_func=self._open, upload_open=self._refuse_upload)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open(self, requested: str, raddress: str = "?", **_peer: Any) -> IO[bytes] | None:
        f = open_binary(self.root, requested)
        if self.on_request is not None:
            name = requested.strip()
            self.on_request(name if name in IPXE_BINARIES else "other", "refused" if f is None else "sent")
        if f is None:
            log.warning("TFTP: refused %r from %s", requested, raddress)
        else:
            # One line per boot: where a blade stuck before iPXE starts, this says whether it got that far.
            log.info("TFTP: sending %s to %s", requested.strip(), raddress)
        return f

    @staticmethod
    def _refuse_upload(path: str, _context: Any) -> None:
        log.warning("TFTP: refused an upload to %r", path)
        return None

    def _run(self) -> None:
        try:
            self._server.listen(self.host, self.port, timeout=2)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._server.is_running.set()

    def start(self, timeout: float = 5.0) -> int:
        self._thread = threading.Thread(target=self._run, name="anvil-tftp", daemon=True)
        self._thread.start()
        if not self._server.is_running.wait(timeout):
            raise RuntimeError("the TFTP server did not start")
        if self._error is not None:
            raise RuntimeError(f"the TFTP server did not start: {self._error}") from self._error
        port: int = self._server.listenport
        return port

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._server.stop(now=True)
            self._thread.join(timeout)
            self._thread = None
        self._empty.cleanup()
