"""Board top levels (issue 6): the engine behind the host link on a board's USB UART.

What a top holds, from the pins in:

    board clock -> PLL (ECP5 EHXPLLL; iCE40 SB_PLL40_PAD; or none: TopSpec.pll) -> domain
                   `sync`, held in reset until the PLL locks
    UART rx pin -> UartRx -> SyncFIFOBuffered (16 bytes) -> HostLink -> UartTx -> UART tx pin
    HostLink.engine <-> the engine (in a ResetInserter on the link's `engine_reset`: ABORT)
                        with its `o` items through an output FIFO sized for one whole head
                        (block RAM, or on the iCEBreaker the SPRAM: `SinglePortFifo`)
    LEDs: busy, done, error, watchdog, rx and tx activity, a heartbeat, PLL locked

Why the output FIFO: the attention head stops while its `o` item is not taken, and the host
reads items a frame at a time over a slow line. With a FIFO that holds every item of a head
at capacity (`max_tokens * row_items(max_tokens, max_d_h)`), the head never waits, so the
`cycles` it reports are its compute clocks (`cycles_per_head`), not the UART's speed.

The boards (`TOPS`; `build_top` builds one through boards/build.py's flow):

    ulx3s-85f       the analytic head, T <= 64, d_h <= 32, at 40 MHz (PLL 25 -> 40 MHz);
                    the FTDI USB UART (amaranth-boards "uart": FPGA rx M1, tx L4)
    orangecrab-25f  the same head at 56 MHz (PLL 48 -> 56 MHz). The OrangeCrab has no USB
                    UART: its USB connector goes straight to the FPGA and would need a USB
                    core (CDC-ACM) in the fabric, which this design does not have. The link
                    uses the Feather header instead: pin "0" (N17) is RX, pin "1" (M18) TX
                    (3.3 V); connect a 3.3 V USB-serial adapter there (its TX to pin 0, its
                    RX to pin 1, GND to GND)
    icebreaker      the head built with the softmax mode alone (hdl/attention.py
                    modes=("softmax",)), T <= 16, d_h <= 32 (the subject-verb shape, 9 x 32),
                    iterative CORDIC, at the board's 12 MHz without the PLL, on the FT2232H's
                    UART (pins 6, 9); the output FIFO in 3 of the 4 SPRAMs. No oscillator head
                    fits beside the link: the compact analytic head (`AttentionHead`'s
                    compact) fits the iCE40UP5K alone, but a top with it needed 5753 logic
                    cells of 5280 even without an output FIFO (measured 2026-11-25,
                    README). The softmax head's Fmax there was 13-14 MHz (the critical
                    path its EXP pass's shift and rounding of M - m), below
                    the iCE40 PLL's 16 MHz minimum, hence the board clock; with the shift's
                    amounts registered (ec606ec) the top reaches 17.0 MHz, too close to
                    16 MHz for a PLL clock, so the board clock stays. The driver runs any
                    attention case on it through softmax (golden `softmax_case`).
                    `design="link"` builds the host link with the loopback engine (sim/link.py
                    `FakeEngine`: a memory written through the link and replayed on READ), at
                    24 MHz (PLL 12 -> 24 MHz), to prove the board's link end to end
                    (`oscarray.driver.link_selftest`)

The PLL frequency is a parameter (`clk_mhz`). The ECP5 defaults were raised on 2026-11-24
from 30 and 32 MHz after measuring the whole tops built from c4acc7a (the head pipelined
since 0a9c51a; before it the tops reached 31.2 and 40.3 MHz): at the old clocks the
ULX3S-85F (speed grade 6) reached 47.7 MHz and the OrangeCrab-25F (speed grade 8) 63.3 MHz.
Each default is a whole MHz its PLL makes exactly, about 10 % or more under that Fmax (the
ULX3S's PLL makes neither 41 nor 42 MHz from 25 MHz, hence 40), and each top rebuilt at its
new clock meets it (table below). The critical path is now the SCORES product: the q
buffer's block RAM read through the MULT18X18D and the adders of its partial products into
`qk`. `pll_ecp5` and `pll_ice40` choose the dividers (the rules of Project Trellis' ecppll
and IceStorm's icepll) and refuse a frequency they cannot make within 0.5 %.

Measured (`build_top`, 2026-11-24, Yosys 0.70 / nextpnr 0.11 from YoWASP, seed 1, router2 on
ECP5; the ECP5 rows built from c4acc7a, one build at a time on 2 cores, the iCEBreaker's
softmax row from ec606ec; the whole design,
pins, PLL, UART and FIFOs included; Fmax is nextpnr's after routing, which depends on the
clock it is given, hence both rows of each ECP5 board):

    board            design                  LUT4/LC  FF    DSP  BRAM  Fmax MHz  PLL MHz  met
    ulx3s-85f        attention T 64, d_h 32  14062    7986  16   32    45.4      40       yes
    ulx3s-85f        (the same, old clock)   14096    7998  16   32    47.7      30       yes
    orangecrab-25f   attention T 64, d_h 32  13957    7920  16   32    62.2      56       yes
    orangecrab-25f   (the same, old clock)   13944    7917  16   32    63.3      32       yes
    icebreaker       link (loopback engine)  1349     660   0    5     27.3      24       yes
    icebreaker       softmax T 16, d_h 32    4855     1391  7    29    17.0      12 (none) yes

(The output FIFO of 8192 items is most of the ECP5 tops' BRAM; the iCEBreaker's link
design's critical path is the link's: its state decode to `o.ready`, through the loopback
engine, to a clock enable. Its attention top (measured 2026-11-24) uses 3 SPRAM besides:
the output FIFO of 1024 items; boards/build.py's iCE40 script (SB_MAC16 for operand slices
of 8 bits or more, the head's row buffers without read-old-data emulation) makes it fit.)

The engine's identity travels in the link's PING answer (`engine_id`, `encode_engine_id`):
the host driver learns from it which head is on the board (T and d_h capacity, ODE modes or
softmax alone) and checks the field widths of the answer against that head's
(`oscarray.driver`).

Simulation: `AttentionTop(board, pll=False)` outside a platform (as cocotb runs it) has no
PLL and no pins: its ports are `rxd` In(1), `txd` Out(1) and the LED signals, clocked by the
simulator's `sync` domain; `divisor` (clocks per UART bit) is then given directly, e.g. 4
(sim/board_sim.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.build import ResourceError
from amaranth.hdl import (ClockDomain, ClockSignal, Const, Instance, Module, Mux,
                          ResetInserter, ResetSignal, Signal)
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = [
    "AttentionTop",
    "BoardTop",
    "BoardTopError",
    "DESIGNS",
    "ENGINE_LOOPBACK",
    "ENGINE_SOFTMAX",
    "SinglePortFifo",
    "LinkTop",
    "TOPS",
    "TopSpec",
    "build_top",
    "decode_engine_id",
    "encode_engine_id",
    "pll_ecp5",
    "pll_ice40",
    "top_for",
]

#: What `build_top` can build: the attention head behind the link, or the link alone with
#: the loopback engine.
DESIGNS = ("attention", "link")

#: engine_id of the loopback engine (bits 7-6 clear); attention heads have bit 7 set (the
#: oscillator's) or bits 7-6 = 01 (softmax only): `encode_engine_id`.
ENGINE_LOOPBACK = 0x01

#: bits 7-6 of a softmax-only head's engine_id.
ENGINE_SOFTMAX = 0x40

#: The signals an LED can show.
LED_SIGNALS = ("busy", "done", "error", "watchdog", "fault", "rx", "tx", "heartbeat",
               "locked")


class BoardTopError(ValueError):
    """Parameters that a board top cannot be built with."""


# ---------------------------------------------------------------------------------------------
# The boards


@dataclass(frozen=True)
class TopSpec:
    """How one board's top is made.

    board       a name of boards/build.py's BOARDS
    clk_mhz     the PLL's output, the design's clock
    pll         False: no PLL, the board's clock pin clocks the design (clk_mhz is its
                frequency; a top of another clock uses the PLL)
    link_clk_mhz  the link design's clock, where it is not clk_mhz
    design      the default design ("attention", or "link" where no head fits)
    max_tokens, max_d_h, modes   the attention head's capacity and modes
    cordic_arch the head's CORDICs ("pipelined" or "iterative", hdl/cordic.py)
    uart        "uart" (the board's amaranth-boards UART resource) or "header" (the pins of
                `header_uart`: (connector, index, rx pin, tx pin))
    leds        the signal (LED_SIGNALS) of each LED, in the order of the board's "led"
                resources; with `rgb`, the red, green and blue pins of "rgb_led" 0
    fits        False: no attention head fits the device (`refusal` says why)
    out_fifo    the output FIFO's memory: "bram" (SyncFIFOBuffered, block RAM) or "spram"
                (`SinglePortFifo`: the iCE40 SPRAM)
    """

    board: str
    clk_mhz: float
    design: str = "attention"
    max_tokens: int = 64
    max_d_h: int = 32
    modes: tuple = ("analytic",)
    uart: str = "uart"
    header_uart: tuple | None = None
    leds: tuple = ()
    rgb: bool = False
    fits: bool = True
    refusal: str = ""
    baud: int = 115_200
    max_payload: int = 1024
    cordic_arch: str = "pipelined"
    out_fifo: str = "bram"
    pll: bool = True
    link_clk_mhz: float | None = None


TOPS = {
    "ulx3s-85f": TopSpec(
        "ulx3s-85f", clk_mhz=40.0,
        leds=("busy", "done", "error", "watchdog", "rx", "tx", "heartbeat", "locked")),
    "orangecrab-25f": TopSpec(
        "orangecrab-25f", clk_mhz=56.0, uart="header", header_uart=("io", 0, "0", "1"),
        rgb=True, leds=("fault", "done", "busy")),
    "icebreaker": TopSpec(
        "icebreaker", clk_mhz=12.0, pll=False, link_clk_mhz=24.0, max_tokens=16, max_d_h=32,
        modes=("softmax",), cordic_arch="iterative", out_fifo="spram",
        # on-board red, green; then the LED PMOD (break-off) LEDs 2..6
        leds=("fault", "done", "busy", "rx", "tx", "heartbeat", "locked")),
}


def top_spec(board: str) -> TopSpec:
    """The TopSpec of `board` (UnknownBoard for a board without one)."""
    from .build import UnknownBoard, get_board
    get_board(board)
    if board not in TOPS:
        raise UnknownBoard(f"board {board!r} has no top level; boards with one: "
                           f"{', '.join(sorted(TOPS))}")
    return TOPS[board]


def spec_for_head(identity: dict) -> TopSpec | None:
    """The TopSpec of the first board whose attention head is `identity` (a
    `decode_engine_id` answer: max_tokens, max_d_h, modes), or None: what the host knows of
    a head besides its PING (its CORDIC architecture, hence its clocks per head)."""
    for spec in TOPS.values():
        if (spec.fits and (spec.max_tokens, spec.max_d_h, tuple(spec.modes))
                == (identity.get("max_tokens"), identity.get("max_d_h"),
                    tuple(identity.get("modes", ())))):
            return spec
    return None


# ---------------------------------------------------------------------------------------------
# PLLs


def pll_ecp5(fin_hz: float, fout_hz: float, tolerance: float = 0.005) -> dict:
    """EHXPLLL dividers for fout from fin (CLKOP fed back, as Project Trellis' ecppll):
    PFD = fin / CLKI_DIV in [3.125, 400] MHz, fout = PFD * CLKFB_DIV, VCO = fout * CLKOP_DIV
    in [400, 800] MHz. The closest fout wins (then the VCO nearest 600 MHz, mid-range). Returns clki_div,
    clkfb_div, clkop_div, fout_hz, vco_hz; BoardTopError if nothing is within `tolerance`."""
    best = None
    for clki_div in range(1, 129):
        pfd = fin_hz / clki_div
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            fout = pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = fout * clkop_div
                if not 400e6 <= vco <= 800e6:
                    continue
                key = (abs(fout - fout_hz), abs(vco - 600e6))
                if best is None or key < best[0]:
                    best = (key, {"clki_div": clki_div, "clkfb_div": clkfb_div,
                                  "clkop_div": clkop_div, "fout_hz": fout, "vco_hz": vco})
    if best is None or best[0][0] > tolerance * fout_hz:
        raise BoardTopError(f"the ECP5 PLL cannot make {fout_hz / 1e6:g} MHz from "
                            f"{fin_hz / 1e6:g} MHz within {100 * tolerance:g} %")
    return best[1]


def _ice40_filter_range(pfd_hz: float) -> int:
    mhz = pfd_hz / 1e6
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if mhz < limit:
            return value
    return 6


def pll_ice40(fin_hz: float, fout_hz: float, tolerance: float = 0.005) -> dict:
    """SB_PLL40 dividers for fout from fin (SIMPLE feedback, as IceStorm's icepll): PFD =
    fin / (DIVR + 1) in [10, 133] MHz, VCO = PFD (DIVF + 1) in [533, 1066] MHz (DIVF < 128),
    fout = VCO / 2**DIVQ in [16, 275] MHz. Returns divr, divf, divq, filter_range, fout_hz, vco_hz;
    BoardTopError if nothing is within `tolerance`."""
    best = None
    if 10e6 <= fin_hz <= 133e6 and 16e6 <= fout_hz <= 275e6:
        for divr in range(16):
            pfd = fin_hz / (divr + 1)
            if not 10e6 <= pfd <= 133e6:
                continue
            for divf in range(128):             # 7 bits with SIMPLE feedback
                vco = pfd * (divf + 1)
                if not 533e6 <= vco <= 1066e6:
                    continue
                for divq in range(1, 7):
                    fout = vco / (1 << divq)
                    if not 16e6 <= fout <= 275e6:
                        continue
                    key = abs(fout - fout_hz)
                    if best is None or key < best[0]:
                        best = (key, {"divr": divr, "divf": divf, "divq": divq,
                                      "filter_range": _ice40_filter_range(pfd),
                                      "fout_hz": fout, "vco_hz": vco})
    if best is None or best[0] > tolerance * fout_hz:
        raise BoardTopError(f"the iCE40 PLL cannot make {fout_hz / 1e6:g} MHz from "
                            f"{fin_hz / 1e6:g} MHz within {100 * tolerance:g} % (output "
                            f"16..275 MHz)")
    return best[1]


# ---------------------------------------------------------------------------------------------
# Engine identity (the PING answer's engine_id)


def encode_engine_id(max_tokens: int, max_d_h: int, modes) -> int:
    """The engine_id of an attention head: bits 0-3 log2(max_tokens) (1..2048), bits 4-5
    log2(max_d_h) - 4 (16, 32, 64, 128); then bit 7 set for the oscillator's head (analytic,
    bit 6 the ODE modes ode-drive and ode-pairwise built), or bits 7-6 = 01 for the head
    built with the softmax mode only (hdl/attention.py `modes=("softmax",)`). BoardTopError
    for a head it cannot name (a board head has power of two capacities, and either the
    oscillator's modes or softmax alone)."""
    from ..hdl.attention import check_modes
    modes = check_modes(modes)
    t_log, d_log = int(max_tokens).bit_length() - 1, int(max_d_h).bit_length() - 1
    if max_tokens != 1 << t_log or not 0 <= t_log <= 11:
        raise BoardTopError(f"a board head's max_tokens must be a power of two up to 2048, "
                            f"not {max_tokens}")
    if max_d_h != 1 << d_log or not 4 <= d_log <= 7:
        raise BoardTopError(f"a board head's max_d_h must be 16, 32, 64 or 128, not {max_d_h}")
    capacity = t_log | ((d_log - 4) << 4)
    if "softmax" in modes:
        if modes != ("softmax",):
            raise BoardTopError("a board head has the oscillator modes or the softmax mode "
                                "alone, not both")
        return ENGINE_SOFTMAX | capacity
    ode = "ode-drive" in modes or "ode-pairwise" in modes
    return 0x80 | capacity | (0x40 if ode else 0)


def decode_engine_id(engine_id: int) -> dict:
    """What `encode_engine_id` (or ENGINE_LOOPBACK) says: {"design": "attention",
    "max_tokens", "max_d_h", "modes"} or {"design": "link"}; ValueError for an unknown id."""
    engine_id = int(engine_id)
    if engine_id & 0x80 or engine_id & 0xC0 == ENGINE_SOFTMAX:
        from ..hdl.attention import OSCILLATOR_MODES
        t_log, d_log = engine_id & 0x0F, ((engine_id >> 4) & 0x03) + 4
        if t_log > 11:
            raise ValueError(f"engine id 0x{engine_id:02X}: no head has 2**{t_log} tokens")
        if not engine_id & 0x80:
            modes = ("softmax",)
        else:
            modes = OSCILLATOR_MODES if engine_id & 0x40 else ("analytic",)
        return {"design": "attention", "max_tokens": 1 << t_log, "max_d_h": 1 << d_log,
                "modes": tuple(modes)}
    if engine_id == ENGINE_LOOPBACK:
        return {"design": "link"}
    raise ValueError(f"engine id 0x{engine_id:02X} names no engine of this project")


# ---------------------------------------------------------------------------------------------
# The top levels


def _stretch(m: Module, pulse, clocks: int, name: str) -> Signal:
    """`pulse` held for `clocks` clocks (activity LEDs)."""
    count = Signal(range(clocks + 1), name=f"{name}_count")
    out = Signal(name=name)
    with m.If(pulse):
        m.d.sync += count.eq(clocks)
    with m.Elif(count != 0):
        m.d.sync += count.eq(count - 1)
    m.d.comb += out.eq(count != 0)
    return out


class SinglePortFifo(wiring.Component):
    """A FIFO of `depth` items of `width` bits in a memory with one address for its read and
    write ports (a single-port RAM: the iCE40 SPRAM, which Yosys maps only such a memory to),
    with SyncFIFOBuffered's ports (w_data, w_en, w_rdy; r_data, r_rdy, r_en) and order.

    Each clock the memory either writes (an item offered and room: writes first) or reads
    the next item into the output (items waiting, and the output empty or taken this clock),
    so it takes one item a clock and gives one a clock while none arrives: the head's burst
    of a row is never held up, and the reads catch up between bursts (the link takes an item
    every few UART bytes). Holds `depth` items in memory plus the one at the output.
    The memory is named with NO_INIT_SUFFIX (boards/build.py drops its all-zero init: every
    word is written before it is read) and asks for Yosys's "huge" RAM (ram_style).
    """

    def __init__(self, width: int, depth: int, *, ram_style: str | None = "huge"):
        if depth < 1:
            raise BoardTopError(f"a FIFO needs a depth of at least 1, not {depth}")
        self.width, self.depth, self.ram_style = int(width), int(depth), ram_style
        super().__init__({"w_data": In(self.width), "w_en": In(1), "w_rdy": Out(1),
                          "r_data": Out(self.width), "r_rdy": Out(1), "r_en": In(1)})

    def elaborate(self, platform):
        from ..hdl.array import NO_INIT_SUFFIX
        m = Module()
        memory = Memory(shape=self.width, depth=self.depth, init=[],
                        attrs={"ram_style": self.ram_style} if self.ram_style else None)
        m.submodules["mem" + NO_INIT_SUFFIX] = memory
        rd, wr = memory.read_port(), memory.write_port()
        w_ptr = Signal(range(self.depth), name="w_ptr")
        r_ptr = Signal(range(self.depth), name="r_ptr")
        stored = Signal(range(self.depth + 1), name="stored")   # in memory, not yet read
        out_valid = Signal(name="out_valid")
        write = Signal()
        read = Signal()
        m.d.comb += [
            self.w_rdy.eq(stored != self.depth),
            write.eq(self.w_en & self.w_rdy),
            read.eq(~write & (stored != 0) & (~out_valid | self.r_en)),
            wr.addr.eq(Mux(write, w_ptr, r_ptr)), rd.addr.eq(wr.addr),
            wr.en.eq(write), wr.data.eq(self.w_data), rd.en.eq(read),
            self.r_data.eq(rd.data), self.r_rdy.eq(out_valid),
        ]

        def bump(ptr):
            return Mux(ptr == self.depth - 1, 0, ptr + 1)

        with m.If(write):
            m.d.sync += w_ptr.eq(bump(w_ptr))
        with m.If(read):
            m.d.sync += r_ptr.eq(bump(r_ptr))
        m.d.sync += [stored.eq(stored + write - read),
                     out_valid.eq(read | (out_valid & ~self.r_en))]
        return m


class BoardTop(wiring.Component):
    """UART, FIFO, HostLink, an engine (ResetInserter on ABORT), an output FIFO, LEDs, and on
    a board the PLL and the pins (module docstring). Subclasses give the engine (`_engine`).

    Parameters
    ----------
    board : str          a name in TOPS (its pins, LEDs, clock); None only for simulation
    clk_mhz : float      the PLL's output (default: the board's TopSpec)
    pll : bool           False: no PLL; on a board the board clock drives `sync` directly
                         (default: the TopSpec's `pll`, or the PLL for a clk_mhz other than
                         the board clock's)
    baud : int           the UART's rate (on a board; the divisor comes from clk and baud)
    divisor : int        clocks per UART bit, instead of baud (simulation: e.g. 4)
    max_payload, byte_timeout, watchdog_cycles : the link's (HostLink); byte_timeout
                         defaults to 50 ms of clocks (500 bit times in simulation), the
                         watchdog to 30 s (2**24 clocks in simulation)
    out_fifo_depth : int items the output FIFO holds (None: one head at capacity; 0: none)
    out_fifo : str       its memory, "bram" or "spram" (None: the TopSpec's `out_fifo`)

    Ports (what the simulation drives; on a board they are wired to pins inside)
    -----
    rxd : In(1)   the UART line from the host (idle 1)
    txd : Out(1)  the UART line to the host
    busy, done, error, watchdog : Out(1)   the engine's state (the LEDs)
    """

    engine_id = 0

    def __init__(self, board: str | None, *, clk_mhz: float | None = None,
                 pll: bool | None = None,
                 baud: int | None = None, divisor: int | None = None,
                 max_payload: int | None = None, byte_timeout: int | None = None,
                 watchdog_cycles: int | None = None, out_fifo_depth: int | None = None,
                 rx_fifo_depth: int = 16, out_fifo: str | None = None):
        from ..hdl.link import HostLink, HostLinkError, uart_divisor
        try:
            self.spec = top_spec(board) if board is not None else TopSpec("sim", clk_mhz=100.0)
            self.board = board
            self.clk_mhz = float(clk_mhz) if clk_mhz is not None else self._default_clk_mhz()
            if pll is None:             # the board's way, or the PLL for another clock
                pll = self.spec.pll or (board is not None and abs(
                    self.clk_mhz * 1e6 - self._board_clock_hz()) > 1e3)
            self.pll = bool(pll) and board is not None
            self.baud = int(baud) if baud is not None else self.spec.baud
            self.pll_params = None
            if self.pll:
                self.pll_params = self._pll_params()
                self.clk_hz = self.pll_params["fout_hz"]
            elif board is not None:
                self.clk_hz = self._board_clock_hz()
            else:
                self.clk_hz = self.clk_mhz * 1e6
            if divisor is not None:
                self.divisor = int(divisor)
            elif board is None:
                raise BoardTopError("a simulated top needs `divisor` (clocks per UART bit)")
            else:
                self.divisor = uart_divisor(self.clk_hz, self.baud)
            sim = board is None
            if byte_timeout is None:
                byte_timeout = 500 * self.divisor if sim else round(0.05 * self.clk_hz)
            if watchdog_cycles is None:
                watchdog_cycles = 1 << 24 if sim else min(2 ** 32 - 1, round(30 * self.clk_hz))
            self.rx_fifo_depth = int(rx_fifo_depth)
            load, out = self._layouts()
            self.link = HostLink(load, out, max_payload=max_payload or self.spec.max_payload,
                                 byte_timeout=byte_timeout, watchdog_cycles=watchdog_cycles,
                                 cycle_bits=32, engine_id=self.engine_id)
            self.link._MustUse__silence = True      # a part of this top (see below)
            self.format = self.link.format
            self.out_fifo_depth = (self._default_out_depth() if out_fifo_depth is None
                                   else int(out_fifo_depth))
            self.out_fifo = out_fifo or self.spec.out_fifo
            if self.out_fifo not in ("bram", "spram"):
                raise BoardTopError(f"out_fifo must be 'bram' or 'spram', not {out_fifo!r}")
            from ..hdl.link import UartRx, UartTx
            self.uart_rx, self.uart_tx = UartRx(self.divisor), UartTx(self.divisor)
            # parts of this top, elaborated with it (the top itself warns when unused)
            for part in (self.uart_rx, self.uart_tx):
                part._MustUse__silence = True
        except HostLinkError as exc:
            self._MustUse__silence = True
            raise BoardTopError(str(exc)) from None
        except Exception:
            self._MustUse__silence = True
            raise
        super().__init__({"rxd": In(1, init=1), "txd": Out(1, init=1), "busy": Out(1),
                          "done": Out(1), "error": Out(1), "watchdog": Out(1)})

    # -- what subclasses give --------------------------------------------------------------------
    def _layouts(self):
        raise NotImplementedError

    def _engine(self):
        raise NotImplementedError

    def _default_out_depth(self) -> int:
        return 0

    def _default_clk_mhz(self) -> float:
        return self.spec.clk_mhz

    # -- clocks ----------------------------------------------------------------------------------
    def _board_clock_hz(self) -> float:
        from .build import get_board
        platform = get_board(self.board).platform
        resource = platform().lookup(platform.default_clk, 0)
        return float(resource.clock.frequency)

    def _pll_params(self) -> dict:
        from .build import get_board
        family = get_board(self.board).family
        fin = self._board_clock_hz()
        make = pll_ecp5 if family == "ecp5" else pll_ice40
        return {"family": family, "fin_hz": fin, **make(fin, self.clk_mhz * 1e6)}

    def _clock_domain(self, m: Module, platform) -> Signal:
        """Domain `sync` from the PLL (or the board clock), in reset until the PLL locks and
        then 16 more clocks. Returns the `locked` signal (in `sync`)."""
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        clk_port = platform.request(platform.default_clk, 0, dir="-")
        clk = sync.clk                  # the PLL drives the domain's clock net itself
        lock = Signal(name="pll_lock")
        params = self.pll_params
        if params is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.d.comb += [clk.eq(clk_buf.i), lock.eq(1)]
        elif params["family"] == "ecp5":
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{params['fin_hz'] / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{params['fout_hz'] / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=params["clki_div"], p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=params["clkop_div"], p_CLKOP_CPHASE=(params["clkop_div"] - 1) // 2,
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=params["clkfb_div"],
                i_RST=0, i_STDBY=0, i_CLKI=clk_buf.i, o_CLKOP=clk, i_CLKFB=clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
                i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=lock)
        else:
            # SB_PLL40_PAD takes the clock pin itself (the iCEBreaker's 12 MHz is on a PLL pin)
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=params["divr"], p_DIVF=params["divf"],
                p_DIVQ=params["divq"], p_FILTER_RANGE=params["filter_range"],
                i_PACKAGEPIN=clk_port.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        # No constraint is added on the PLL's output: nextpnr derives it from the board clock
        # pin's (the platform's) through the PLL's dividers ("Derived frequency constraint
        # of 30.0 MHz for net clk"); a net constraint here would name a net that synthesis
        # renames.
        m.d.comb += ClockSignal("por").eq(clk)
        # reset: until 16 clocks after lock (the counter starts at 0 on configuration)
        locked = Signal(name="locked_por")
        m.submodules.lock_sync = FFSynchronizer(lock, locked, o_domain="por")
        count = Signal(5, name="por_count")
        with m.If(~locked):
            m.d.por += count.eq(0)
        with m.Elif(~count[4]):
            m.d.por += count.eq(count + 1)
        m.d.comb += ResetSignal("sync").eq(~count[4])
        return locked

    # -- pins ------------------------------------------------------------------------------------
    def _uart_pins(self, m: Module, platform):
        spec = self.spec
        if spec.uart == "header":
            from amaranth.build import Attrs
            from amaranth_boards.resources import UARTResource
            connector, index, rx, tx = spec.header_uart
            platform.add_resources([UARTResource(
                "header_uart", 0, rx=rx, tx=tx, conn=(connector, index),
                attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))])
            uart = platform.request("header_uart", 0, dir="-")
        else:
            uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [self.rxd.eq(rx_buf.i), tx_buf.o.eq(self.txd)]

    def _led_pins(self, m: Module, platform, values: dict):
        spec = self.spec
        if spec.rgb:
            rgb = platform.request("rgb_led", 0, dir="-")
            for pin, name in zip((rgb.r, rgb.g, rgb.b), spec.leds):
                buf = io.Buffer("o", pin)
                m.submodules[f"led_{name}"] = buf
                m.d.comb += buf.o.eq(values[name])
            return
        for index, name in enumerate(spec.leds):
            try:
                pin = platform.request("led", index, dir="-")
            except ResourceError:
                continue
            buf = io.Buffer("o", pin)
            m.submodules[f"led_{index}_{name}"] = buf
            m.d.comb += buf.o.eq(values[name])

    # -- the design ------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        locked = Const(1)
        if platform is not None and self.board is not None:
            locked = self._clock_domain(m, platform)
            self._uart_pins(m, platform)

        link = self.link
        m.submodules.link = link
        m.submodules.uart_rx, m.submodules.uart_tx = self.uart_rx, self.uart_tx
        m.submodules.rx_fifo = rx_fifo = SyncFIFOBuffered(width=8, depth=self.rx_fifo_depth)
        m.d.comb += [self.uart_rx.rx.eq(self.rxd), self.txd.eq(self.uart_tx.tx)]
        wiring.connect(m, self.uart_rx.o, rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, link.rx)
        wiring.connect(m, link.tx, self.uart_tx.i)

        engine = self._engine()
        reset = {"sync": link.engine_reset}
        m.submodules.engine = ResetInserter(reset)(engine)
        from ..hdl.link import connect_engine
        if self.out_fifo_depth:
            # the engine's items through a FIFO (reset with the engine on ABORT)
            width = len(engine.o.payload.as_value())
            if self.out_fifo == "spram":
                out_fifo = SinglePortFifo(width, self.out_fifo_depth)
            else:
                out_fifo = SyncFIFOBuffered(width=width, depth=self.out_fifo_depth)
            m.submodules.out_fifo = ResetInserter(reset)(out_fifo)
            m.d.comb += [out_fifo.w_data.eq(engine.o.payload.as_value()),
                         out_fifo.w_en.eq(engine.o.valid), engine.o.ready.eq(out_fifo.w_rdy),
                         link.engine.o.payload.eq(out_fifo.r_data),
                         link.engine.o.valid.eq(out_fifo.r_rdy),
                         out_fifo.r_en.eq(link.engine.o.ready)]
            wiring.connect(m, link.engine.load, engine.load)
            m.d.comb += [engine.start.eq(link.engine.start), link.engine.busy.eq(engine.busy),
                         link.engine.done.eq(engine.done), link.engine.error.eq(engine.error),
                         link.engine.cycles.eq(engine.cycles)]
        else:
            connect_engine(m, link, engine)

        m.d.comb += [self.busy.eq(engine.busy), self.done.eq(engine.done),
                     self.error.eq(engine.error), self.watchdog.eq(link.watchdog)]

        if platform is not None and self.board is not None:
            stretch = max(1, round(0.05 * self.clk_hz))          # 50 ms flashes
            rx_seen = _stretch(m, self.uart_rx.o.valid & self.uart_rx.o.ready, stretch,
                               "rx_led")
            tx_seen = _stretch(m, self.uart_tx.i.valid & self.uart_tx.i.ready, stretch,
                               "tx_led")
            beat = Signal(max(1, math.ceil(math.log2(self.clk_hz))), name="heartbeat")
            m.d.sync += beat.eq(beat + 1)                        # about 1 Hz on the top bit
            values = {"busy": self.busy, "done": self.done, "error": self.error,
                      "watchdog": self.watchdog, "fault": self.error | self.watchdog,
                      "rx": rx_seen, "tx": tx_seen, "heartbeat": beat[-1], "locked": locked}
            self._led_pins(m, platform, values)
        return m


class AttentionTop(BoardTop):
    """The attention head (hdl/attention.py `AttentionHead`) behind the host link.

    Besides BoardTop's parameters: `max_tokens`, `max_d_h`, `modes` and `cordic_arch`
    (default: the board's TopSpec; power-of-two capacities, d_h 16..128, the oscillator
    modes or softmax alone). A board whose TopSpec says no head fits is refused with
    `DesignDoesNotFit` (boards/build.py), unless `force` (to measure it anyway).
    """

    def __init__(self, board: str | None, *, max_tokens: int | None = None,
                 max_d_h: int | None = None, modes=None, cordic_arch: str | None = None,
                 force: bool = False, **options):
        from ..golden.attention_fixed import DEFAULT_CONFIG
        from ..hdl.attention import check_modes
        try:
            spec = top_spec(board) if board is not None else None
            if spec is not None and not spec.fits and not force:
                from .build import DesignDoesNotFit
                raise DesignDoesNotFit(board, "attention head", None, None, None,
                                       detail=spec.refusal)
            self.config = DEFAULT_CONFIG
            self.max_tokens = int(max_tokens or (spec.max_tokens if spec else 16))
            self.max_d_h = int(max_d_h or (spec.max_d_h if spec else 32))
            self.modes = check_modes(modes or (spec.modes if spec else ("analytic",)))
            self.cordic_arch = cordic_arch or (spec.cordic_arch if spec else "pipelined")
            self.engine_id = encode_engine_id(self.max_tokens, self.max_d_h, self.modes)
        except Exception:
            self._MustUse__silence = True
            raise
        super().__init__(board, **options)

    def _layouts(self):
        from ..hdl.attention import load_layout, output_layout
        return (load_layout(self.config, self.max_tokens, self.max_d_h),
                output_layout(self.config, self.max_tokens, self.max_d_h))

    def _default_out_depth(self) -> int:
        from ..hdl.attention import row_items
        items = self.max_tokens * row_items(self.max_tokens, self.max_d_h)
        return 1 << (items - 1).bit_length()

    def _engine(self):
        from ..hdl.attention import AttentionHead
        return AttentionHead(self.config, max_tokens=self.max_tokens, max_d_h=self.max_d_h,
                             cordic_arch=self.cordic_arch, modes=self.modes)


class LinkTop(BoardTop):
    """The host link with the loopback engine (sim/link.py `FakeEngine`, the layouts of its
    fuzz harness: 2 target, 6 addr, 20 data bits; items of a 21-bit signed value and a 5-bit
    kind): a board test of the UART, the link and the host driver without a head
    (`oscarray.driver.link_selftest`)."""

    engine_id = ENGINE_LOOPBACK

    def _default_clk_mhz(self) -> float:
        return self.spec.link_clk_mhz or self.spec.clk_mhz

    def _layouts(self):
        from ..sim.link import harness_layouts
        return harness_layouts()

    def _engine(self):
        from ..sim.link import FakeEngine
        load, out = self._layouts()
        return FakeEngine(load, out, 32)


def top_for(board: str | None, design: str = "attention", **options) -> BoardTop:
    """The top of `design` ("attention" or "link") for `board` (None: simulation)."""
    if design not in DESIGNS:
        raise BoardTopError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
    return (AttentionTop if design == "attention" else LinkTop)(board, **options)


# ---------------------------------------------------------------------------------------------
# The build


def top_build_name(top: BoardTop, design: str) -> str:
    if design == "link":
        return f"link_{top.clk_mhz:g}mhz".replace(".", "p")
    named = [mode.removeprefix("ode-") for mode in top.modes if mode != "analytic"]
    return (f"top_attention_t{top.max_tokens}_d{top.max_d_h}_{top.cordic_arch}"
            + "".join(f"_{m}" for m in named) + f"_{top.clk_mhz:g}mhz").replace(".", "p")


def build_top(board: str, design: str = "attention", *, build_dir="build/boards",
              progress=None, seed: int = 1, clk_mhz: float | None = None,
              **options) -> dict:
    """Build the top of `design` for `board` with boards/build.py's flow (Yosys, nextpnr,
    the packer; no measurement harness: the top is the whole design, pins included).

    Returns build()'s fields: board, device, bitstream, lut, ff, dsp, bram, fmax_mhz (of the
    PLL's clock), target_mhz (the PLL's frequency), timing_met, clock, netlist, seconds; and
    core_lut, core_ff (= lut, ff: there is no harness), design, name, clk_mhz, baud, divisor,
    pll (the dividers; None without a PLL), engine_id, and for the attention design
    max_tokens, max_d_h, modes, cordic_arch. Parameter errors and a design whose TopSpec
    says it cannot fit (`DesignDoesNotFit`) come before any tool runs.
    """
    import time
    from pathlib import Path

    from .attention_build import ROUTER
    from .build import _figures, _run_flow, get_board, parse_nextpnr_report

    spec = get_board(board)
    top_spec(board)
    top = top_for(board, design, clk_mhz=clk_mhz, **options)
    progress = progress or (lambda message: None)
    name = top_build_name(top, design)
    start = time.monotonic()
    # The flow constrains the board clock pin to its `target_mhz`: give it the pin's real
    # frequency; the PLL's output carries its own constraint (added by the top).
    pin_mhz = top._board_clock_hz() / 1e6
    build_dir = Path(build_dir)
    usage, parsed, bitstream = _run_flow(top, spec, build_dir / spec.name / name, name,
                                         pin_mhz, seed, progress,
                                         router=ROUTER.get(spec.family))
    report = build_dir / spec.name / name / "report.json"
    target = top.clk_hz / 1e6
    clock = parse_nextpnr_report(report, spec.family, target)
    figures = _figures(spec, usage, parsed)
    result = {
        "board": spec.name, "device": spec.device, "bitstream": bitstream, **figures,
        "fmax_mhz": clock["fmax_mhz"], "target_mhz": round(target, 6),
        "timing_met": clock["fmax_mhz"] >= target, "clock": clock["clock"],
        "core_lut": figures["lut"], "core_ff": figures["ff"], "netlist": usage,
        "seconds": round(time.monotonic() - start, 1),
        "design": design, "name": name, "clk_mhz": round(top.clk_hz / 1e6, 6),
        "baud": top.baud, "divisor": top.divisor, "pll": top.pll_params,
        "engine_id": top.engine_id, "max_payload": top.format.max_payload,
    }
    if design == "attention":
        result.update(max_tokens=top.max_tokens, max_d_h=top.max_d_h, modes=list(top.modes),
                      cordic_arch=top.cordic_arch)
    return result


def elaborate_top(board: str, design: str = "attention", **options):
    """Elaborate the top for `board`'s platform without running any tool (amaranth's
    platform.prepare: the RTLIL and the build scripts); returns the build plan."""
    from .build import get_board
    spec = get_board(board)
    top = top_for(board, design, **options)
    return spec.platform().build(top, name="top", do_build=False)


__all__ += ["elaborate_top", "spec_for_head", "top_build_name", "top_spec"]
