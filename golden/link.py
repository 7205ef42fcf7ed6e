"""The host link (issue 6): the framed protocol between a host and an engine on a board.

This module is the specification of `oscarray.hdl.link.HostLink` and the host's codec. It
is pure Python (NumPy for arrays of writes and items) and imports nothing else of ours: the
pyserial driver and the cocotb driver both build and parse their bytes here, and `LinkDevice`
is the byte-level reference model that the RTL is compared with, response for response.

Frames
------
Host -> device (a command)::

    0xA5 | CMD | LEN (2 bytes, little-endian) | payload (LEN bytes) | CRC (2 bytes, LE)

Device -> host (a response; exactly one per command, and one per rejected frame)::

    0x5A | STATUS | LEN (2 bytes, LE) | payload (LEN bytes) | CRC (2 bytes, LE)

CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, init 0xFFFF, no reflection, no final XOR;
`crc16(b"123456789") == 0x29B1`) over CMD (STATUS), LEN and the payload: not over the sync
byte. It detects every error of up to 3 bits in a frame of this size.

Commands (`Command`) and their payloads; every multi-byte number is little-endian:

    ====== ==== =================================== ============================================
    name   CMD  request payload                     OK response payload
    ====== ==== =================================== ============================================
    PING   0x01 none                                `LinkFormat.capabilities` (19 bytes): version,
                                                    engine id, the load and output field widths,
                                                    cycle bits, max payload, byte timeout,
                                                    watchdog (the host checks the bitstream)
    WRITE  0x02 k writes of `write_bytes` each:     writes done (2 bytes) = k
                target | addr | data, each field
                `ceil(bits / 8)` bytes, LE, padding
                bits zero
    START  0x03 none                                none (the engine's `start` pulses once)
    STATUS 0x04 none                                flags (1 byte: `Flag`), cycles
                                                    (`cycle_bytes`); status WATCHDOG instead of
                                                    OK while the watchdog flag is set
    READ   0x05 n (2 bytes)                         up to min(n, `max_items`) output items that
                                                    the engine has ready (never waits): value
                                                    (`value_bytes`, two's complement when the
                                                    value is signed) | kind (`kind_bytes`)
    ABORT  0x06 none                                none (the engine's reset pulses once; the
                                                    watchdog flag is cleared)
    ====== ==== =================================== ============================================

Status codes (`Status`) of a response; an error response has no payload:

    ============ ==== ==========================================================================
    OK           0x00 the command ran
    BAD_CRC      0x01 the frame's CRC does not match (nothing ran)
    BAD_LENGTH   0x02 LEN > max_payload: answered right after LEN; the bytes that follow are
                      not read as this frame's payload but hunted for the next sync
    UNKNOWN_CMD  0x03 CMD is none of the above (CRC good)
    TIMEOUT      0x04 a frame stopped for `byte_timeout` clocks between two bytes (truncated)
    BUSY         0x05 WRITE or START while the engine is busy (nothing written, not started)
    WATCHDOG     0x06 STATUS while the watchdog flag is set (the engine stayed busy for
                      `watchdog_cycles` clocks; the flags and cycles follow, as for OK); WRITE
                      when the engine did not take a write for `watchdog_cycles` clocks (the
                      count of writes done follows)
    BAD_PAYLOAD  0x07 the payload does not suit the command: a WRITE that is not a whole
                      number of writes or sets padding bits, READ without exactly 2 bytes,
                      any payload on PING, START, STATUS, ABORT (nothing ran)
    ============ ==== ==========================================================================

The device's parser (what `LinkDevice` models byte for byte)
------------------------------------------------------------
- Hunting, every byte but 0xA5 is dropped. 0xA5 starts a frame: CMD, LEN, payload, CRC.
- Inside a frame (after the sync byte), `byte_timeout` clocks without a byte abandon the
  frame: TIMEOUT, and hunting again. A truncated frame can never hold the link.
- LEN > max_payload: BAD_LENGTH at once, then hunting (the oversize payload is not consumed).
- After the last CRC byte the checks run in this order: CRC (BAD_CRC), command
  (UNKNOWN_CMD), payload (BAD_PAYLOAD), engine busy for WRITE and START (BUSY). A frame that
  fails a check changes nothing: the whole frame is in the device's buffer, checked, before
  its first write reaches the engine.
- While the device executes a command and sends its response it takes no bytes (the byte
  stream's `ready` is low; a UART in front of it drops what arrives then). A host sends a
  frame, waits for its response, and after an error waits `byte_timeout` clocks of silence
  before it retries, so that the device is hunting again.

Hardware widths live in `LinkFormat` (the one configuration object of the link, read by the
codec here and by the RTL); `oscarray.hdl.link.link_format` derives one from an engine's
`load` and `o` layouts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = [
    "CAPABILITY_BYTES",
    "PROTOCOL_VERSION",
    "SYNC_COMMAND",
    "SYNC_RESPONSE",
    "BadCrcError",
    "BadLengthError",
    "BadPayloadError",
    "BusyError",
    "Command",
    "DeviceError",
    "EngineModel",
    "Flag",
    "FrameTimeoutError",
    "IncompleteResponse",
    "LinkDevice",
    "LinkError",
    "LinkFormat",
    "LinkFormatError",
    "Response",
    "ResponseError",
    "Status",
    "StatusReport",
    "UnknownCommandError",
    "WatchdogError",
    "crc16",
    "decode_response",
    "decode_status",
    "encode_frame",
    "encode_response",
    "pack_items",
    "pack_writes",
    "read_payload",
    "unpack_items",
    "unpack_writes",
    "write_frames",
]

SYNC_COMMAND = 0xA5
SYNC_RESPONSE = 0x5A
PROTOCOL_VERSION = 1
HEADER_BYTES = 4            # sync, CMD/STATUS, LEN
FRAME_OVERHEAD = 6          # header and CRC
MAX_LEN = 0xFFFF


class Command(enum.IntEnum):
    """CMD byte of a host frame."""
    PING = 0x01
    WRITE = 0x02
    START = 0x03
    STATUS = 0x04
    READ = 0x05
    ABORT = 0x06


class Status(enum.IntEnum):
    """STATUS byte of a device response."""
    OK = 0x00
    BAD_CRC = 0x01
    BAD_LENGTH = 0x02
    UNKNOWN_CMD = 0x03
    TIMEOUT = 0x04
    BUSY = 0x05
    WATCHDOG = 0x06
    BAD_PAYLOAD = 0x07


class Flag(enum.IntFlag):
    """Bits of the flags byte of a STATUS response."""
    BUSY = 0x01          # the engine's busy
    DONE = 0x02          # the engine's done
    ERROR = 0x04         # the engine's error
    WATCHDOG = 0x08      # the engine stayed busy watchdog_cycles clocks (until START/ABORT)
    PENDING = 0x10       # an output item is waiting on `o` (READ would return one)


# ---------------------------------------------------------------------------------------------
# Errors


class LinkError(Exception):
    """Anything that went wrong on the link (base class)."""


class LinkFormatError(LinkError, ValueError):
    """Widths or sizes that the link cannot carry."""


class ResponseError(LinkError):
    """The bytes from the device are not a well-formed response (sync, CRC, length)."""


class IncompleteResponse(ResponseError):
    """The bytes end before the response does; `needed` more bytes at least."""

    def __init__(self, message: str, needed: int):
        super().__init__(message)
        self.needed = needed


class DeviceError(LinkError):
    """The device answered with an error status; `status` and `response` tell which."""

    status: Status = Status.OK

    def __init__(self, message: str, response: Response):
        super().__init__(message)
        self.response = response


class BadCrcError(DeviceError):
    """The device saw a CRC error in our frame."""
    status = Status.BAD_CRC


class BadLengthError(DeviceError):
    """Our frame's LEN exceeded the device's max payload."""
    status = Status.BAD_LENGTH


class UnknownCommandError(DeviceError):
    """The device does not know our CMD."""
    status = Status.UNKNOWN_CMD


class FrameTimeoutError(DeviceError):
    """The device gave up on a frame that stopped between two bytes."""
    status = Status.TIMEOUT


class BusyError(DeviceError):
    """WRITE or START while the engine runs."""
    status = Status.BUSY


class WatchdogError(DeviceError):
    """The engine stayed busy (or refused a write) longer than the watchdog allows."""
    status = Status.WATCHDOG


class BadPayloadError(DeviceError):
    """Our payload does not suit the command."""
    status = Status.BAD_PAYLOAD


STATUS_ERRORS = {cls.status: cls for cls in (BadCrcError, BadLengthError, UnknownCommandError,
                                             FrameTimeoutError, BusyError, WatchdogError,
                                             BadPayloadError)}


# ---------------------------------------------------------------------------------------------
# CRC


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | Iterable[int], crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of `data` (poly 0x1021, init 0xFFFF); pass `crc` to continue."""
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


# ---------------------------------------------------------------------------------------------
# The format


def _nbytes(bits: int) -> int:
    return (bits + 7) // 8


CAPABILITY_BYTES = 19


@dataclass(frozen=True)
class LinkFormat:
    """The widths and sizes of one link: what the host and the device must agree on.

    target_bits, addr_bits, data_bits   the engine's `load` fields (unsigned, 1..63 bits)
    value_bits, value_signed            the value field of an `o` item (1..64 bits)
    kind_bits                           the kind field of an `o` item (1..63 bits)
    cycle_bits                          the engine's `cycles` counter (1..64 bits)
    max_payload                         the largest payload of a command frame, in bytes
                                        (the device's frame buffer; also the largest response)
    byte_timeout                        clocks without a byte that abandon a frame
    watchdog_cycles                     clocks the engine may stay busy (or refuse a write)
    engine_id                           a number (0..255) naming the engine behind the link
    """

    target_bits: int
    addr_bits: int
    data_bits: int
    value_bits: int
    kind_bits: int
    value_signed: bool = True
    cycle_bits: int = 32
    max_payload: int = 256
    byte_timeout: int = 100_000
    watchdog_cycles: int = 1 << 28
    engine_id: int = 0
    #: field byte widths (derived)
    target_bytes: int = field(init=False)
    addr_bytes: int = field(init=False)
    data_bytes: int = field(init=False)
    value_bytes: int = field(init=False)
    kind_bytes: int = field(init=False)
    cycle_bytes: int = field(init=False)

    def __post_init__(self):
        for name, top in (("target_bits", 63), ("addr_bits", 63), ("data_bits", 63),
                          ("value_bits", 64), ("kind_bits", 63), ("cycle_bits", 64)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 1 <= value <= top:
                raise LinkFormatError(f"{name} must be an integer in 1..{top}, got {value!r}")
        if self.value_bits == 64 and not self.value_signed:
            raise LinkFormatError("an unsigned value has at most 63 bits")
        for name, top in (("byte_timeout", 2 ** 32 - 1), ("watchdog_cycles", 2 ** 32 - 1),
                          ("max_payload", MAX_LEN)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 1 <= value <= top:
                raise LinkFormatError(f"{name} must be an integer in 1..{top}, got {value!r}")
        for name in ("byte_timeout", "watchdog_cycles"):
            if getattr(self, name) < 2:
                raise LinkFormatError(f"{name} must be at least 2 clocks, got "
                                      f"{getattr(self, name)}")
        if not 0 <= self.engine_id <= 255:
            raise LinkFormatError(f"engine_id must be in 0..255, got {self.engine_id}")
        for name in ("target", "addr", "data", "value", "kind", "cycle"):
            object.__setattr__(self, f"{name}_bytes", _nbytes(getattr(self, f"{name}_bits")))
        smallest = max(CAPABILITY_BYTES, self.write_bytes, self.item_bytes,
                       self.status_bytes, 2)
        if self.max_payload < smallest:
            raise LinkFormatError(
                f"max_payload {self.max_payload} is too small: it must hold the PING answer "
                f"({CAPABILITY_BYTES} bytes), one write ({self.write_bytes}), one item "
                f"({self.item_bytes}) and a STATUS answer ({self.status_bytes}): at least "
                f"{smallest}")

    @property
    def write_bytes(self) -> int:
        """Bytes of one write in a WRITE payload."""
        return self.target_bytes + self.addr_bytes + self.data_bytes

    @property
    def item_bytes(self) -> int:
        """Bytes of one output item in a READ answer."""
        return self.value_bytes + self.kind_bytes

    @property
    def status_bytes(self) -> int:
        """Bytes of a STATUS answer: flags and cycles."""
        return 1 + self.cycle_bytes

    @property
    def max_writes(self) -> int:
        """Writes in one WRITE frame at most."""
        return self.max_payload // self.write_bytes

    @property
    def max_items(self) -> int:
        """Items in one READ answer at most (a larger n is clamped to this)."""
        return self.max_payload // self.item_bytes

    def capabilities(self) -> bytes:
        """The PING answer: version, engine id, target, addr, data, value, kind bits, flags
        (bit 0: value signed), cycle bits (1 byte each), max_payload (2), byte_timeout (4),
        watchdog_cycles (4)."""
        head = bytes([PROTOCOL_VERSION, self.engine_id, self.target_bits, self.addr_bits,
                      self.data_bits, self.value_bits, self.kind_bits, int(self.value_signed),
                      self.cycle_bits])
        out = (head + self.max_payload.to_bytes(2, "little")
               + self.byte_timeout.to_bytes(4, "little")
               + self.watchdog_cycles.to_bytes(4, "little"))
        assert len(out) == CAPABILITY_BYTES
        return out

    @classmethod
    def from_capabilities(cls, payload: bytes) -> LinkFormat:
        """The format a PING answer describes (LinkFormatError for another protocol version
        or a malformed answer)."""
        payload = bytes(payload)
        if len(payload) != CAPABILITY_BYTES:
            raise LinkFormatError(f"a PING answer has {CAPABILITY_BYTES} bytes, got "
                                  f"{len(payload)}")
        if payload[0] != PROTOCOL_VERSION:
            raise LinkFormatError(f"the device speaks link protocol {payload[0]}, this host "
                                  f"{PROTOCOL_VERSION}")
        return cls(target_bits=payload[2], addr_bits=payload[3], data_bits=payload[4],
                   value_bits=payload[5], kind_bits=payload[6],
                   value_signed=bool(payload[7] & 1), cycle_bits=payload[8],
                   max_payload=int.from_bytes(payload[9:11], "little"),
                   byte_timeout=int.from_bytes(payload[11:15], "little"),
                   watchdog_cycles=int.from_bytes(payload[15:19], "little"),
                   engine_id=payload[1])

    def write_masks(self) -> list[int]:
        """For each byte of a write, the bits a field may use (the rest is padding, which
        must be zero)."""
        masks = []
        for bits, nbytes in ((self.target_bits, self.target_bytes),
                             (self.addr_bits, self.addr_bytes),
                             (self.data_bits, self.data_bytes)):
            for k in range(nbytes):
                masks.append((1 << min(8, bits - 8 * k)) - 1)
        return masks


# ---------------------------------------------------------------------------------------------
# Frames


def _frame(sync: int, code: int, payload: bytes) -> bytes:
    payload = bytes(payload)
    if len(payload) > MAX_LEN:
        raise LinkFormatError(f"a payload has at most {MAX_LEN} bytes, got {len(payload)}")
    body = bytes([code & 0xFF]) + len(payload).to_bytes(2, "little") + payload
    return bytes([sync]) + body + crc16(body).to_bytes(2, "little")


def encode_frame(cmd: int, payload: bytes = b"") -> bytes:
    """A host frame: 0xA5, CMD, LEN, payload, CRC. No check of the command or of the
    device's max payload (tests send unknown and oversize frames through this too)."""
    return _frame(SYNC_COMMAND, int(cmd), payload)


def encode_response(status: int, payload: bytes = b"") -> bytes:
    """A device response: 0x5A, STATUS, LEN, payload, CRC (what `LinkDevice` sends)."""
    return _frame(SYNC_RESPONSE, int(status), payload)


@dataclass(frozen=True)
class Response:
    """One decoded response: `status`, `payload`, and `size` (its bytes in the stream)."""
    status: int
    payload: bytes
    size: int

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


def decode_response(data: bytes, *, check: bool = True) -> Response:
    """Decode the response at the start of `data` (extra bytes after it are left).

    Raises IncompleteResponse when `data` ends early, ResponseError for a bad sync byte,
    CRC or an unknown status; with `check`, the DeviceError subclass of an error status
    (its `response` holds the decoded response: a WATCHDOG answer to STATUS has a payload).
    """
    data = bytes(data)
    if not data:
        raise IncompleteResponse("no bytes", HEADER_BYTES + 2)
    if data[0] != SYNC_RESPONSE:
        raise ResponseError(f"response starts with 0x{data[0]:02X}, not the sync byte "
                            f"0x{SYNC_RESPONSE:02X}")
    if len(data) < HEADER_BYTES:
        raise IncompleteResponse(f"{len(data)} bytes of a 4-byte header",
                                 FRAME_OVERHEAD - len(data))
    length = int.from_bytes(data[2:4], "little")
    size = FRAME_OVERHEAD + length
    if len(data) < size:
        raise IncompleteResponse(f"{len(data)} of {size} bytes", size - len(data))
    body = data[1:HEADER_BYTES + length]
    crc = int.from_bytes(data[HEADER_BYTES + length:size], "little")
    if crc16(body) != crc:
        raise ResponseError(f"response CRC 0x{crc:04X}, expected 0x{crc16(body):04X}")
    try:
        status = Status(data[1])
    except ValueError:
        raise ResponseError(f"unknown status 0x{data[1]:02X}") from None
    response = Response(status, data[HEADER_BYTES:HEADER_BYTES + length], size)
    if check and status != Status.OK:
        raise STATUS_ERRORS[status](f"device answered {status.name}", response)
    return response


def decode_responses(data: bytes) -> list[Response]:
    """Every response in `data`, unchecked (ResponseError if the bytes do not split into
    whole, well-formed responses)."""
    out, pos = [], 0
    data = bytes(data)
    while pos < len(data):
        response = decode_response(data[pos:], check=False)
        out.append(response)
        pos += response.size
    return out


# ---------------------------------------------------------------------------------------------
# Payloads


def _le_bytes(values: np.ndarray, nbytes: int) -> np.ndarray:
    """(n,) int64/uint64 -> (n, nbytes) uint8, little-endian (two's complement)."""
    words = values.astype(np.int64).view(np.uint64)
    shifts = (8 * np.arange(nbytes, dtype=np.uint64))
    return ((words[:, None] >> shifts[None, :]) & np.uint64(0xFF)).astype(np.uint8)


def _from_le(columns: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n,) uint64."""
    shifts = (8 * np.arange(columns.shape[1], dtype=np.uint64))
    return (columns.astype(np.uint64) << shifts[None, :]).sum(axis=1, dtype=np.uint64)


def _as_rows(values, k: int, what: str) -> np.ndarray:
    rows = np.asarray(values)
    if rows.size == 0:
        return np.zeros((0, k), dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != k:
        raise LinkFormatError(f"{what} must be an (n, {k}) array, got shape {rows.shape}")
    if not np.issubdtype(rows.dtype, np.integer):
        raise LinkFormatError(f"{what} must be integers, got {rows.dtype}")
    return rows.astype(np.int64)


def pack_writes(fmt: LinkFormat, writes) -> bytes:
    """The WRITE payload of `writes`, an (n, 3) array of (target, addr, data) rows (the
    order of the wire: target, addr, data, each field `ceil(bits / 8)` bytes LE). Values
    outside a field's unsigned range are refused (LinkFormatError)."""
    rows = _as_rows(writes, 3, "writes")
    parts = []
    for j, (name, bits, nbytes) in enumerate((("target", fmt.target_bits, fmt.target_bytes),
                                              ("addr", fmt.addr_bits, fmt.addr_bytes),
                                              ("data", fmt.data_bits, fmt.data_bytes))):
        col = rows[:, j]
        if col.size and (col.min() < 0 or col.max() >= (1 << bits)):
            raise LinkFormatError(f"write {name} outside 0..2**{bits} - 1: "
                                  f"{int(col.min())}..{int(col.max())}")
        parts.append(_le_bytes(col, nbytes))
    return np.concatenate(parts, axis=1).tobytes() if rows.shape[0] else b""


def unpack_writes(fmt: LinkFormat, payload: bytes) -> np.ndarray:
    """The (n, 3) int64 writes of a WRITE payload (LinkFormatError for a partial write or
    a padding bit set: what the device answers BAD_PAYLOAD to)."""
    payload = bytes(payload)
    if len(payload) % fmt.write_bytes:
        raise LinkFormatError(f"{len(payload)} bytes are not whole writes of "
                              f"{fmt.write_bytes} bytes")
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(-1, fmt.write_bytes)
    masks = np.array(fmt.write_masks(), dtype=np.uint8)
    if np.any(raw & ~masks):
        raise LinkFormatError("a write sets padding bits")
    t, a = fmt.target_bytes, fmt.target_bytes + fmt.addr_bytes
    cols = [_from_le(raw[:, :t]), _from_le(raw[:, t:a]), _from_le(raw[:, a:])]
    return np.stack(cols, axis=1).astype(np.int64) if raw.shape[0] \
        else np.zeros((0, 3), dtype=np.int64)


def pack_items(fmt: LinkFormat, items) -> bytes:
    """The READ answer carrying `items`, an (n, 2) array of (value, kind) (the device's
    side: used by `LinkDevice` and tests)."""
    rows = _as_rows(items, 2, "items")
    value, kind = rows[:, 0], rows[:, 1]
    lo, hi = ((-(1 << (fmt.value_bits - 1)), (1 << (fmt.value_bits - 1)) - 1)
              if fmt.value_signed else (0, (1 << fmt.value_bits) - 1))
    if value.size and (value.min() < lo or value.max() > hi):
        raise LinkFormatError(f"item value outside {lo}..{hi}")
    if kind.size and (kind.min() < 0 or kind.max() >= (1 << fmt.kind_bits)):
        raise LinkFormatError(f"item kind outside 0..2**{fmt.kind_bits} - 1")
    if not rows.shape[0]:
        return b""
    return np.concatenate([_le_bytes(value, fmt.value_bytes), _le_bytes(kind, fmt.kind_bytes)],
                          axis=1).tobytes()


def unpack_items(fmt: LinkFormat, payload: bytes) -> np.ndarray:
    """The (n, 2) int64 (value, kind) items of a READ answer; values sign-extended when the
    format's value is signed (LinkFormatError for a partial item)."""
    payload = bytes(payload)
    if len(payload) % fmt.item_bytes:
        raise LinkFormatError(f"{len(payload)} bytes are not whole items of "
                              f"{fmt.item_bytes} bytes")
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(-1, fmt.item_bytes)
    if not raw.shape[0]:
        return np.zeros((0, 2), dtype=np.int64)
    vb = fmt.value_bytes
    value = _from_le(raw[:, :vb])
    width = 8 * vb
    if fmt.value_signed and width < 64:
        shift = np.uint64(64 - width)
        value = (value << shift).view(np.int64) >> np.int64(64 - width)
    else:
        value = value.view(np.int64)
    kind = _from_le(raw[:, vb:]).astype(np.int64)
    return np.stack([value.astype(np.int64), kind], axis=1)


def read_payload(n: int) -> bytes:
    """The READ payload asking for up to n items (0..65535)."""
    if not 0 <= n <= MAX_LEN:
        raise LinkFormatError(f"READ asks for 0..{MAX_LEN} items, got {n}")
    return int(n).to_bytes(2, "little")


def write_frames(fmt: LinkFormat, writes) -> list[bytes]:
    """WRITE frames carrying `writes` (n, 3), as many writes per frame as fit."""
    payload = pack_writes(fmt, writes)
    step = fmt.max_writes * fmt.write_bytes
    return [encode_frame(Command.WRITE, payload[i:i + step])
            for i in range(0, len(payload), step)]


@dataclass(frozen=True)
class StatusReport:
    """A STATUS answer: the engine's flags and its cycles."""
    busy: bool
    done: bool
    error: bool
    watchdog: bool
    pending: bool
    cycles: int


def decode_status(fmt: LinkFormat, payload: bytes) -> StatusReport:
    """The StatusReport in a STATUS answer's payload."""
    payload = bytes(payload)
    if len(payload) != fmt.status_bytes:
        raise ResponseError(f"a STATUS answer has {fmt.status_bytes} bytes, got "
                            f"{len(payload)}")
    flags = Flag(payload[0])
    return StatusReport(busy=Flag.BUSY in flags, done=Flag.DONE in flags,
                        error=Flag.ERROR in flags, watchdog=Flag.WATCHDOG in flags,
                        pending=Flag.PENDING in flags,
                        cycles=int.from_bytes(payload[1:], "little"))


def status_payload(fmt: LinkFormat, flags: int, cycles: int) -> bytes:
    """A STATUS answer's payload (the device's side)."""
    return bytes([flags & 0xFF]) + (cycles % (1 << 8 * fmt.cycle_bytes)).to_bytes(
        fmt.cycle_bytes, "little")


# ---------------------------------------------------------------------------------------------
# The reference model of the device


class EngineModel(Protocol):
    """What `LinkDevice` needs from a model of the engine behind the link."""

    busy: bool

    def write(self, target: int, addr: int, data: int) -> None: ...
    def start(self) -> None: ...
    def status(self) -> tuple[bool, bool, int]: ...      # done, error, cycles
    def pending(self) -> bool: ...                       # an item is ready on `o`
    def take(self) -> tuple[int, int]: ...               # the next (value, kind)
    def reset(self) -> None: ...


class LinkDevice:
    """The device side of the link, byte for byte (the specification of HostLink).

    Time enters only through two events: `timeout()` (no byte for `byte_timeout` clocks)
    and `expire_watchdog()` (`watchdog_cycles` clocks passed; the flag is set if the engine
    is busy). `feed` returns the response bytes that the bytes given cause, in order.
    """

    HUNT, CMD, LEN0, LEN1, PAYLOAD, CRC0, CRC1 = range(7)

    def __init__(self, fmt: LinkFormat, engine: EngineModel):
        self.fmt, self.engine = fmt, engine
        self.watchdog = False
        self.state = self.HUNT
        self._frame = bytearray()
        self._length = 0
        #: every answer so far: (command or None before the CRC check, status, engine busy)
        self.answers: list[tuple[int | None, int, bool]] = []

    def _answer(self, command, status: Status, payload: bytes = b"") -> bytes:
        self.answers.append((command, int(status), bool(self.engine.busy)))
        return encode_response(status, payload)

    @property
    def in_frame(self) -> bool:
        """The parser is inside a frame (a timeout would answer TIMEOUT)."""
        return self.state != self.HUNT

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in bytes(data):
            out += self._byte(byte)
        return bytes(out)

    def timeout(self) -> bytes:
        """`byte_timeout` clocks pass without a byte."""
        if self.state == self.HUNT:
            return b""
        self.state = self.HUNT
        return self._answer(None, Status.TIMEOUT)

    def expire_watchdog(self) -> None:
        """The engine has been busy for `watchdog_cycles` clocks (if it is busy now)."""
        if self.engine.busy:
            self.watchdog = True

    def _byte(self, byte: int) -> bytes:
        if self.state == self.HUNT:
            if byte == SYNC_COMMAND:
                self.state, self._frame = self.CMD, bytearray()
            return b""
        self._frame.append(byte)
        if self.state == self.CMD:
            self.state = self.LEN0
        elif self.state == self.LEN0:
            self.state = self.LEN1
        elif self.state == self.LEN1:
            self._length = int.from_bytes(self._frame[1:3], "little")
            if self._length > self.fmt.max_payload:
                self.state = self.HUNT
                return self._answer(None, Status.BAD_LENGTH)
            self.state = self.PAYLOAD if self._length else self.CRC0
        elif self.state == self.PAYLOAD:
            if len(self._frame) == 3 + self._length:
                self.state = self.CRC0
        elif self.state == self.CRC0:
            self.state = self.CRC1
        else:
            self.state = self.HUNT
            return self._execute(bytes(self._frame))
        return b""

    def _execute(self, frame: bytes) -> bytes:
        body, crc = frame[:-2], int.from_bytes(frame[-2:], "little")
        if crc16(body) != crc:
            return self._answer(None, Status.BAD_CRC)
        cmd, payload = body[0], body[3:]
        if cmd not in set(Command):
            return self._answer(cmd, Status.UNKNOWN_CMD)
        cmd = Command(cmd)
        fmt = self.fmt
        if cmd == Command.WRITE:
            try:
                writes = unpack_writes(fmt, payload)
            except LinkFormatError:
                return self._answer(cmd, Status.BAD_PAYLOAD)
        elif cmd == Command.READ:
            if len(payload) != 2:
                return self._answer(cmd, Status.BAD_PAYLOAD)
        elif payload:
            return self._answer(cmd, Status.BAD_PAYLOAD)
        if cmd in (Command.WRITE, Command.START) and self.engine.busy:
            return self._answer(cmd, Status.BUSY)
        if cmd == Command.PING:
            return self._answer(cmd, Status.OK, fmt.capabilities())
        if cmd == Command.WRITE:
            for target, addr, value in writes.tolist():
                self.engine.write(target, addr, value)
            return self._answer(cmd, Status.OK, len(writes).to_bytes(2, "little"))
        if cmd == Command.START:
            self.watchdog = False
            self.engine.start()
            return self._answer(cmd, Status.OK)
        if cmd == Command.STATUS:
            done, error, cycles = self.engine.status()
            flags = ((Flag.BUSY if self.engine.busy else 0) | (Flag.DONE if done else 0)
                     | (Flag.ERROR if error else 0) | (Flag.WATCHDOG if self.watchdog else 0)
                     | (Flag.PENDING if self.engine.pending() else 0))
            return self._answer(cmd, Status.WATCHDOG if self.watchdog else Status.OK,
                                status_payload(fmt, int(flags), cycles))
        if cmd == Command.READ:
            n = min(int.from_bytes(payload, "little"), fmt.max_items)
            items = []
            while len(items) < n and self.engine.pending():
                items.append(self.engine.take())
            items = np.array(items, dtype=np.int64).reshape(-1, 2)
            return self._answer(cmd, Status.OK, pack_items(fmt, items))
        # ABORT
        self.watchdog = False
        self.engine.reset()
        return self._answer(cmd, Status.OK)
