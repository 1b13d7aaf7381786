"""StorageDriver for the Linux SCSI target framework's userspace daemon (tgtd), via ``tgtadm``.

One driver instance talks to one tgtd: the one listening on control port
``control_port`` (``tgtd -C N``/``tgtadm -C N``; tgt's own default is 0), reached from
network namespace ``netns`` when given (``ip netns exec NS tgtadm …``). Every tgtadm
run is an asyncio subprocess with a deadline, argv only (no shell); iSCSI names are
checked before anything runs.

Model: one target per profile boot disk, named by :class:`LunRef.target`, holding the
disk as LUN ``LunRef.lun`` (≥ 1; LUN 0 is tgt's controller). Target ids (tids) are
tgtd's internal numbers; the driver finds targets by name in ``--op show`` output and
takes the lowest free tid for a new one. Each LUN gets a SCSI serial derived from the
target name and LUN number, so an OS sees the same disk after a tgtd restart gives the
target another tid.

tgt refuses to delete a LUN or target while an initiator is logged in ("still
active"; ``--force`` does not help in 1.0.85). Revoking therefore drops the ACL first,
so the initiator cannot log in again, then closes its connections
(``--op delete --mode conn``), then deletes.

Errors (tgtadm's exit code is 22 for every refusal, so its message decides):

- tgtd not running or unreachable, tgtadm or the namespace missing, no answer in
  ``timeout`` s → BmcUnreachable (retryable);
- a bad name, LUN number, disk spec, or a LUN backed by another file → BadSettings;
- sessions that do not go away in time → BmcBusy (retryable);
- any other refusal → BmcFailure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from appliance.domain.identities import parse_iqn
from appliance.drivers.errors import BadSettings, BmcBusy, BmcFailure, BmcUnreachable
from appliance.drivers.protocols import DiskSpec, LunRef
from appliance.drivers.tgt import backing
from appliance.drivers.tgt._parse import ShowParseError, Target, parse_targets

log = logging.getLogger(__name__)

NAME = "tgt"
MAX_LUN = 16383          # tgt's flat LUN space; the profile schema has the same bound
MAX_CONTROL_PORT = 32767   # tgtd and tgtadm refuse larger -C values ("out of range")
_UNREACHABLE_MARKS = ("tgt daemon", "Cannot open network namespace", "exec of ")


@dataclass(frozen=True, slots=True)
class TgtSettings:
    """What ``create()`` reads, from a mapping or from an object's attributes (such as the
    config's ``[storage]`` section); each key may also be spelt ``tgt_<key>``.

    ``control_port``: tgtd's management port (``-C``, 0..32767); None uses tgt's default (0).
    ``netns``: network namespace tgtd runs in; None or "" for this one. ``tgtadm``: the program.
    ``timeout``: seconds per tgtadm run, and for sessions to close on revoke.
    ``copy_timeout``: seconds for seeding a backing file from an image.
    ``roots``: directories; when any are given, backing files and seed images must
    resolve (symlinks followed) inside one of them.
    """

    control_port: int | None = None
    netns: str | None = None
    tgtadm: str = "tgtadm"
    timeout: float = 10.0
    copy_timeout: float = 600.0
    roots: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.control_port is not None and (isinstance(self.control_port, bool)
                                              or not isinstance(self.control_port, int)
                                              or not 0 <= self.control_port <= MAX_CONTROL_PORT):
            problems.append(f"control_port {self.control_port!r} is not 0..{MAX_CONTROL_PORT}")
        if self.netns is not None and (not self.netns or "/" in self.netns or self.netns.startswith("-")
                                       or any(c.isspace() for c in self.netns)):
            problems.append(f"netns {self.netns!r} is not a namespace name")
        if not self.tgtadm or self.tgtadm.startswith("-"):
            problems.append(f"tgtadm {self.tgtadm!r} is not a program")
        for key in ("timeout", "copy_timeout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
                problems.append(f"{key} {value!r} is not 0 < seconds <= 86400")
        problems += [f"roots: {r!r} is not an absolute path" for r in self.roots if not Path(r).is_absolute()]
        if problems:
            raise BadSettings("-", NAME, "create", "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: object | None) -> TgtSettings:
        if settings is None:
            return cls()
        if isinstance(settings, TgtSettings):
            return settings
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        if isinstance(settings, Mapping):
            for key, value in settings.items():
                name = str(key).removeprefix("tgt_")
                if name not in known:
                    raise BadSettings("-", NAME, "create", f"unknown setting {key!r} "
                                      f"(known: {', '.join(sorted(known))})")
                values[name] = value
        else:
            # A config section carries other drivers' keys too: take ours, leave the rest.
            for name in known:
                for attr in (name, f"tgt_{name}"):
                    if hasattr(settings, attr):
                        values[name] = getattr(settings, attr)
        if values.get("netns") == "":
            values["netns"] = None
        if "roots" in values:
            roots = values["roots"]
            values["roots"] = tuple(Path(r) for r in ([roots] if isinstance(roots, str | Path) else roots or ()))
        return cls(**values)


def check_name(name: object, *, target: str, op: str, what: str) -> str:
    """``name`` when it is an iSCSI name in canonical form; BadSettings otherwise.

    tgt compares initiator names byte for byte, so a name that is only equal after
    RFC 3722 case folding would be refused at login: callers must pass the canonical
    lowercase form that profiles store.
    """
    if not isinstance(name, str):
        raise BadSettings(target, NAME, op, f"{what} {name!r} is not a string")
    try:
        canonical = parse_iqn(name)
    except ValueError as exc:
        raise BadSettings(target, NAME, op, f"{what}: {exc}") from None
    if canonical != name:
        raise BadSettings(target, NAME, op, f"{what} {name!r} is not in canonical form; use {canonical!r}")
    return name


def _check_lun(lun: LunRef, op: str) -> None:
    check_name(lun.target, target=str(lun.target), op=op, what="target name")
    if isinstance(lun.lun, bool) or not isinstance(lun.lun, int) or not 1 <= lun.lun <= MAX_LUN:
        raise BadSettings(lun.target, NAME, op, f"LUN {lun.lun!r} is not 1..{MAX_LUN} (LUN 0 is tgt's controller)")


def serial_for(lun: LunRef) -> tuple[str, str]:
    """(scsi_id, scsi_sn) for a LUN: stable across tgtd restarts and tid changes."""
    digest = hashlib.sha256(f"{lun.target}\0{lun.lun}".encode()).hexdigest()
    return f"anvil-{digest[:16]}", digest[:16]


class TgtDriver:
    """StorageDriver on one tgtd; see the module docstring."""

    name = NAME

    def __init__(self, settings: TgtSettings | None = None) -> None:
        self.settings = settings or TgtSettings()
        # tid allocation is read-then-create: one mutation at a time per driver.
        self._lock = asyncio.Lock()

    # ---- tgtadm --------------------------------------------------------------------

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        s = self.settings
        port = ["-C", str(s.control_port)] if s.control_port is not None else []
        prefix = ["ip", "netns", "exec", s.netns] if s.netns else []
        return [*prefix, s.tgtadm, *port, "--lld", "iscsi", *args]

    async def _run(self, target: str, op: str, *args: str) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of one tgtadm run; raises BmcUnreachable when tgtd cannot be asked."""
        argv = self._argv(args)
        for program in {argv[0], self.settings.tgtadm}:
            if shutil.which(program) is None:
                raise BmcUnreachable(target, NAME, op, f"{program} is not installed"
                                     f"{' (apt-get install tgt)' if program == 'tgtadm' else ''}")
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise BmcUnreachable(target, NAME, op, f"cannot run {argv[0]}: {exc}") from exc
        try:
            async with asyncio.timeout(self.settings.timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await proc.wait()
            raise BmcUnreachable(target, NAME, op, f"tgtadm gave no answer within {self.settings.timeout:g}s "
                                 f"(control port {self._port_text()})") from None
        rc = proc.returncode if proc.returncode is not None else -1
        stderr = err.decode(errors="replace").strip()
        if rc != 0 and any(mark in stderr for mark in _UNREACHABLE_MARKS):
            raise BmcUnreachable(target, NAME, op, f"tgtd on control port {self._port_text()}"
                                 f"{' in ' + self.settings.netns if self.settings.netns else ''} "
                                 f"cannot be reached: {stderr}")
        return rc, out.decode(errors="replace"), stderr

    def _port_text(self) -> str:
        return "default" if self.settings.control_port is None else str(self.settings.control_port)

    async def _must(self, target: str, op: str, *args: str, ok_if: str = "") -> bool:
        """Run tgtadm; True if it did the change, False if it refused with ``ok_if`` (already so)."""
        rc, _, err = await self._run(target, op, *args)
        if rc == 0:
            return True
        if ok_if and ok_if in err:
            return False
        what = " ".join(args[:4])
        if "still active" in err:
            raise BmcBusy(target, NAME, op, f"tgtadm {what}: {err}")
        raise BmcFailure(target, NAME, op, f"tgtadm {what}: {err or f'exit {rc}'}")

    async def _targets(self, target: str, op: str) -> tuple[Target, ...]:
        rc, out, err = await self._run(target, op, "--op", "show", "--mode", "target")
        if rc != 0:
            raise BmcFailure(target, NAME, op, f"tgtadm show: {err or f'exit {rc}'}", retryable=True)
        try:
            return parse_targets(out)
        except ShowParseError as exc:
            raise BmcFailure(target, NAME, op, f"unexpected tgtadm show output: {exc}") from exc

    async def _find(self, lun: LunRef, op: str) -> Target | None:
        return next((t for t in await self._targets(lun.target, op) if t.name == lun.target), None)

    # ---- StorageDriver ---------------------------------------------------------------

    async def ensure_lun(self, lun: LunRef, disk: DiskSpec) -> None:
        """Create the backing file (only if missing), the target and the LUN (only if missing).

        BadSettings when the target's LUN is backed by another file: that is another
        disk, and replacing it under a logged-in OS is not this call's to decide.
        """
        op = "ensure_lun"
        _check_lun(lun, op)
        try:
            checked = backing.check(disk, self.settings.roots)
        except backing.BackingError as exc:
            raise BadSettings(lun.target, NAME, op, exc.reason) from None
        # Outside the lock: seeding can take minutes, and other profiles' binds must not wait.
        try:
            created = await backing.ensure(checked, copy_timeout=self.settings.copy_timeout)
        except backing.BackingError as exc:
            cls = BadSettings if exc.fatal else BmcFailure
            raise cls(lun.target, NAME, op, exc.reason, retryable=not exc.fatal) from None
        if created:
            log.info("created backing file %s (%d bytes%s)", checked.path, checked.size,
                     f", from {checked.seed}" if checked.seed else "", extra={"target": lun.target})
        async with self._lock:
            tgt = await self._ensure_target(lun, op)
            await self._ensure_disk(tgt, lun, checked.path, op)

    async def _ensure_target(self, lun: LunRef, op: str) -> Target:
        # Another appliance process may take the tid we picked; look again, a few times.
        for _ in range(5):
            targets = await self._targets(lun.target, op)
            found = next((t for t in targets if t.name == lun.target), None)
            if found is not None:
                return found
            used = {t.tid for t in targets}
            tid = next(i for i in range(1, len(used) + 2) if i not in used)
            if await self._must(lun.target, op, "--op", "new", "--mode", "target", "--tid", str(tid),
                                "-T", lun.target, ok_if="already exists"):
                log.info("created target %s as tid %d", lun.target, tid, extra={"target": lun.target})
        found = await self._find(lun, op)
        if found is None:
            raise BmcFailure(lun.target, NAME, op, "could not create the target (tids kept colliding)",
                             retryable=True)
        return found

    async def _ensure_disk(self, tgt: Target, lun: LunRef, path: Path, op: str) -> None:
        have = tgt.lun(lun.lun)
        if have is not None and have.path != str(path):
            raise BadSettings(lun.target, NAME, op, f"LUN {lun.lun} of {lun.target} is backed by {have.path} "
                              f"(type {have.type or '?'}), not {path}; remove_lun it first")
        tid = str(tgt.tid)
        if have is None:
            await self._must(lun.target, op, "--op", "new", "--mode", "logicalunit", "--tid", tid,
                             "--lun", str(lun.lun), "-b", str(path), ok_if="already exists")
            log.info("added LUN %d of %s backed by %s", lun.lun, lun.target, path, extra={"target": lun.target})
        scsi_id, scsi_sn = serial_for(lun)
        if have is None or (have.scsi_id, have.scsi_sn) != (scsi_id, scsi_sn):
            await self._must(lun.target, op, "--op", "update", "--mode", "logicalunit", "--tid", tid,
                             "--lun", str(lun.lun), "--params", f"scsi_id={scsi_id},scsi_sn={scsi_sn}")

    async def bind(self, lun: LunRef, initiator: str) -> None:
        """Admit ``initiator`` to the target. BmcFailure (not retryable) when the target is
        missing: a restarted tgtd forgot it, and only ensure_lun can bring it back."""
        op = "bind"
        _check_lun(lun, op)
        check_name(initiator, target=lun.target, op=op, what="initiator name")
        async with self._lock:
            tgt = await self._find(lun, op)
            if tgt is None:
                raise BmcFailure(lun.target, NAME, op, f"no target {lun.target} on tgtd "
                                 f"(control port {self._port_text()}); call ensure_lun first")
            if initiator in tgt.initiator_acl:
                return
            await self._must(lun.target, op, "--op", "bind", "--mode", "target", "--tid", str(tgt.tid),
                             "--initiator-name", initiator, ok_if="already exists")

    async def unbind(self, lun: LunRef, initiator: str) -> None:
        """Drop ``initiator``'s ACL, then close its sessions; done when none is left."""
        op = "unbind"
        _check_lun(lun, op)
        check_name(initiator, target=lun.target, op=op, what="initiator name")
        async with self._lock:
            tgt = await self._find(lun, op)
            if tgt is None:
                return
            if initiator in tgt.initiator_acl:
                await self._must(lun.target, op, "--op", "unbind", "--mode", "target", "--tid", str(tgt.tid),
                                 "--initiator-name", initiator, ok_if="does not exist")
            await self._close_sessions(lun, op, frozenset({initiator}))

    async def _close_sessions(self, lun: LunRef, op: str, initiators: frozenset[str] | None) -> None:
        """Close the sessions of ``initiators`` (all when None) and wait, bounded, until they are gone."""
        deadline = time.monotonic() + self.settings.timeout
        while True:
            tgt = await self._find(lun, op)
            if tgt is None:
                return
            doomed = [n for n in tgt.nexuses if initiators is None or n.initiator in initiators]
            if not doomed:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted({n.initiator for n in doomed}))
                raise BmcBusy(lun.target, NAME, op, f"sessions of {names} still open after "
                              f"{self.settings.timeout:g}s")
            for nexus in doomed:
                for conn in nexus.connections:
                    # The connection may already be gone (the initiator logged out): fine.
                    await self._run(lun.target, op, "--op", "delete", "--mode", "conn", "--tid", str(tgt.tid),
                                    "--sid", str(nexus.sid), "--cid", str(conn.cid))
                log.info("closed session %d of %s on %s", nexus.sid, nexus.initiator, lun.target,
                         extra={"target": lun.target})
            await asyncio.sleep(0.05)

    async def bindings(self, lun: LunRef) -> frozenset[str]:
        _check_lun(lun, "bindings")
        tgt = await self._find(lun, "bindings")
        return tgt.initiator_acl if tgt is not None else frozenset()

    async def sessions(self, lun: LunRef) -> frozenset[str]:
        _check_lun(lun, "sessions")
        tgt = await self._find(lun, "sessions")
        return tgt.logged_in if tgt is not None else frozenset()

    async def remove_lun(self, lun: LunRef) -> None:
        """Delete the LUN; when it was the target's last disk, revoke every ACL, close
        every session and delete the target. The backing file is kept."""
        op = "remove_lun"
        _check_lun(lun, op)
        async with self._lock:
            tgt = await self._find(lun, op)
            if tgt is None:
                return
            tid = str(tgt.tid)
            others = [lu for lu in tgt.luns if lu.number not in (0, lun.lun) and lu.type != "controller"]
            if others:
                if tgt.lun(lun.lun) is not None:
                    await self._must(lun.target, op, "--op", "delete", "--mode", "logicalunit", "--tid", tid,
                                     "--lun", str(lun.lun), ok_if="can't find")
                return
            for acl in tgt.acl:
                flag = "--initiator-name" if acl in tgt.initiator_acl else "--initiator-address"
                await self._must(lun.target, op, "--op", "unbind", "--mode", "target", "--tid", tid,
                                 flag, acl, ok_if="does not exist")
            await self._close_sessions(lun, op, None)
            if tgt.lun(lun.lun) is not None:
                await self._must(lun.target, op, "--op", "delete", "--mode", "logicalunit", "--tid", tid,
                                 "--lun", str(lun.lun), ok_if="can't find")
            await self._must(lun.target, op, "--op", "delete", "--mode", "target", "--tid", tid,
                             ok_if="can't find")
            log.info("removed target %s (tid %s)", lun.target, tid, extra={"target": lun.target})

    async def close(self) -> None:
        """Nothing is kept open: every call runs its own tgtadm."""


def create(settings: object | None = None) -> TgtDriver:
    """Entry-point factory (``anvil.drivers.storage``: ``tgt``); keys as :class:`TgtSettings`."""
    return TgtDriver(TgtSettings.from_settings(settings))

