"""The torus layer RTL (hdl/torus.py) against golden/torus_fixed.py, bit for bit.

Bit-exact means: every row's attn (Q1.16) and theta_next (A-bit binary angles) equal
torus_fixed's attn_int and theta_next_acc, and the layer's clock count equals
`torus_cycles` when the output is always ready.

- Amaranth's simulator: small cases (causal and not, output backpressure, a second run on
  the same build, the iterative CORDIC) and the refusals.
- cocotb on Verilator: one build (T <= 16, D <= 16) runs the T = 9, D = 8 and T = 16, D = 16
  shapes and edge cases in one simulation.
"""

import os
import shutil

import numpy as np
import pytest
from amaranth.sim import Simulator
from oscarray.golden.torus import random_case, validate_case
from oscarray.golden.torus_fixed import DEFAULT_CONFIG, torus_fixed
from oscarray.hdl.torus import (
    TorusLayer,
    TorusLayerError,
    check_case,
    decode_items,
    row_items,
    torus_build_design,
    torus_cycles,
    torus_writes,
)

CONFIG = DEFAULT_CONFIG


@pytest.fixture(scope="module")
def torus_build_root(tmp_path_factory):
    """One simulator build folder for the layer, shared by this module's cocotb tests and,
    under pytest-xdist, by every worker of the run (the runner caches a build per
    configuration and serializes identical builds on a file lock)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "torus-sim"
    root.mkdir(exist_ok=True)
    return root


def simulate(dut, cases, ready_prob=1.0, seed=0):
    """Load, start and read back each case on `dut` in Amaranth's simulator; returns one
    dict per case: attn_int, theta_next_acc, cycles."""
    rng = np.random.default_rng(seed)
    out = []

    async def bench(ctx):
        for case in cases:
            writes = torus_writes(case, CONFIG, max_tokens=dut.max_tokens, max_d=dut.max_d)
            for target, addr, value in writes.tolist():
                ctx.set(dut.load.payload, {"target": target, "addr": addr, "data": value})
                ctx.set(dut.load.valid, 1)
                await ctx.tick()
            ctx.set(dut.load.valid, 0)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            need = case.tokens * row_items(case.tokens, case.d)
            items = []
            while len(items) < need:
                ready = int(rng.random() < ready_prob)
                ctx.set(dut.o.ready, ready)
                if ready and ctx.get(dut.o.valid):
                    payload = ctx.get(dut.o.payload)
                    items.append((int(payload.value), int(payload.kind)))
                await ctx.tick()
            ctx.set(dut.o.ready, 0)
            while not ctx.get(dut.done):
                await ctx.tick()
            decoded = decode_items(np.array(items), case.tokens, case.d)
            decoded["cycles"] = ctx.get(dut.cycles)
            out.append(decoded)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def check_against_golden(case, got, cycles=True):
    golden = torus_fixed(case, CONFIG)
    np.testing.assert_array_equal(got["attn_int"], golden["attn_int"])
    np.testing.assert_array_equal(got["theta_next_acc"], golden["theta_next_acc"])
    if cycles:
        assert got["cycles"] == torus_cycles(case.tokens, case.d, case.causal, CONFIG)


def test_layer_bit_exact_in_amaranth():
    dut = TorusLayer(CONFIG, max_tokens=5, max_d=3)
    cases = [validate_case(random_case(4, 3, seed=1)),
             validate_case(random_case(5, 2, seed=2, causal=np.asarray(False))),
             validate_case(random_case(1, 1, seed=3)),
             validate_case(random_case(3, 3, seed=4, eta=np.array([-3.0, 40.0, 1e-9]),
                                       g=np.array([3.0, 0.0, 1.0]), tau=np.asarray(0.1)))]
    for case, got in zip(cases, simulate(dut, cases)):
        check_against_golden(case, got)


def test_layer_backpressure_and_iterative_cordic():
    case = validate_case(random_case(3, 2, seed=7))
    dut = TorusLayer(CONFIG, max_tokens=4, max_d=2)
    check_against_golden(case, simulate(dut, [case], ready_prob=0.4, seed=1)[0], cycles=False)
    dut = TorusLayer(CONFIG, max_tokens=4, max_d=2, cordic_arch="iterative")
    check_against_golden(case, simulate(dut, [case])[0], cycles=False)


def test_refusals():
    with pytest.raises(TorusLayerError, match="max_tokens must be 1..1024"):
        TorusLayer(CONFIG, max_tokens=0, max_d=4)
    with pytest.raises(TorusLayerError, match="max_d must be 1..64"):
        TorusLayer(CONFIG, max_tokens=4, max_d=65)
    with pytest.raises(TorusLayerError, match="unknown cordic_arch"):
        TorusLayer(CONFIG, max_tokens=4, max_d=4, cordic_arch="magic")
    with pytest.raises(TypeError):
        TorusLayer(CONFIG, max_tokens=4.0, max_d=4)
    with pytest.raises(TorusLayerError, match="exceeds this layer's capacity"):
        check_case(random_case(9, 8), CONFIG, max_tokens=8, max_d=8)
    with pytest.raises(ValueError, match="g: gates must be >= 0"):
        torus_writes(random_case(4, 2, g=np.array([1.0, -1.0])), CONFIG, max_tokens=4,
                     max_d=2)
    design = torus_build_design(16, 16)
    design._MustUse__silence = True          # not elaborated here
    assert isinstance(design, TorusLayer) and (design.max_tokens, design.max_d) == (16, 16)


def test_cycle_formula_closed_form():
    from oscarray.hdl.attention import cordic_latencies
    _, l_r, l_d = cordic_latencies(CONFIG.reciprocal)
    for T, D, causal in ((49, 16, True), (9, 32, True), (128, 32, True), (7, 3, False)):
        N = T * (T + 1) // 2 if causal else T * T
        closed = 2 * T * D + l_r + 1 + T * (T + D + l_d + 27) + (2 * D + 2) * N
        assert torus_cycles(T, D, causal, CONFIG) == closed


# ---------------------------------------------------------------------------------------------
# cocotb (Verilator)

VERILATOR_CASES = {
    "t9_d8": random_case(9, 8, seed=0),
    "t16_d16": random_case(16, 16, seed=1),
    "t16_d16_full": random_case(16, 16, seed=2, causal=np.asarray(False)),
    "t12_d5_sharp": random_case(12, 5, seed=3, g=np.array([4.0, 0.0, 1.0, 2.0, 0.5]),
                                tau=np.asarray(0.1), eta=np.array([-2.0, 0.0, 30.0, 1e-6, 0.3])),
    "t1_d1": random_case(1, 1, seed=4),
}


def test_rtl_bit_exact_on_verilator(torus_build_root):
    from oscarray.sim.torus import run_torus_rtl_batch
    names = list(VERILATOR_CASES) + ["t9_d8 (backpressure)"]
    cases = [validate_case(VERILATOR_CASES[name]) for name in names[:-1]]
    cases.append(validate_case(random_case(9, 8, seed=6)))
    ready = [1.0] * (len(cases) - 1) + [0.5]
    results = run_torus_rtl_batch(cases, CONFIG, max_tokens=16, max_d=16,
                                  build_root=torus_build_root, ready_prob=ready, seed=3)
    for name, case, got, always in zip(names, cases, results, ready):
        golden = torus_fixed(case, CONFIG)
        np.testing.assert_array_equal(got["attn_int"], golden["attn_int"], err_msg=name)
        np.testing.assert_array_equal(got["theta_next_acc"], golden["theta_next_acc"],
                                      err_msg=name)
        if always == 1.0:
            assert got["cycles"] == torus_cycles(case.tokens, case.d, case.causal, CONFIG), name
        assert got["sim"] in ("verilator", "icarus")


# ---------------------------------------------------------------------------------------------
# The flow's rtl engine (oscarray/torus_flow.py)

def test_flow_rtl_engine(torus_build_root, tmp_path):
    from oscarray.torus_flow import torus_example, torus_run
    case_path = tmp_path / "case.npz"
    torus_example(case_path, tokens=9, d=8, seed=5)
    out = tmp_path / "rtl.npz"
    summary = torus_run(case_path, "rtl", out, build_root=torus_build_root)
    assert summary["mismatches"] == 0 and summary["within_budget"]
    assert summary["cycles"] == summary["expected_cycles"] == torus_cycles(9, 8, True, CONFIG)
    saved = np.load(out)
    golden = torus_fixed(validate_case(dict(np.load(case_path))), CONFIG)
    np.testing.assert_array_equal(saved["attn_int"], golden["attn_int"])
    np.testing.assert_allclose(saved["theta_next"], golden["theta_next"], rtol=0, atol=0)
    with pytest.raises(TorusLayerError, match="capacity"):
        torus_run(case_path, "rtl", tmp_path / "no.npz", max_tokens=8, max_d=8,
                  build_root=torus_build_root)
    assert not (tmp_path / "no.npz").exists()


@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="Icarus Verilog is not installed (apt-get install iverilog)")
def test_rtl_bit_exact_on_icarus(torus_build_root):
    from oscarray.sim.torus import run_torus_rtl_batch
    cases = [validate_case(random_case(4, 3, seed=8)),
             validate_case(random_case(3, 2, seed=9, causal=np.asarray(False)))]
    for case, got in zip(cases, run_torus_rtl_batch(cases, CONFIG, max_tokens=4, max_d=4,
                                                    sim="icarus",
                                                    build_root=torus_build_root)):
        assert got["sim"] == "icarus"
        check_against_golden(case, got)


@pytest.mark.slow
def test_bench_shapes_on_verilator(tmp_path_factory):
    """The bench's shapes with D = d_h (kws T = 49, D = 16; sva T = 9, D = 32; tinystories
    T = 128, D = 32) on one 128 x 32 build: bit-exact, and the clocks equal torus_cycles
    (48739, 4371 and 579617). About 25 s on an idle machine, build included (a second
    build: marked slow)."""
    from oscarray.sim.torus import run_torus_rtl_batch
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "torus-sim-128"
    root.mkdir(exist_ok=True)
    shapes = [(49, 16), (9, 32), (128, 32)]
    cases = [validate_case(random_case(T, D, seed=11)) for T, D in shapes]
    for case, got in zip(cases, run_torus_rtl_batch(cases, CONFIG, max_tokens=128, max_d=32,
                                                    build_root=root)):
        check_against_golden(case, got)
    assert [torus_cycles(T, D, True, CONFIG) for T, D in shapes] == [48739, 4371, 579617]
