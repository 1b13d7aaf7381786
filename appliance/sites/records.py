"""Replication records: versioned and signed, checked before anything is applied.

A record is one object of one kind (a profile, a template…) as the origin site has it now,
or its deletion. ``seq`` is its position in the origin's stream to this target, and the
record's version: the receiver applies records strictly in order, so a record whose seq is
not the next one is refused, whether it repeats or goes back (a replay) or skips ahead (a
gap). The signature is HMAC-SHA256, with the key the two sites agreed at pairing, over the
canonical JSON of every field, origin and target included: a record cannot be redirected
to another site or passed off as coming from the target itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from appliance.errors import AnvilError

OPS = ("put", "delete")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    """What the sender compares to notice a change: SHA-256 of the canonical JSON."""
    return hashlib.sha256(canonical(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    origin: str
    target: str
    seq: int
    kind: str
    key: str
    op: str                     # put | delete
    data: dict[str, Any] | None
    at: str                     # ISO time the origin made it (for the lag)
    sig: str = ""

    def signed_part(self) -> dict[str, Any]:
        return {"origin": self.origin, "target": self.target, "seq": self.seq, "kind": self.kind,
                "key": self.key, "op": self.op, "data": self.data, "at": self.at}

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_part(), "sig": self.sig}

    @property
    def label(self) -> str:
        return f"record {self.seq} ({self.kind} {self.key})"


def sign(key: bytes, record: Record) -> Record:
    mac = hmac.new(key, canonical(record.signed_part()), hashlib.sha256).hexdigest()
    return Record(**{**record.signed_part(), "sig": mac})


def verifies(key: bytes, record: Record) -> bool:
    want = hmac.new(key, canonical(record.signed_part()), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, record.sig)


class RecordRefused(AnvilError):
    """A record the receiver will not apply; ``last_applied`` is its stream position from the origin
    (a sender that lost an acknowledgement resumes after it)."""

    def __init__(self, message: str, *, reason: str, last_applied: int) -> None:
        self.reason = reason        # signature | replay | gap | kind | target | apply
        self.last_applied = last_applied
        super().__init__(message)


def parse(raw: Any, where: str) -> Record:
    """A record from JSON, or ValueError naming what is wrong and where."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: is not an object")
    fields = {"origin": str, "target": str, "seq": int, "kind": str, "key": str, "op": str, "at": str, "sig": str}
    for name, typ in fields.items():
        value = raw.get(name)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ValueError(f"{where}.{name}: is missing or not a {typ.__name__}")
    extra = set(raw) - set(fields) - {"data"}
    if extra:
        raise ValueError(f"{where}: unknown fields {', '.join(sorted(extra))}")
    if raw["op"] not in OPS:
        raise ValueError(f"{where}.op: {raw['op']!r} is not put or delete")
    data = raw.get("data")
    if raw["op"] == "put" and not isinstance(data, dict):
        raise ValueError(f"{where}.data: a put carries an object")
    if raw["op"] == "delete" and data is not None:
        raise ValueError(f"{where}.data: a delete carries none")
    if raw["seq"] < 1:
        raise ValueError(f"{where}.seq: must be 1 or more")
    return Record(raw["origin"], raw["target"], raw["seq"], raw["kind"], raw["key"], raw["op"], data, raw["at"],
                  raw["sig"])


def check_next(record: Record, last_applied: int) -> None:
    """Refuse ``record`` unless it is the next one of its stream."""
    if record.seq <= last_applied:
        raise RecordRefused(f"{record.label} from site {record.origin} is a replay: its version {record.seq} "
                            f"repeats or goes back (last applied: {last_applied})", reason="replay",
                            last_applied=last_applied)
    if record.seq != last_applied + 1:
        raise RecordRefused(f"{record.label} from site {record.origin} skips ahead: expected version "
                            f"{last_applied + 1}", reason="gap", last_applied=last_applied)
