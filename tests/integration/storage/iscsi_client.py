"""A tiny iSCSI initiator for the storage tests: one session, one connection, READ(10)/WRITE(10).

Why our own: Debian's libiscsi-bin ships no tool that writes or dumps chosen blocks
(no ``iscsi-dd``), qemu's iSCSI block driver lives in the uninstalled qemu-block-extra,
and the kernel initiator needs iscsid on the shared host kernel. libiscsi's own tools
(``iscsi-ls``, ``iscsi-inq``, ``iscsi-perf``) are still used for what they can show.

Scope (RFC 7143): no authentication, no digests, ErrorRecoveryLevel 0, and the
target's R2Ts honoured for writes; nothing else. Every socket wait is bounded by
``timeout``. Failures raise :class:`IscsiError` with the login status or SCSI status.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

BHS = 48
OP_NOP_OUT, OP_SCSI_CMD, OP_LOGIN_REQ, OP_DATA_OUT, OP_LOGOUT_REQ = 0x00, 0x01, 0x03, 0x05, 0x06
OP_NOP_IN, OP_SCSI_RSP, OP_LOGIN_RSP, OP_DATA_IN, OP_LOGOUT_RSP, OP_R2T, OP_REJECT = (
    0x20, 0x21, 0x23, 0x25, 0x26, 0x31, 0x3F)
IMMEDIATE = 0x40
BLOCK = 512
CHECK_CONDITION, UNIT_ATTENTION = 0x02, 0x06


class IscsiError(RuntimeError):
    """Login refused, a SCSI command failed, or the target broke the protocol."""

    def __init__(self, message: str, *, login_status: int | None = None) -> None:
        super().__init__(message)
        self.login_status = login_status


class _UnitAttention(Exception):
    pass


@dataclass(slots=True)
class _Pdu:
    bhs: bytes
    data: bytes

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    def u32(self, offset: int) -> int:
        return int(struct.unpack_from(">I", self.bhs, offset)[0])


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _keys(pairs: dict[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def _parse_keys(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode().partition("=")
            out[key] = value
    return out


class Session:
    """A logged-in session to LUN ``lun`` of ``target``; use as a context manager."""

    def __init__(self, host: str, port: int, target: str, initiator: str, *, lun: int = 1,
                 alias: str = "", timeout: float = 5.0) -> None:
        self.target, self.initiator, self.lun, self.alias = target, initiator, lun, alias
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(timeout)
        self._itt = 0
        self._cmdsn = 1
        self._expstatsn = 0
        self._max_send = 8192   # the target's MaxRecvDataSegmentLength until it says otherwise
        try:
            self._login()
        except BaseException:
            self._sock.close()
            raise

    # ---- wire ------------------------------------------------------------------------

    def _send(self, bhs: bytearray, data: bytes = b"") -> None:
        struct.pack_into(">I", bhs, 4, len(data))   # TotalAHSLength 0, then 24-bit DataSegmentLength
        self._sock.sendall(bytes(bhs) + _pad(data))

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._sock.recv(n - len(buf))
            except OSError as exc:   # tgt resets a login to a target that is gone
                raise IscsiError(f"connection lost: {exc}") from exc
            if not chunk:
                raise IscsiError("the target closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv(self) -> _Pdu:
        while True:
            bhs = self._recv_exact(BHS)
            ahs = bhs[4] * 4
            dlen = int.from_bytes(bhs[5:8], "big")
            rest = self._recv_exact(ahs + dlen + (-dlen % 4))
            pdu = _Pdu(bhs, rest[ahs:ahs + dlen])
            if pdu.opcode == OP_NOP_IN and pdu.u32(20) != 0xFFFFFFFF:
                self._answer_ping(pdu)
                continue
            if pdu.opcode == OP_REJECT:
                raise IscsiError(f"the target rejected a PDU (reason 0x{bhs[2]:02x})")
            return pdu

    def _answer_ping(self, ping: _Pdu) -> None:
        bhs = bytearray(BHS)
        bhs[0], bhs[1] = OP_NOP_OUT | IMMEDIATE, 0x80
        bhs[8:16] = ping.bhs[8:16]
        struct.pack_into(">IIII", bhs, 16, 0xFFFFFFFF, ping.u32(20), self._cmdsn, self._expstatsn)
        self._send(bhs)

    def _next_itt(self) -> int:
        self._itt += 1
        return self._itt

    # ---- login / logout ----------------------------------------------------------------

    def _login_step(self, csg: int, nsg: int, keys: dict[str, str], isid: bytes) -> dict[str, str]:
        bhs = bytearray(BHS)
        bhs[0] = OP_LOGIN_REQ | IMMEDIATE
        bhs[1] = 0x80 | (csg << 2) | nsg          # Transit to the next stage
        bhs[8:14] = isid
        struct.pack_into(">IHH", bhs, 16, self._next_itt(), 0, 0)
        struct.pack_into(">II", bhs, 24, self._cmdsn, self._expstatsn)
        self._send(bhs, _keys(keys))
        rsp = self._recv()
        if rsp.opcode != OP_LOGIN_RSP:
            raise IscsiError(f"expected a login response, got opcode 0x{rsp.opcode:02x}")
        status = (rsp.bhs[36] << 8) | rsp.bhs[37]
        if status:
            raise IscsiError(f"login refused: status 0x{status:04x}", login_status=status)
        self._expstatsn = rsp.u32(24) + 1
        if not rsp.bhs[1] & 0x80 or rsp.bhs[1] & 0x03 != nsg:
            raise IscsiError("the target did not move to the next login stage")
        return _parse_keys(rsp.data)

    def _login(self) -> None:
        isid = bytes([0x80]) + os.urandom(5)   # random-format ISID: a fresh session every time
        first = {"InitiatorName": self.initiator, "SessionType": "Normal", "TargetName": self.target}
        if self.alias:
            first["InitiatorAlias"] = self.alias
        self._login_step(0, 1, {**first, "AuthMethod": "None"}, isid)
        answer = self._login_step(1, 3, {
            "HeaderDigest": "None", "DataDigest": "None", "ErrorRecoveryLevel": "0",
            "InitialR2T": "Yes", "ImmediateData": "No", "MaxRecvDataSegmentLength": "65536",
            "MaxBurstLength": "262144", "FirstBurstLength": "65536", "MaxConnections": "1",
            "DefaultTime2Wait": "0", "DefaultTime2Retain": "0"}, isid)
        if "MaxRecvDataSegmentLength" in answer:
            self._max_send = int(answer["MaxRecvDataSegmentLength"])

    def logout(self) -> None:
        bhs = bytearray(BHS)
        bhs[0], bhs[1] = OP_LOGOUT_REQ | IMMEDIATE, 0x80   # reason 0: close the session
        struct.pack_into(">IHH", bhs, 16, self._next_itt(), 0, 0)
        struct.pack_into(">II", bhs, 24, self._cmdsn, self._expstatsn)
        try:
            self._send(bhs)
            self._recv()
        finally:
            self._sock.close()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.logout()
        else:
            self.close()

    # ---- SCSI ------------------------------------------------------------------------

    def _command(self, cdb: bytes, *, read: int = 0, write: bytes = b"") -> bytes:
        itt = self._next_itt()
        bhs = bytearray(BHS)
        bhs[0] = OP_SCSI_CMD
        bhs[1] = 0x80 | (0x40 if read else 0) | (0x20 if write else 0) | 0x01   # Final, R/W, SIMPLE
        bhs[8:16] = struct.pack(">HHI", self.lun & 0x3FFF, 0, 0)   # single-level peripheral LUN
        struct.pack_into(">IIII", bhs, 16, itt, read or len(write), self._cmdsn, self._expstatsn)
        bhs[32:48] = cdb.ljust(16, b"\0")
        self._cmdsn += 1
        self._send(bhs)
        data = bytearray(read)
        while True:
            pdu = self._recv()
            if pdu.u32(16) != itt:
                raise IscsiError(f"unexpected reply for task {pdu.u32(16)}")
            if pdu.opcode == OP_DATA_IN:
                offset = pdu.u32(40)
                data[offset:offset + len(pdu.data)] = pdu.data
                if pdu.bhs[1] & 0x01:     # status travels with the last Data-In
                    self._expstatsn = pdu.u32(24) + 1
                    return self._checked(pdu.bhs[3], bytes(data))
            elif pdu.opcode == OP_R2T:
                self._data_out(itt, pdu.u32(20), write, pdu.u32(40), pdu.u32(44))
            elif pdu.opcode == OP_SCSI_RSP:
                self._expstatsn = pdu.u32(24) + 1
                if pdu.bhs[2]:
                    raise IscsiError(f"iSCSI response 0x{pdu.bhs[2]:02x}")
                return self._checked(pdu.bhs[3], bytes(data), pdu.data[2:])
            else:
                raise IscsiError(f"unexpected opcode 0x{pdu.opcode:02x}")

    def _data_out(self, itt: int, ttt: int, payload: bytes, offset: int, length: int) -> None:
        sent, datasn = 0, 0
        while sent < length:
            chunk = payload[offset + sent:offset + sent + min(self._max_send, length - sent)]
            bhs = bytearray(BHS)
            bhs[0] = OP_DATA_OUT
            bhs[1] = 0x80 if sent + len(chunk) >= length else 0
            bhs[8:16] = struct.pack(">HHI", self.lun & 0x3FFF, 0, 0)
            struct.pack_into(">II", bhs, 16, itt, ttt)
            struct.pack_into(">I", bhs, 28, self._expstatsn)
            struct.pack_into(">II", bhs, 36, datasn, offset + sent)
            self._send(bhs, chunk)
            sent += len(chunk)
            datasn += 1

    @staticmethod
    def _checked(status: int, data: bytes, sense: bytes = b"") -> bytes:
        if status == CHECK_CONDITION and len(sense) > 2 and sense[2] & 0x0F == UNIT_ATTENTION:
            raise _UnitAttention
        if status:
            detail = f" sense {sense[:18].hex()}" if sense else ""
            raise IscsiError(f"SCSI status 0x{status:02x}{detail}")
        return data

    def _retrying(self, cdb: bytes, *, read: int = 0, write: bytes = b"") -> bytes:
        # A new I_T nexus gets UNIT ATTENTION (power on / reset) on its first command
        # (SAM-5 5.14); it says nothing about the command, so try again.
        for _ in range(3):
            try:
                return self._command(cdb, read=read, write=write)
            except _UnitAttention:
                continue
        raise IscsiError("UNIT ATTENTION three times in a row")

    def read(self, lba: int, blocks: int = 1) -> bytes:
        """READ(10) of ``blocks`` 512-byte blocks from ``lba``."""
        return self._retrying(struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0), read=blocks * BLOCK)

    def write(self, lba: int, data: bytes) -> None:
        """WRITE(10) of ``data`` (whole 512-byte blocks) at ``lba``, then SYNCHRONIZE CACHE."""
        if not data or len(data) % BLOCK:
            raise ValueError("write whole 512-byte blocks")
        self._retrying(struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // BLOCK, 0), write=data)
        self._retrying(struct.pack(">BBIBHB", 0x35, 0, 0, 0, 0, 0))
