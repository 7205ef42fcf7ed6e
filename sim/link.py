"""The host link under test: a fake engine, a harness, the frame fuzzer and its cocotb run.

- `FakeEngine` (an Amaranth component with the project's standard engine ports, a test
  helper: it lives here, not in hdl/) and `FakeEngineModel` (the same engine in Python, for
  golden `LinkDevice`). The engine is a memory of 2**(target + addr bits) words written
  through `load`, four control words in the last target, a busy counter and an `o` stream that
  replays memory words after a run.
- `LinkHarness`: HostLink + FakeEngine (in a ResetInserter on `engine_reset`), with byte
  ports (or, with `uart_divisor`, serial pins through UartRx/UartTx).
- `fuzz_script`: random and mutated frames with the responses golden `LinkDevice` predicts.
- `run_link_fuzz`: the script through the harness in cocotb (`link_tb.py`), byte level; every
  response compared with the model's.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Module, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.link import (
    SYNC_COMMAND,
    Command,
    LinkDevice,
    LinkFormat,
    Status,
    crc16,
    decode_responses,
    encode_frame,
    pack_writes,
    read_payload,
)
from ..hdl.link import HostLink, UartRx, UartTx, engine_signature, link_format

__all__ = [
    "BAD",
    "CATEGORIES",
    "CONTROL",
    "EXPECTED",
    "FakeEngine",
    "FakeEngineModel",
    "FuzzScript",
    "LinkHarness",
    "compare_responses",
    "fuzz_script",
    "harness_layouts",
    "run_link_fuzz",
]

#: Control words of the fake engine: addresses in its last target. run: clocks busy after
#: start (0: busy until reset); base, count: the words replayed on `o` after a run (flat
#: address base, base + 1, ... modulo the memory); error: the engine's error after a run.
CONTROL = {"run": 0, "base": 1, "count": 2, "error": 3}
MAX_WORDS = 4096
INSTANT_RUN = 8     # runs this short are over before the link can take another command


class FakeEngine(wiring.Component):
    """A test engine with `engine_signature` ports (test helper for HostLink).

    Memory: 2**(target_bits + addr_bits) words of data_bits at flat address
    target << addr_bits | addr, written through `load` while not busy (ready = not busy);
    writes to the last target, addresses 0..3, also set the CONTROL registers. `start` (when
    idle) runs `run` clocks (busy, `cycles` counting), then done; with run = 0 the engine
    stays busy until reset. After a run, `o` gives `count` items: value = the memory word at
    (base + i) mod words as a signed data_bits number, kind = (base + i) mod 2**kind_bits.
    `error` is (error register != 0), latched at start. A reset (ResetInserter) clears the
    registers, never the memory.
    """

    def __init__(self, load_layout, output_layout, cycle_bits: int = 32):
        self.format = link_format(load_layout, output_layout, cycle_bits=cycle_bits)
        words = 1 << (self.format.target_bits + self.format.addr_bits)
        if words > MAX_WORDS:
            self._MustUse__silence = True
            raise ValueError(f"the fake engine holds at most {MAX_WORDS} words; target and "
                             f"addr bits give {words}")
        self.words = words
        super().__init__(engine_signature(load_layout, output_layout, cycle_bits))

    def elaborate(self, platform):
        m = Module()
        fmt = self.format
        aw = fmt.target_bits + fmt.addr_bits
        m.submodules.mem = mem = Memory(shape=unsigned(fmt.data_bits), depth=self.words,
                                        init=[])
        wr, rd = mem.write_port(), mem.read_port()
        regs = {name: Signal(fmt.data_bits, name=f"reg_{name}") for name in CONTROL}
        busy, done, error = Signal(), Signal(), Signal()
        cycles = Signal(fmt.cycle_bits)
        idx, fetched = Signal(fmt.data_bits), Signal()
        load, o = self.load, self.o
        m.d.comb += [self.busy.eq(busy), self.done.eq(done), self.error.eq(error),
                     self.cycles.eq(cycles), load.ready.eq(~busy)]

        # replay: the word at base + idx, one clock after its address settled
        position = Signal(fmt.data_bits + 1)
        m.d.comb += [position.eq(regs["base"] + idx), rd.addr.eq(position[:aw]),
                     o.valid.eq(done & (idx < regs["count"]) & fetched),
                     o.payload.value.eq(rd.data.as_signed()),
                     o.payload.kind.eq(position[:fmt.kind_bits])]
        m.d.sync += fetched.eq(1)
        with m.If(o.valid & o.ready):
            m.d.sync += [idx.eq(idx + 1), fetched.eq(0)]

        write = load.valid & ~busy
        m.d.comb += [wr.en.eq(write), wr.addr.eq(load.payload.addr | (load.payload.target
                                                                       << fmt.addr_bits)),
                     wr.data.eq(load.payload.data)]
        with m.If(write):
            m.d.sync += fetched.eq(0)
            with m.If(load.payload.target == (1 << fmt.target_bits) - 1):
                with m.Switch(load.payload.addr):
                    for name, addr in CONTROL.items():
                        if addr < (1 << fmt.addr_bits):
                            with m.Case(addr):
                                m.d.sync += regs[name].eq(load.payload.data)

        with m.If(self.start & ~busy):
            m.d.sync += [busy.eq(1), done.eq(0), cycles.eq(0), idx.eq(0), fetched.eq(0),
                         error.eq(regs["error"] != 0)]
        with m.Elif(busy):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If((regs["run"] != 0) & (cycles + 1 == regs["run"])):
                m.d.sync += [busy.eq(0), done.eq(1)]
        return m


class FakeEngineModel:
    """FakeEngine in Python (golden `EngineModel`): runs of 1..INSTANT_RUN clocks finish at
    once (the link cannot execute another command sooner), run = 0 stays busy until reset."""

    def __init__(self, fmt: LinkFormat):
        self.fmt = fmt
        self.words = 1 << (fmt.target_bits + fmt.addr_bits)
        self.memory = [0] * self.words
        self.reset()

    def reset(self) -> None:
        self.regs = dict.fromkeys(CONTROL, 0)
        self.busy = self.done = self.error = False
        self.cycles = self.idx = 0

    def write(self, target: int, addr: int, value: int) -> None:
        assert not self.busy
        self.memory[(target << self.fmt.addr_bits) | addr] = value
        if target == (1 << self.fmt.target_bits) - 1:
            for name, a in CONTROL.items():
                if a == addr:
                    self.regs[name] = value

    def start(self) -> None:
        if self.busy:
            return
        self.done, self.cycles, self.idx = False, 0, 0
        self.error = self.regs["error"] != 0
        run = self.regs["run"]
        if run == 0:
            self.busy = True
            return
        if run > INSTANT_RUN:
            raise ValueError(f"the model finishes runs of at most {INSTANT_RUN} clocks at "
                             f"once, got {run}")
        self.done, self.cycles = True, run

    def status(self):
        return self.done, self.error, self.cycles if not self.busy else 0

    def pending(self) -> bool:
        return self.done and self.idx < self.regs["count"]

    def take(self):
        fmt = self.fmt
        position = self.regs["base"] + self.idx
        word = self.memory[position % self.words]
        if word >= 1 << (fmt.data_bits - 1):
            word -= 1 << fmt.data_bits
        word %= 1 << fmt.value_bits
        if fmt.value_signed and word >= 1 << (fmt.value_bits - 1):
            word -= 1 << fmt.value_bits
        self.idx += 1
        return word, position % (1 << fmt.kind_bits)


def harness_layouts(target_bits=2, addr_bits=6, data_bits=20, value_bits=21,
                    value_signed=True, kind_bits=5):
    """The load and output layouts of the fuzz harness (deliberately not whole bytes)."""
    load = data.StructLayout({"data": unsigned(data_bits), "addr": unsigned(addr_bits),
                              "target": unsigned(target_bits)})
    out = data.StructLayout({"value": (signed if value_signed else unsigned)(value_bits),
                             "kind": unsigned(kind_bits)})
    return load, out


class LinkHarness(wiring.Component):
    """HostLink + FakeEngine (reset by the link's ABORT), for tests.

    Ports: rx In(stream(8)), tx Out(stream(8)), watchdog Out(1); with `uart_divisor`,
    rxd In(1), txd Out(1) (UartRx -> link -> UartTx) instead of rx and tx.
    """

    def __init__(self, load_layout=None, output_layout=None, *, max_payload=64,
                 byte_timeout=24, watchdog_cycles=4000, cycle_bits=20, engine_id=7,
                 uart_divisor: int | None = None):
        if load_layout is None:
            load_layout, output_layout = harness_layouts()
        self.link = HostLink(load_layout, output_layout, max_payload=max_payload,
                             byte_timeout=byte_timeout, watchdog_cycles=watchdog_cycles,
                             cycle_bits=cycle_bits, engine_id=engine_id)
        self.fake = FakeEngine(load_layout, output_layout, cycle_bits)
        self.format = self.link.format
        self.uart_divisor = uart_divisor
        if uart_divisor is None:
            members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        else:
            self.uart_rx, self.uart_tx = UartRx(uart_divisor), UartTx(uart_divisor)
            members = {"rxd": In(1, init=1), "txd": Out(1, init=1)}
        super().__init__({**members, "watchdog": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.submodules.engine = ResetInserter({"sync": link.engine_reset})(self.fake)
        wiring.connect(m, link.engine, self.fake)
        m.d.comb += self.watchdog.eq(link.watchdog)
        if self.uart_divisor is None:
            wiring.connect(m, wiring.flipped(self.rx), link.rx)
            wiring.connect(m, link.tx, wiring.flipped(self.tx))
        else:
            m.submodules.uart_rx, m.submodules.uart_tx = self.uart_rx, self.uart_tx
            m.d.comb += [self.uart_rx.rx.eq(self.rxd), self.txd.eq(self.uart_tx.tx)]
            wiring.connect(m, self.uart_rx.o, link.rx)
            wiring.connect(m, link.tx, self.uart_tx.i)
        return m


# ---------------------------------------------------------------------------------------------
# The fuzzer

#: Categories of frames the fuzzer counts. valid: random good commands; valid_after_bad: the
#: good command after each bad frame; garbage: good commands after 1..29 garbage bytes (30 %
#: with a sync byte among them, then an idle long enough for a timeout); memory: the replay
#: of the whole memory; watchdog: the good frames of a stuck-engine episode; sync_flip: a
#: frame whose sync byte is corrupted (garbage: no answer). The rest (BAD) are bad frames.
CATEGORIES = ("valid", "valid_after_bad", "garbage", "memory", "watchdog", "sync_flip",
              "bitflip", "truncated", "wrong_length", "bad_payload", "oversize",
              "unknown_cmd", "busy")
BAD = {"bitflip", "truncated", "wrong_length", "bad_payload", "oversize", "unknown_cmd",
       "busy"}
#: The statuses each category may be answered with (the first answer of a bad frame; the
#: rest of a mutated frame is hunted and may make more answers, all errors).
EXPECTED = {
    "bitflip": {Status.BAD_CRC, Status.BAD_LENGTH, Status.TIMEOUT},
    "truncated": {Status.TIMEOUT},
    "wrong_length": {Status.BAD_CRC, Status.TIMEOUT, Status.BAD_LENGTH},
    "bad_payload": {Status.BAD_PAYLOAD},
    "oversize": {Status.BAD_LENGTH},
    "unknown_cmd": {Status.UNKNOWN_CMD},
    "busy": {Status.BUSY},
}


@dataclass
class FuzzScript:
    """Bytes to send and what must come back (see `fuzz_script`)."""
    fmt: LinkFormat
    data: bytearray = field(default_factory=bytearray)
    gaps: list = field(default_factory=list)          # idle clocks before each byte
    step_end: list = field(default_factory=list)      # bytes sent after each step
    step_idle: list = field(default_factory=list)     # idle clocks after each step
    step_expect: list = field(default_factory=list)   # response bytes expected by then
    expected: bytearray = field(default_factory=bytearray)
    loose: list = field(default_factory=list)         # per response: ignore cycles bytes
    frames: Counter = field(default_factory=Counter)  # frames sent per category
    answers: dict = field(default_factory=lambda: defaultdict(Counter))  # category -> status
    memory_checks: int = 0

    @property
    def steps(self) -> int:
        return len(self.step_end)


class _Fuzzer:
    def __init__(self, fmt: LinkFormat, rng: np.random.Generator):
        self.fmt, self.rng = fmt, rng
        self.engine = FakeEngineModel(fmt)
        self.device = LinkDevice(fmt, self.engine)
        self.script = FuzzScript(fmt)
        self.ctrl = (1 << fmt.target_bits) - 1

    # -- sending -------------------------------------------------------------------------------
    def step(self, data: bytes, category: str, *, frames: int = 1, idle: int | None = None,
             gaps=True, expect_first=None):
        """Send `data` as one step; idle afterwards (a timeout if the parser is inside a
        frame); record the model's answers under `category`."""
        s, rng, bt = self.script, self.rng, self.fmt.byte_timeout
        s.data += data
        if gaps and len(data) > 1:
            g = np.where(rng.random(len(data)) < 0.05, rng.integers(1, bt, len(data)), 0)
            g[0] = 0
            s.gaps += g.tolist()
        else:
            s.gaps += [0] * len(data)
        before = len(self.device.answers)
        out = bytearray(self.device.feed(data))
        if self.device.in_frame:
            idle = max(idle or 0, bt + int(rng.integers(0, 3)))
        if idle and idle >= bt:
            out += self.device.timeout()
        s.expected += out
        s.step_end.append(len(s.data))
        s.step_idle.append(int(idle or 0))
        s.step_expect.append(len(s.expected))
        new = self.device.answers[before:]
        for command, status, busy in new:
            s.loose.append(command == Command.STATUS and busy)
        s.frames[category] += frames
        statuses = [status for _, status, _ in new]
        for status in statuses[:1] if category in BAD else statuses:
            s.answers[category][Status(status).name] += 1
        if expect_first is not None:
            assert statuses and statuses[0] in expect_first, (category, statuses)
        if category in BAD:
            assert all(st != Status.OK for st in statuses), (category, statuses)
        return statuses

    # -- frames --------------------------------------------------------------------------------
    def random_writes(self, n: int) -> np.ndarray:
        fmt, rng = self.fmt, self.rng
        return np.stack([rng.integers(0, self.ctrl, n),
                         rng.integers(0, 1 << fmt.addr_bits, n),
                         rng.integers(0, 1 << fmt.data_bits, n)], axis=1)

    def write_frame(self, n: int | None = None) -> bytes:
        if n is None:
            n = int(min(self.rng.geometric(0.3), self.fmt.max_writes))
        return encode_frame(Command.WRITE, pack_writes(self.fmt, self.random_writes(n)))

    def control_frame(self, **values) -> bytes:
        rows = [(self.ctrl, CONTROL[name], value) for name, value in values.items()]
        return encode_frame(Command.WRITE, pack_writes(self.fmt, np.array(rows)))

    def valid_frame(self) -> tuple[bytes, int]:
        """A random command that succeeds: (bytes, frames)."""
        rng = self.rng
        kind = rng.choice(["write", "run", "read", "status", "ping", "abort"],
                          p=[0.35, 0.15, 0.2, 0.15, 0.1, 0.05])
        if kind == "write":
            return self.write_frame(), 1
        if kind == "run":
            frame = self.control_frame(run=int(rng.integers(1, INSTANT_RUN + 1)),
                                       base=int(rng.integers(0, self.engine.words)),
                                       count=int(rng.integers(0, 24)),
                                       error=int(rng.integers(0, 2)))
            return frame + encode_frame(Command.START), 2
        if kind == "read":
            n = int(rng.integers(0, 20)) if rng.random() < 0.9 else int(rng.integers(0, 65536))
            return encode_frame(Command.READ, read_payload(n)), 1
        if kind == "status":
            return encode_frame(Command.STATUS), 1
        if kind == "ping":
            return encode_frame(Command.PING), 1
        # ABORT resets the control registers: give run a value again, or START would hang
        return encode_frame(Command.ABORT) + self.control_frame(run=1), 2

    def any_frame(self) -> bytes:
        """A well-formed frame of any command (the base of a mutation)."""
        rng = self.rng
        kind = rng.choice(["write", "read", "status", "ping", "start"], p=[0.6, 0.1, 0.1, 0.1,
                                                                           0.1])
        if kind == "write":
            return self.write_frame()
        if kind == "read":
            return encode_frame(Command.READ, read_payload(int(rng.integers(0, 30))))
        return encode_frame({"status": Command.STATUS, "ping": Command.PING,
                             "start": Command.START}[kind])

    def garbage(self, n: int, sync: bool) -> bytes:
        values = self.rng.integers(0, 255, n)
        values[values >= SYNC_COMMAND] += 1               # never 0xA5
        out = bytearray(values.astype(np.uint8).tobytes())
        if sync:
            out[int(self.rng.integers(0, n))] = SYNC_COMMAND
        return bytes(out)

    # -- categories ----------------------------------------------------------------------------
    def bad(self, category: str):
        rng, fmt = self.rng, self.fmt
        if category == "bitflip":
            frame = bytearray(self.any_frame())
            flips = rng.choice(np.arange(8, 8 * len(frame)), int(rng.integers(1, 4)),
                               replace=False)                  # not the sync byte
            for bit in flips.tolist():
                frame[bit // 8] ^= 1 << (bit % 8)
            self.step(bytes(frame), category, expect_first=EXPECTED[category])
        elif category == "truncated":
            frame = self.any_frame()
            self.step(frame[:int(rng.integers(1, len(frame)))], category,
                      expect_first=EXPECTED[category])
        elif category == "wrong_length":
            frame = self.any_frame()
            payload = frame[4:-2]
            delta = int(rng.choice([-3, -2, -1, 1, 2, 3]))
            length = max(0, len(payload) + delta)
            if length == len(payload):
                length += 1
            body = bytes([frame[1]]) + length.to_bytes(2, "little") + payload
            wrong = bytes([SYNC_COMMAND]) + body + crc16(body).to_bytes(2, "little")
            self.step(wrong, category, expect_first=EXPECTED[category])
        elif category == "bad_payload":
            choice = rng.integers(0, 4)
            if choice == 0:                                   # not whole writes
                payload = pack_writes(fmt, self.random_writes(int(rng.integers(1, 4))))
                cut = int(rng.integers(1, fmt.write_bytes))
                frame = encode_frame(Command.WRITE, payload[:-cut])
            elif choice == 1:                                 # a padding bit set
                payload = bytearray(pack_writes(fmt, self.random_writes(
                    int(rng.integers(1, 5)))))
                masks = fmt.write_masks()
                spare = [(i, b) for i, mask in enumerate(masks) for b in range(8)
                         if not mask >> b & 1]
                i, b = spare[int(rng.integers(0, len(spare)))]
                k = int(rng.integers(0, len(payload) // fmt.write_bytes))
                payload[k * fmt.write_bytes + i] |= 1 << b
                frame = encode_frame(Command.WRITE, bytes(payload))
            elif choice == 2:                                 # READ without 2 bytes
                frame = encode_frame(Command.READ, bytes(int(rng.choice([0, 1, 3, 4]))))
            else:                                             # a payload where none goes
                cmd = rng.choice([Command.PING, Command.START, Command.STATUS, Command.ABORT])
                frame = encode_frame(cmd, self.garbage(int(rng.integers(1, 6)), False))
            self.step(frame, category, expect_first=EXPECTED[category])
        elif category == "oversize":
            length = int(rng.integers(fmt.max_payload + 1, fmt.max_payload + 40)) \
                if rng.random() < 0.8 else int(rng.integers(fmt.max_payload + 1, 65536))
            payload = self.garbage(min(length, 200), sync=rng.random() < 0.1)
            frame = encode_frame(Command.WRITE, b"")
            frame = frame[:2] + length.to_bytes(2, "little") + payload + frame[4:]
            self.step(frame, category, expect_first=EXPECTED[category])
        elif category == "unknown_cmd":
            cmd = int(rng.choice([c for c in range(256) if c not in set(Command)]))
            frame = encode_frame(cmd, self.garbage(int(rng.integers(0, 8)), False))
            self.step(frame, category, expect_first=EXPECTED[category])

    def garbage_then_valid(self):
        rng = self.rng
        sync = rng.random() < 0.3
        junk = self.garbage(int(rng.integers(1, 30)), sync)
        statuses = self.step(junk, "garbage", frames=0)
        assert sync or not statuses
        frame, frames = self.valid_frame()
        statuses = self.step(frame, "garbage", frames=frames)
        assert statuses and all(st == Status.OK for st in statuses), statuses

    def sync_flip(self):
        frame = bytearray(self.any_frame())
        frame[0] ^= 1 << int(self.rng.integers(0, 8))
        frame = bytes(frame)
        if SYNC_COMMAND in frame:          # a sync further in: not a pure sync loss
            return
        assert not self.step(frame, "sync_flip")

    def valid(self, category="valid"):
        frame, frames = self.valid_frame()
        statuses = self.step(frame, category, frames=frames)
        assert statuses and all(st == Status.OK for st in statuses), statuses

    def memory_check(self):
        """Replay the whole memory through READ and compare (the model predicts it)."""
        fmt, engine = self.fmt, self.engine
        frames = self.control_frame(run=1, base=0, count=engine.words) \
            + encode_frame(Command.START)
        self.step(frames, "memory", frames=2)
        left = engine.words
        while left > 0:
            statuses = self.step(encode_frame(Command.READ, read_payload(fmt.max_items)),
                                 "memory")
            assert statuses == [Status.OK]
            left -= fmt.max_items
        assert not engine.pending()
        self.script.memory_checks += 1

    def watchdog_episode(self):
        """Stick the engine (run = 0): BUSY answers, the watchdog, ABORT, then recover."""
        rng = self.rng
        ok = {Status.OK}
        self.step(self.control_frame(run=0), "watchdog", expect_first=ok)
        self.step(encode_frame(Command.START), "watchdog", expect_first=ok)
        assert self.engine.busy
        s = self.script
        mark = (len(s.data), len(s.step_idle), len(s.expected))
        for _ in range(int(rng.integers(1, 5))):
            pick = rng.integers(0, 4)
            if pick == 0:
                self.step(self.write_frame(), "busy", expect_first={Status.BUSY})
            elif pick == 1:
                self.step(encode_frame(Command.START), "busy", expect_first={Status.BUSY})
            elif pick == 2:
                self.step(encode_frame(Command.STATUS), "watchdog", expect_first=ok)
            else:
                self.bad(str(rng.choice(["bitflip", "truncated", "bad_payload",
                                         "unknown_cmd"])))
        # The frames above must end well before the watchdog (the model sets it only at
        # expire_watchdog): a bound on their clocks, 2 a byte sent (the link takes one a
        # clock) and answered (2 clocks a byte), the gaps and idles, 8 per step.
        clocks = (2 * (len(s.data) - mark[0]) + sum(s.gaps[mark[0]:])
                  + sum(s.step_idle[mark[1]:]) + 2 * (len(s.expected) - mark[2])
                  + 8 * (len(s.step_idle) - mark[1]))
        assert clocks < self.fmt.watchdog_cycles, (clocks, self.fmt.watchdog_cycles)
        self.step(b"", "watchdog", frames=0, idle=self.fmt.watchdog_cycles + 50)
        self.device.expire_watchdog()
        self.step(encode_frame(Command.STATUS), "watchdog",
                  expect_first={Status.WATCHDOG})
        self.step(self.write_frame(), "busy", expect_first={Status.BUSY})
        self.step(encode_frame(Command.ABORT), "watchdog", expect_first=ok)
        assert not self.engine.busy and not self.device.watchdog
        self.step(encode_frame(Command.STATUS) + self.control_frame(run=1), "watchdog",
                  frames=2, expect_first=ok)


#: Mix of the fuzzer's steps (each bad step is followed by a valid command).
MIX = {"valid": 0.22, "bitflip": 0.16, "truncated": 0.12, "wrong_length": 0.1,
       "bad_payload": 0.1, "oversize": 0.08, "garbage": 0.1, "unknown_cmd": 0.07,
       "sync_flip": 0.03, "watchdog": 0.02}


def fuzz_script(fmt: LinkFormat, frames: int = 10_000, seed: int = 0,
                memory_every: int = 500) -> FuzzScript:
    """At least `frames` frames (valid, mutated, garbage-prefixed, oversize, unknown, during
    a stuck engine), with every response golden `LinkDevice` predicts. Each bad frame is
    followed by a valid command; the whole memory is replayed and compared every
    `memory_every` frames and at the end."""
    rng = np.random.default_rng(seed)
    fuzzer = _Fuzzer(fmt, rng)
    names, weights = list(MIX), np.array(list(MIX.values()))
    fuzzer.step(encode_frame(Command.PING) + fuzzer.control_frame(run=1), "valid", frames=2)
    next_check = memory_every
    while sum(fuzzer.script.frames.values()) < frames:
        category = names[rng.choice(len(names), p=weights / weights.sum())]
        if category == "valid":
            fuzzer.valid()
        elif category == "garbage":
            fuzzer.garbage_then_valid()
        elif category == "sync_flip":
            fuzzer.sync_flip()
            fuzzer.valid("valid_after_bad")
        elif category == "watchdog":
            fuzzer.watchdog_episode()
        else:
            fuzzer.bad(category)
            fuzzer.valid("valid_after_bad")
        if sum(fuzzer.script.frames.values()) >= next_check:
            fuzzer.memory_check()
            next_check += memory_every
    fuzzer.memory_check()
    return fuzzer.script


def compare_responses(script: FuzzScript, received: bytes) -> list[str]:
    """Differences between the received bytes and the script's expected responses (empty
    when they agree; a loose STATUS answer may differ in its cycles)."""
    problems = []
    try:
        got = decode_responses(received)
    except Exception as exc:                      # noqa: BLE001 - reported, not raised
        return [f"received bytes do not split into responses: {exc}"]
    want = decode_responses(bytes(script.expected))
    if len(got) != len(want):
        problems.append(f"{len(got)} responses, expected {len(want)}")
    for k, (g, w) in enumerate(zip(got, want)):
        if script.loose[k]:
            same = g.status == w.status and len(g.payload) == len(w.payload) \
                and g.payload[:1] == w.payload[:1]
        else:
            same = g == w
        if not same:
            problems.append(f"response {k}: got {Status(g.status).name} {g.payload.hex()}, "
                            f"expected {Status(w.status).name} {w.payload.hex()}")
            if len(problems) > 10:
                break
    return problems


def run_link_fuzz(frames: int = 10_000, seed: int = 0, *, sim: str | None = None,
                  build_root: Path | None = None, verbose: bool = False,
                  harness: LinkHarness | None = None) -> dict:
    """The fuzz script through LinkHarness at byte level in cocotb (`link_tb.py`).

    Returns a dict: frames (per category), answers (per category: status -> count), steps,
    bytes_sent, bytes_received, clocks, memory_checks, problems (empty when every response
    matched the model and nothing hung), hang_step (-1: none), sim, seconds."""
    from .runner import run_cocotb

    harness = harness or LinkHarness()
    fmt = harness.format
    t0 = time.monotonic()
    script = fuzz_script(fmt, frames, seed)
    generated = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="oscarray-link-") as tmp:
        in_path, out_path = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(in_path, data=np.frombuffer(bytes(script.data), dtype=np.uint8),
                 gaps=np.array(script.gaps, dtype=np.int64),
                 step_end=np.array(script.step_end, dtype=np.int64),
                 step_idle=np.array(script.step_idle, dtype=np.int64),
                 step_expect=np.array(script.step_expect, dtype=np.int64))
        result = run_cocotb(harness, name="link_harness", test_module="oscarray.sim.link_tb",
                            sim=sim, build_root=build_root, verbose=verbose,
                            params={"in_path": str(in_path), "out_path": str(out_path),
                                    "max_wait": 4 * fmt.watchdog_cycles})
        out = np.load(out_path)
        received = out["received"].astype(np.uint8).tobytes()
        hang_step, clocks = int(out["hang_step"]), int(out["clocks"])
    problems = compare_responses(script, received)
    if hang_step >= 0:
        problems.insert(0, f"no answer after step {hang_step} of {script.steps} "
                           f"(a hang, or fewer bytes than the model)")
    return {"frames": dict(script.frames), "answers": {k: dict(v) for k, v in
                                                        script.answers.items()},
            "steps": script.steps, "bytes_sent": len(script.data),
            "bytes_received": len(received), "bytes_expected": len(script.expected),
            "clocks": clocks, "memory_checks": script.memory_checks, "problems": problems,
            "hang_step": hang_step, "sim": result.sim, "generate_s": generated,
            "build_s": result.build_s, "run_s": result.run_s}
