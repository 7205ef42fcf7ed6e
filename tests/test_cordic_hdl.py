"""The CORDIC RTL in Amaranth's Python simulator: quick bit-exactness and handshake checks."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from oscarray.golden.cordic import MODES, CordicConfig, cordic_fixed
from oscarray.hdl.cordic import ARCHITECTURES, Cordic, CordicPipelined
from oscarray.sim.cordic_vectors import edge_vectors, random_vectors


def simulate(dut, x, y, z, valid_prob=1.0, ready_prob=1.0, seed=0):
    """Stream vectors through `dut`; returns outputs and the clock of every transfer."""
    rng = np.random.default_rng(seed)
    n = len(x)
    got, accepted_at, produced_at = [], [], []

    # Both testbenches count the same clock edges from time 0.
    async def source(ctx):
        edge = 0
        for i in range(n):
            while rng.random() > valid_prob:
                await ctx.tick()
                edge += 1
            ctx.set(dut.i.payload, {"x": int(x[i]), "y": int(y[i]), "z": int(z[i])})
            ctx.set(dut.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                edge += 1
                if ready:
                    break
            accepted_at.append(edge)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        edge = 0
        while len(got) < n:
            ready = rng.random() < ready_prob
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            edge += 1
            if valid and ready:
                got.append((payload.x, payload.y, payload.z))
                produced_at.append(edge)
        ctx.set(dut.o.ready, 1)
        for _ in range(40):    # nothing more may come out
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "an output without an input"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    return np.array(got, dtype=np.int64).T, accepted_at, produced_at


# (architecture, split_stages): every architecture, and the pipelined one with split stages.
VARIANTS = [(arch, False) for arch in ARCHITECTURES] + [("pipelined", True)]


def variant_id(variant):
    arch, split = variant
    return f"{arch}-split" if split else arch


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("mode", list(MODES))
def test_bit_exact_with_backpressure(mode, variant):
    arch, split = variant
    config = CordicConfig(mode)
    edges = edge_vectors(config)
    pick = np.random.default_rng(1).choice(edges[0].size, 60, replace=False)
    rand = random_vectors(config, 60, np.random.default_rng(2))
    x, y, z = (np.concatenate([e[pick], r]) for e, r in zip(edges, rand))
    dut = Cordic.create(config, arch, split_stages=split)
    out, _, _ = simulate(dut, x, y, z, valid_prob=0.7, ready_prob=0.6)
    for got, want in zip(out, cordic_fixed(config, x, y, z)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("split", [False, True], ids=["default", "split"])
@pytest.mark.parametrize("mode", list(MODES))
def test_pipelined_gives_one_result_per_clock_after_constant_latency(mode, split):
    config = CordicConfig(mode)
    x, y, z = random_vectors(config, 50, np.random.default_rng(3))
    dut = Cordic.create(config, "pipelined", split_stages=split)
    _, accepted, produced = simulate(dut, x, y, z)
    assert {p - a for a, p in zip(accepted, produced)} == {dut.latency}
    assert {b - a for a, b in zip(produced, produced[1:])} == {1}
    # The golden config's latency stays the default's; splitting adds a clock per
    # micro-rotation (the gain-compensation scales stay one stage), one for the vector and
    # divide pre-rotation and one for the output buffer.
    rotations = sum(op.kind == "rotation" for op in config.schedule)
    extra = rotations + (config.mode in ("vector", "divide")) + 1 if split else 0
    assert dut.latency == config.latency_pipelined + extra


@pytest.mark.parametrize("valid_prob,ready_prob", [(1.0, 0.3), (1.0, 0.9), (0.5, 0.5)])
def test_split_stages_output_buffer_under_backpressure(valid_prob, ready_prob):
    # The split pipeline stalls one clock after o.ready falls: its output buffer must hold
    # every result, in order, whatever the pattern of gaps and stalls.
    config = CordicConfig("rotate")
    x, y, z = random_vectors(config, 120, np.random.default_rng(5))
    dut = Cordic.create(config, "pipelined", split_stages=True)
    out, _, _ = simulate(dut, x, y, z, valid_prob=valid_prob, ready_prob=ready_prob, seed=9)
    for got, want in zip(out, cordic_fixed(config, x, y, z)):
        np.testing.assert_array_equal(got, want)


def test_split_stages_only_pipelined_and_bool():
    config = CordicConfig()
    default = Cordic.create(config)
    default._MustUse__silence = True    # not elaborated here
    assert default.split_stages is False and default.latency == config.latency_pipelined
    with pytest.raises(ValueError, match="pipelined architecture only"):
        Cordic.create(config, "iterative", split_stages=True)
    with pytest.raises(TypeError, match="split_stages must be a bool"):
        Cordic.create(config, "pipelined", split_stages=1)
    with pytest.raises(TypeError, match="split_stages must be a bool"):
        CordicPipelined(config, split_stages="yes")


def test_iterative_cycles_per_result():
    config = CordicConfig("rotate")
    x, y, z = random_vectors(config, 10, np.random.default_rng(4))
    dut = Cordic.create(config, "iterative")
    _, accepted, produced = simulate(dut, x, y, z)
    assert {p - a for a, p in zip(accepted, produced)} == {dut.cycles_per_result}


def test_bad_construction():
    with pytest.raises(ValueError, match="unknown CORDIC architecture"):
        Cordic.create(CordicConfig(), "bit-serial")
    with pytest.raises(TypeError, match="CordicConfig"):
        Cordic.create({"mode": "rotate"})
