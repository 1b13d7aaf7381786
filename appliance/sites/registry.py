"""Which kinds of records replicate, and how each is exported at the origin and applied at
the target. Pluggable: a module adds its kind with :meth:`Registry.with_kind` (DR plans do)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.store.tables import ReplicationAppliedRow


@dataclass(frozen=True, slots=True)
class ApplyContext:
    """Who a record came from, for the kind applying it."""

    origin: str       # the origin site's name (profiles land with site_lease = origin)
    site_id: int

    def is_replica(self, session: Session, kind: str, key: str) -> bool:
        """Whether ``kind``/``key`` here came from the origin (not this site's own object)."""
        return session.get(ReplicationAppliedRow, (self.site_id, kind, key)) is not None


# key → the record's data, for every object of the kind this site owns (never a replica).
Export = Callable[[Session], dict[str, dict[str, Any]]]
# Apply one record: data None is a deletion. Raise AnvilError to refuse it (nothing is applied).
Apply = Callable[[Session, ApplyContext, str, dict[str, Any] | None], None]


@dataclass(frozen=True, slots=True)
class RecordKind:
    name: str
    export: Export
    apply: Apply


def replica_keys(session: Session, kind: str) -> set[str]:
    """Keys of ``kind`` that are replicas from any site: an export leaves them out, so a record is
    never sent back where it came from."""
    return set(session.scalars(select(ReplicationAppliedRow.key).where(ReplicationAppliedRow.kind == kind)))


class Registry:
    """Kinds in export order (what others refer to first: pools before the profiles holding their
    identities); deletions go out in reverse order."""

    def __init__(self, kinds: tuple[RecordKind, ...] = ()) -> None:
        names = [k.name for k in kinds]
        if len(set(names)) != len(names):
            raise ValueError(f"record kinds repeat: {names}")
        self._kinds = kinds

    def with_kind(self, kind: RecordKind) -> Registry:
        return Registry((*self._kinds, kind))

    def get(self, name: str) -> RecordKind | None:
        return next((k for k in self._kinds if k.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self._kinds)

    def __iter__(self) -> Iterator[RecordKind]:
        return iter(self._kinds)
