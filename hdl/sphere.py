"""Paper A's state at d_osc > 2 in hardware: the unit vector x_i = h_i / |h_i| on the sphere.

The arithmetic is golden/attention_sphere.py's step 6' bit for bit (`sphere_state`):

    PEAK     peak = max_c |h_c|, one component per clock;
    SHIFT    n = bitlen(peak) - 16 (0 for a zero drive);
    SQUARES  hs_c = R(h_c, n) (max_c |hs_c| in [2**15, 2**16]), one per clock, and
             Q = sum_c hs_c**2 one clock behind (one multiplier);
    ROOT     N = isqrt(Q 4**G), G = NORM_GUARD (`SquareRoot`: one result bit per clock, no
             multiplier);
    INVERSE  (r, L) = reciprocal(N) by the head's `Reciprocal` (the `root` and `inverse`
             streams: the head owns the divide CORDIC, which is idle while the state forms);
    SCALE    x_c = R(hs_c r, 32 + L - G - 16), one per clock (the same multiplier as the
             squares); a zero drive (N = 0) gives x = e_1 = (2**16, 0, ...).

Decided: components one per clock through one multiplier, not d_osc in parallel: the state
is formed once per row, and its clocks (`sphere_cycles`: 3 d_osc + 10 + L_d + the root's
26 or so steps) are small beside the row's 2 n d_h MAC clocks; d_osc parallel shifters and
multipliers would cost area for nothing.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.attention_fixed import DATA_BITS, FRAC
from ..golden.attention_sphere import MAX_D_OSC, NORM_GUARD
from .array import delay_line, round_shift_var

__all__ = ["SphereNormalizer", "SquareRoot", "sphere_cycles"]


class SquareRoot(wiring.Component):
    """floor(sqrt(X)) of an unsigned X by the restoring digit-by-digit method: two bits of X
    and one bit of the root per clock, a compare and a subtract, no multiplier.

    Ports
    -----
    i : In(stream(unsigned(width)))        X; taken only while no other is in flight
    o : Out(stream(unsigned(steps)))       floor(sqrt(X)), steps = ceil(width / 2),
                                           steps + 1 clocks after i was taken; held until
                                           taken
    """

    def __init__(self, width: int):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self.width = width
        self.steps = (width + 1) // 2
        super().__init__({"i": In(stream.Signature(unsigned(width))),
                          "o": Out(stream.Signature(unsigned(self.steps)))})

    def elaborate(self, platform):
        m = Module()
        steps = self.steps
        rest = Signal(2 * steps)                 # X's unread bits, at the top
        remainder = Signal(steps + 2)            # X's read prefix - root**2 <= 2 root
        root = Signal(steps)
        count = Signal(range(steps + 1))
        m.d.comb += [self.i.ready.eq((count == 0) & ~self.o.valid),
                     self.o.payload.eq(root)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [rest.eq(self.i.payload), remainder.eq(0), root.eq(0),
                         count.eq(steps)]
        with m.Elif(count != 0):
            widened = Cat(rest[-2:], remainder)              # 4 remainder + next two bits
            trial = Cat(Const(1, 2), root)                   # 4 root + 1
            fits = widened >= trial
            m.d.sync += [remainder.eq(Mux(fits, widened - trial, widened)),
                         root.eq(Cat(fits, root)), rest.eq(rest << 2), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += self.o.valid.eq(1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


def _square_bits(d_osc: int) -> int:
    """Bits of Q 4**G: Q = sum_c hs_c**2 <= d_osc 2**32."""
    return ((d_osc << (2 * FRAC)) << (2 * NORM_GUARD)).bit_length()


def _root_bits(d_osc: int) -> int:
    """Bits of N = isqrt(Q 4**G): `SquareRoot`'s steps for Q 4**G."""
    return (_square_bits(d_osc) + 1) // 2


def sphere_cycles(d_osc: int, divide_latency: int) -> int:
    """Clocks from the `start` clock to the first with `done` (the reciprocal answering
    `divide_latency` + 1 clocks after taking N, as `Reciprocal` does): IDLE 1, PEAK d,
    SHIFT 1, SQUARES d + 2 (the drain), ROOT ceil(bits / 2) + 2, INVERSE 1, its wait
    L_d + 1, SCALE d + 2."""
    root_steps = _root_bits(d_osc)
    return 1 + d_osc + 1 + (d_osc + 2) + (root_steps + 2) + 1 + (divide_latency + 1) \
        + (d_osc + 2)


class SphereNormalizer(wiring.Component):
    """Step 6' of golden/attention_sphere.py for one row (module docstring).

    Parameters
    ----------
    d_osc : int    components of the drive and the state (3..MAX_D_OSC)
    h_bits : int   the drive's width (the head's "h (sum W a)")

    Ports
    -----
    start : In(1)                        begin (ignored while busy); h is read from the
                                         next clock on and must be held until done
    h : In(array of d_osc signed(h_bits))
    busy : Out(1)
    done : Out(1)                        x is ready (from the end of a run until a start)
    x : Out(array of d_osc signed(18))   the unit vector in Q2.16 (held until the next start)
    root : Out(stream(unsigned(root_bits)))      N, to a `Reciprocal`
    inverse : In(stream(reciprocal_layout()))    its (r, L)
    """

    def __init__(self, d_osc: int, h_bits: int):
        from .attention import reciprocal_layout
        if isinstance(d_osc, bool) or not isinstance(d_osc, int) or not 3 <= d_osc <= MAX_D_OSC:
            raise ValueError(f"d_osc must be an integer in 3..{MAX_D_OSC}, not {d_osc!r}")
        self.d_osc, self.h_bits = d_osc, h_bits
        self.root_bits = _root_bits(d_osc)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "h": In(data.ArrayLayout(signed(h_bits), d_osc)),
            "x": Out(data.ArrayLayout(signed(DATA_BITS), d_osc)),
            "root": Out(stream.Signature(unsigned(self.root_bits))),
            "inverse": In(stream.Signature(reciprocal_layout())),
        })

    def elaborate(self, platform):
        from .array import magnitude
        from .attention import _signed, bit_length, shift_round
        m = Module()
        d = self.d_osc
        m.submodules.sqrt = sqrt = SquareRoot(_square_bits(d))
        h = Array(self.h[index] for index in range(d))
        x = Array(Signal(signed(DATA_BITS), name=f"x_{index}") for index in range(d))
        m.d.comb += [self.x[index].eq(x[index]) for index in range(d)]
        c = Signal(range(d))
        peak = Signal(unsigned(self.h_bits))
        n = Signal(signed(8))
        hs = Array(Signal(signed(DATA_BITS), name=f"hs_{index}") for index in range(d))
        operand = Signal(signed(DATA_BITS))      # the multiplier's inputs
        factor = Signal(signed(DATA_BITS))
        product = Signal(signed(2 * DATA_BITS))
        squares = Signal(unsigned((d << (2 * FRAC)).bit_length()))     # Q <= d 2**32
        norm = Signal(unsigned(self.root_bits))
        shift = Signal(5)                         # 32 + L - G - 16: 15..18 for N > 0
        m.d.sync += product.eq(operand * factor)
        m.d.comb += [sqrt.o.ready.eq(1), self.inverse.ready.eq(1),
                     self.root.payload.eq(norm)]

        # A square or a scale issued in clock k has its product in clock k + 2.
        tag = data.StructLayout({"valid": 1, "last": 1, "scale": 1, "c": range(d)})
        issued = Signal(tag)
        m.d.comb += [issued.last.eq(c == d - 1), issued.c.eq(c)]
        landed = delay_line(m, issued, 2, "sphere_tag")
        with m.If(landed.valid & ~landed.scale):
            m.d.sync += squares.eq(squares + product.as_unsigned())
        with m.If(landed.valid & landed.scale):
            unit = Mux(landed.c == 0, 1 << FRAC, 0)
            m.d.sync += x[landed.c].eq(Mux(norm == 0, unit, round_shift_var(product, shift)))

        with m.FSM(name="sphere"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.done.eq(0), c.eq(0), peak.eq(0)]
                    m.next = "PEAK"

            with m.State("PEAK"):
                size = magnitude(h[c], self.h_bits)
                m.d.sync += [peak.eq(Mux(size > peak, size, peak)), c.eq(c + 1)]
                with m.If(c == d - 1):
                    m.d.sync += c.eq(0)
                    m.next = "SHIFT"

            with m.State("SHIFT"):
                m.d.sync += [n.eq(Mux(peak == 0, 0, _signed(bit_length(peak)) - FRAC)),
                             squares.eq(0)]
                m.next = "SQUARES"

            with m.State("SQUARES"):
                # n >= -16 (peak >= 1, or h = 0, which any shift keeps 0).
                scaled = shift_round(m, h[c], n, self.h_bits, FRAC)[:DATA_BITS]
                m.d.sync += [hs[c].eq(scaled), operand.eq(scaled), factor.eq(scaled),
                             c.eq(c + 1)]
                m.d.comb += issued.valid.eq(1)
                with m.If(c == d - 1):
                    m.d.sync += c.eq(0)
                    m.next = "SQUARES_DRAIN"

            with m.State("SQUARES_DRAIN"):
                with m.If(landed.valid & landed.last):
                    m.next = "ROOT"

            with m.State("ROOT"):
                m.d.comb += [sqrt.i.valid.eq(1),
                             sqrt.i.payload.eq(Cat(Const(0, 2 * NORM_GUARD), squares))]
                with m.If(sqrt.o.valid):
                    m.d.sync += norm.eq(sqrt.o.payload)
                    m.next = "INVERSE"

            with m.State("INVERSE"):
                m.d.comb += self.root.valid.eq(1)
                with m.If(self.root.ready):
                    m.next = "INVERSE_WAIT"

            with m.State("INVERSE_WAIT"):
                with m.If(self.inverse.valid):
                    right = self.inverse.payload.shift + (2 * FRAC - NORM_GUARD - FRAC)
                    m.d.sync += [factor.eq(self.inverse.payload.r), shift.eq(right[:5])]
                    m.next = "SCALE"

            with m.State("SCALE"):
                m.d.sync += [operand.eq(hs[c]), c.eq(c + 1)]
                m.d.comb += [issued.valid.eq(1), issued.scale.eq(1)]
                with m.If(c == d - 1):
                    m.d.sync += c.eq(0)
                    m.next = "SCALE_DRAIN"

            with m.State("SCALE_DRAIN"):
                with m.If(landed.valid & landed.last):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
        return m
