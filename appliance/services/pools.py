"""Identity pools: create, list, show, delete."""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from appliance.domain.pools import make_pool
from appliance.errors import Issue, ValidationError
from appliance.store import Store
from appliance.store.repos import identities as ids


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    kind: str
    start: str
    end: str
    prefix: str | None
    size: int
    used: int

    @property
    def free(self) -> int:
        return self.size - self.used


class PoolService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, name: str, kind: str, start: str, end: str, prefix: str | None = None) -> PoolInfo:
        try:
            spec = make_pool(name, kind, start, end, prefix)
        except ValueError as exc:
            path, _, reason = str(exc).partition(": ")
            raise ValidationError([Issue(path, reason or str(exc))], source=f"pool {name}") from None
        with self._store.write() as s:
            row = ids.create_pool(s, spec)
            return PoolInfo(row.name, row.kind, row.start, row.end, row.prefix, row.size, 0)

    def list(self) -> list[PoolInfo]:
        with self._store.read() as s:
            return [PoolInfo(r.name, r.kind, r.start, r.end, r.prefix, r.size, used) for r, used in ids.list_pools(s)]

    def get(self, name: str) -> PoolInfo:
        for info in self.list():
            if info.name == name:
                return info
        with self._store.read() as s:
            ids.get_pool(s, name)  # raises NotFound
        raise AssertionError("unreachable")

    def holders(self, name: str, *, limit: int = 500) -> builtins.list[dict[str, str | None]]:
        """Identities in use from pool ``name`` and the profile holding each (appliance-wide
        callers only: the profile names are every tenant's)."""
        with self._store.read() as s:
            row = ids.get_pool(s, name)
            return [{"value": v, "tenant": t, "profile": p, "path": path}
                    for v, t, p, path in ids.holders(s, row.id, limit=limit)]

    def delete(self, name: str) -> None:
        with self._store.write() as s:
            ids.delete_pool(s, name)
