"""Profiles and templates (``kind`` tells them apart)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.errors import NotFound
from appliance.store.tables import ProfileRow

KIND_LABEL = {"ServerProfile": "profile", "ServerProfileTemplate": "template"}


def get(session: Session, kind: str, tenant: str, name: str, *, lock: bool = False) -> ProfileRow:
    stmt = select(ProfileRow).where(ProfileRow.kind == kind, ProfileRow.tenant == tenant, ProfileRow.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = session.scalar(stmt)
    if row is None:
        raise NotFound(KIND_LABEL.get(kind, kind), name, tenant=tenant)
    return row


def find(session: Session, kind: str, tenant: str, name: str) -> ProfileRow | None:
    return session.scalar(
        select(ProfileRow).where(ProfileRow.kind == kind, ProfileRow.tenant == tenant, ProfileRow.name == name)
    )


def list_rows(session: Session, *, kind: str | None = None, tenant: str | None = None) -> list[ProfileRow]:
    stmt = select(ProfileRow).order_by(ProfileRow.tenant, ProfileRow.name)
    if kind:
        stmt = stmt.where(ProfileRow.kind == kind)
    if tenant:
        stmt = stmt.where(ProfileRow.tenant == tenant)
    return list(session.scalars(stmt))


def insert(session: Session, kind: str, tenant: str, name: str, document: dict[str, Any]) -> ProfileRow:
    row = ProfileRow(kind=kind, tenant=tenant, name=name, document=document, state="unassigned")
    session.add(row)
    session.flush()
    return row
