"""Pairing sites, and what each side knows of the other.

Pairing (DESIGN §8): the recovery site B prints a one-time code with its certificate's
fingerprint (``anvil site pair-code``); the operator carries both to site A, whose ``anvil site
pair B --url … --code … --fingerprint …`` calls B with its certificate pinned, presents the code
and hands over A's certificate, a DR token for B to call A with, and the HMAC key their records
are signed with. B answers with a DR token for A. Each side stores the other's token encrypted
with its secrets key (like BMC passwords) and only the hash of the token it issued, whose role
``site`` can call the DR and replication routes and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.api.spec import SITE_ROLE
from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services.tokens import TOKEN_PREFIX, hash_token
from appliance.sites.peer import PeerAddress, PeerRefused, SitePeer, fingerprint_of_pem, normalise_fingerprint
from appliance.store import Store
from appliance.store.tables import (
    ApiTokenRow,
    LocalSiteRow,
    ReplicationOutboxRow,
    SitePairCodeRow,
    SiteRow,
)

CODE_TTL = timedelta(minutes=15)
PAIR_PATH = "/api/v1/site-link/pairing"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=UTC)


RESERVED = frozenset({"replication", "pairing"})   # path segments below /api/v1/sites


def check_name(name: str, where: str = "name") -> None:
    if not _NAME.match(name or "") or name in RESERVED:
        raise ValidationError([Issue(where, f"{name!r} is not a site name (lower-case letters, digits and "
                                            f"hyphens, at most 63)")])


def _check_url(url: str, where: str = "url") -> str:
    if not re.match(r"^https://[^/\s]+$", (url or "").rstrip("/")):
        raise ValidationError([Issue(where, f"{url!r} is not an https://HOST:PORT address")])
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class SiteInfo:
    name: str
    url: str
    fingerprint: str
    state: str
    push: bool
    outbox_seq: int
    acked_seq: int
    oldest_pending_at: datetime | None
    inbox_seq: int
    inbox_last: str | None
    inbox_at: datetime | None
    inbox_record_at: datetime | None
    last_contact_at: datetime | None
    last_error: str | None

    @property
    def pending(self) -> int:
        return self.outbox_seq - self.acked_seq

    def lag_seconds(self, now: datetime) -> float:
        """How far the peer is behind us: the age of the oldest record it has not acknowledged."""
        if self.pending <= 0 or self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_pending_at).total_seconds())

    def public(self) -> dict[str, Any]:
        now = datetime.now(UTC)

        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None
        return {
            "name": self.name, "url": self.url, "fingerprint": self.fingerprint, "state": self.state,
            "push": self.push,
            "outbound": {"queued": self.outbox_seq, "acknowledged": self.acked_seq, "pending": self.pending,
                         "lagSeconds": round(self.lag_seconds(now), 3)},
            "inbound": {"applied": self.inbox_seq, "lastRecord": self.inbox_last, "appliedAt": iso(self.inbox_at),
                        "recordMadeAt": iso(self.inbox_record_at),
                        "ageSeconds": round((now - self.inbox_record_at).total_seconds(), 3)
                        if self.inbox_record_at else None},
            "lastContactAt": iso(self.last_contact_at), "lastError": self.last_error,
        }


def _info(s: Session, row: SiteRow) -> SiteInfo:
    oldest = s.scalar(select(ReplicationOutboxRow.at).where(ReplicationOutboxRow.site_id == row.id,
                                                            ReplicationOutboxRow.seq > row.acked_seq)
                      .order_by(ReplicationOutboxRow.seq).limit(1))
    return SiteInfo(row.name, row.url, row.cert_fingerprint, row.state, row.push, row.outbox_seq, row.acked_seq,
                    _aware(oldest), row.inbox_seq, row.inbox_last, _aware(row.inbox_at),
                    _aware(row.inbox_record_at), _aware(row.last_contact_at), row.last_error)


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _issue_token(s: Session, peer: str, token: str) -> int:
    row = ApiTokenRow(name=f"site-{peer}"[:63], owner=f"site:{peer}"[:128], token_hash=hash_token(token),
                      role=SITE_ROLE, tenant=None)
    s.add(row)
    s.flush()
    return row.id


class SiteService:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    # -- this site's name ---------------------------------------------------
    def local_name(self) -> str | None:
        with self._store.read() as s:
            return s.scalar(select(LocalSiteRow.name))

    def _ensure_local(self, s: Session, name: str | None) -> str:
        have: str | None = s.scalar(select(LocalSiteRow.name))
        if name is None:
            if have is None:
                raise ValidationError([Issue("as", "this site has no name yet: give it one with --as NAME")])
            return have
        check_name(name, "as")
        if have is not None and have != name:
            raise Conflict(f"this site is named {have}, not {name}")
        if have is None:
            s.add(LocalSiteRow(name=name))
        return name

    # -- the recovery site's half ------------------------------------------------
    def pair_code(self, local: str | None) -> tuple[str, str]:
        """A one-time pairing code (valid :data:`CODE_TTL`) and this site's name."""
        raw = base64.b32encode(secrets.token_bytes(15)).decode()
        code = "-".join(raw[i:i + 6] for i in range(0, len(raw), 6))
        with self._store.write() as s:
            name = self._ensure_local(s, local)
            s.add(SitePairCodeRow(code_hash=hashlib.sha256(code.encode()).hexdigest(),
                                  expires_at=datetime.now(UTC) + CODE_TTL))
        return code, name

    def accept(self, body: Any, own_cert_pem: str) -> dict[str, Any]:
        """Answer a peer's pairing request (``POST /api/v1/site-link/pairing``, authenticated by its code)."""
        if not isinstance(body, dict):
            raise ValidationError([Issue("body", "must be an object")])
        issues = [Issue(f"body.{k}", "is required (a string)") for k in ("code", "name", "url", "certPem", "token",
                                                                        "key")
                  if not isinstance(body.get(k), str) or not body.get(k)]
        if issues:
            raise ValidationError(issues)
        check_name(body["name"], "body.name")
        url = _check_url(body["url"], "body.url")
        try:
            fingerprint = fingerprint_of_pem(body["certPem"])
        except ValueError:
            raise ValidationError([Issue("body.certPem", "is not a PEM certificate")]) from None
        if not re.fullmatch(r"[0-9a-f]{64}", body["key"]):
            raise ValidationError([Issue("body.key", "must be 64 hex digits")])
        theirs = _new_token()
        code_hash = hashlib.sha256(body["code"].strip().upper().encode()).hexdigest()
        now = datetime.now(UTC)
        with self._store.write() as s:
            code = s.scalar(select(SitePairCodeRow).where(SitePairCodeRow.code_hash == code_hash).with_for_update())
            expires = _aware(code.expires_at) if code else None
            if code is None or code.used_at is not None or expires is None or expires <= now:
                raise PairingRefused("the pairing code is unknown, used or expired: print a new one with "
                                     "`anvil site pair-code` at this site")
            code.used_at = now
            local = s.scalar(select(LocalSiteRow.name))
            if local is None:
                raise PairingRefused("this site has no name")
            if body["name"] == local:
                raise Conflict(f"a site cannot pair with itself ({local})")
            if s.scalar(select(SiteRow.id).where(SiteRow.name == body["name"])) is not None:
                raise Conflict(f"site {body['name']} is already paired here; unpair it first")
            token_id = _issue_token(s, body["name"], theirs)
            s.add(SiteRow(name=body["name"], url=url, cert_fingerprint=fingerprint, cert_pem=body["certPem"],
                          token_enc=self._box.encrypt(Secret(body["token"])), their_token_id=token_id,
                          key_enc=self._box.encrypt(Secret(body["key"])), push=False))
        return {"name": local, "token": theirs, "certPem": own_cert_pem}

    # -- the protected site's half ----------------------------------------------
    async def pair(self, name: str, *, url: str, code: str, fingerprint: str, own_url: str, own_cert_pem: str,
                   local: str | None, timeout: float = 15.0) -> SiteInfo:
        """Pair with the site ``name`` at ``url`` whose certificate has ``fingerprint``; we replicate to it."""
        check_name(name)
        url = _check_url(url)
        own_url = _check_url(own_url, "our-url")
        try:
            pin = normalise_fingerprint(fingerprint)
        except ValueError as exc:
            raise ValidationError([Issue("fingerprint", str(exc))]) from None
        with self._store.write() as s:
            me = self._ensure_local(s, local)
            if me == name:
                raise Conflict(f"a site cannot pair with itself ({me})")
            if s.scalar(select(SiteRow.id).where(SiteRow.name == name)) is not None:
                raise Conflict(f"site {name} is already paired; unpair it first")
        theirs = _new_token()
        key = secrets.token_hex(32)
        async with SitePeer(PeerAddress(name, url, pin, None), timeout=timeout) as peer:
            try:
                answer = await peer.post(PAIR_PATH, {"code": code, "name": me, "url": own_url,
                                                     "certPem": own_cert_pem, "token": theirs, "key": key})
            except PeerRefused as exc:
                raise PairingRefused(f"site {name} refused the pairing: {exc.detail}") from None
        if not isinstance(answer, dict) or not all(isinstance(answer.get(k), str) for k in ("name", "token",
                                                                                              "certPem")):
            raise PairingRefused(f"site {name} answered the pairing with something else than a pairing")
        if answer["name"] != name:
            raise PairingRefused(f"the site at {url} is named {answer['name']}, not {name}; it has paired "
                                 f"with us as {me}: unpair {me} there, then pair again with its name")
        if fingerprint_of_pem(answer["certPem"]) != pin:
            raise PairingRefused(f"site {name} sent a certificate other than the one it presented")
        try:
            with self._store.write() as s:
                token_id = _issue_token(s, name, theirs)
                row = SiteRow(name=name, url=url, cert_fingerprint=pin, cert_pem=answer["certPem"],
                              token_enc=self._box.encrypt(Secret(answer["token"])), their_token_id=token_id,
                              key_enc=self._box.encrypt(Secret(key)), push=True)
                s.add(row)
                s.flush()
                return _info(s, row)
        except IntegrityError:
            raise Conflict(f"site {name} was paired meanwhile") from None

    # -- both ----------------------------------------------------------------
    def list(self) -> list[SiteInfo]:
        with self._store.read() as s:
            return [_info(s, r) for r in s.scalars(select(SiteRow).order_by(SiteRow.name))]

    def get(self, name: str) -> SiteInfo:
        with self._store.read() as s:
            return _info(s, self._row(s, name))

    def by_token(self, token_id: int | None) -> SiteInfo:
        """The site holding the DR token ``token_id`` (the caller of a DR route)."""
        with self._store.read() as s:
            row = s.scalar(select(SiteRow).where(SiteRow.their_token_id == token_id)) \
                if token_id is not None else None
            if row is None:
                raise NotFound("site", f"of token {token_id}")
            return _info(s, row)

    def peer(self, name: str, *, timeout: float = 5.0) -> SitePeer:
        with self._store.read() as s:
            return SitePeer.of(self._row(s, name), self._box, timeout=timeout)

    @staticmethod
    def _row(s: Session, name: str) -> SiteRow:
        row = s.scalar(select(SiteRow).where(SiteRow.name == name))
        if row is None:
            from appliance.domain.suggest import close_names, did_you_mean

            raise NotFound("site", name, hint=did_you_mean(close_names(name, s.scalars(select(SiteRow.name)))))
        return row

    def unpair(self, name: str) -> None:
        """Forget the site and revoke the DR token it was given (its replicas here stay, leased to it)."""
        with self._store.write() as s:
            row = self._row(s, name)
            if row.their_token_id is not None:
                s.execute(update(ApiTokenRow).where(ApiTokenRow.id == row.their_token_id)
                          .values(revoked_at=datetime.now(UTC)))
            s.delete(row)


class PairingRefused(Conflict):
    """A pairing that cannot be made (a bad or used code, a name that does not match)."""
