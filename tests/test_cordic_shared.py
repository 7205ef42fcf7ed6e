"""SharedCordicIterative in Amaranth's simulator: several CORDIC configs on one datapath, each
port bit-exact with `cordic_fixed` and as fast as its own `CordicIterative`."""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator
from test_cordic_hdl import simulate

from oscarray.golden.attention_fixed import DEFAULT_CONFIG
from oscarray.golden.cordic import CordicConfig, cordic_fixed
from oscarray.hdl.cordic_iterative import CordicIterative, SharedCordicIterative
from oscarray.sim.cordic_vectors import edge_vectors, random_vectors

# The attention head's three iterative CORDICs (never two at once).
HEAD = (DEFAULT_CONFIG.vector, DEFAULT_CONFIG.rotate, DEFAULT_CONFIG.divide)


class OnePort(Elaboratable):
    """One port of a shared unit with the `i` and `o` of a `Cordic`, for `simulate`."""

    def __init__(self, shared, index):
        self.shared = shared
        self.i, self.o = shared.ports[index].i, shared.ports[index].o

    def elaborate(self, platform):
        m = Module()
        m.submodules.shared = self.shared
        return m


def standalone_latency(config):
    """Clocks from input to output handshake of `CordicIterative(config)`, measured."""
    x, y, z = random_vectors(config, 3, np.random.default_rng(7))
    _, accepted, produced = simulate(CordicIterative(config), x, y, z)
    latencies = {p - a for a, p in zip(accepted, produced)}
    assert len(latencies) == 1
    return latencies.pop()


def vectors(config, n_random, seed):
    """Edge cases (every edge x, y pair, each with a random edge z, and a random sample of the
    other combinations) and `n_random` random vectors."""
    rng = np.random.default_rng(seed)
    edges = edge_vectors(config)
    pairs = edges[0].size
    z_count = pairs // len({(a, b) for a, b in zip(edges[0], edges[1])})
    pick = np.arange(0, pairs, z_count) + rng.integers(0, z_count, pairs // z_count)
    pick = np.concatenate([pick, rng.choice(pairs, 20, replace=False)])
    rand = random_vectors(config, n_random, rng)
    return [np.concatenate([e[pick], r]) for e, r in zip(edges, rand)]


def run_interleaved(dut, operations, seed=0):
    """Run `operations` [(port, x, y, z, hold)] one after another through `dut`'s ports.

    Each input is offered after a random gap of 0..2 clocks; `hold` clocks with o.ready low
    once the output is valid (it must stay valid and unchanged), then it is taken. While an
    operation is in flight no port may take an input. Returns [(x, y, z out, latency)], the
    latency counting clocks from the input handshake to the first clock o.valid is seen.
    """
    rng = np.random.default_rng(seed)
    results = []

    async def testbench(ctx):
        edge = 0
        for k, x, y, z, hold in operations:
            port = dut.ports[k]
            for _ in range(rng.integers(0, 3)):
                await ctx.tick()
                edge += 1
            ctx.set(port.i.payload, {"x": int(x), "y": int(y), "z": int(z)})
            ctx.set(port.i.valid, 1)
            ctx.set(port.o.ready, 0 if hold else 1)
            while True:
                _, _, ready = await ctx.tick().sample(port.i.ready)
                edge += 1
                if ready:
                    break
            accepted = edge
            ctx.set(port.i.valid, 0)
            readies = [p.i.ready for p in dut.ports]
            while True:
                _, _, valid, payload, *busy_readies = \
                    await ctx.tick().sample(port.o.valid, port.o.payload, *readies)
                edge += 1
                assert not any(busy_readies), "an input taken while an operation is in flight"
                if valid:
                    break
            latency = edge - accepted
            out = (payload.x, payload.y, payload.z)
            for index in range(hold):
                if index == hold - 1:
                    ctx.set(port.o.ready, 1)
                _, _, valid, payload, *busy_readies = \
                    await ctx.tick().sample(port.o.valid, port.o.payload, *readies)
                edge += 1
                assert valid and (payload.x, payload.y, payload.z) == out, "output not held"
                assert not any(busy_readies)
            ctx.set(port.o.ready, 0)
            results.append((*out, latency))
        for _ in range(10):    # nothing more comes out
            _, _, *valids = await ctx.tick().sample(*(p.o.valid for p in dut.ports))
            assert not any(valids), "an output without an input"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results


def check_interleaved(configs, n_random, seed):
    """Every port of SharedCordicIterative(configs): inputs in a random order of ports, some
    outputs held back, each result and latency equal to the config's own unit."""
    rng = np.random.default_rng(seed)
    operations = []
    for k, config in enumerate(configs):
        for x, y, z in zip(*vectors(config, n_random, seed + k)):
            hold = int(rng.integers(1, 6)) if rng.random() < 0.2 else 0
            operations.append((k, x, y, z, hold))
    order = rng.permutation(len(operations))
    operations = [operations[i] for i in order]
    shared = SharedCordicIterative(configs)
    results = run_interleaved(shared, operations, seed)
    latencies = [standalone_latency(config) for config in configs]
    for k, config in enumerate(configs):
        mine = [i for i, op in enumerate(operations) if op[0] == k]
        x, y, z = (np.array([operations[i][j] for i in mine]) for j in (1, 2, 3))
        got = np.array([results[i] for i in mine]).T
        for name, g, w in zip("xyz", got[:3], cordic_fixed(config, x, y, z)):
            np.testing.assert_array_equal(g, w, err_msg=f"{config.mode} {name}")
        assert set(got[3]) == {latencies[k]}, config.mode
        assert shared.cycles_per_result[k] == latencies[k]


def test_head_configs_interleaved_bit_exact_same_latency():
    check_interleaved(HEAD, n_random=40, seed=1)


@pytest.mark.parametrize("modes", [("vector", "rotate"), ("multiply", "divide", "rotate")],
                         ids="-".join)
def test_other_config_sets_interleaved(modes):
    # The default configs (16-bit phase) and multiply, whose inputs keep their own alignment.
    check_interleaved([CordicConfig(mode) for mode in modes], n_random=15, seed=3)


@pytest.mark.parametrize("index", [0, 1], ids=["vector", "rotate"])
def test_one_port_with_backpressure(index):
    # A unit of the head's vector and rotate only, one port driven by the plain CORDIC
    # testbench (random gaps on both sides).
    configs = HEAD[:2]
    config = configs[index]
    x, y, z = vectors(config, 30, seed=5)
    dut = OnePort(SharedCordicIterative(configs), index)
    out, _, _ = simulate(dut, x, y, z, valid_prob=0.7, ready_prob=0.6)
    for got, want in zip(out, cordic_fixed(config, x, y, z)):
        np.testing.assert_array_equal(got, want)


def test_simultaneous_inputs_go_one_at_a_time():
    # Every port offers an input on the same clock: the lowest-numbered goes first, each of
    # the others when the one before has been taken, and every result is right.
    shared = SharedCordicIterative(HEAD)
    inputs = [(30000, -20000, 0), ((1 << 16), 0, 123456), (50000, 1 << 16, 0)]
    events = []

    async def testbench(ctx):
        for port, (x, y, z) in zip(shared.ports, inputs):
            ctx.set(port.i.payload, {"x": x, "y": y, "z": z})
            ctx.set(port.i.valid, 1)
            ctx.set(port.o.ready, 1)
        for edge in range(1, 400):
            sampled = await ctx.tick().sample(
                *(s for p in shared.ports for s in (p.i.valid, p.i.ready, p.o.valid)),
                *(p.o.payload for p in shared.ports))
            signals, payloads = sampled[2:-3], sampled[-3:]
            for k, port in enumerate(shared.ports):
                valid, ready, o_valid = signals[3 * k:3 * k + 3]
                if valid and ready:
                    events.append((edge, "in", k))
                    ctx.set(port.i.valid, 0)
                if o_valid:
                    p = payloads[k]
                    events.append((edge, "out", k, (p.x, p.y, p.z)))

    sim = Simulator(shared)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert [e[1:3] for e in events] == [("in", 0), ("out", 0), ("in", 1), ("out", 1),
                                        ("in", 2), ("out", 2)]
    for k, config in enumerate(HEAD):
        want = tuple(int(v[0]) for v in cordic_fixed(config, *map(np.array, zip(inputs[k]))))
        assert events[2 * k + 1][3] == want
        assert events[2 * k + 1][0] - events[2 * k][0] == shared.cycles_per_result[k]
    # The next input waits one clock after the output is taken (as CordicIterative's).
    assert [events[i + 1][0] - events[i][0] for i in (1, 3)] == [1, 1]


def test_refusals():
    with pytest.raises(ValueError, match="at least one"):
        SharedCordicIterative([])
    with pytest.raises(TypeError, match="sequence of CordicConfig"):
        SharedCordicIterative(CordicConfig("rotate"))
    with pytest.raises(TypeError, match="must be a CordicConfig"):
        SharedCordicIterative([CordicConfig("rotate"), {"mode": "vector"}])
    with pytest.raises(ValueError, match="hyperbolic"):
        SharedCordicIterative([CordicConfig("rotate"), CordicConfig("hyperbolic")])
    with pytest.raises(ValueError, match="same data_width"):
        SharedCordicIterative([CordicConfig("rotate"), CordicConfig("vector", data_width=16)])


def test_ports_and_lookup():
    shared = SharedCordicIterative(HEAD)
    shared._MustUse__silence = True    # not elaborated here
    assert shared.ports == (shared.port0, shared.port1, shared.port2)
    assert shared.port(DEFAULT_CONFIG.rotate) is shared.port1
    with pytest.raises(ValueError, match="not one of"):
        shared.port(CordicConfig("rotate"))
    unit = CordicIterative(DEFAULT_CONFIG.divide)
    unit._MustUse__silence = True
    assert shared.port2.i.payload.shape() == unit.i.payload.shape()
    assert shared.port2.o.payload.shape() == unit.o.payload.shape()
