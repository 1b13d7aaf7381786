"""CLI start-up: wall time of ``anvil --help`` and ``anvil blade list`` (issue 20: ≤ 0.3 s each).

    .venv/bin/python bench/cli_startup.py            # 10 runs each, a store of 100 blades
    .venv/bin/python bench/cli_startup.py --runs 3 --json out.json

Each command runs as a user types it (the installed ``anvil`` script, a fresh process) on a state
directory of its own whose store already exists (the first command of a new state directory also
creates and migrates the store: that run is not counted). Python's bytecode cache matters here:
with ``PYTHONDONTWRITEBYTECODE=1`` and no ``.pyc`` (as on a fresh CI clone before ``./dev.sh``
compiles them) every import is compiled again; the report says which case it measured. The five
imports that cost most (``python -X importtime``) are printed for ``blade list``.

The state directory here is the common local case: no configuration but ``ANVIL_STATE_DIR``, a
SQLite store at the current schema. ``blade list`` then reads the store with the standard
library's sqlite3 and imports neither SQLAlchemy (~0.25 s by itself) nor pydantic
(appliance.services.inventory_lite, appliance.configsource); a configuration with more settings
adds pydantic's Settings, and a PostgreSQL store, a text search or a store at another revision
take the full path (SQLAlchemy, the ORM models, the Inventory service).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import api as api_bench  # bench/api.py: the store fill

TARGET_S = 0.3
COMMANDS = {"--help": ["--help"], "blade list": ["blade", "list"]}


def _anvil() -> str:
    return str(Path(sys.executable).parent / "anvil")


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall time of each run, from spawning to the exit status. Waited for with a blocking
    ``wait()``: with a timeout, Popen polls at 0.5, 1, 2 … 50 ms steps, which rounded every time
    up to 64 ms, 114 ms, 164 ms …; a timer kills a run that hangs instead."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.Popen([_anvil(), *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killer = threading.Timer(60, proc.kill)
        killer.start()
        try:
            code = proc.wait()
        finally:
            killer.cancel()
        out.append(time.perf_counter() - t)
        if code != 0:
            raise subprocess.CalledProcessError(code, ["anvil", *argv])
    return out


def top_imports(argv: list[str], env: dict[str, str], n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` imports with the largest cumulative time (``-X importtime``), seconds."""
    got = subprocess.run([sys.executable, "-X", "importtime", "-m", "appliance", *argv], env=env, check=True,
                         capture_output=True, text=True, timeout=60)
    rows = []
    for line in got.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit():
                rows.append((name.strip(), int(cumulative) / 1e6))
    outer = [r for r in rows if not r[0].startswith(("encodings", "_"))]
    return sorted(outer, key=lambda r: -r[1])[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--blades", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anvil-bench-cli-") as tmp:
        state = Path(tmp)
        env = {**os.environ, "ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(state / "anvil.toml")}
        timed(["blade", "list"], env, 1)     # creates and migrates the store: not counted
        api_bench.fill(f"sqlite:///{state / 'anvil.db'}", args.blades)
        rows: dict[str, Any] = {}
        for name, cmd in COMMANDS.items():
            got = timed(cmd, env, args.runs)
            rows[name] = {"median_s": round(statistics.median(got), 3), "min_s": round(min(got), 3),
                          "max_s": round(max(got), 3), "ok": statistics.median(got) <= TARGET_S}
        imports = top_imports(["blade", "list"], env)
    compiled = Path(importlib.util.cache_from_source(str(Path(__file__).parents[1] / "appliance/store/db.py")))
    cache = "compiled bytecode present (.pyc)" if compiled.exists() else \
        "no .pyc: every import compiled from source" + (" (PYTHONDONTWRITEBYTECODE=1)"
                                                          if os.environ.get("PYTHONDONTWRITEBYTECODE") else "")
    print(f"CLI start-up, {args.runs} runs each, a store of {args.blades} blades; {cache}; target <= {TARGET_S} s")
    for name, r in rows.items():
        print(f"  anvil {name:<12} median {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f})"
              f"  {'ok' if r['ok'] else 'MISSED'}")
    print("  blade list's costliest imports (cumulative): "
          + ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in imports))
    out = {"bench": "cli_startup", "runs": args.runs, "blades": args.blades, "bytecode_cache": cache,
           "target_s": TARGET_S, "rows": rows, "imports": imports}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
