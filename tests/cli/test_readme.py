"""The README runs as written: every shell block, in order, against one ``anvil demo``.

The demo is what ``./dev.sh run`` starts (``anvil demo``: the emulated rack and the
appliance), here with its own state directory and free ports. Each ```` ```sh ```` block of
README.md then runs as one ``bash -e -o pipefail`` script, in the order of the file, from a
scratch directory that holds a link to this checkout's ``profiles/`` (the README's paths are
relative to the top of a clone), with ``anvil`` on the PATH.

The README's conventions, which this test reads:

- ``<!-- readme-test: skip: REASON -->`` on the line before a block marks it illustrative:
  a real BMC's or switch's address, a root-only VM lab, the commands that bring you to the
  demo. It is not run; the reason is required.
- A command line ending in ``# exits N`` (``# exits 1: why``) is announced to fail: it must
  exit with status N. Any other non-zero exit fails this test, naming the block's line.
- ``$PASSWORD``, ``$BMC_PASSWORD`` and ``$COMMUNITY`` are the reader's own secrets, which
  the README says to have at hand: this test sets them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.lab import rack
from tests.integration.engine.rig import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<why>\S.*?)\s*-->")
EXITS = re.compile(r"#\s*exits\s+(?P<code>\d+)\b")
SHELLS = ("sh", "bash", "shell")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Block:
    line: int              # where its fence opens in README.md
    lang: str
    text: str
    skip: str | None       # the reason, for an illustrative block


def blocks(markdown: str) -> list[Block]:
    """Every fenced block with its language and, when marked, why it is not run."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = SKIP.search(lines[start - 1]) if start > 0 else None
        out.append(Block(start + 1, fence.group(1), "\n".join(body), marker.group("why") if marker else None))
        i += 1
    return out


def logical_lines(text: str) -> list[str]:
    """Lines with their backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        out.append(pending + raw)
        pending = ""
    if pending:
        out.append(pending)
    return out


def script(block: Block) -> str:
    """The block as a bash script: each announced failure checked for its status, every
    other command under ``set -e``."""
    body = []
    for n, line in enumerate(logical_lines(block.text), 1):
        announced = EXITS.search(line)
        if announced is None:
            body.append(line)
            continue
        command, code = line[:announced.start()].rstrip(), announced.group("code")
        body += ["set +e", f"( {command} )", "rc=$?", "set -e",
                 f'if [ "$rc" != {code} ]; then echo "README line {block.line + n}: expected exit {code}, got '
                 f'$rc: {command}" >&2; exit 99; fi']
    return "set -e -o pipefail\n" + "\n".join(body) + "\n"


def test_the_readme_marks_every_block_it_does_not_run_with_a_reason() -> None:
    found = blocks(README.read_text())
    shell = [b for b in found if b.lang in SHELLS]
    assert len([b for b in shell if b.skip is None]) >= 5
    for b in found:
        assert b.lang, f"README line {b.line}: a fenced block needs a language (sh, toml, yaml…)"
    assert all(b.skip for b in shell if "10.0.0." in b.text), "a block with a real address must be marked skip"


def test_an_announced_failure_must_fail_with_its_status_and_nothing_else_may() -> None:
    ok = Block(1, "sh", "true\nfalse   # exits 1: on purpose\necho done", None)
    assert subprocess.run(["bash", "-c", script(ok)], capture_output=True).returncode == 0
    wrong = Block(1, "sh", "true   # exits 1: but it does not", None)
    got = subprocess.run(["bash", "-c", script(wrong)], capture_output=True, text=True)
    assert got.returncode == 99 and "expected exit 1, got 0" in got.stderr
    silent = Block(1, "sh", "false\necho never", None)
    got = subprocess.run(["bash", "-c", script(silent)], capture_output=True, text=True)
    assert got.returncode == 1 and "never" not in got.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``anvil demo`` on free ports with its own state directory; stopped by PID, and its lab
    taken down (``--force``: the README leaves profiles stamped) even if the demo could not."""
    tmp = tmp_path_factory.mktemp("readme")
    state = tmp / "state"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")},
           "ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(tmp / "anvil.toml"),
           "ANVIL_API_LISTEN": f"127.0.0.1:{free_port()}", "ANVIL_BOOT_LISTEN": f"127.0.0.1:{free_port()}",
           "ANVIL_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "PASSWORD": "alice-readme-pass-1", "BMC_PASSWORD": "bmc-secret", "COMMUNITY": "public"}
    ready = tmp / "ready"
    log = (tmp / "demo.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "demo", "--ready-file", str(ready)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (ready.exists() and ready.read_text().strip()):
            assert proc.poll() is None, f"anvil demo exited: {(tmp / 'demo.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"anvil demo not ready: {(tmp / 'demo.log').read_text()[-3000:]}"
            time.sleep(0.1)
        work = tmp / "cwd"
        work.mkdir()
        (work / "profiles").symlink_to(ROOT / "profiles")
        yield {**env, "PWD": str(work)}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        _lab_down(env, state / "lab")


def _lab_down(env: dict[str, str], lab_dir: Path) -> None:
    if rack.read_state(lab_dir) is None:
        return
    subprocess.run([sys.executable, "-m", "appliance", "lab", "down", "--force"], env=env, capture_output=True,
                   timeout=120)
    left = rack.read_state(lab_dir)
    assert left is None, f"the demo's lab is still up: {left}"


def test_every_shell_block_of_the_readme_runs_on_the_demo(demo: dict[str, str]) -> None:
    cwd = demo["PWD"]
    ran = 0
    took: list[tuple[int, float]] = []
    for block in blocks(README.read_text()):
        if block.lang not in SHELLS or block.skip:
            continue
        t0 = time.monotonic()
        got = subprocess.run(["bash", "-c", script(block)], cwd=cwd, env=demo, capture_output=True, text=True,
                             timeout=300)
        assert got.returncode == 0, (f"README block at line {block.line} failed ({got.returncode}, "
                                     f"{time.monotonic() - t0:.1f} s):\n{block.text}\n--- stdout\n"
                                     f"{got.stdout[-4000:]}\n--- stderr\n{got.stderr[-4000:]}")
        ran += 1
        took.append((block.line, time.monotonic() - t0))
    # Where the time goes (shown with -s, and in the durations of a slow run).
    print("README blocks (line: s): " + ", ".join(f"{line}: {s:.1f}" for line, s in took))
    assert ran >= 5
