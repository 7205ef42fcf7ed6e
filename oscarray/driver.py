"""The host driver (issue 6): an engine on a board (or in simulation) through the host link.

`Driver` speaks golden/link.py's protocol over any `Transport` (bytes out, bytes in), so the
same code drives a board through a serial port (`SerialTransport`, pyserial) and the RTL in
cocotb through a simulated UART (sim/board_sim.py `SimUartTransport`, which runs this driver
in a cocotb bridge thread):

    driver = Driver(SerialTransport("/dev/ttyUSB0", 115200))
    driver.ping()                       # the device's LinkFormat (and its engine, below)
    result = driver.run_case(case)      # = `oscarray attention --engine rtl`'s result

Commands: `ping`, `write`, `start`, `status`, `read_items`, `abort`; `run_head` (ABORT, the
head's writes, START, READ until every item is in, STATUS) and `run_case` (every head of an
attention case: hdl/attention.py `head_writes` and `decode_items`, then the result assembly
of `oscarray attention --engine rtl`).

Which engine is on the board: the PING answer's engine_id (boards/top.py
`decode_engine_id`: the attention head's T and d_h capacity and modes, or the loopback
engine). `run_case` checks the answer's field widths against that head's (`link_format` of
its `load` and `o` layouts); a Driver given a `fmt` checks them against that.

Errors and retries. Every command gets exactly one answer. A frame damaged on its way
(the device answers BAD_CRC, TIMEOUT or BAD_LENGTH: nothing ran) is sent again after the
link is quiet for `byte_timeout` clocks (`retries` times). An answer damaged or lost on its
way back (a bad sync, CRC or no answer in time) is retried for the commands that can run
twice (PING, WRITE, STATUS, ABORT); START and READ raise (their effect is not repeatable:
READ takes items), and `run_head` then runs the whole head again once (ABORT rewinds it;
every write is sent again). BUSY, WATCHDOG, UNKNOWN_CMD and BAD_PAYLOAD raise the golden
DeviceError subclasses (BusyError, WatchdogError, ...) at once.

The head's `cycles` from a board count from START to done; the board tops buffer a whole
head's items (boards/top.py), so the head never waits for the host and `cycles` equals
`cycles_per_head` (analytic, softmax) or `ode_cycles`.

A head built with the softmax mode alone (the iCEBreaker's: no oscillator head fits the
UP5K) runs every case through softmax (golden `softmax_case`; anchors and the oscillator
fields are ignored), and `run_case` returns `oscarray softmax --engine rtl`'s result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .golden.link import (
    STATUS_ERRORS,
    SYNC_RESPONSE,
    Command,
    DeviceError,
    LinkError,
    LinkFormat,
    Response,
    ResponseError,
    Status,
    StatusReport,
    decode_response,
    decode_status,
    encode_frame,
    read_payload,
    unpack_items,
    write_frames,
)

__all__ = [
    "CapabilityMismatch",
    "Driver",
    "NoResponse",
    "SerialTransport",
    "Transport",
    "attention_result",
    "engine_format",
    "link_selftest",
]

#: Commands that can run twice with the same effect: retried when their answer is lost.
IDEMPOTENT = {Command.PING, Command.WRITE, Command.STATUS, Command.ABORT}
#: Answers meaning that the frame was damaged on its way and did not run.
TRANSIT_ERRORS = {Status.BAD_CRC, Status.TIMEOUT, Status.BAD_LENGTH}
#: Bytes skipped while hunting for an answer's sync byte before giving up.
MAX_HUNT = 1 << 16
#: The fields of the PING answer that must agree with the head the host expects.
WIDTH_FIELDS = ("target_bits", "addr_bits", "data_bits", "value_bits", "kind_bits",
                "value_signed", "cycle_bits")
#: The modes of a head built with softmax alone (boards/top.py: the iCEBreaker's).
SOFTMAX_ONLY = ("softmax",)


class NoResponse(LinkError):
    """The device did not answer (in the transport's time limit), or the answer stopped."""


class CapabilityMismatch(LinkError):
    """The device's PING answer does not describe the engine the host expects."""


class Transport(Protocol):
    """Bytes to and from a device.

    write(data)     send the bytes
    read(n)         up to n bytes; fewer only when the transport's time limit passed
                    without more arriving
    settle(clocks)  stay silent at least `clocks` device clocks (the link's byte_timeout:
                    the device is hunting afterwards), then drop whatever arrived; None
                    (before the first PING: byte_timeout unknown): the transport's own
                    bound of a board's byte_timeout
    idle()          a short pause between polls of a running engine
    """

    def write(self, data: bytes) -> None: ...
    def read(self, n: int) -> bytes: ...
    def settle(self, clocks: int | None) -> None: ...
    def idle(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Transports


class SerialTransport:
    """A serial port (pyserial, imported here only). `timeout`: seconds a read may wait for
    its bytes; `min_clock_hz`: the slowest device clock assumed when `settle` turns clocks
    into seconds (every board top runs at 24 MHz or more; its byte_timeout is 50 ms)."""

    def __init__(self, port: str, baud: int = 115_200, *, timeout: float = 2.0,
                 poll_s: float = 0.002, min_clock_hz: float = 10e6):
        try:
            import serial
        except ImportError:
            raise LinkError("the --port path needs pyserial: pip install pyserial") from None
        self.poll_s, self.min_clock_hz = poll_s, min_clock_hz
        try:
            self.serial = serial.Serial(port, baudrate=baud, timeout=timeout,
                                        write_timeout=timeout + 60.0)
        except (serial.SerialException, ValueError) as exc:
            raise LinkError(f"cannot open {port} at {baud} baud: {exc}") from None

    def write(self, data: bytes) -> None:
        self.serial.write(bytes(data))
        self.serial.flush()

    def read(self, n: int) -> bytes:
        return bytes(self.serial.read(n))

    def settle(self, clocks: int | None) -> None:
        seconds = 0.25 if clocks is None else min(5.0, clocks / self.min_clock_hz)
        time.sleep(seconds + 0.02)
        self.serial.reset_input_buffer()

    def idle(self) -> None:
        time.sleep(self.poll_s)

    def close(self) -> None:
        self.serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Formats


def engine_format(identity: dict, **link_options) -> LinkFormat:
    """The LinkFormat (widths) of the engine `identity` names (boards/top.py
    `decode_engine_id`): the attention head's load and output layouts, or the loopback
    engine's; link_options (max_payload, byte_timeout, ...) as hdl/link.py `link_format`."""
    from .hdl.link import link_format
    if identity["design"] == "attention":
        from .golden.attention_fixed import DEFAULT_CONFIG
        from .hdl.attention import load_layout, output_layout
        layouts = (load_layout(DEFAULT_CONFIG, identity["max_tokens"], identity["max_d_h"]),
                   output_layout(DEFAULT_CONFIG, identity["max_tokens"], identity["max_d_h"]))
    else:
        from .sim.link import harness_layouts
        layouts = harness_layouts()
    return link_format(*layouts, **link_options)


def _widths(fmt: LinkFormat) -> dict:
    return {name: getattr(fmt, name) for name in WIDTH_FIELDS}


@dataclass
class HeadRun:
    """One head through the link: its items (N, 2), the final STATUS, the attempts made."""
    items: np.ndarray
    status: StatusReport
    attempts: int


# ---------------------------------------------------------------------------------------------
# The driver


class Driver:
    """Commands to a device over `transport` (module docstring).

    fmt        the expected format (its widths are checked by `ping`); None: the device's
    retries    times a frame damaged on its way (or a lost answer of an idempotent command)
               is sent again
    max_polls  STATUS/READ polls without progress before a run counts as stuck
    """

    def __init__(self, transport: Transport, fmt: LinkFormat | None = None, *,
                 retries: int = 3, max_polls: int = 100_000, progress=None):
        self.transport = transport
        self.expected = fmt
        self.fmt = fmt
        self.retries = int(retries)
        self.max_polls = int(max_polls)
        self.progress = progress
        self.identity: dict | None = None
        #: counts: frames sent, retries, answers by status name
        self.stats = {"frames": 0, "retries": 0, "answers": {}}
        self._pinged = False

    # -- frames ----------------------------------------------------------------------------------
    def _receive(self) -> Response:
        """The next answer: hunt for its sync byte, then header, payload and CRC."""
        read = self.transport.read
        skipped = 0
        while True:
            byte = read(1)
            if not byte:
                raise NoResponse("no answer from the device (check the port, the baud rate "
                                 "and that the board is configured)")
            if byte[0] == SYNC_RESPONSE:
                break
            skipped += 1
            if skipped > MAX_HUNT:
                raise ResponseError(f"{skipped} bytes without an answer's sync byte")
        header = read(3)
        if len(header) < 3:
            raise NoResponse("the answer stopped in its header")
        length = int.from_bytes(header[1:3], "little")
        if self.fmt is not None and length > max(self.fmt.max_payload, 19):
            raise ResponseError(f"an answer of {length} bytes, more than the device's "
                                f"max_payload {self.fmt.max_payload}")
        rest = read(length + 2)
        if len(rest) < length + 2:
            raise NoResponse(f"the answer stopped after {len(rest)} of {length + 2} bytes")
        return decode_response(byte + header + rest, check=False)

    def _settle(self) -> None:
        self.transport.settle(None if self.fmt is None else self.fmt.byte_timeout + 64)

    def transact(self, frame: bytes, command: Command, *, ok=(Status.OK,)) -> Response:
        """Send `frame` (a `command` frame), return its answer; retry transit errors
        (module docstring); raise the DeviceError of any status not in `ok`."""
        attempt = 0
        while True:
            self.stats["frames"] += 1
            self.transport.write(frame)
            try:
                response = self._receive()
            except (ResponseError, NoResponse):
                if command not in IDEMPOTENT or attempt >= self.retries:
                    raise
                attempt += 1
                self.stats["retries"] += 1
                self._settle()
                continue
            name = Status(response.status).name
            self.stats["answers"][name] = self.stats["answers"].get(name, 0) + 1
            if response.status in TRANSIT_ERRORS and attempt < self.retries:
                attempt += 1
                self.stats["retries"] += 1
                self._settle()
                continue
            if response.status in ok:
                return response
            error = STATUS_ERRORS.get(Status(response.status), DeviceError)
            raise error(f"device answered {name}", response)

    def command(self, command: Command, payload: bytes = b"", **options) -> Response:
        return self.transact(encode_frame(command, payload), command, **options)

    # -- commands --------------------------------------------------------------------------------
    def ping(self) -> LinkFormat:
        """PING: the device's LinkFormat (kept as `fmt`). With an expected format, its widths
        must match (CapabilityMismatch); the engine's identity goes to `identity`."""
        if not self._pinged:
            self._settle()              # a frame left half-sent by an earlier session ends
        response = self.command(Command.PING)
        device = LinkFormat.from_capabilities(response.payload)
        if self.expected is not None and _widths(device) != _widths(self.expected):
            raise CapabilityMismatch(
                f"the device's link has widths {_widths(device)}, expected "
                f"{_widths(self.expected)} (another bitstream on the board?)")
        self.fmt, self._pinged = device, True
        try:
            from .boards.top import decode_engine_id
            self.identity = decode_engine_id(device.engine_id)
        except ValueError:
            self.identity = None
        return device

    def _need_format(self) -> LinkFormat:
        if self.fmt is None or not self._pinged:
            self.ping()
        return self.fmt

    def write(self, writes) -> int:
        """WRITE every (target, addr, data) row of `writes`, as many per frame as fit;
        returns the writes done (WatchdogError if the engine stopped taking them)."""
        fmt = self._need_format()
        done = 0
        for frame in write_frames(fmt, writes):
            response = self.transact(frame, Command.WRITE)
            done += int.from_bytes(response.payload, "little")
        return done

    def start(self) -> None:
        """START (BusyError while the engine runs)."""
        self._need_format()
        self.command(Command.START)

    def abort(self) -> None:
        """ABORT: the engine's reset (it returns to idle; its memories keep their contents;
        the board's output FIFO is emptied) and the watchdog flag cleared."""
        self._need_format()
        self.command(Command.ABORT)

    def status(self) -> StatusReport:
        """STATUS: busy, done, error, watchdog, pending, cycles (a WATCHDOG answer is
        returned as its report, with `watchdog` set)."""
        fmt = self._need_format()
        response = self.command(Command.STATUS, ok=(Status.OK, Status.WATCHDOG))
        return decode_status(fmt, response.payload)

    def read_items(self, n: int) -> np.ndarray:
        """READ until `n` output items are in ((n, 2) int64 of value, kind); polls STATUS
        when none is ready. LinkError if the engine stops (not busy, nothing pending) with
        fewer, if the watchdog fires, or after `max_polls` polls without an item."""
        fmt = self._need_format()
        chunks, got, polls = [], 0, 0
        while got < n:
            want = min(n - got, fmt.max_items, 0xFFFF)
            response = self.command(Command.READ, read_payload(want))
            items = unpack_items(fmt, response.payload)
            if len(items) > want:
                raise ResponseError(f"READ of {want} answered {len(items)} items")
            if len(items):
                chunks.append(items)
                got += len(items)
                polls = 0
                continue
            report = self.status()
            if report.watchdog:
                raise LinkError(f"the engine's watchdog fired after {got} of {n} items "
                                f"(it stayed busy {fmt.watchdog_cycles} clocks)")
            if not report.busy and not report.pending:
                raise LinkError(f"the engine stopped after {got} of {n} items "
                                f"(done {report.done}, error {report.error})")
            polls += 1
            if polls > self.max_polls:
                raise LinkError(f"no item for {polls} polls after {got} of {n}")
            self.transport.idle()
        return np.concatenate(chunks) if chunks else np.zeros((0, 2), np.int64)

    def wait_idle(self) -> StatusReport:
        """Poll STATUS until the engine is not busy."""
        for _ in range(self.max_polls):
            report = self.status()
            if report.watchdog:
                raise LinkError("the engine's watchdog fired")
            if not report.busy:
                return report
            self.transport.idle()
        raise LinkError(f"the engine stayed busy for {self.max_polls} polls")

    # -- runs ------------------------------------------------------------------------------------
    def run_head(self, writes, n_items: int, *, attempts: int = 2) -> HeadRun:
        """One run: ABORT (a clean engine, an empty output FIFO), the writes, START, READ
        until `n_items` are in, then STATUS until idle. A lost START or READ answer runs
        the whole head again (up to `attempts` times)."""
        for attempt in range(1, attempts + 1):
            try:
                self.abort()
                self.write(writes)
                self.start()
                items = self.read_items(n_items)
                report = self.wait_idle()
                return HeadRun(items, report, attempt)
            except (NoResponse, ResponseError):
                if attempt >= attempts:
                    raise
                self.stats["retries"] += 1
                self._settle()
        raise AssertionError("unreachable")     # pragma: no cover

    def attention_head(self) -> dict:
        """The attention head on the device ({max_tokens, max_d_h, modes}), its PING
        answer's widths checked against that head's (CapabilityMismatch)."""
        fmt = self._need_format()
        identity = self.identity
        if identity is None or identity["design"] != "attention":
            raise CapabilityMismatch(
                f"the device's engine (id 0x{fmt.engine_id:02X}) is not an attention head"
                + (" (the link's loopback engine: a --design link bitstream)"
                   if identity and identity["design"] == "link" else ""))
        expected = engine_format(identity)
        if _widths(expected) != _widths(fmt):
            raise CapabilityMismatch(
                f"the device says it holds a head of T <= {identity['max_tokens']}, d_h <= "
                f"{identity['max_d_h']}, but its link widths {_widths(fmt)} are not that "
                f"head's {_widths(expected)}")
        return identity

    def run_case_raw(self, case, config=None) -> dict:
        """Every head of an attention case on the device: the RTL's integers as
        sim/attention.py `run_attention_rtl` gives them (attn_int, out_int, theta_int, x_int,
        h_int, e_w, steps, converged, cycles, error). The case is checked against the head
        on the device (`check_case`: its refusals come before any write)."""
        from .golden.attention_fixed import DEFAULT_CONFIG
        from .hdl.attention import check_case, decode_items, head_writes, row_items
        from .sim.attention import stack_heads

        config = config or DEFAULT_CONFIG
        head = self.attention_head()
        case = head_case(case, head["modes"])
        options = {"max_tokens": head["max_tokens"], "max_d_h": head["max_d_h"],
                   "modes": head["modes"]}
        case = check_case(case, config, **options)
        writes = head_writes(case, config, **options)
        n_items = case.tokens * row_items(case.tokens, case.d_h)
        heads, cycles, errors = [], [], []
        for index, rows in enumerate(writes):
            if self.progress:
                self.progress(f"head {index + 1} of {len(writes)}: {len(rows)} writes, "
                              f"{n_items} items")
            run = self.run_head(rows, n_items)
            heads.append(decode_items(run.items, case.tokens, case.d_h))
            cycles.append(run.status.cycles)
            errors.append(run.status.error)
        return stack_heads(heads, cycles, errors)

    def run_case(self, case, config=None) -> dict:
        """Every head of an attention case on the device, as `oscarray attention --engine
        rtl` returns it (attn, out, x_star, the integers, scales, cycles; `attention_result`);
        on a softmax-only head (the iCEBreaker's) the case through softmax, as `oscarray
        softmax --engine rtl` returns it (attn, out, attn_int, out_int, scales, cycles)."""
        modes = self.attention_head()["modes"]
        case = head_case(case, modes)
        if tuple(modes) == SOFTMAX_ONLY:
            from .softmax_flow import softmax_rtl_result
            return softmax_rtl_result(case, self.run_case_raw(case, config))
        rtl = self.run_case_raw(case, config)
        return attention_result(case, rtl, max_tokens=self.identity["max_tokens"],
                                max_d_h=self.identity["max_d_h"])


def head_case(case, modes):
    """`case` (validated) as a head built with `modes` runs it: through softmax on a
    softmax-only head (golden `softmax_case`: the anchors and oscillator fields ignored),
    else as it is."""
    from .golden.attention import AttentionCase, validate_case
    if tuple(modes) == SOFTMAX_ONLY:
        from .golden.softmax import softmax_case
        return softmax_case(case)
    return case if isinstance(case, AttentionCase) else validate_case(case)


# ---------------------------------------------------------------------------------------------
# The result


def attention_result(case, rtl: dict, *, max_tokens=None, max_d_h=None, sim=None) -> dict:
    """`oscarray attention --engine rtl`'s result (flows.py) from the RTL's integers `rtl`
    (`Driver.run_case_raw`): the float keys, the host's scales, cycles, converged.

    The assembly is flows.py's own (`flows.attention_rtl_result`)."""
    from . import flows
    return flows.attention_rtl_result(case, rtl)


# ---------------------------------------------------------------------------------------------
# The loopback engine's self-test


def link_selftest(driver: Driver, words: int = 64, seed: int = 0) -> dict:
    """The link end to end on a `--design link` board (the loopback engine, sim/link.py
    `FakeEngine`): random words written, replayed through START and READ, compared; a
    STATUS and a BUSY answer checked on the way. Returns {words, mismatches, frames,
    retries, answers}."""
    from .sim.link import CONTROL

    fmt = driver.ping()
    if driver.identity is None or driver.identity["design"] != "link":
        raise CapabilityMismatch(f"engine id 0x{fmt.engine_id:02X} is not the loopback engine")
    expected = engine_format(driver.identity)
    if _widths(expected) != _widths(fmt):
        raise CapabilityMismatch(f"loopback widths {_widths(fmt)}, expected "
                                 f"{_widths(expected)}")
    rng = np.random.default_rng(seed)
    capacity = 1 << (fmt.target_bits + fmt.addr_bits)
    ctrl = (1 << fmt.target_bits) - 1
    words = min(words, capacity - (1 << fmt.addr_bits))
    addr = np.arange(words)
    data = rng.integers(0, 1 << fmt.data_bits, words)
    writes = np.stack([addr >> fmt.addr_bits, addr & ((1 << fmt.addr_bits) - 1), data], 1)
    driver.abort()
    driver.write(writes)
    driver.write(np.array([(ctrl, CONTROL["run"], 0)]))       # run 0: busy until ABORT
    driver.start()
    busy = False
    try:
        driver.start()
    except DeviceError as exc:
        busy = exc.response.status == Status.BUSY
    driver.abort()
    driver.write(np.array([(ctrl, CONTROL["run"], 5), (ctrl, CONTROL["base"], 0),
                           (ctrl, CONTROL["count"], words)]))
    driver.start()
    items = driver.read_items(words)
    report = driver.wait_idle()
    values = np.where(data >= 1 << (fmt.data_bits - 1), data - (1 << fmt.data_bits), data)
    mismatches = int(np.count_nonzero(items[:, 0] != values)
                     + np.count_nonzero(items[:, 1] != addr % (1 << fmt.kind_bits)))
    return {"words": int(words), "mismatches": mismatches, "busy_answered": busy,
            "cycles": report.cycles, **driver.stats}
