"""The first-boot questions as a text dialogue on a terminal (the appliance's console).

Takes its streams as arguments, so tests drive it through a pty. Each answer is checked as it
is given (appliance.firstboot.answers) and asked again, a bounded number of times, when wrong."""

from __future__ import annotations

import contextlib
import os
import termios
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from appliance.firstboot.answers import (
    AnswerError,
    Answers,
    Management,
    Provisioning,
    Tls,
    check,
    check_management,
    check_provisioning,
    cidr,
    dhcp_range,
    host,
    interface,
    password,
)

T = TypeVar("T")
TRIES = 5


class DialogueAborted(Exception):
    """The terminal closed, or an answer was wrong too many times."""


class Dialogue:
    def __init__(self, inp: TextIO, out: TextIO, interfaces: Sequence[str]) -> None:
        self._in = inp
        self._out = out
        self._interfaces = list(interfaces)

    # -- plumbing ------------------------------------------------------------
    def say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _line(self, prompt: str) -> str:
        self._out.write(prompt)
        self._out.flush()
        line = self._in.readline()
        if not line:
            raise DialogueAborted("the console closed")
        return line.rstrip("\r\n").strip()

    @contextlib.contextmanager
    def _no_echo(self) -> Iterator[None]:
        try:
            fd = self._in.fileno()
            old = termios.tcgetattr(fd)
        except (OSError, ValueError, termios.error):
            yield                   # not a terminal (a pipe in tests): nothing to hide
            return
        new = list(old)
        new[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSADRAIN, new)
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
            self._out.write("\n")

    def ask(self, prompt: str, check_: Callable[[str], T], default: str = "") -> T:
        shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
        for _ in range(TRIES):
            value = self._line(shown) or default
            try:
                return check_(value)
            except AnswerError as exc:
                self.say(f"  ! {exc.reason}")
        raise DialogueAborted(f"no valid answer to {prompt!r} after {TRIES} tries")

    def yes(self, prompt: str, default: bool) -> bool:
        def parse(v: str) -> bool:
            if v.lower() in ("y", "yes"):
                return True
            if v.lower() in ("n", "no"):
                return False
            raise AnswerError(prompt, "answer y or n")
        return self.ask(f"{prompt} (y/n)", parse, "y" if default else "n")

    # -- the questions ------------------------------------------------------
    def confirm_format(self, describe: str) -> bool:
        self.say(f"\nNo Anvil data disk yet. The empty disk {describe} can hold the appliance's state.")
        return self.yes("Format it as ANVIL-DATA (anything on it is lost)?", default=False)

    def _password(self) -> str:
        for _ in range(TRIES):
            with self._no_echo():
                first = self._line("Admin password (console user 'admin'): ")
            try:
                password(first)
            except AnswerError as exc:
                self.say(f"  ! {exc.reason}")
                continue
            with self._no_echo():
                again = self._line("Admin password again: ")
            if again == first:
                return first
            self.say("  ! the two passwords differ")
        raise DialogueAborted(f"no valid admin password after {TRIES} tries")

    def _management(self) -> Management:
        names = ", ".join(self._interfaces) or "none found"
        self.say(f"\nManagement network (the console and API). Interfaces: {names}")
        iface = self.ask("Management interface ('auto': the first wired one)",
                         lambda v: v if v == "auto" else interface(v, "management.interface"), "auto")
        addr = self.ask("Address ('dhcp', or static like 192.0.2.10/24)",
                        lambda v: v if v.lower() == "dhcp" else cidr(v, "management.address"), "dhcp")
        if addr.lower() == "dhcp":
            return Management(interface=iface)
        gateway = self.ask("Gateway (blank: none)", lambda v: v and host(v, "management.gateway"))
        dns = self.ask("DNS servers, space-separated (blank: none)",
                       lambda v: tuple(host(s, "management.dns") for s in v.split()))
        return Management(interface=iface, dhcp=False, address=addr, gateway=gateway, dns=dns)

    def _provisioning(self, management: Management) -> Provisioning:
        self.say("\nProvisioning network (DHCP, TFTP and boot HTTP for the blades).")
        iface = self.ask("Provisioning interface (blank: no boot services here)",
                         lambda v: v and interface(v, "provisioning.interface"))
        if not iface:
            return Provisioning()
        addr = self.ask("Appliance address there (like 10.77.0.1/24)", lambda v: cidr(v, "provisioning.address"))
        rng = self.ask("DHCP range START,END (blank: no DHCP)",
                       lambda v: v and dhcp_range(v, addr, "provisioning.dhcp_range"))
        return check_provisioning(Provisioning(interface=iface, address=addr, dhcp_range=rng), management)

    def _tls(self) -> Tls:
        self.say("\nTLS certificate of the console.")
        choice = self.ask("'generate' a self-signed one, or the path of a PEM certificate to import",
                          lambda v: v if v == "generate" or Path(v).is_file() else _missing(v, "tls.cert"),
                          "generate")
        if choice == "generate":
            return Tls()
        key = self.ask("Path of its PEM private key", lambda v: v if Path(v).is_file() else _missing(v, "tls.key"))
        return Tls(generate=False, cert=Path(choice), key=Path(key))

    def run(self) -> Answers:
        """Ask every question, show the answers, and ask again from the start until confirmed."""
        self.say("Anvil appliance: first boot set-up.")
        for _ in range(TRIES):
            hostname = self.ask("Host name", lambda v: v, "anvil")
            management = self._management()
            try:
                check_management(management)
            except AnswerError as exc:
                self.say(f"  ! {exc}")
                continue
            provisioning = self._provisioning(management)
            admin = self._password()
            tls = self._tls()
            ntp = self.ask("NTP servers, space-separated (blank: none)",
                           lambda v: tuple(host(s, "ntp") for s in v.split()))
            try:
                answers = check(Answers(admin_password=admin, hostname=hostname, management=management,
                                        provisioning=provisioning, tls=tls, ntp=ntp))
            except AnswerError as exc:
                self.say(f"  ! {exc}")
                continue
            self.say("\n" + summary(answers))
            if self.yes("Apply these settings?", default=True):
                return answers
        raise DialogueAborted(f"no confirmed answers after {TRIES} rounds")


def _missing(value: str, where: str) -> str:
    raise AnswerError(where, f"{value!r} is not a file")


def summary(a: Answers) -> str:
    m, p = a.management, a.provisioning
    mgmt = "DHCP" if m.dhcp else f"{m.address} gateway {m.gateway or '-'} DNS {' '.join(m.dns) or '-'}"
    prov = f"{p.interface} {p.address} DHCP {p.dhcp_range or 'off'}" if p.interface else "none"
    tls = "self-signed (generated)" if a.tls.generate else f"imported from {a.tls.cert}"
    return "\n".join([
        f"  host name     {a.hostname}",
        f"  management    {m.interface}: {mgmt}",
        f"  provisioning  {prov}",
        "  admin         password set (user 'admin')",
        f"  TLS           {tls}",
        f"  NTP           {' '.join(a.ntp) or 'none'}",
    ])


def console_streams(path: str = "/dev/console") -> tuple[TextIO, TextIO]:
    """The console opened for the dialogue (read and write, as a terminal)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    return os.fdopen(fd, "r", closefd=False), os.fdopen(fd, "w")
