"""The audit trail's seal: a key outside the database, and a signed head outside it too.

Against someone who can write ``anvil.db`` (or the PostgreSQL database) but cannot read
``secrets.key``:

- Each entry's ``hash`` is an HMAC-SHA256, keyed with a key derived from the secrets key,
  over the previous entry's hash and the entry's fields. Editing an entry and recomputing
  the chain needs the key; so does inserting one.
- The *head* — how many entries there are, and the id and hash of the newest — is written
  after every commit that adds entries to ``audit.head`` in the state directory, with its
  own HMAC. Cutting off the newest entries (which leaves a perfectly valid shorter chain)
  no longer matches the head.

:func:`verify` checks both. Entries written before the chain was keyed (``keyed`` false)
are checked with the old unkeyed SHA-256 and must all come before the first keyed entry.
What it cannot catch: someone who can also write the state directory can put back an
older head together with a truncated database (a rollback to an earlier, genuine state);
copy ``audit.head`` off the machine (``anvil audit verify`` prints it) to pin a point.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
PURPOSE = b"anvil audit chain v1"
HEAD_FILE = "audit.head"


def canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def unkeyed_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The chain before it was keyed (entries with ``keyed`` false)."""
    return hashlib.sha256((prev_hash + canonical(fields)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    count: int
    last_id: int
    last_hash: str


class _Heads:
    """What this process knows of the head: the newest it committed, and the newest it wrote."""

    def __init__(self) -> None:
        self.lock = threading.Lock()       # guards the two heads below
        self.writing = threading.Lock()    # this process's writers of the file, one at a time
        self.committed: Head | None = None
        self.written: Head | None = None


@dataclass(frozen=True, slots=True)
class AuditSeal:
    """The key (never stored in the database) and the signed head's file."""

    key: bytes
    head_path: Path
    _heads: _Heads = field(default_factory=_Heads, compare=False, repr=False)

    def committed(self, head: Head) -> None:
        """Note ``head`` as committed by this process (called in the commit, before the file is written)."""
        with self._heads.lock:
            if self._heads.committed is None or self._heads.committed.last_id < head.last_id:
                self._heads.committed = head

    def last_committed(self) -> Head | None:
        """The newest head this process committed: the next entry's count without reading the file."""
        return self._heads.committed

    def entry_hash(self, prev_hash: str, fields: dict[str, Any]) -> str:
        return hmac.new(self.key, (prev_hash + canonical(fields)).encode(), hashlib.sha256).hexdigest()

    def _head_mac(self, head: Head) -> str:
        text = f"{head.count}:{head.last_id}:{head.last_hash}"
        return hmac.new(self.key, b"head:" + text.encode(), hashlib.sha256).hexdigest()

    def read_head(self) -> Head | None:
        """The signed head; None when there is none. ValueError when it is there but does not verify."""
        try:
            raw = json.loads(self.head_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.head_path} is unreadable ({exc.__class__.__name__})") from None
        try:
            head = Head(int(raw["count"]), int(raw["lastId"]), str(raw["lastHash"]))
            mac = str(raw["mac"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{self.head_path} is not an audit head") from None
        if not hmac.compare_digest(mac, self._head_mac(head)):
            raise ValueError(f"{self.head_path}: its signature does not match (edited, or another appliance's)")
        return head

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.head_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.head_path.with_name(HEAD_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def advance(self, head: Head) -> None:
        """Write ``head`` unless the file already names a newer entry: commits of several processes
        can finish in any order, and the head only moves forward. Threads of one process take
        turns, and each writes the newest head the process committed: of sixteen requests that
        committed together one or two write the file and the others find their entries in it."""
        with self._heads.writing:
            written = self._heads.written
            if written is not None and written.last_id >= head.last_id:
                return   # a newer head is in the file already
            newest = self._heads.committed
            self._advance(newest if newest is not None and newest.last_id > head.last_id else head)

    def _advance(self, head: Head) -> None:
        with self._locked():
            try:
                current = self.read_head()
            except ValueError:
                current = None      # a broken head is replaced; verify reports the chain, not the file
            if current is not None and current.last_id >= head.last_id:
                return
            body = {"count": head.count, "lastId": head.last_id, "lastHash": head.last_hash,
                    "mac": self._head_mac(head)}
            tmp = self.head_path.with_name(f".{HEAD_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            # No fsync: the head is as durable as the SQLite commits it follows (synchronous=NORMAL),
            # so a power cut cannot leave it naming entries the database lost.
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(body) + "\n")
            tmp.replace(self.head_path)
            with self._heads.lock:
                if self._heads.written is None or self._heads.written.last_id < head.last_id:
                    self._heads.written = head


def derive_key(secret: bytes) -> bytes:
    """The chain's key, from the appliance's secrets key (one file to keep safe and back up)."""
    return hmac.new(secret, PURPOSE, hashlib.sha256).digest()
