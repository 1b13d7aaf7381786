"""What a backup holds and how it goes back: a portable dump of every table (JSON rows, so a
SQLite backup restores into PostgreSQL and back), the schema revision it was taken at, and the
state files the store cannot do without: ``secrets.key`` (credentials and the audit chain's
key), ``audit.head`` (the signed head of that chain), ``tls/`` and the configuration file.

Restore fills a *fresh* store only: the schema is brought to the dump's revision, the rows go
in unchanged (ids, hashes, timestamps: so ``anvil audit verify`` still holds), then the store
is migrated to this version's head. Nothing is written before the whole archive has been read.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, func, select, text

from appliance import __version__
from appliance.errors import BackupError
from appliance.progress import NoProgress, Progress
from appliance.store.audit_seal import HEAD_FILE
from appliance.store.migrate import HEAD, current_revision, upgrade

DUMP = "store.json"
FILES = "files/"
SKIP_TABLES = {"alembic_version"}


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
    return value


@dataclass
class Snapshot:
    revision: str
    version: str
    tables: dict[str, list[dict[str, Any]]]
    files: dict[str, bytes] = field(default_factory=dict)   # path relative to the state dir → bytes
    config: bytes | None = None


def take(engine: Engine, state_dir: Path, config_file: Path | None, progress: Progress | None = None) -> Snapshot:
    """Read the store in one transaction (a consistent dump) and the state files; ``progress``
    counts the tables read."""
    say = progress or NoProgress()
    meta = MetaData()
    with engine.connect() as conn, conn.begin():
        meta.reflect(conn)
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        wanted = [t for t in meta.sorted_tables if t.name not in SKIP_TABLES]
        tables: dict[str, list[dict[str, Any]]] = {}
        for i, t in enumerate(wanted, 1):
            tables[t.name] = [{k: _encode(v) for k, v in row._mapping.items()} for row in conn.execute(select(t))]
            say.count(i, len(wanted), "tables read")
    files: dict[str, bytes] = {}
    for rel in ("secrets.key", HEAD_FILE):
        if (state_dir / rel).is_file():
            files[rel] = (state_dir / rel).read_bytes()
    tls = state_dir / "tls"
    if tls.is_dir():
        for p in sorted(tls.iterdir()):
            if p.is_file():
                files[f"tls/{p.name}"] = p.read_bytes()
    config = config_file.read_bytes() if config_file and config_file.is_file() else None
    return Snapshot(revision, __version__, tables, files, config)


def pack(snap: Snapshot) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))

        add(DUMP, json.dumps({"revision": snap.revision, "version": snap.version, "tables": snap.tables},
                             default=str).encode())
        for rel, data in snap.files.items():
            add(FILES + rel, data)
        if snap.config is not None:
            add("anvil.toml", snap.config)
    return buf.getvalue()


def unpack(payload: bytes) -> Snapshot:
    files: dict[str, bytes] = {}
    config = None
    doc: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            for member in tar.getmembers():
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is None:
                    continue
                data = fh.read()
                if member.name == DUMP:
                    doc = json.loads(data)
                elif member.name == "anvil.toml":
                    config = data
                elif member.name.startswith(FILES):
                    rel = member.name[len(FILES):]
                    # Only the files a backup writes: nothing may land outside the state dir.
                    if rel in ("secrets.key", HEAD_FILE) or (rel.startswith("tls/") and "/" not in rel[4:]
                                                             and rel[4:] not in ("", ".", "..")):
                        files[rel] = data
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise BackupError(f"the backup's contents are damaged ({exc})") from None
    if doc is None:
        raise BackupError("the backup holds no store dump")
    return Snapshot(str(doc["revision"]), str(doc.get("version", "?")), doc["tables"], files, config)


def store_is_empty(engine: Engine) -> bool:
    """True when the store has no schema yet or none of the rows a user makes."""
    if current_revision(engine) is None:
        return True
    meta = MetaData()
    with engine.connect() as conn:
        meta.reflect(conn, only=lambda name, _m: name in ("blades", "profiles", "audit_log"))
        return all(conn.execute(select(func.count()).select_from(t)).scalar_one() == 0 for t in meta.sorted_tables)


def load(engine: Engine, snap: Snapshot, progress: Progress | None = None) -> None:
    """Fill a fresh store with the dump, then migrate it to this version's head; ``progress``
    counts the rows loaded."""
    say = progress or NoProgress()
    if int(snap.revision) > int(HEAD):
        raise BackupError(f"the backup's store is at schema {snap.revision}, newer than this version's {HEAD} "
                          f"(taken by Anvil {snap.version}); restore it with that version or newer")
    upgrade(engine, snap.revision)
    meta = MetaData()
    with engine.begin() as conn:
        meta.reflect(conn)
        unknown = set(snap.tables) - set(meta.tables)
        if unknown:
            raise BackupError(f"the backup has tables schema {snap.revision} does not: {', '.join(sorted(unknown))}")
        for table in reversed(meta.sorted_tables):    # rows made by migrations (defaults) give way
            if table.name not in SKIP_TABLES:
                conn.execute(table.delete())
        total = sum(len(snap.tables.get(t.name) or ()) for t in meta.sorted_tables)
        loaded = 0
        for table in meta.sorted_tables:
            rows = snap.tables.get(table.name)
            if rows:
                conn.execute(table.insert(), [{k: _decode(v) for k, v in row.items()} for row in rows])
                loaded += len(rows)
                say.count(loaded, total, "rows loaded")
        if engine.dialect.name == "postgresql":
            _reset_sequences(conn, meta)
    upgrade(engine)


def _reset_sequences(conn: Any, meta: MetaData) -> None:
    """Rows went in with their ids: serial sequences must continue after the largest."""
    for table in meta.sorted_tables:
        for col in table.primary_key.columns:
            if col.autoincrement is True or (col.autoincrement == "auto" and col.type.python_type is int):
                seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                   {"t": table.name, "c": col.name}).scalar()
                if seq:
                    conn.execute(text(f"SELECT setval('{seq}', COALESCE((SELECT MAX({col.name}) FROM "
                                      f"{table.name}), 0) + 1, false)"))
