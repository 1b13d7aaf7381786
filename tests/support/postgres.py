"""A throw-away PostgreSQL cluster from Debian's binaries, for one test session.

initdb refuses to run as root, so the server runs as the ``postgres`` user;
it listens on 127.0.0.1 on a free port with its socket in a private temp dir,
and is stopped by PID (pg_ctl) at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
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


@dataclass
class PgPair:
    """A primary and a streaming-replication standby (pg_basebackup -R), each its own server on
    127.0.0.1 with its socket in a private temp dir, for a test of a database failover under the
    appliance. Replication is synchronous (``synchronous_standby_names = '*'``): a commit the
    primary acknowledged is on the standby, so a failover loses no step the engine recorded.
    Stopped by PID (pg_ctl reads postmaster.pid) in ``stop()``."""

    root: Path
    bindir: Path
    primary_port: int
    standby_port: int

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=60)

    def _data(self, which: str) -> Path:
        return self.root / which

    def _start(self, which: str, port: int, extra: str = "") -> None:
        opts = (f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                f"-c wal_level=replica -c max_wal_senders=5 -c hot_standby=on {extra}")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self._data(which)), "-l", str(self.root / f"{which}.log"),
                  "-w", "-t", "30", "-o", opts, "start")

    @classmethod
    def start(cls) -> PgPair:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        root = Path(tempfile.mkdtemp(prefix="anvil-pgpair-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        pair = cls(root=root, bindir=bindir, primary_port=_free_port(), standby_port=_free_port())
        try:
            # initdb -A trust: local and 127.0.0.1 connections, replication ones included, are trusted.
            pair._run(str(bindir / "initdb"), "-D", str(pair._data("primary")), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
            pair._start("primary", pair.primary_port,
                        "-c synchronous_standby_names='*' -c synchronous_commit=on")
            pair._run(str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(pair.primary_port), "-U",
                      "postgres", "-D", str(pair._data("standby")), "-R", "-X", "stream", "--no-sync")
            pair._start("standby", pair.standby_port)
            pair.wait_streaming()
        except BaseException:
            pair.stop()
            raise
        return pair

    def psql(self, port: int, sql: str, db: str = "postgres") -> str:
        return self._run(str(self.bindir / "psql"), "-h", str(self.root), "-p", str(port), "-U", "postgres",
                         "-d", db, "-XAtqc", sql).stdout.strip()

    def wait_streaming(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            if self.psql(self.primary_port, streaming) == "1":
                return
            time.sleep(0.1)
        raise RuntimeError("the standby is not streaming from the primary")

    def create_database(self, name: str) -> str:
        """A database on the primary (replicated); its URL names both servers, libpq picks the
        writable one (target_session_attrs=read-write)."""
        self.psql(self.primary_port, f'CREATE DATABASE "{name}"')
        return (f"postgresql+psycopg://postgres@/{name}?host=127.0.0.1:{self.primary_port}"
                f"&host=127.0.0.1:{self.standby_port}&target_session_attrs=read-write")

    def stop_primary(self) -> None:
        """The primary's host dies: no shutdown checkpoint, every connection dropped."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self._data("primary")), "-m", "immediate", "-w",
                  "-t", "30", "stop")

    def promote(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self._data("standby")), "-w", "-t", "30", "promote")

    def stop(self) -> None:
        try:
            for which in ("standby", "primary"):
                if (self._data(which) / "postmaster.pid").exists():
                    with contextlib.suppress(subprocess.CalledProcessError):
                        self._run(str(self.bindir / "pg_ctl"), "-D", str(self._data(which)), "-m", "immediate",
                                  "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
