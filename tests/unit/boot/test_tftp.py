"""TFTP serves the iPXE binaries and nothing else, checked with tftpy's own client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import tftpy

from appliance.boot.tftp import IPXE_BINARIES, IPXE_SOURCE, TftpService, install_binaries

pytestmark = pytest.mark.skipif(not (IPXE_SOURCE / "undionly.kpxe").is_file(),
                                reason="apt package ipxe is not installed")


@pytest.fixture(scope="module")
def tftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TftpService, int, Path]]:
    tmp_path = tmp_path_factory.mktemp("tftp")
    root = tmp_path / "tftp"
    assert install_binaries(root) == list(IPXE_BINARIES)
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "ipxe.efi.link")
    svc = TftpService(root, host="127.0.0.1", port=0)
    port = svc.start()
    try:
        yield svc, port, tmp_path
    finally:
        svc.stop()


def _get(port: int, name: str, out: Path) -> bytes:
    client = tftpy.TftpClient("127.0.0.1", port)
    client.download(name, str(out), timeout=2, retries=1)
    return out.read_bytes()


@pytest.mark.parametrize("name", IPXE_BINARIES)
def test_downloads_each_ipxe_binary(tftp: tuple[TftpService, int, Path], name: str) -> None:
    _svc, port, tmp = tftp
    assert _get(port, name, tmp / f"got-{name}") == (IPXE_SOURCE / name).read_bytes()


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/passwd", "..\\secret.txt", "ipxe.efi.link",
                                  "sub/../ipxe.efi", "/ipxe.efi", "missing.efi", "ipxe.lkrn"])
def test_refuses_everything_else(tftp: tuple[TftpService, int, Path], name: str) -> None:
    _svc, port, tmp = tftp
    with pytest.raises(tftpy.TftpException):
        _get(port, name, tmp / "out.bin")
    assert not (tmp / "out.bin").exists() or b"top secret" not in (tmp / "out.bin").read_bytes()


def test_symlink_out_of_root_is_refused_even_under_a_served_name(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    root.mkdir()
    (tmp_path / "outside.efi").write_bytes(b"not ipxe")
    os.symlink(tmp_path / "outside.efi", root / "ipxe.efi")
    svc = TftpService(root, host="127.0.0.1", port=0)
    port = svc.start()
    try:
        with pytest.raises(tftpy.TftpException):
            _get(port, "ipxe.efi", tmp_path / "out.bin")
    finally:
        svc.stop()


def test_uploads_are_refused(tftp: tuple[TftpService, int, Path]) -> None:
    _svc, port, tmp = tftp
    src = tmp / "upload.bin"
    src.write_bytes(b"x" * 100)
    client = tftpy.TftpClient("127.0.0.1", port)
    with pytest.raises(tftpy.TftpException):
        client.upload("undionly.kpxe", str(src), timeout=2, retries=1)
    assert (tmp / "tftp" / "undionly.kpxe").read_bytes() == (IPXE_SOURCE / "undionly.kpxe").read_bytes()


def test_each_read_request_is_reported_by_file_and_outcome(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    install_binaries(root)
    seen: list[tuple[str, str]] = []
    svc = TftpService(root, host="127.0.0.1", port=0, on_request=lambda f, outcome: seen.append((f, outcome)))
    port = svc.start()
    try:
        _get(port, "ipxe.efi", tmp_path / "got.efi")
        for name in ("missing.efi", "ipxe.lkrn"):   # (tftpy itself drops paths leaving its root)
            with pytest.raises(tftpy.TftpException):
                _get(port, name, tmp_path / "out.bin")
    finally:
        svc.stop()
    # A name that is not an iPXE binary is "other": a client cannot add a label value per name it asks.
    assert seen == [("ipxe.efi", "sent"), ("other", "refused"), ("other", "refused")]
