"""The host link (issue 6): framed commands from a byte stream to an engine, and 8N1 UARTs.

`HostLink` speaks the protocol that `oscarray.golden.link` specifies (read its module
docstring: frames, commands, status codes, the parser's rules); `golden.link.LinkDevice` is
its reference model, byte for byte. The link sits between a byte stream (a UART on a board,
`UartRx` and `UartTx` below; a cocotb driver in simulation) and any engine with the project's
standard ports (`engine_signature`): a `load` stream of (target, addr, data) writes taken
while not busy, `start`, `busy`, `done`, `error`, `cycles`, and an `o` stream of
(value, kind) items. It is sized from the engine's own layouts (`link_format`), so one
design serves the attention head, the torus layer and the array engine.

How a frame goes through (one block RAM of `max_payload` bytes holds it):

    HUNT .. CRC1   the parser takes one byte per clock (rx.ready high), writes the payload
                   into the buffer and runs the CRC, the write count and the padding check as
                   the bytes arrive. `byte_timeout` clocks without a byte inside a frame:
                   TIMEOUT. LEN above max_payload: BAD_LENGTH right after LEN.
    CHECK          CRC, command, payload, busy: the first failing check is answered and
                   nothing else happens (no write reaches the engine before the whole frame
                   is in the buffer and has passed every check).
    command        PING, STATUS, WRITE (each write read back from the buffer, 2 clocks a
                   byte, then offered on `load` until taken), READ (items taken from `o` while
                   it is valid, up to n), START (one `start` pulse), ABORT (one
                   `engine_reset` pulse). Their answer payload goes into the same buffer.
    TX_*           the response: sync, status, LEN, payload from the buffer, CRC.

While a command runs and its answer is sent the link takes no bytes. It never waits on the
engine without a limit: a write that the engine does not take within `watchdog_cycles`
clocks ends the WRITE with WATCHDOG, and READ takes only the items that are already valid.
The watchdog flag (STATUS, the `watchdog` port for an LED) is set once the engine has been
busy for `watchdog_cycles` clocks in a row; START and ABORT clear it. ABORT pulses
`engine_reset`: a top level wraps the engine in `ResetInserter` on it, which returns a stuck
engine to idle (its memories keep their contents).

Speed: 1 clock per received byte, 2 clocks per answer byte and per write byte read back
from the buffer (far below a UART's byte time at any divisor >= 4); one block RAM of
`max_payload` bytes. Not yet built for a device (no utilization measured).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.link import SYNC_COMMAND, SYNC_RESPONSE, Command, Flag, LinkFormat, Status

__all__ = [
    "HostLink",
    "HostLinkError",
    "UartRx",
    "UartTx",
    "connect_engine",
    "engine_signature",
    "link_format",
    "uart_divisor",
]

LOAD_FIELDS = ("target", "addr", "data")
OUTPUT_FIELDS = ("value", "kind")


class HostLinkError(ValueError):
    """Parameters that the link (or a UART) cannot be built with."""


# ---------------------------------------------------------------------------------------------
# Formats and signatures


def _fields(layout, names: tuple, what: str) -> dict:
    """{name: Shape} of a StructLayout with exactly the fields `names`."""
    try:
        layout = data.Layout.cast(layout)
    except TypeError as exc:
        raise HostLinkError(f"{what} layout: {exc}") from None
    if not isinstance(layout, data.StructLayout):
        raise HostLinkError(f"{what} layout must be a data.StructLayout, got {layout!r}")
    shapes = {name: Shape.cast(member.shape) for name, member in layout}
    if set(shapes) != set(names):
        raise HostLinkError(f"{what} layout must have the fields {', '.join(names)}; it has "
                            f"{', '.join(map(str, shapes)) or 'none'}")
    return shapes


def link_format(load_layout, output_layout, *, cycle_bits: int = 32, max_payload: int = 256,
                byte_timeout: int = 100_000, watchdog_cycles: int = 1 << 28,
                engine_id: int = 0) -> LinkFormat:
    """The `LinkFormat` (golden/link.py) of a link to an engine with these `load` and `o`
    payload layouts: load fields target, addr, data (unsigned), output fields value (signed
    or unsigned) and kind (unsigned). HostLinkError for anything else."""
    load = _fields(load_layout, LOAD_FIELDS, "load")
    out = _fields(output_layout, OUTPUT_FIELDS, "output")
    for name in LOAD_FIELDS:
        if load[name].signed:
            raise HostLinkError(f"load field {name!r} must be unsigned, got {load[name]!r}")
    if out["kind"].signed:
        raise HostLinkError(f"output field 'kind' must be unsigned, got {out['kind']!r}")
    try:
        return LinkFormat(target_bits=load["target"].width, addr_bits=load["addr"].width,
                          data_bits=load["data"].width, value_bits=out["value"].width,
                          value_signed=out["value"].signed, kind_bits=out["kind"].width,
                          cycle_bits=cycle_bits, max_payload=max_payload,
                          byte_timeout=byte_timeout, watchdog_cycles=watchdog_cycles,
                          engine_id=engine_id)
    except ValueError as exc:
        raise HostLinkError(str(exc)) from None


def engine_signature(load_layout, output_layout, cycle_bits: int = 32) -> wiring.Signature:
    """The ports of an engine as the engine sees them (AttentionHead's): start In, busy,
    done, error Out, cycles Out(cycle_bits), load In(stream), o Out(stream). HostLink has
    them flipped as its `engine` member: `wiring.connect(m, link.engine, head)`."""
    return wiring.Signature({
        "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
        "cycles": Out(cycle_bits),
        "load": In(stream.Signature(load_layout)),
        "o": Out(stream.Signature(output_layout)),
    })


def connect_engine(m: Module, link: HostLink, engine) -> None:
    """Connect `link.engine` to an engine that has a subset of the standard ports: load, o,
    start and busy are required; done, error and cycles are optional (0 when missing, e.g.
    the torus layer has no `error`). Stream layouts must be the link's."""
    members = engine.signature.members
    for name in ("load", "o", "start", "busy"):
        if name not in members:
            raise HostLinkError(f"the engine has no {name!r} port")
    wiring.connect(m, link.engine.load, engine.load)
    wiring.connect(m, link.engine.o, engine.o)
    m.d.comb += [engine.start.eq(link.engine.start), link.engine.busy.eq(engine.busy)]
    for name in ("done", "error", "cycles"):
        if name in members:
            m.d.comb += getattr(link.engine, name).eq(getattr(engine, name))


def _crc_next(crc, byte):
    """CRC-16/CCITT-FALSE of `crc` followed by `byte` (golden crc16), as XORs."""
    c = [crc[i] for i in range(16)]
    for i in range(7, -1, -1):
        fb = c[15] ^ byte[i]
        c = [fb] + c[:15]
        c[5] = c[5] ^ fb
        c[12] = c[12] ^ fb
    return Cat(*c)


# ---------------------------------------------------------------------------------------------
# The link


class HostLink(wiring.Component):
    """Framed commands from a byte stream to an engine (module docstring; the protocol is
    golden/link.py's).

    Parameters
    ----------
    load_layout : StructLayout    the engine's `load` payload: target, addr, data (unsigned)
    output_layout : StructLayout  the engine's `o` payload: value, kind (unsigned)
    max_payload : int             bytes of the frame buffer (one block RAM): the largest
                                  command payload and answer (19 .. 65535; default 256)
    byte_timeout : int            clocks without a byte that abandon a frame (TIMEOUT)
    watchdog_cycles : int         clocks the engine may stay busy, or leave a write untaken
    cycle_bits : int              width of the engine's `cycles`
    engine_id : int               0..255, in the PING answer (which engine is behind the link)

    Ports
    -----
    rx : In(stream(8))       bytes from the host (ready low while a command runs or answers)
    tx : Out(stream(8))      bytes to the host (the link waits while a byte is not taken)
    engine : In(engine_signature(...))   the engine's ports, flipped: load Out(stream),
                             o In(stream), start Out (one-clock pulse), busy, done, error,
                             cycles In
    engine_reset : Out(1)    one-clock pulse on ABORT (for a ResetInserter around the engine)
    watchdog : Out(1)        the watchdog flag (an LED)

    Attributes
    ----------
    format : LinkFormat      the widths and sizes the host must agree with (PING answers them)
    """

    def __init__(self, load_layout, output_layout, *, max_payload: int = 256,
                 byte_timeout: int = 100_000, watchdog_cycles: int = 1 << 28,
                 cycle_bits: int = 32, engine_id: int = 0):
        try:
            self.format = link_format(load_layout, output_layout, cycle_bits=cycle_bits,
                                      max_payload=max_payload, byte_timeout=byte_timeout,
                                      watchdog_cycles=watchdog_cycles, engine_id=engine_id)
        except Exception:
            self._MustUse__silence = True
            raise
        self.load_layout = data.Layout.cast(load_layout)
        self.output_layout = data.Layout.cast(output_layout)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "engine": In(engine_signature(load_layout, output_layout, cycle_bits)),
            "engine_reset": Out(1),
            "watchdog": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        fmt = self.format
        rx, tx, eng = self.rx, self.tx, self.engine
        wb, ib = fmt.write_bytes, fmt.item_bytes

        m.submodules.buffer = buffer = Memory(shape=8, depth=fmt.max_payload, init=[])
        wr, rd = buffer.write_port(), buffer.read_port()
        ptr = Signal(range(fmt.max_payload + 1))     # rx write, WRITE read, tx read
        wptr = Signal(range(fmt.max_payload + 1))    # answer payload write = answer LEN
        m.d.comb += rd.addr.eq(ptr)

        cmd, len_lo, length = Signal(8), Signal(8), Signal(16)
        crc, rcrc = Signal(16), Signal(16)
        arg = Signal(16)                              # payload bytes 0, 1 (READ's n)
        phase = Signal(range(wb))                     # byte of the current write
        writes = Signal(range(fmt.max_writes + 1))    # whole writes received
        pad_bad = Signal()                            # a padding bit was set
        timer = Signal(range(max(fmt.byte_timeout, fmt.watchdog_cycles)))
        status = Signal(8)

        # The answer payload is written into the buffer through `out`, a byte at a time.
        out_width = 8 * max(len(fmt.capabilities()), fmt.status_bytes, ib, 2)
        out, out_n = Signal(out_width), Signal(range(out_width // 8 + 1))
        reading = Signal()                            # EMIT returns to READ's loop
        done_writes = Signal(range(fmt.max_writes + 1))
        asm = Signal(8 * wb)                          # one write, assembled from the buffer
        n_req, n_items = Signal(range(fmt.max_items + 1)), Signal(range(fmt.max_items + 1))

        # -- the watchdog: busy for watchdog_cycles clocks in a row ----------------------------
        wd_count = Signal(range(fmt.watchdog_cycles))
        wd_flag = Signal()
        with m.If(eng.busy):
            with m.If(wd_count == fmt.watchdog_cycles - 1):
                m.d.sync += wd_flag.eq(1)
            with m.Else():
                m.d.sync += wd_count.eq(wd_count + 1)
        with m.Else():
            m.d.sync += wd_count.eq(0)
        m.d.comb += self.watchdog.eq(wd_flag)

        # -- engine-facing fields ---------------------------------------------------------------
        tb, ab = fmt.target_bytes, fmt.addr_bytes
        load = eng.load.payload
        m.d.comb += [
            load.target.eq(asm[:fmt.target_bits]),
            load.addr.eq(asm[8 * tb:8 * tb + fmt.addr_bits]),
            load.data.eq(asm[8 * (tb + ab):8 * (tb + ab) + fmt.data_bits]),
        ]
        value = Signal(Shape(8 * fmt.value_bytes, fmt.value_signed))
        m.d.comb += value.eq(eng.o.payload.value)
        item = Cat(value, eng.o.payload.kind)          # zero-extended into kind_bytes below
        flags = Cat(eng.busy, eng.done, eng.error, wd_flag, eng.o.valid)
        assert [Flag.BUSY, Flag.DONE, Flag.ERROR, Flag.WATCHDOG, Flag.PENDING] == \
            [1 << i for i in range(5)]
        caps = int.from_bytes(fmt.capabilities(), "little")
        masks = Array(Const(mask, 8) for mask in fmt.write_masks())

        rx_byte = rx.payload
        rx_crc = _crc_next(crc, rx_byte)
        tx_crc = _crc_next(crc, tx.payload)

        def answer(code):
            """Go send an answer with status `code` and an empty payload."""
            m.d.sync += [status.eq(code), wptr.eq(0)]
            m.next = "TX_SYNC"

        def frame_byte(on_byte):
            """A parser state inside a frame: take a byte, or count towards the timeout."""
            with m.If(rx.valid):
                m.d.sync += timer.eq(0)
                on_byte()
            with m.Elif(timer == fmt.byte_timeout - 1):
                answer(Status.TIMEOUT)
            with m.Else():
                m.d.sync += timer.eq(timer + 1)

        def emit(value_, nbytes, *, then_read=False):
            m.d.sync += [out.eq(value_), out_n.eq(nbytes), reading.eq(then_read)]
            m.next = "EMIT"

        known = Signal()
        m.d.comb += known.eq(Cat(cmd == c for c in Command).any())
        payload_bad = Signal()
        with m.Switch(cmd):
            with m.Case(Command.WRITE):
                m.d.comb += payload_bad.eq((phase != 0) | pad_bad)
            with m.Case(Command.READ):
                m.d.comb += payload_bad.eq(length != 2)
            with m.Default():
                m.d.comb += payload_bad.eq(length != 0)

        with m.FSM(name="link") as fsm:
            # -- the parser ---------------------------------------------------------------------
            with m.State("HUNT"):
                with m.If(rx.valid & (rx_byte == SYNC_COMMAND)):
                    m.d.sync += [crc.eq(0xFFFF), timer.eq(0)]
                    m.next = "CMD"

            with m.State("CMD"):
                def on_cmd():
                    m.d.sync += [cmd.eq(rx_byte), crc.eq(rx_crc)]
                    m.next = "LEN0"
                frame_byte(on_cmd)

            with m.State("LEN0"):
                def on_len0():
                    m.d.sync += [len_lo.eq(rx_byte), crc.eq(rx_crc)]
                    m.next = "LEN1"
                frame_byte(on_len0)

            with m.State("LEN1"):
                def on_len1():
                    new_length = Cat(len_lo, rx_byte)
                    m.d.sync += [length.eq(new_length), crc.eq(rx_crc), ptr.eq(0),
                                 phase.eq(0), writes.eq(0), pad_bad.eq(0), arg.eq(0)]
                    with m.If(new_length > fmt.max_payload):
                        answer(Status.BAD_LENGTH)
                    with m.Elif(new_length == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                frame_byte(on_len1)

            with m.State("PAYLOAD"):
                def on_payload():
                    m.d.sync += [crc.eq(rx_crc), ptr.eq(ptr + 1)]
                    with m.If(ptr == 0):
                        m.d.sync += arg[:8].eq(rx_byte)
                    with m.If(ptr == 1):
                        m.d.sync += arg[8:].eq(rx_byte)
                    with m.If((rx_byte & ~masks[phase]) != 0):
                        m.d.sync += pad_bad.eq(1)
                    with m.If(phase == wb - 1):
                        m.d.sync += [phase.eq(0), writes.eq(writes + 1)]
                    with m.Else():
                        m.d.sync += phase.eq(phase + 1)
                    with m.If(ptr + 1 == length):
                        m.next = "CRC0"
                frame_byte(on_payload)

            with m.State("CRC0"):
                def on_crc0():
                    m.d.sync += rcrc[:8].eq(rx_byte)
                    m.next = "CRC1"
                frame_byte(on_crc0)

            with m.State("CRC1"):
                def on_crc1():
                    m.d.sync += rcrc[8:].eq(rx_byte)
                    m.next = "CHECK"
                frame_byte(on_crc1)

            # -- the checks, in golden LinkDevice's order -------------------------------------
            with m.State("CHECK"):
                m.d.sync += [ptr.eq(0), wptr.eq(0), status.eq(Status.OK), timer.eq(0),
                             done_writes.eq(0), n_items.eq(0)]
                with m.If(crc != rcrc):
                    answer(Status.BAD_CRC)
                with m.Elif(~known):
                    answer(Status.UNKNOWN_CMD)
                with m.Elif(payload_bad):
                    answer(Status.BAD_PAYLOAD)
                with m.Elif(((cmd == Command.WRITE) | (cmd == Command.START)) & eng.busy):
                    answer(Status.BUSY)
                with m.Else():
                    with m.Switch(cmd):
                        with m.Case(Command.PING):
                            emit(caps, len(fmt.capabilities()))
                        with m.Case(Command.STATUS):
                            m.d.sync += status.eq(Mux(wd_flag, Status.WATCHDOG, Status.OK))
                            emit(Cat(flags, Const(0, 3), eng.cycles), fmt.status_bytes)
                        with m.Case(Command.WRITE):
                            with m.If(writes == 0):
                                emit(0, 2)
                            with m.Else():
                                m.next = "W_FETCH"
                        with m.Case(Command.READ):
                            m.d.sync += n_req.eq(Mux(arg > fmt.max_items, fmt.max_items, arg))
                            m.next = "R_TAKE"
                        with m.Case(Command.START):
                            m.next = "START"
                        with m.Default():
                            m.next = "ABORT"

            # -- the commands -------------------------------------------------------------------
            with m.State("START"):
                m.d.sync += wd_flag.eq(0)
                answer(Status.OK)

            with m.State("ABORT"):
                m.d.sync += wd_flag.eq(0)
                answer(Status.OK)

            with m.State("W_FETCH"):                  # rd.addr = ptr: the data comes next clock
                m.next = "W_BYTE"

            with m.State("W_BYTE"):
                m.d.sync += [asm.eq(Cat(asm[8:], rd.data)), ptr.eq(ptr + 1),
                             phase.eq(Mux(phase == wb - 1, 0, phase + 1))]
                with m.If(phase == wb - 1):
                    m.d.sync += timer.eq(0)
                    m.next = "W_LOAD"
                with m.Else():
                    m.next = "W_FETCH"

            with m.State("W_LOAD"):
                with m.If(eng.load.ready):
                    with m.If(done_writes + 1 == writes):
                        emit(done_writes + 1, 2)
                    with m.Else():
                        m.next = "W_FETCH"
                    m.d.sync += done_writes.eq(done_writes + 1)
                with m.Elif(timer == fmt.watchdog_cycles - 1):
                    m.d.sync += status.eq(Status.WATCHDOG)
                    emit(done_writes, 2)
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)

            with m.State("R_TAKE"):
                with m.If((n_items != n_req) & eng.o.valid):
                    m.d.sync += n_items.eq(n_items + 1)
                    emit(item, ib, then_read=True)
                with m.Else():
                    m.next = "TX_SYNC"

            with m.State("EMIT"):                     # out's low byte into the buffer
                m.d.sync += [out.eq(out >> 8), out_n.eq(out_n - 1), wptr.eq(wptr + 1)]
                with m.If((out_n == 1) & reading):
                    m.next = "R_TAKE"
                with m.Elif(out_n == 1):
                    m.next = "TX_SYNC"

            # -- the answer ---------------------------------------------------------------------
            def send(byte, next_state, *, update_crc=True):
                m.d.comb += tx.payload.eq(byte)
                with m.If(tx.ready):
                    if update_crc:
                        m.d.sync += crc.eq(tx_crc)
                    m.next = next_state

            with m.State("TX_SYNC"):
                send(SYNC_RESPONSE, "TX_STATUS", update_crc=False)
                m.d.sync += crc.eq(0xFFFF)

            with m.State("TX_STATUS"):
                send(status, "TX_LEN0")

            with m.State("TX_LEN0"):
                send(wptr[:8], "TX_LEN1")

            with m.State("TX_LEN1"):
                send(Cat(wptr, Const(0, 16))[8:16], "TX_FETCH")
                m.d.sync += ptr.eq(0)
                with m.If(tx.ready & (wptr == 0)):
                    m.next = "TX_CRC0"

            with m.State("TX_FETCH"):                 # rd.addr = ptr
                m.next = "TX_DATA"

            with m.State("TX_DATA"):
                send(rd.data, "TX_FETCH")
                with m.If(tx.ready):
                    m.d.sync += ptr.eq(ptr + 1)
                    with m.If(ptr + 1 == wptr):
                        m.next = "TX_CRC0"

            with m.State("TX_CRC0"):
                send(crc[:8], "TX_CRC1", update_crc=False)

            with m.State("TX_CRC1"):
                send(crc[8:], "HUNT", update_crc=False)

        # Handshakes and strobes decoded from the state, outside the FSM's processes: Icarus
        # never evaluates a combinational block whose inputs keep their initial values, and
        # rx.ready is read before the first byte changes the state.
        def ongoing(*names):
            return Cat(fsm.ongoing(name) for name in names).any()

        emitting = ongoing("EMIT")
        m.d.comb += [
            rx.ready.eq(ongoing("HUNT", "CMD", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1")),
            tx.valid.eq(ongoing("TX_SYNC", "TX_STATUS", "TX_LEN0", "TX_LEN1", "TX_DATA",
                                "TX_CRC0", "TX_CRC1")),
            eng.start.eq(ongoing("START")),
            self.engine_reset.eq(ongoing("ABORT")),
            eng.load.valid.eq(ongoing("W_LOAD")),
            eng.o.ready.eq(ongoing("R_TAKE") & (n_items != n_req)),
            wr.en.eq(emitting | (ongoing("PAYLOAD") & rx.valid)),
            wr.addr.eq(Mux(emitting, wptr, ptr)),
            wr.data.eq(Mux(emitting, out[:8], rx_byte)),
        ]
        return m


# ---------------------------------------------------------------------------------------------
# UARTs


def uart_divisor(clk_hz: float, baud: float, tolerance: float = 0.02) -> int:
    """Clocks per bit for `baud` at `clk_hz`, refused (HostLinkError) when the rounding
    error exceeds `tolerance` (2 %: an 8N1 byte stays within half a bit) or it is below 4."""
    if clk_hz <= 0 or baud <= 0:
        raise HostLinkError(f"clock and baud rate must be positive, got {clk_hz}, {baud}")
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise HostLinkError(f"{baud} baud needs at least 4 clocks a bit; {clk_hz} Hz gives "
                            f"{clk_hz / baud:.2f}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise HostLinkError(f"{baud} baud at {clk_hz} Hz: divisor {divisor} is off by "
                            f"{100 * error:.1f} % (more than {100 * tolerance:.1f} %)")
    return divisor


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise HostLinkError(f"divisor (clocks per bit) must be an integer >= 4, got "
                            f"{divisor!r}")
    return divisor


class UartTx(wiring.Component):
    """8N1 transmitter: a start bit (0), 8 data bits LSB first, a stop bit (1), each
    `divisor` clocks; the next byte's start bit follows the stop bit at once.

    Ports
    -----
    i : In(stream(8))   bytes to send (ready while the line is idle)
    tx : Out(1)         the serial line (1 when idle)
    """

    def __init__(self, divisor: int):
        try:
            self.divisor = _check_divisor(divisor)
        except Exception:
            self._MustUse__silence = True
            raise
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)
        count = Signal(range(self.divisor))
        bits = Signal(range(11))
        m.d.comb += [self.tx.eq(shreg[0]),
                     # idle, or the last clock of a stop bit: the next start bit follows
                     self.i.ready.eq((bits == 0) | ((bits == 1) & (count == 0)))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         bits.eq(10), count.eq(self.divisor - 1)]
        with m.Elif(bits == 0):
            pass
        with m.Elif(count == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                         count.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += count.eq(count - 1)
        return m


class UartRx(wiring.Component):
    """8N1 receiver: the line is synchronized (2 flip-flops), a start bit is confirmed at
    its middle, each bit sampled at its middle, `divisor` clocks apart.

    A byte whose stop bit is 0 is dropped with a `framing_error` pulse, and the receiver
    waits for the line to go high (a break does not make bytes). A byte that completes while
    the previous one is still not taken is dropped with an `overrun` pulse.

    Ports
    -----
    rx : In(1)             the serial line (idle 1)
    o : Out(stream(8))     received bytes
    framing_error : Out(1) one-clock pulse
    overrun : Out(1)       one-clock pulse
    """

    def __init__(self, divisor: int):
        try:
            self.divisor = _check_divisor(divisor)
        except Exception:
            self._MustUse__silence = True
            raise
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        count = Signal(range(self.divisor))
        bits = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM(name="uart_rx") as fsm:
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += count.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(count == 0):
                    with m.If(line):                # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [count.eq(self.divisor - 1), bits.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += count.eq(count - 1)
            with m.State("DATA"):
                with m.If(count == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), bits.eq(bits + 1),
                                 count.eq(self.divisor - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += count.eq(count - 1)
            with m.State("STOP"):
                with m.If(count == 0):
                    with m.If(~line):
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += count.eq(count - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        # the pulses outside the FSM's process (see HostLink: Icarus and constant inputs)
        stop = fsm.ongoing("STOP") & (count == 0)
        m.d.comb += [self.framing_error.eq(stop & ~line),
                     self.overrun.eq(stop & line & self.o.valid & ~self.o.ready)]
        return m
