"""The identities a profile holds: concrete claims, pool references, and filling refs in.

Paths are the document paths (``spec.identity.nics[1].mac``); the allocator keys its
results by them and hands them back to :func:`with_identities`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.domain.identities import IdentityKind, is_pool_ref, parse_pool_ref
from appliance.domain.profile.document import format_path, from_dict, to_dict
from appliance.domain.profile.model import Profile
from appliance.errors import Issue, ValidationError

_IDENTITY_LOC = ("spec", "identity")
_SEGMENT = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class IdentityClaim:
    """A concrete identity the profile holds, at ``path``."""

    kind: IdentityKind
    value: str
    path: str


@dataclass(frozen=True, slots=True)
class PoolRef:
    """An identity still to be allocated from pool ``pool`` (the name, without ``pool:``)."""

    kind: IdentityKind
    pool: str
    path: str


def claimed_identities(p: Profile) -> list[IdentityClaim]:
    """Concrete identities (UUID, initiator IQN, NIC MACs, HBA WWPNs and WWNNs), in document order,
    then the iSCSI boot target's IQN: tgt's access lists are per target, so two profiles on
    one target would each be let into the other's LUN."""
    out = [
        IdentityClaim(kind, value, format_path(_IDENTITY_LOC + loc))
        for kind, value, loc in p.spec.identity.located()
        if not is_pool_ref(value)
    ]
    src = p.spec.boot.source if p.spec.boot else None
    if src is not None and src.type == "iscsi":
        out.append(IdentityClaim(IdentityKind.IQN, str(src.target), "spec.boot.source.target"))
    return out


def pool_refs(p: Profile) -> list[PoolRef]:
    """Identities given as ``pool:<name>``, in document order."""
    return [
        PoolRef(kind, parse_pool_ref(value), format_path(_IDENTITY_LOC + loc))
        for kind, value, loc in p.spec.identity.located()
        if is_pool_ref(value)
    ]


def _set(data: dict[str, Any], path: str, value: str) -> None:
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if not m:
            raise ValueError(f"bad path {path!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    node: Any = data
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def with_identities(p: Profile, values: Mapping[str, str]) -> Profile:
    """A new Profile where each pool reference at a path in ``values`` is replaced by its value.

    Raises ValidationError if a path is not a pool reference of ``p`` or a value is not a
    valid identity of its kind (or duplicates another identity of the profile).
    """
    refs = {ref.path for ref in pool_refs(p)}
    wrong = [Issue(path, "is not a pool reference in this profile") for path in values if path not in refs]
    if wrong:
        raise ValidationError(wrong, source=p.metadata.name)
    data = to_dict(p)
    for path, value in values.items():
        _set(data, path, value)
    return from_dict(data, source=p.metadata.name)
