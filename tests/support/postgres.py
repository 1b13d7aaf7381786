"""A throw-away PostgreSQL cluster from Debian's binaries, for one test session.

initdb refuses to run as root, so the server runs as the ``postgres`` user;
it listens on 127.0.0.1 on a free port with its socket in a private temp dir,
and is stopped by PID (pg_ctl) at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.lab import procs


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    return procs.free_tcp_port()


@dataclass
class PgCluster:
    root: Path
    port: int
    bindir: Path

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=60)

    @classmethod
    def start(cls) -> PgCluster:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        root = Path(tempfile.mkdtemp(prefix="anvil-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        cluster = cls(root=root, port=_free_port(), bindir=bindir)
        cluster._run(str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                     "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        opts = (f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        cluster._run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "pg.log"), "-w",
                     "-t", "30", "-o", opts, "start")
        return cluster

    def create_database(self, name: str) -> str:
        self._run(str(self.bindir / "psql"), "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                  "-qc", f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w",
                      "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
