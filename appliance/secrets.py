"""Encryption at rest for credentials (BMC and switch passwords).

The key is a Fernet key in a file created with mode 0600 on first use. The
boot role never opens it: boot serves no secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from appliance.drivers.protocols import Secret
from appliance.errors import SecretsError
from appliance.store.audit_seal import HEAD_FILE, AuditSeal, derive_key


def ensure_key(path: Path) -> None:
    """Create the key file (0600) unless it exists. Safe against concurrent first starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(Fernet.generate_key())


def read_key(key_path: Path) -> bytes:
    """The key file's bytes, refused when others may read it."""
    try:
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretsError(f"{key_path}: secrets key is readable by others (mode {mode:o}); chmod 600 it")
        return key_path.read_bytes().strip()
    except FileNotFoundError:
        raise SecretsError(f"{key_path}: secrets key not found") from None
    except OSError as exc:
        raise SecretsError(f"{key_path}: unusable secrets key ({exc.__class__.__name__})") from None


def audit_seal(key_path: Path, state_dir: Path) -> AuditSeal:
    """The audit chain's seal: its key derived from the secrets key (created if missing), its
    signed head in the state directory. Both outside the database (appliance.store.audit_seal)."""
    ensure_key(key_path)
    return AuditSeal(derive_key(read_key(key_path)), state_dir / HEAD_FILE)


class SecretBox:
    """Encrypts and decrypts credentials with the appliance key."""

    def __init__(self, key_path: Path, *, create: bool = True) -> None:
        if create:
            ensure_key(key_path)
        try:
            mode = key_path.stat().st_mode & 0o777
            if mode & 0o077:
                raise SecretsError(f"{key_path}: secrets key is readable by others (mode {mode:o}); chmod 600 it")
            self._fernet = Fernet(key_path.read_bytes().strip())
        except FileNotFoundError:
            raise SecretsError(f"{key_path}: secrets key not found") from None
        except (OSError, ValueError) as exc:
            raise SecretsError(f"{key_path}: unusable secrets key ({exc.__class__.__name__})") from None

    def encrypt(self, secret: Secret) -> str:
        return self._fernet.encrypt(secret.reveal().encode()).decode()

    def decrypt(self, token: str) -> Secret:
        try:
            return Secret(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken:
            raise SecretsError("a stored credential cannot be decrypted with this secrets key") from None
