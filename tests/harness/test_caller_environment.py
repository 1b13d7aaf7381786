"""No test depends on the caller's ANVIL_* environment (tests/conftest.py clears it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_KNOBS, callers_anvil_variables

REPO = Path(__file__).resolve().parents[2]
EXPORTED = {"ANVIL_API_LISTEN": "0.0.0.0:1", "ANVIL_STORE_URL": "postgresql+psycopg://nobody@192.0.2.1/none",
            "ANVIL_LOG_LEVEL": "DEBUG", "ANVIL_CHAOS_SEED": "7"}


def test_no_test_sees_the_callers_anvil_variables() -> None:
    """Run under the subprocess below, with EXPORTED set: only the test knobs are left."""
    assert callers_anvil_variables(os.environ) == []
    assert {k for k in os.environ if k.startswith("ANVIL_")} <= TEST_KNOBS


def test_a_developers_exported_anvil_variables_change_no_test() -> None:
    """`config show`'s test failed for a developer with ANVIL_API_LISTEN exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANVIL_", "PYTEST_"))}
    env.update(EXPORTED)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          "tests/cli/test_config_and_help.py::test_config_show_masks_the_store_password",
                          "tests/cli/test_config_and_help.py::test_environment_overrides_the_file",
                          f"{Path(__file__).relative_to(REPO)}::test_no_test_sees_the_callers_anvil_variables"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "3 passed" in res.stdout
