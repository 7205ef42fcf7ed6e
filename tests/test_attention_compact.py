"""The compact attention head (`AttentionHead(compact=True)`, the iCE40UP5K's): the analytic
head with its multipliers shared between passes. It must give
the golden model's integers bit for bit in the clocks of `cycles_per_head`, as the head it
replaces does: Amaranth's simulator on small heads, cocotb on Verilator in the issue's
shapes, and the refusals (the real iCEBreaker build: tests/test_bench_attention.py's
`test_bench_sva_on_up5k`, slow)."""

import numpy as np
import pytest
from test_attention_rtl import (CONFIG, SMALL, assert_head_bit_exact, simulate_head)

from oscarray.golden.attention import random_case
from oscarray.golden.attention_fixed import attention_fixed, front_end, validate_fixed
from oscarray.hdl.attention import (
    AttentionHead,
    E_MIN,
    AttentionHeadError,
    cycles_per_head,
    decode_items,
    head_writes,
    row_items,
)


@pytest.mark.parametrize("shape,causal,p,ready", [
    ((1, 5, 6), True, 2, 1.0),
    ((1, 6, 5), False, 4, 0.6),
    ((1, 4, 3), False, 1, 1.0),
    ((1, 8, 8), True, 4, 1.0),      # the full capacity
    ((1, 1, 1), False, 2, 1.0),     # one token, one component
])
def test_compact_head_bit_exact_in_amaranth(shape, causal, p, ready):
    H, T, d_h = shape
    case = random_case((H, T, d_h, 2), seed=T * d_h + p, causal=np.array(causal),
                       p=np.array(p))
    dut = AttentionHead(CONFIG, cordic_arch="iterative", compact=True, **SMALL)
    result = simulate_head(dut, head_writes(case, CONFIG, **SMALL)[0], T * row_items(T, d_h),
                           ready_prob=ready, seed=p)
    assert_head_bit_exact(decode_items(result["items"], T, d_h), attention_fixed(case),
                          front_end(validate_fixed(case)), 0)
    assert not result["error"]
    formula = cycles_per_head(T, d_h, causal, CONFIG, "iterative")
    assert result["cycles"] == formula if ready == 1 else result["cycles"] > formula


def test_compact_head_zero_drive_and_large_scores_in_amaranth():
    # h = 0 in every row (q = 0: every W = eps; anchors +-e_1 cancel), then scores near the
    # largest the format holds (e_w = E_MIN): the shared units' edges.
    zero = random_case((1, 4, 8, 2), seed=7, causal=np.array(False), p=np.array(2))
    zero["q"] = np.zeros_like(zero["q"])
    zero["anchors"] = np.array([[[1.0, 0.0], [-1.0, 0.0]] * 2])
    large = random_case((1, 6, 8, 2), seed=2, causal=np.array(False), p=np.array(4))
    large["q"], large["k"] = large["q"] * 8, large["k"] * 8
    for case in (zero, large):
        T, d_h = case["q"].shape[1:]
        dut = AttentionHead(CONFIG, cordic_arch="iterative", compact=True, **SMALL)
        result = simulate_head(dut, head_writes(case, CONFIG, **SMALL)[0],
                               T * row_items(T, d_h))
        fe = front_end(validate_fixed(case))
        assert_head_bit_exact(decode_items(result["items"], T, d_h), attention_fixed(case),
                              fe, 0)
        assert result["cycles"] == cycles_per_head(T, d_h, False, CONFIG, "iterative")
    assert fe.e_w.min() == E_MIN


def test_compact_refusals():
    for options, word in ((dict(cordic_arch="pipelined"), "cordic_arch"),
                          (dict(modes=("analytic", "softmax")), "modes"),
                          (dict(modes=("analytic", "ode-drive")), "modes"),
                          (dict(modes=("analytic", "ode-drive", "ode-pairwise")), "modes"),
                          (dict(d_osc=3), "d_osc"),
                          (dict(mac_lanes=2), "mac_lanes")):
        options = {"cordic_arch": "iterative"} | options
        with pytest.raises(AttentionHeadError, match=word):
            AttentionHead(CONFIG, compact=True, **SMALL, **options)
    for value in (1, "yes", None):
        with pytest.raises(TypeError, match="compact"):
            AttentionHead(CONFIG, cordic_arch="iterative", compact=value, **SMALL)


def test_compact_head_bit_exact_on_verilator(attention_build_root):
    # The shapes (sva: H 1, T 9, d_h 32; kws: H 2, T 49, d_h 16) on one compact
    # build of capacity (49, 32), causal and not, p 1, 2, 4, one with output backpressure.
    from oscarray.sim.attention import run_attention_rtl_batch
    cases = {}
    for shape, name in (((1, 9, 32, 2), "sva"), ((2, 49, 16, 2), "kws")):
        for causal, p in ((True, 1), (False, 2), (True, 4)):
            cases[f"{name}-{causal}-p{p}"] = random_case(shape, seed=50 + p + causal,
                                                         causal=np.array(causal),
                                                         p=np.array(p))
    names = list(cases)
    ready = [0.7 if name == "kws-False-p2" else 1.0 for name in names]
    results = run_attention_rtl_batch([cases[k] for k in names], CONFIG,
                                      build_root=attention_build_root, max_tokens=49,
                                      max_d_h=32, cordic_arch="iterative", compact=True,
                                      ready_prob=ready, seed=5)
    for name, rtl, chance in zip(names, results, ready):
        case = cases[name]
        gold = attention_fixed(case)
        assert rtl["sim"] == "verilator"
        for key in ("attn_int", "out_int", "theta_int", "x_int", "h_int"):
            np.testing.assert_array_equal(rtl[key], gold[key], err_msg=f"{name}: {key}")
        assert not rtl["error"].any(), name
        T, d_h = case["q"].shape[1:]
        formula = cycles_per_head(T, d_h, bool(case["causal"]), CONFIG, "iterative")
        if chance == 1:
            assert (rtl["cycles"] == formula).all(), name
        else:
            assert (rtl["cycles"] > formula).all(), name     # it waited for the output


def test_attention_cli_compact(tmp_path, capsys):
    # --compact is the rtl engine's, and only for a head it can be: refused before any work,
    # with the reason, and no output file.
    from oscarray.cli import main
    case = tmp_path / "case.npz"
    assert main(["attention", "--example", "sva", "--out", str(case)]) == 0
    out = tmp_path / "result.npz"
    ode = dict(np.load(case))
    ode["mode"] = np.array("ode-drive")
    np.savez(tmp_path / "ode.npz", **ode)
    for argv, reason in ((["--in", case, "--engine", "golden-fixed"], "rtl engine's"),
                         (["--in", tmp_path / "ode.npz", "--engine", "rtl"],
                          "analytic mode only"),
                         (["--example", "sva"], "--compact belongs to a run")):
        capsys.readouterr()
        code = main(["attention", *map(str, argv), "--compact", "--out", str(out)])
        assert code != 0 and reason in capsys.readouterr().err
        assert not out.exists()


def test_weight_window_equals_weight_split():
    # The compact head's W shift against the head's own, clock by clock, over every amount
    # F - e_w the shift register can hold (left shifts, right ones, both clamps) and scores
    # from 0 to the largest.
    from amaranth.hdl import Module, Signal, signed, unsigned
    from amaranth.sim import Simulator
    from oscarray.hdl.attention import SHIFT_BITS, W_BITS, weight_split, weight_window
    m_bits = 60
    m = Module()
    score, amount = Signal(unsigned(m_bits)), Signal(signed(SHIFT_BITS + 1))
    split, window = Signal(W_BITS + 1), Signal(W_BITS + 1)
    m.d.sync += [split.eq(weight_split(m, score, amount, m_bits)),
                 window.eq(weight_window(m, score, amount, m_bits))]
    rng = np.random.default_rng(11)
    amounts = list(range(-25, 90)) + [-(1 << SHIFT_BITS), (1 << SHIFT_BITS) - 1]
    scores = [0, 1, (1 << m_bits) - 1] + [int(rng.integers(0, 1 << int(rng.integers(1, m_bits))))
                                          for _ in range(12)]

    async def bench(ctx):
        for a in amounts:
            ctx.set(amount, a)
            await ctx.tick()                    # the clamps and b are registers
            for value in scores:
                ctx.set(score, value)
                await ctx.tick()
                await ctx.tick()
                assert ctx.get(window) == ctx.get(split), (a, value)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_compact_refusal_of_a_bad_value_in_the_flow(tmp_path):
    # The library entry point refuses what the CLI cannot pass, before any work.
    from oscarray import flows
    case = tmp_path / "case.npz"
    flows.attention_example("sva", case)
    for value in ("no", 2):
        with pytest.raises(TypeError, match="compact"):
            flows.attention_run(case, "rtl", tmp_path / "r.npz", compact=value)
    assert not (tmp_path / "r.npz").exists()


@pytest.mark.parametrize("shape,causal,ready", [((1, 5, 6, 2), True, 1.0),
                                                ((1, 8, 8, 2), False, 0.6)])
def test_compact_softmax_head_bit_exact_in_amaranth(shape, causal, ready):
    # The softmax head compact too (the UP5K's softmax rows): its products on the one
    # multiplier, the divide alone on the shared CORDIC, LeanReciprocal, q and k single-port.
    from oscarray.golden.softmax import softmax_case, softmax_fixed
    _, T, d_h, _ = shape
    case = softmax_case(random_case(shape, seed=T + d_h, causal=np.array(causal)))
    dut = AttentionHead(CONFIG, modes=("softmax",), cordic_arch="iterative", compact=True,
                        **SMALL)
    writes = head_writes(case, CONFIG, modes=("softmax",), **SMALL)[0]
    result = simulate_head(dut, writes, T * row_items(T, d_h), ready_prob=ready, seed=T)
    got, gold = decode_items(result["items"], T, d_h), softmax_fixed(case)
    np.testing.assert_array_equal(got["attn"], gold["attn_int"][0])
    np.testing.assert_array_equal(got["out"], gold["out_int"][0])
    formula = cycles_per_head(T, d_h, causal, CONFIG, "iterative", mode="softmax")
    assert result["cycles"] == formula if ready == 1 else result["cycles"] > formula


def test_compact_softmax_head_bit_exact_on_verilator(attention_build_root):
    from oscarray.golden.softmax import softmax_case, softmax_fixed
    from oscarray.sim.attention import run_attention_rtl_batch
    cases = [softmax_case(random_case(shape, seed=60 + causal, causal=np.array(causal)))
             for shape in ((1, 9, 32, 2), (2, 49, 16, 2)) for causal in (True, False)]
    results = run_attention_rtl_batch(cases, CONFIG, max_tokens=49, max_d_h=32,
                                      modes=("softmax",), cordic_arch="iterative",
                                      compact=True, build_root=attention_build_root, seed=6)
    for case, rtl in zip(cases, results):
        gold = softmax_fixed(case)
        assert rtl["sim"] == "verilator"
        np.testing.assert_array_equal(rtl["attn_int"], gold["attn_int"])
        np.testing.assert_array_equal(rtl["out_int"], gold["out_int"])
        formula = cycles_per_head(case.tokens, case.d_h, case.causal, CONFIG, "iterative",
                                  mode="softmax")
        assert (rtl["cycles"] == formula).all()
