"""Property-based checks of the live API against its own OpenAPI document: no 5xx, no schema violation."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from appliance.api.app import all_ops, create_app
from appliance.api.spec import document
from appliance.config import load_settings
from appliance.services.tokens import TokenService
from appliance.store import open_store
from tests.api.conftest import seed
from tests.support.live import serve_in_thread

schema = schemathesis.openapi.from_dict(document(all_ops()))


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="anvil-st-") as tmp:
        state = Path(tmp) / "state"
        store = open_store(f"sqlite:///{tmp}/anvil.db")
        seed(store, state)
        token = TokenService(store).create("fuzz", role="admin")
        cfg = load_settings(env={"ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": f"{tmp}/none.toml"})
        with serve_in_thread(lambda: create_app(cfg, store, console=False)) as url:
            yield url, token
        store.close()


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_document(case: schemathesis.Case, live: tuple[str, str]) -> None:
    url, token = live
    # Schema-valid is not always acceptable: a BMC URL or a MAC is checked beyond what JSON Schema
    # says (400 with the field path), so the positive-acceptance check is left out; all others run.
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"},
                           excluded_checks=[positive_data_acceptance])
