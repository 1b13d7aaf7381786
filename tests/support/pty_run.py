"""Run the real ``anvil`` command with its stderr on a pseudo-terminal (as a person at a terminal
sees it) and its stdout on a pipe (as a script reads it); bounded in time, stopped by PID."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass
class PtyResult:
    code: int
    out: str        # stdout (a pipe)
    tty: str        # what the terminal got on stderr, control sequences included


def run_on_pty(args: list[str], env: dict[str, str], *, input: str | None = None, timeout: float = 90) -> PtyResult:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], env=env, stdout=subprocess.PIPE,
                                stderr=slave, stdin=subprocess.PIPE, start_new_session=True)
    finally:
        os.close(slave)
    assert proc.stdin is not None and proc.stdout is not None
    if input is not None:
        proc.stdin.write(input.encode())
    proc.stdin.close()
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:     # EIO: the child closed its end
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                got += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"anvil {' '.join(args)} did not end within {timeout:g} s: {got!r}")
        out = proc.stdout.read().decode()
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        os.close(master)
    # The terminal's line discipline turns \n into \r\n.
    return PtyResult(code, out, got.decode(errors="replace").replace("\r\n", "\n"))
