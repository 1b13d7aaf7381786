"""The emulated rack and a real ``anvil serve`` for engine integration tests.

Each module gets its own state directory, free ports and lab (pytest-xdist safe);
``anvil serve`` is stopped by PID and the lab taken down by ``anvil lab down``, or by
the PIDs in lab.json when that refuses, whatever the test did.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.engine.rig import Anvil, Lab, Serve, rig


@pytest.fixture(scope="module")
def served_rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Anvil, Lab, Serve]]:
    """Two Redfish blades on the snmp switch, profiles web-01 and web-02 (tenant acme), and serve running."""
    with rig(tmp_path_factory.mktemp("stamp-rack"), redfish=2) as (anvil, lab, serve):
        anvil.import_profiles([("web-01", 1), ("web-02", 2)])
        serve.start()
        yield anvil, lab, serve
