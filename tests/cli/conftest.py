"""Run the real ``anvil`` command in a subprocess with an isolated state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


Anvil = Callable[..., Result]


@pytest.fixture
def anvil(anvil_env: dict[str, str]) -> Anvil:
    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = True) -> Result:
        full_env = {**os.environ, **anvil_env, **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "appliance", *args], input=input, capture_output=True,
                              text=True, env=full_env, timeout=60)
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"anvil {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return res

    return run


@pytest.fixture
def state_dir(anvil_env: dict[str, str]) -> Path:
    return Path(anvil_env["ANVIL_STATE_DIR"])
