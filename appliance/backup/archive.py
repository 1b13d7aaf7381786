"""The encrypted container of a backup: one file, readable only with its passphrase.

Layout: ``ANVIL-BACKUP\\n``, one JSON header line (format version, scrypt parameters, salt,
nonce), then AES-256-GCM ciphertext of the payload with the header as associated data, so a
changed header is caught like a changed payload. The key comes from the passphrase through
scrypt (n=2**15, r=8, p=1: about 0.1 s and 32 MiB), so the secrets key inside is wrapped by
the passphrase and nothing else.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.errors import BackupError

MAGIC = b"ANVIL-BACKUP\n"
FORMAT = 1
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PASSPHRASE = 8


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal(payload: bytes, passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the backup passphrase is too short (at least {MIN_PASSPHRASE} characters)")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps({"format": FORMAT, "kdf": "scrypt", **SCRYPT, "cipher": "aes-256-gcm",
                         "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode()},
                        sort_keys=True).encode()
    key = _key(passphrase, salt, **SCRYPT)
    return MAGIC + header + b"\n" + AESGCM(key).encrypt(nonce, payload, header)


def open_sealed(path: Path, passphrase: str) -> bytes:
    """The payload; BackupError naming the file when it is no backup, damaged, or the passphrase is wrong."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise BackupError(f"{path}: not an Anvil backup archive")
    header, sep, body = data[len(MAGIC):].partition(b"\n")
    try:
        meta = json.loads(header)
        if meta.get("format") != FORMAT or meta.get("kdf") != "scrypt":
            raise BackupError(f"{path}: backup format {meta.get('format')!r} is not one this version reads")
        salt = base64.b64decode(meta["salt"])
        nonce = base64.b64decode(meta["nonce"])
        n, r, p = int(meta["n"]), int(meta["r"]), int(meta["p"])
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"{path}: damaged backup header") from None
    if not sep or not 2**10 <= n <= 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise BackupError(f"{path}: damaged backup header")
    try:
        return AESGCM(_key(passphrase, salt, n, r, p)).decrypt(nonce, body, header)
    except InvalidTag:
        raise BackupError(f"{path}: wrong backup passphrase (or the archive is damaged)") from None
