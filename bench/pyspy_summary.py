"""Where a process's time went, from py-spy's collapsed stacks (``py-spy record --format raw``).

    .venv/bin/python bench/pyspy_summary.py prof/anvil-baremetal-fake.txt

Each line of the file is ``frame;frame;...;frame COUNT`` (outermost first; idle threads are not
sampled unless py-spy was given ``--idle``, and a thread waiting for the GIL counts as busy, so
the shares are of busy-thread samples, not of wall time). Reports which thread did the work (the
event loop or the worker threads store work is handed to), the share of samples that include a
few families of frames (inclusive: a frame anywhere on the stack), the appliance's own functions
by inclusive share, and the functions on top of the stack most often (self time).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# Inclusive buckets: a label and the text that marks its frames (first match of a stack counts once).
BUCKETS = (
    ("SQLite execute/commit (sqlite3 driver)", ("do_execute", "do_commit", "do_executemany", "(sqlite3")),
    ("SQLAlchemy ORM (flush, load, session)", ("sqlalchemy/orm/",)),
    ("SQLAlchemy core (compile, connect, pool)", ("sqlalchemy/sql/", "sqlalchemy/engine/", "sqlalchemy/pool/")),
    ("TLS (ssl read/write/handshake)", ("ssl.py", "sslproto.py")),
    ("aiohttp (HTTP parsing, web handler)", ("aiohttp/",)),
    ("JSON encode/decode", ("json/", "safejson")),
    ("jsonschema validation", ("jsonschema/",)),
    ("pydantic (profiles, settings)", ("pydantic",)),
    ("cryptography (Fernet, hashing)", ("cryptography/", "hashlib")),
    ("logging", ("logging/",)),
    ("engine steps (appliance/engine)", ("appliance/engine/",)),
    ("Bare Metal API edge (appliance/api/ironic)", ("appliance/api/ironic/",)),
    ("Anvil services (appliance/services)", ("appliance/services/",)),
    ("monitor (appliance/monitor)", ("appliance/monitor/",)),
    ("audit trail (appliance/store/audit)", ("appliance/store/audit",)),
    # Ironic's own, for the peer's profile
    ("Ironic API (pecan)", ("pecan/",)),
    ("Ironic task manager (node locks)", ("task_manager.py",)),
    ("tenacity sleep (SQLite lock retry)", ("tenacity",)),
)
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:)]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()[:80]
    path = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(path: Path, *, label: str = "", top: int = 8) -> list[str]:
    stacks: list[tuple[list[str], int]] = []
    for raw in path.read_text(errors="replace").splitlines():
        m = _LINE.match(raw)
        if m:
            stacks.append((m.group("stack").split(";"), int(m.group("count"))))
    total = sum(c for _, c in stacks)
    if not total:
        return [f"{label or path.name}: no samples"]
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        text = ";".join(frames)
        leaf = _short(frames[-1])
        if "concurrent/futures/thread.py" in text:
            threads["worker threads (store work handed off the loop)"] += count
        elif "run_forever" in text or "_run_once" in text:
            threads["event loop: idle in epoll" if leaf.startswith("EpollSelector.select") else
                    "event loop: busy"] += count
        else:
            threads["other threads"] += count
        for name, marks in BUCKETS:
            if any(mark in text for mark in marks):
                inclusive[name] += count
        for fn in {_short(f) for f in frames if "appliance/" in f}:
            own[fn] += count
        self_time[leaf] += count
    pct = lambda c: f"{100 * c / total:5.1f} %"  # noqa: E731
    out = [f"{label or path.stem}: {total} samples of busy threads ({path})"]
    out += [f"  {pct(c)}  {name}" for name, c in threads.most_common()]
    out.append("  frames anywhere on the stack:")
    out += [f"  {pct(c)}  {name}" for name, c in inclusive.most_common() if c / total >= 0.01]
    out.append("  the appliance's own functions (inclusive):")
    out += [f"  {pct(c)}  {name}" for name, c in own.most_common(top + 4) if "__main__" not in name
            and "cli/" not in name]
    out.append("  on top of the stack (self):")
    out += [f"  {pct(c)}  {name}" for name, c in self_time.most_common(top)]
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("\n".join(summarize(Path(arg))))
