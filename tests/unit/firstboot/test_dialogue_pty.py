"""The first-boot dialogue as an admin meets it: a child process runs it on a pseudo-terminal,
and this test types the answers, sees wrong ones asked again, and checks the password is not echoed."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHILD = """
import dataclasses, json, sys
from appliance.firstboot.dialogue import Dialogue
answers = Dialogue(sys.stdin, sys.stdout, ["ens3", "ens4"]).run()
with open(sys.argv[1], "w") as fh:
    json.dump(dataclasses.asdict(answers), fh, default=str)
"""


class Terminal:
    def __init__(self, master: int, proc: subprocess.Popen[bytes]) -> None:
        self.master, self.proc, self.seen = master, proc, ""

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Read until ``text`` appears (bounded); returns what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on the terminal; it shows:\n{self.seen[-800:]}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:     # the child closed the terminal
                    assert text in self.seen, f"terminal closed before {text!r}:\n{self.seen[-800:]}"
        before, _, after = self.seen.partition(text)
        self.seen = after
        return before

    def answer(self, prompt: str, line: str) -> str:
        before = self.expect(prompt)
        os.write(self.master, (line + "\n").encode())
        return before


@pytest.fixture
def term(tmp_path: Path) -> Iterator[tuple[Terminal, Path]]:
    master, slave = pty.openpty()
    out = tmp_path / "answers.json"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    try:
        yield Terminal(master, proc), out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(master)


def test_the_dialogue_asks_checks_and_confirms(term: tuple[Terminal, Path]) -> None:
    t, out = term
    t.answer("Host name [anvil]: ", "")
    t.answer("Management interface", "ens3")
    t.answer("Address ('dhcp'", "192.0.2.300/24")
    t.expect("is not an address with a prefix")
    t.answer("Address ('dhcp'", "192.0.2.10/24")
    t.answer("Gateway (blank: none): ", "192.0.2.1")
    t.answer("DNS servers", "192.0.2.53")
    t.answer("Provisioning interface", "ens4")
    t.answer("Appliance address there", "10.77.0.1/24")
    t.answer("DHCP range START,END", "10.78.0.100,10.78.0.200")
    t.expect("is not inside 10.77.0.0/24")
    t.answer("DHCP range START,END", "10.77.0.100,10.77.0.200")
    t.answer("Admin password (console user 'admin'): ", "short")
    t.expect("must be 8 to")
    t.answer("Admin password (console user 'admin'): ", "correct-horse-9")
    t.answer("Admin password again: ", "correct-horse-9")
    t.answer("'generate' a self-signed one", "")
    echoed = t.answer("NTP servers", "pool.ntp.org")
    summary = t.answer("Apply these settings? (y/n) [y]: ", "y")
    assert "correct-horse-9" not in echoed + summary and "short" not in echoed   # the terminal did not echo them
    assert "management    ens3: 192.0.2.10/24 gateway 192.0.2.1 DNS 192.0.2.53" in summary
    assert "provisioning  ens4 10.77.0.1/24 DHCP 10.77.0.100,10.77.0.200" in summary
    assert t.proc.wait(timeout=10) == 0
    a = json.loads(out.read_text())
    assert a["admin_password"] == "correct-horse-9" and a["hostname"] == "anvil"
    assert a["management"] == {"interface": "ens3", "dhcp": False, "address": "192.0.2.10/24",
                               "gateway": "192.0.2.1", "dns": ["192.0.2.53"]}
    assert a["provisioning"]["dhcp_range"] == "10.77.0.100,10.77.0.200" and a["ntp"] == ["pool.ntp.org"]
    assert a["tls"]["generate"] is True


def test_saying_no_starts_again_and_dhcp_skips_the_static_questions(term: tuple[Terminal, Path]) -> None:
    t, out = term
    for hostname in ("first", "second"):
        t.answer("Host name [anvil]: ", hostname)
        t.answer("Management interface", "")
        skipped = t.answer("Address ('dhcp'", "dhcp")
        t.answer("Provisioning interface", "")
        assert "Gateway" not in skipped
        t.answer("Admin password (console user 'admin'): ", "correct-horse-9")
        t.answer("Admin password again: ", "correct-horse-9")
        t.answer("'generate' a self-signed one", "generate")
        t.answer("NTP servers", "")
        t.answer("Apply these settings? (y/n) [y]: ", "n" if hostname == "first" else "")
    assert t.proc.wait(timeout=10) == 0
    a = json.loads(out.read_text())
    assert a["hostname"] == "second" and a["management"]["dhcp"] is True and a["provisioning"]["interface"] == ""


def test_a_closed_console_ends_the_dialogue_without_answers(term: tuple[Terminal, Path]) -> None:
    t, out = term
    t.expect("Host name [anvil]: ")
    os.write(t.master, b"\x04")          # Ctrl-D at the prompt: end of input
    assert t.proc.wait(timeout=10) != 0
    assert not out.exists()
