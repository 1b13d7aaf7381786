"""In-process fake BMC driver for unit tests (entry point ``anvil.drivers.bmc: fake``)."""

from __future__ import annotations

from typing import Any

from appliance.drivers.fake.driver import FakeBlade, FakeBmcDriver


def create(**options: Any) -> FakeBmcDriver:
    return FakeBmcDriver(**options)


__all__ = ["FakeBlade", "FakeBmcDriver", "create"]
