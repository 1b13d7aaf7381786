"""`anvil serve` keeps every thread of its process on one CPU (``cpus = "one"``, the default;
appliance.cpus says why), and leaves them to the kernel with ``cpus = "any"``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.test_serve import _free_port, _get, _start, _stop


def _cpus_of_threads(pid: int) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[int(task.name)] = line.split(":", 1)[1].strip()
    return out


def _full_set() -> str:
    allowed = sorted(os.sched_getaffinity(0))
    assert len(allowed) >= 2, "these tests need a machine with two CPUs or more (CI has two)"
    return ",".join(map(str, allowed))


def _same(listed: str, full: str) -> bool:
    def expand(text: str) -> set[int]:
        out: set[int] = set()
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out |= set(range(int(lo), int(hi or lo) + 1))
        return out
    return expand(listed) == expand(full)


@pytest.mark.parametrize("setting", ["default", "any"])
def test_every_thread_of_serve_runs_on_one_cpu_unless_told_any(setting: str, anvil_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    full = _full_set()
    env = {**anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{_free_port()}"}
    if setting == "any":
        env["ANVIL_CPUS"] = "any"
    proc, url = _start(env, tmp_path, "--insecure-http")
    try:
        token = (Path(anvil_env["ANVIL_STATE_DIR"]) / "admin.token").read_text().strip()
        assert _get(f"{url}/api/v1/blades", token)[0] == 200      # the pools' threads start with work
        threads = _cpus_of_threads(proc.pid)
        assert len(threads) >= 3, threads
        if setting == "any":
            assert all(_same(c, full) for c in threads.values()), threads
        else:
            assert len(set(threads.values())) == 1, threads
            (only,) = set(threads.values())
            assert only.isdigit() and int(only) in os.sched_getaffinity(0), threads
    finally:
        _stop(proc)
