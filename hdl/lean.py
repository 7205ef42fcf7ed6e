"""Smaller drop-in versions of two sub-units of the attention head (hdl/attention.py).

Draft: see the class docstrings.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..golden.attention_fixed import DATA_BITS, FRAC
from .attention import (E_MAX, E_MIN, SHIFT_BITS, W_BITS, Normalizer, WeightExponent,
                        bit_length, delay_line)

__all__ = ["LeanNormalizer", "LeanWeightExponent", "window"]


def window(m: Module, value, amount, width: int, max_amount: int | None = None,
           above: bool = False, name: str = "window", low: int = 0):
    """Bits [amount, amount + width) of an unsigned `value` (0 above its top), for a run-time
    unsigned `amount` <= `max_amount`: a logarithmic shifter that builds only the bits some
    later stage reads, largest step first.

    With `above`, returns (window, any bit of value at amount + width or higher) instead: the
    bits each stage drops off the top of what it keeps are ORed into that flag as they go,
    so the shifter still keeps only width + 2**j - 1 bits after its step 2**j.
    Without it, amounts above `max_amount` are don't-cares: a step that would take the amount
    past it leaves the bits it alone could bring in unbuilt."""
    value = Value.cast(value)
    amount_signal = Signal(len(Value.cast(amount)), name=f"{name}_amount")
    m.d.comb += amount_signal.eq(amount)
    amount = amount_signal
    top = (1 << len(amount)) - 1
    max_amount = top if max_amount is None else min(max_amount, top)
    keep = width + max_amount
    flags = [value[keep:].any()] if above and len(value) > keep else []
    y = value[:keep]

    def bit(i):
        return y[i] if i < len(y) else Const(0, 1)
    for j in reversed(range(low, len(amount))):
        step = 1 << j
        if step > max_amount:
            continue
        d = amount[j]
        keep = width + min(step - 1, max_amount)
        if above:
            flags += [y[keep + step:].any(), ~d & y[keep:keep + step].any()]
        # One Mux of vectors (the simulator runs it much faster than a Mux a bit); where the
        # step is a don't-care both its inputs are the same bit and synthesis drops it.
        shifted = Cat(*(bit(i) if not above and step + max(0, i - width + 1) > max_amount
                        else bit(i + step) for i in range(keep)))
        stage = Signal(keep, name=f"{name}_{step}")
        m.d.comb += stage.eq(Mux(d, shifted, Cat(*(bit(i) for i in range(keep)))))
        y = stage
    result = Cat(*(bit(i) for i in range(width + min((1 << low) - 1, max_amount))))
    return (result, Cat(*flags).any()) if above else result


class LeanWeightExponent(wiring.Component):
    """`WeightExponent`, smaller (draft)."""

    cycles = WeightExponent.cycles

    def __init__(self, m_bits: int):
        self.m_bits = m_bits
        super().__init__({
            "start": In(1), "m_max": In(unsigned(m_bits)), "shift": In(signed(SHIFT_BITS)),
            "busy": Out(1), "done": Out(1), "e_w": Out(range(E_MAX + 1)),
            "eps": Out(unsigned(W_BITS)), "found": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        pad = W_BITS + 1                # s = floor(m 2**(1 - a)): its 18 kept bits
        # c: the window's offset d_k = F - E_MIN - k + pad - 1 into X = Cat(0**pad, m), in the
        # clock before candidate k's compare (c counts down every clock from F + ... + 1).
        F = Signal(signed(SHIFT_BITS))
        e = Signal(range(32))
        c = Signal(signed(SHIFT_BITS + 1))
        m.d.comb += c.eq(F + (pad + 15 - 18 - e))
        negative = c[-1]
        big = ~negative & c[7:-1].any()
        d = Signal(7)
        m.d.sync += d.eq(Cat(*(~negative & (big | c[i]) for i in range(7))))
        X = Cat(Const(0, pad), self.m_max)
        win, above = window(m, X, d, pad, above=True, name="exp")
        s = Signal(pad)
        hi = Signal()
        m.d.sync += [s.eq(win), hi.eq(above)]

        # u = floor(2**(e + 1) / 1000) of the compare's candidate e: eps(e) = ceil(u / 2),
        # and u of e + 1 is 2 u + one bit (a bit ROM).
        u = Signal(pad)
        def u_of(e_):
            return (1 << (e_ + 1)) // 1000
        rom = Const(0, 1)
        for cand in range(E_MIN - 2, E_MAX + 1):
            bit = u_of(cand + 1) - 2 * u_of(cand)
            if bit:
                rom = Mux(e == cand, 1, rom)
        eps = Signal(W_BITS)
        m.d.comb += eps.eq((u >> 1) + u[0])
        # R + eps <= 2**17 - 1  <=>  s + 2 eps <= 2**18 - 2  <=>  s + (2 eps + 1) < 2**18.
        total = s + Cat(Const(1, 1), eps)
        fits = ~hi & ~total[pad]
        valid = self.busy & (e >= E_MIN)

        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), self.found.eq(0), self.e_w.eq(E_MIN),
                         self.eps.eq(1), F.eq(self.shift),
                         e.eq(E_MIN - 2), u.eq(0)]
        with m.Else():
            m.d.sync += [e.eq(e + 1), u.eq(Cat(rom, u[:-1]))]
            with m.If(valid):
                with m.If(fits):
                    m.d.sync += [self.e_w.eq(e), self.eps.eq(eps),
                                 self.found.eq(1)]
                with m.If(e == E_MAX):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m


class LeanNormalizer(wiring.Component):
    """`Normalizer`, smaller (draft)."""

    latency = Normalizer.latency

    def __init__(self, h_bits: int):
        self.h_bits = h_bits
        super().__init__({"valid": In(1), "h_x": In(signed(h_bits)),
                          "h_y": In(signed(h_bits)), "done": Out(1),
                          "x": Out(signed(DATA_BITS)), "y": Out(signed(DATA_BITS)),
                          "shift": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        bits = self.h_bits
        h = [self.h_x, self.h_y]
        m.d.comb += self.done.eq(delay_line(m, self.valid, self.latency, "norm_valid"))
        # bitlen(|h_x| | |h_y|) = bitlen(v_x | v_y), v = h for h >= 0 and v = ~(h & (h - 1))
        # for h < 0 (~h, with the bit of h's lowest 1 set: ~h + 1 = |h| has its bit length).
        # h - 1 as h + (sign repeated): each bit of v is one LUT beside that add's carry.
        terms = []
        for h_c, name in zip(h, "xy"):
            sign = h_c[-1]
            less = Signal(bits, name=f"norm_less_{name}")
            m.d.comb += less.eq(h_c.as_unsigned() + sign.replicate(bits))
            terms.append(Mux(sign, ~(h_c.as_unsigned() & less), h_c.as_unsigned()))
        length = Signal(range(bits + 1))
        m.d.comb += length.eq(bit_length(terms[0] | terms[1]))
        # c1: the shift's steps 32, 16, 8 (the window's 17 bits and the 7 below them).
        low = 3
        length1 = Signal.like(length)
        m.d.sync += length1.eq(length)
        # c2: its steps 4, 2, 1; n.
        n_shape = signed(max(FRAC, bits - FRAC).bit_length() + 1)
        n2, n3 = Signal(n_shape), Signal(n_shape)
        m.d.sync += [n2.eq(Mux(length1 == 0, 0, length1 - FRAC)), n3.eq(n2)]
        m.d.comb += self.shift.eq(n3)
        for h_c, out, name in zip(h, (self.x, self.y), "xy"):
            part = window(m, Cat(Const(0, FRAC + 1), h_c), length, FRAC + 1, bits,
                          name=f"norm_{name}", low=low)
            y1 = Signal(len(part), name=f"norm_part_{name}")
            sign1 = Signal(name=f"norm_sign_{name}")
            m.d.sync += [y1.eq(part), sign1.eq(h_c[-1])]
            win = window(m, y1, length1[:low], FRAC + 1, name=f"norm_low_{name}")
            s = Signal(FRAC + 2, name=f"norm_s_{name}")
            m.d.sync += s.eq(Cat(win, sign1))
            # c3: R = (s >> 1) + s[0].
            q = Signal(DATA_BITS, name=f"norm_q_{name}")
            m.d.sync += q.eq(Cat(s[1:], s[-1]) + s[0])
            m.d.comb += out.eq(q)
        return m
