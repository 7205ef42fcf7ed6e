"""2**-y: the golden tables against the exact exponential, and the RTL unit bit for bit."""

import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from oscarray.golden.exp2 import (EXP2_HI, EXP2_LO, Y_FRAC, Y_MAX, exp2_neg,
                                  exp2_relative_error)
from oscarray.hdl.exp2 import NegExp2


def test_tables_are_the_rounded_powers():
    # Independent of the module's formula: the entries' defining property.
    for index, entry in enumerate(EXP2_HI):
        assert abs(entry - 2.0 ** (16 - index / 256)) <= 0.5
    for index, entry in enumerate(EXP2_LO):
        assert abs(entry - 2.0 ** (16 - index / 65536)) <= 0.5
    assert exp2_relative_error() < 2.0 ** -15


@pytest.mark.parametrize("out_frac", [16, 17, 24])
def test_exp2_neg_within_its_budget(out_frac):
    rng = np.random.default_rng(out_frac)
    y = np.concatenate([np.arange(0, 1 << 17), rng.integers(0, Y_MAX + 1, 20000),
                        [Y_MAX, (32 << Y_FRAC) - 1, 33 << Y_FRAC]])
    e = exp2_neg(y, out_frac)
    exact = np.exp2(out_frac - y / 2.0 ** Y_FRAC)
    # The tables' relative error on the product, then the output's half LSB.
    bound = exact * exp2_relative_error() + 0.5
    assert np.all(np.abs(e - exact) <= bound + 1e-9)
    assert e[0] == 1 << out_frac
    # Monotone up to the tables' error: where a carries into the high table, the two
    # entries' roundings differ.
    run = exp2_neg(np.arange(1 << 18), out_frac)
    assert np.all(np.diff(run) <= 2 * exp2_relative_error() * run[1:] + 1)
    assert exp2_neg(np.array([Y_MAX]), out_frac)[0] == 0


def test_exp2_neg_refuses_out_of_range():
    with pytest.raises(ValueError, match="y must be"):
        exp2_neg(np.array([-1]))
    with pytest.raises(ValueError, match="y must be"):
        exp2_neg(np.array([Y_MAX + 1]))
    with pytest.raises(ValueError, match="out_frac"):
        exp2_neg(np.array([0]), 32)
    with pytest.raises(ValueError, match="out_frac"):
        NegExp2(0)


@pytest.mark.parametrize("out_frac", [17, 24])
def test_neg_exp2_rtl_bit_exact(out_frac):
    rng = np.random.default_rng(7)
    ys = [0, 1, 255, 256, 65535, 65536, 17 << 16, 33 << 16, (34 << 16) - 1, Y_MAX] \
        + [int(v) for v in rng.integers(0, Y_MAX + 1, 400)] \
        + [int(v) for v in rng.integers(0, 20 << 16, 400)]
    dut = NegExp2(out_frac)
    got = []

    async def bench(ctx):
        for y in ys + [None] * NegExp2.latency:
            ctx.set(dut.valid, y is not None)
            ctx.set(dut.y, 0 if y is None else y)
            _, _, valid, e = await ctx.tick().sample(dut.o_valid, dut.e)
            if valid:
                got.append(e)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(got, exp2_neg(np.array(ys), out_frac))
    assert math.isclose(got[0], 2 ** out_frac)
