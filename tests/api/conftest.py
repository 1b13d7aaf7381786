"""An app on a real store (SQLite and PostgreSQL) behind aiohttp's test server, with seeded data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from appliance.api.app import create_app
from appliance.config import load_settings
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox, ensure_key
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.profiles import ProfileService
from appliance.services.tokens import TokenService
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, ProfileRow

PROFILE = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  requirements: {{nics: 1}}
  identity:
    nics:
      - {{name: eth0, mac: "02:a0:00:00:00:{mac:02x}"}}
"""


def profile_doc(name: str, tenant: str, mac: int) -> str:
    return PROFILE.format(name=name, tenant=tenant, mac=mac)


@dataclass
class Api:
    client: TestClient
    store: Store
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def seed(store: Store, state_dir: Path) -> None:
    ensure_key(state_dir / "secrets.key")
    box = SecretBox(state_dir / "secrets.key")
    blades = BladeService(store, box)
    for i in range(1, 5):
        blades.enroll(Enrollment(name=f"b{i:02d}", bmc=f"fake://b{i:02d}", username="u", password=Secret("p"),
                                 cpus=16, memory_gib=64, chassis="c1", slot=i,
                                 nics=(NicSpec("eth0", f"aa:00:00:00:00:{i:02x}"),)))
    profiles = ProfileService(store)
    profiles.import_document(profile_doc("web-01", "acme", 1))
    profiles.import_document(profile_doc("web-02", "acme", 2))
    profiles.import_document(profile_doc("db-01", "globex", 3))
    with store.write() as s:   # acme/web-01 is live on b01, globex/db-01 on b02
        for prof, tenant, blade in (("web-01", "acme", "b01"), ("db-01", "globex", "b02")):
            pid = s.scalar(select(ProfileRow.id).where(ProfileRow.name == prof, ProfileRow.tenant == tenant))
            row = s.scalar(select(BladeRow).where(BladeRow.name == blade))
            assert pid is not None and row is not None
            s.add(BindingRow(profile_id=pid, blade_id=row.id, generation=1, state="live"))
            row.state = "active"
            s.flush()


ROLES = {
    "admin": ("admin", None), "operator": ("operator", None), "viewer": ("viewer", None),
    "acme-op": ("operator", "acme"), "acme-viewer": ("viewer", "acme"), "globex-admin": ("admin", "globex"),
}


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    state = tmp_path / "state"
    settings = load_settings(env={"ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(tmp_path / "none.toml")})
    seed(store, state)
    svc = TokenService(store)
    tokens = {who: svc.create(who, role=role, tenant=tenant) for who, (role, tenant) in ROLES.items()}
    app = create_app(settings, store)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, store, tokens)

