"""2**-y in hardware: the exponential of every softmax (golden/exp2.py is the specification)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.exp2 import EXP2_HI, EXP2_LO, TABLE_BITS, TABLE_INDEX_BITS, Y_BITS, Y_FRAC
from .array import round_shift_var

__all__ = ["NegExp2"]

PRODUCT_BITS = 2 * TABLE_BITS - 1           # EXP2_HI * EXP2_LO <= 2**32


class NegExp2(wiring.Component):
    """e = R(EXP2_HI[a] EXP2_LO[b], 32 - out_frac + n) for y = n 2**16 + a 2**8 + b:
    2**-(y / 2**16) in units of 2**-out_frac, one item per clock.

    Three register stages: the two tables (block-RAM ROMs, read with y's fields), their
    product (one multiplier), the rounding shift by n (a shift of 33 or more gives 0: the
    product is below 2**33).

    Ports
    -----
    valid : In(1)                       an item is present
    y : In(unsigned(22))                the exponent, 16 fraction bits (y < 64)
    o_valid : Out(1)                    e is an item's result, `latency` clocks later
    e : Out(unsigned(out_frac + 1))     e <= 2**out_frac (y = 0)
    """

    latency = 3

    def __init__(self, out_frac: int = 17):
        if not isinstance(out_frac, int) or not 1 <= out_frac <= 31:
            raise ValueError(f"out_frac must be an integer 1 .. 31, not {out_frac!r}")
        self.out_frac = out_frac
        super().__init__({"valid": In(1), "y": In(unsigned(Y_BITS)),
                          "o_valid": Out(1), "e": Out(unsigned(out_frac + 1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.hi = hi = Memory(shape=unsigned(TABLE_BITS), depth=len(EXP2_HI),
                                      init=EXP2_HI)
        m.submodules.lo = lo = Memory(shape=unsigned(TABLE_BITS), depth=len(EXP2_LO),
                                      init=EXP2_LO)
        hi_rd, lo_rd = hi.read_port(), lo.read_port()
        fraction = Y_FRAC - TABLE_INDEX_BITS
        m.d.comb += [hi_rd.addr.eq(self.y[fraction:Y_FRAC]), lo_rd.addr.eq(self.y[:fraction])]

        # The shift 32 - out_frac + n, clamped where the result is 0 anyway.
        top = PRODUCT_BITS + 1
        shift = Signal(range(top + 1))
        raw_shift = self.y[Y_FRAC:] + (32 - self.out_frac)
        product = Signal(PRODUCT_BITS)
        shift2 = Signal.like(shift)
        valid = Signal(self.latency - 1)
        m.d.sync += [shift.eq(Mux(raw_shift > top, top, raw_shift)),
                     valid.eq(Cat(self.valid, valid[:-1])),
                     product.eq(hi_rd.data * lo_rd.data), shift2.eq(shift)]
        wide = Cat(product, Const(0, 1))            # room for the rounding increment
        m.d.sync += [self.o_valid.eq(valid[-1]),
                     self.e.eq(round_shift_var(wide, shift2))]
        return m
