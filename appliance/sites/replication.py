"""Replication to paired sites: queue what changed, push it, apply what arrives.

Sender. :func:`enqueue` compares every record kind's export with the digests last queued for
the peer and appends a signed record per change to the peer's outbox, in one transaction
with the digests and the peer's ``outbox_seq``. :meth:`Replicator.push` sends the outbox in
order and advances ``acked_seq`` only on the peer's acknowledgement, so a sender killed at
any point resends from the last ack; a peer that already applied some of it (the ack was
lost) refuses them as replays and says where it is, and the sender resumes after that.

Receiver. :func:`receive` checks every record's signature before applying any, then applies
each in its own transaction together with the peer's ``inbox_seq`` and the per-key version:
a receiver killed at any point has applied each record once or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.errors import AnvilError, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.sites import records as rec
from appliance.sites.peer import PeerRefused, SitePeer
from appliance.sites.registry import ApplyContext, Registry
from appliance.store import Store
from appliance.store.tables import (
    LocalSiteRow,
    ReplicationAppliedRow,
    ReplicationOutboxRow,
    ReplicationSentRow,
    SiteRow,
)

log = logging.getLogger(__name__)

BATCH = 200
RECEIVE_PATH = "/api/v1/site-link/replication"
STATUS_PATH = "/api/v1/site-link/status"


def local_name(s: Session) -> str | None:
    return s.scalar(select(LocalSiteRow.name))


def site_key(box: SecretBox, row: SiteRow) -> bytes:
    return bytes.fromhex(box.decrypt(row.key_enc).reveal())


def enqueue(s: Session, site: SiteRow, registry: Registry, key: bytes, origin: str) -> int:
    """Queue a signed record for every change since the last scan (in ``s``); how many."""
    sent = {(r.kind, r.key): r for r in s.scalars(select(ReplicationSentRow)
                                                  .where(ReplicationSentRow.site_id == site.id))}
    now = datetime.now(UTC).isoformat()
    added = 0

    def add(kind: str, k: str, op: str, data: dict[str, Any] | None) -> None:
        nonlocal added
        site.outbox_seq += 1
        r = rec.sign(key, rec.Record(origin, site.name, site.outbox_seq, kind, k, op, data, now))
        s.add(ReplicationOutboxRow(site_id=site.id, seq=r.seq, kind=kind, key=k, op=op, data=data,
                                   at=datetime.fromisoformat(now), sig=r.sig))
        added += 1

    gone: list[tuple[str, str]] = []
    for kind in registry:
        current = kind.export(s)
        for k in sorted(current):
            d = rec.digest(current[k])
            was = sent.get((kind.name, k))
            if was is not None and was.digest == d:
                continue
            add(kind.name, k, "put", current[k])
            if was is None:
                s.add(ReplicationSentRow(site_id=site.id, kind=kind.name, key=k, digest=d, seq=site.outbox_seq))
            else:
                was.digest, was.seq = d, site.outbox_seq
        gone += [(kind.name, k) for (kn, k) in sent if kn == kind.name and k not in current]
    order = {name: i for i, name in enumerate(registry.names)}
    for kind_name, k in sorted(gone, key=lambda g: (-order[g[0]], g[1])):
        add(kind_name, k, "delete", None)
        s.delete(sent[(kind_name, k)])
    return added


def outbox_records(s: Session, site: SiteRow, origin: str, limit: int = BATCH) -> list[rec.Record]:
    rows = s.scalars(select(ReplicationOutboxRow).where(ReplicationOutboxRow.site_id == site.id,
                                                        ReplicationOutboxRow.seq > site.acked_seq)
                     .order_by(ReplicationOutboxRow.seq).limit(limit))
    return [rec.Record(origin, site.name, r.seq, r.kind, r.key, r.op, r.data, r.at.isoformat()
                       if r.at.tzinfo else r.at.replace(tzinfo=UTC).isoformat(), r.sig) for r in rows]


def acknowledge(s: Session, site_id: int, acked: int) -> None:
    """The peer has applied everything up to ``acked``: drop it from the outbox."""
    site = s.get(SiteRow, site_id, with_for_update=True)
    if site is None:
        return
    acked = min(max(acked, site.acked_seq), site.outbox_seq)
    site.acked_seq = acked
    site.last_contact_at = datetime.now(UTC)
    site.last_error = None
    s.execute(delete(ReplicationOutboxRow).where(ReplicationOutboxRow.site_id == site_id,
                                                 ReplicationOutboxRow.seq <= acked))


@dataclass(frozen=True, slots=True)
class PushResult:
    site: str
    queued: int
    sent: int
    acked: int
    pending: int
    error: str | None = None


class Replicator:
    """The sender's side, for every site we push to."""

    def __init__(self, store: Store, box: SecretBox, registry: Registry, *, timeout: float = 15.0) -> None:
        self.store, self.box, self.registry, self.timeout = store, box, registry, timeout

    def scan(self, site_id: int) -> int:
        with self.store.write() as s:
            site = s.get(SiteRow, site_id, with_for_update=True)
            origin = local_name(s)
            if site is None or origin is None or not site.push or site.state != "paired":
                return 0
            return enqueue(s, site, self.registry, site_key(self.box, site), origin)

    def site_id(self, name: str) -> int:
        with self.store.read() as s:
            sid = s.scalar(select(SiteRow.id).where(SiteRow.name == name))
        if sid is None:
            raise NotFound("site", name)
        return sid

    def pushing(self) -> list[int]:
        with self.store.read() as s:
            return list(s.scalars(select(SiteRow.id).where(SiteRow.push.is_(True), SiteRow.state == "paired")
                                  .order_by(SiteRow.id)))

    async def push(self, site_id: int, *, rounds: int = 50) -> PushResult:
        """Scan, then send the outbox until it is empty (at most ``rounds`` batches)."""
        import asyncio

        queued = await asyncio.to_thread(self.scan, site_id)
        sent = 0
        with self.store.read() as s:
            site = s.get(SiteRow, site_id)
            if site is None:
                raise NotFound("site", str(site_id))
            name = site.name
            peer = SitePeer.of(site, self.box, timeout=self.timeout)
        error: str | None = None
        try:
            for _ in range(rounds):
                batch = await asyncio.to_thread(self._batch, site_id)
                if batch is None or not batch[1]:
                    break
                origin, records = batch
                try:
                    answer = await peer.post(RECEIVE_PATH, {"origin": origin,
                                                            "records": [r.to_json() for r in records]})
                    acked = int(answer["acked"])
                except PeerRefused as exc:
                    # A lost acknowledgement: the peer has these already and says where it is.
                    last = exc.body.get("lastApplied")
                    if exc.status == 409 and exc.body.get("reason") == "replay" and isinstance(last, int) \
                            and last >= records[0].seq - 1:
                        acked = last
                    else:
                        raise
                await asyncio.to_thread(self._ack, site_id, acked)
                sent += len(records)
                if acked < records[-1].seq:
                    break   # the peer stopped part-way (it said why); try again next turn
        except AnvilError as exc:
            error = str(exc)
            await asyncio.to_thread(self._fail, site_id, error)
        finally:
            await peer.close()
        with self.store.read() as s:
            site = s.get(SiteRow, site_id)
            acked_now = site.acked_seq if site else 0
            pending = (site.outbox_seq - site.acked_seq) if site else 0
        return PushResult(name, queued, sent, acked_now, pending, error)

    def _batch(self, site_id: int) -> tuple[str, list[rec.Record]] | None:
        with self.store.read() as s:
            site = s.get(SiteRow, site_id)
            origin = local_name(s)
            if site is None or origin is None:
                return None
            return origin, outbox_records(s, site, origin)

    def _ack(self, site_id: int, acked: int) -> None:
        with self.store.write() as s:
            acknowledge(s, site_id, acked)

    def _fail(self, site_id: int, error: str) -> None:
        with self.store.write() as s:
            site = s.get(SiteRow, site_id)
            if site is not None:
                site.last_error = error[:2000]


# -- the receiver -------------------------------------------------------------------

def _site_of_token(s: Session, token_id: int | None) -> SiteRow:
    site = s.scalar(select(SiteRow).where(SiteRow.their_token_id == token_id, SiteRow.state == "paired")) \
        if token_id is not None else None
    if site is None:
        raise rec.RecordRefused("this DR token belongs to no paired site", reason="site", last_applied=0)
    return site


def receive(store: Store, box: SecretBox, registry: Registry, token_id: int | None, body: Any) -> dict[str, Any]:
    """Check and apply a batch from the site whose DR token is ``token_id``; the ack."""
    with store.read() as s:
        site = _site_of_token(s, token_id)
        here = local_name(s)
        key = site_key(box, site)
        site_id, origin, last = site.id, site.name, site.inbox_seq
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise ValidationError([Issue("body.records", "must be a list of records")])
    if body.get("origin") != origin:
        raise ValidationError([Issue("body.origin", f"this DR token is site {origin}'s, not "
                                                    f"{body.get('origin')!r}'s")])
    parsed: list[rec.Record] = []
    issues: list[Issue] = []
    for i, raw in enumerate(body["records"]):
        try:
            r = rec.parse(raw, f"body.records[{i}]")
        except ValueError as exc:
            where, _, why = str(exc).partition(": ")
            issues.append(Issue(where, why))
            continue
        if r.origin != origin or r.target != here:
            issues.append(Issue(f"body.records[{i}]", f"goes from {r.origin} to {r.target}, not from {origin} "
                                                      f"to {here}"))
        elif not rec.verifies(key, r):
            issues.append(Issue(f"body.records[{i}].sig", f"{r.label}: the signature does not verify with the "
                                                          f"key agreed with site {origin} (forged or altered)"))
        elif registry.get(r.kind) is None:
            issues.append(Issue(f"body.records[{i}].kind", f"{r.kind!r} is not a record kind this site knows "
                                                           f"({', '.join(registry.names)})"))
        parsed.append(r)
    if issues:
        raise ValidationError(issues, source=f"replication from site {origin}")
    if parsed:
        rec.check_next(parsed[0], last)   # refuse a replayed batch before touching anything
    applied = 0
    for r in parsed:
        _apply_one(store, registry, site_id, r)
        applied += 1
        last = r.seq
    return {"acked": last, "applied": applied}


def _apply_one(store: Store, registry: Registry, site_id: int, r: rec.Record) -> None:
    kind = registry.get(r.kind)
    assert kind is not None
    with store.write() as s:
        site = s.get(SiteRow, site_id, with_for_update=True)
        if site is None:
            raise rec.RecordRefused("the site was unpaired", reason="site", last_applied=0)
        rec.check_next(r, site.inbox_seq)
        mark = s.get(ReplicationAppliedRow, (site_id, r.kind, r.key))
        if mark is not None and mark.version >= r.seq:
            raise rec.RecordRefused(f"{r.label} from site {r.origin}: version {r.seq} is not newer than the "
                                    f"applied {mark.version}", reason="replay", last_applied=site.inbox_seq)
        try:
            with s.begin_nested():
                kind.apply(s, ApplyContext(site.name, site_id), r.key, r.data)
                s.flush()
        except AnvilError as exc:
            raise rec.RecordRefused(f"{r.label} from site {r.origin} cannot be applied: {exc}", reason="apply",
                                    last_applied=site.inbox_seq) from None
        if r.op == "delete":
            if mark is not None:
                s.delete(mark)
        elif mark is None:
            s.add(ReplicationAppliedRow(site_id=site_id, kind=r.kind, key=r.key, version=r.seq))
        else:
            mark.version, mark.applied_at = r.seq, datetime.now(UTC)
        site.inbox_seq = r.seq
        site.inbox_at = datetime.now(UTC)
        site.inbox_record_at = datetime.fromisoformat(r.at)
        site.inbox_last = f"{r.kind} {r.key}"[:300]
        site.last_contact_at = site.inbox_at



class ReplicationLoop:
    """Runs in the engine leader: every ``interval`` seconds, scan and push to each site we replicate
    to. A site that cannot be reached keeps its outbox (and its error) until it can."""

    def __init__(self, store: Store, box: SecretBox, registry: Registry, *, interval: float = 2.0) -> None:
        self.replicator = Replicator(store, box, registry)
        self.interval = interval

    async def run(self, engine: object, stop: Any) -> None:
        import asyncio

        while not stop.is_set():
            try:
                for site_id in await asyncio.to_thread(self.replicator.pushing):
                    await self.replicator.push(site_id)
            except asyncio.CancelledError:
                raise
            except Exception:   # a bad turn must not stop the engine: logged, the next turn retries
                log.exception("site replication: turn failed")
            try:
                async with asyncio.timeout(self.interval):
                    await stop.wait()
            except TimeoutError:
                pass
