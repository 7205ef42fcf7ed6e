"""The attention head with L multiply-accumulate lanes (`AttentionHead(mac_lanes=L)`): SCORES
and OUT take ceil(d_h / L) clocks a token instead of d_h, and the result stays bit for bit the
golden model's (the sums are exact, so their order does not matter). Amaranth's simulator on
small heads in every mode, a head run twice so that stale components sit in the lanes past
d_h, the clock formula, the refusals, and cocotb on Verilator in the issue's shapes."""

import numpy as np
import pytest
from test_attention_rtl import (CONFIG, ODE_MODES, SMALL, assert_head_bit_exact,
                                assert_ode_bit_exact, load_and_start, collect_items, ode_case,
                                ode_clocks, run, simulate_head)

from oscarray.golden.attention import random_case
from oscarray.golden.attention_fixed import attention_fixed, front_end, validate_fixed
from oscarray.golden.softmax import softmax_case, softmax_fixed
from oscarray.hdl.attention import (
    AttentionHead,
    AttentionHeadError,
    cycles_per_head,
    cycles_per_row,
    decode_items,
    head_writes,
    mac_groups,
    row_items,
    score_tree_stages,
)


@pytest.mark.parametrize("lanes,arch,shape,causal,p,ready", [
    (2, "pipelined", (1, 5, 6), True, 2, 1.0),
    (4, "pipelined", (1, 6, 5), False, 4, 0.6),     # d_h not a multiple of L
    (8, "iterative", (1, 4, 8), True, 1, 1.0),      # L = d_h = the stride: one group
    (4, "pipelined", (1, 3, 1), False, 2, 1.0),     # one component: three lanes idle
])
def test_mac_lanes_bit_exact_in_amaranth(lanes, arch, shape, causal, p, ready):
    H, T, d_h = shape
    case = random_case((H, T, d_h, 2), seed=T * d_h + lanes, causal=np.array(causal),
                       p=np.array(p))
    dut = AttentionHead(CONFIG, cordic_arch=arch, mac_lanes=lanes, **SMALL)
    result = simulate_head(dut, head_writes(case, CONFIG, **SMALL)[0], T * row_items(T, d_h),
                           ready_prob=ready, seed=p)
    assert_head_bit_exact(decode_items(result["items"], T, d_h), attention_fixed(case),
                          front_end(validate_fixed(case)), 0)
    assert not result["error"]
    formula = cycles_per_head(T, d_h, causal, CONFIG, arch, mac_lanes=lanes)
    assert result["cycles"] == formula if ready == 1 else result["cycles"] > formula


def test_lanes_past_d_h_ignore_stale_components():
    # A head with d_h = 8 fills every component of the banks; the next, d_h = 5 on 4 lanes,
    # has a second group whose lanes 1..3 still hold the first head's q and k.
    first = random_case((1, 6, 8, 2), seed=31, causal=np.array(False), p=np.array(1))
    second = random_case((1, 6, 5, 2), seed=32, causal=np.array(False), p=np.array(2))
    dut = AttentionHead(CONFIG, mac_lanes=4, **SMALL)
    rng = np.random.default_rng(0)
    got = []

    async def bench(ctx):
        for case in (first, second):
            T, d_h = case["q"].shape[1:]
            await load_and_start(ctx, dut, head_writes(case, CONFIG, **SMALL)[0])
            got.append(decode_items(await collect_items(ctx, dut, T * row_items(T, d_h), rng),
                                    T, d_h))
            for _ in range(3):
                await ctx.tick()
    run(dut, bench)
    for case, rtl in zip((first, second), got):
        assert_head_bit_exact(rtl, attention_fixed(case), front_end(validate_fixed(case)), 0)
    # The stale words matter: with them the second head's raw scores would differ.
    q1, k1 = first["q"][0], first["k"][0]
    assert np.abs(q1[:, 5:] @ k1[:, 5:].T).max() > 0.1


@pytest.mark.parametrize("mode,lanes,shape,causal,init", [
    ("ode-drive", 2, (1, 5, 6), True, "random"),
    ("ode-pairwise", 4, (1, 5, 6), False, "warm"),
])
def test_mac_lanes_ode_bit_exact_in_amaranth(mode, lanes, shape, causal, init):
    H, T, d_h = shape
    case = ode_case((H, T, d_h, 2), seed=T + d_h, causal=causal, init=init, mode=mode)
    gold = attention_fixed(case)
    dut = AttentionHead(CONFIG, modes=ODE_MODES, mac_lanes=lanes, **SMALL)
    result = simulate_head(dut, head_writes(case, CONFIG, **SMALL)[0], T * row_items(T, d_h),
                           clock_limit=2_000_000)
    assert_ode_bit_exact(decode_items(result["items"], T, d_h), gold, 0)
    assert result["cycles"] == ode_clocks(case, gold, 0, mac_lanes=lanes)


def test_mac_lanes_softmax_bit_exact_in_amaranth():
    T, d_h = 7, 6
    case = softmax_case(random_case((1, T, d_h, 2), seed=3, causal=np.array(True)))
    modes = ("softmax",)
    dut = AttentionHead(CONFIG, modes=modes, mac_lanes=4, **SMALL)
    result = simulate_head(dut, head_writes(case, CONFIG, modes=modes, **SMALL)[0],
                           T * row_items(T, d_h))
    got, gold = decode_items(result["items"], T, d_h), softmax_fixed(case)
    np.testing.assert_array_equal(got["attn"], gold["attn_int"][0])
    np.testing.assert_array_equal(got["out"], gold["out_int"][0])
    assert result["cycles"] == cycles_per_head(T, d_h, True, CONFIG, mode="softmax",
                                               mac_lanes=4)


def test_mac_lanes_sphere_bit_exact_in_amaranth():
    T, d_h = 4, 6
    case = random_case((1, T, d_h, 8), seed=5, causal=np.array(True), p=np.array(2))
    dut = AttentionHead(CONFIG, d_osc=8, mac_lanes=2, **SMALL)
    result = simulate_head(dut, head_writes(case, CONFIG, d_osc=8, **SMALL)[0],
                           T * row_items(T, d_h, 8))
    got = decode_items(result["items"], T, d_h, 8)
    gold = attention_fixed(case)
    np.testing.assert_array_equal(got["attn"], gold["attn_int"][0])
    np.testing.assert_array_equal(got["out"], gold["out_int"][0])
    assert result["cycles"] == cycles_per_head(T, d_h, True, CONFIG, d_osc=8, mac_lanes=2)


def test_clock_formula_with_lanes():
    # Two MAC passes of n ceil(d_h / L) clocks, and the score tree's drain once a row.
    for lanes, groups, tree in ((1, 32, 0), (2, 16, 1), (4, 8, 1), (8, 4, 2), (16, 2, 2),
                                (32, 1, 3)):
        assert mac_groups(32, lanes) == groups and score_tree_stages(lanes) == tree
        saved = cycles_per_row(9, 9, 32) - cycles_per_row(9, 9, 32, mac_lanes=lanes)
        assert saved == 2 * 9 * (32 - groups) - tree
    assert mac_groups(5, 4) == 2


def test_mac_lanes_refused():
    for lanes in (0, 3, 6, 16):
        with pytest.raises(AttentionHeadError, match="mac_lanes"):
            AttentionHead(CONFIG, max_d_h=8, mac_lanes=lanes)
    head = AttentionHead(CONFIG, max_d_h=5, mac_lanes=8)  # 5 rounds up to a stride of 8
    head._MustUse__silence = True                           # not elaborated here
    assert head.mac_lanes == 8
    for lanes in (2.0, True, "4"):
        with pytest.raises(TypeError, match="mac_lanes"):
            AttentionHead(CONFIG, max_d_h=8, mac_lanes=lanes)
    for lanes in (0, 3):            # the clock models too: no head has them
        with pytest.raises(AttentionHeadError, match="mac_lanes"):
            cycles_per_head(9, 32, True, CONFIG, mac_lanes=lanes)


def lane_cases():
    # sva first: its 32 components fill every lane, so the kws heads after it (d_h 16) meet
    # stale words in the lanes past 16 at 32 lanes (the mask; at 16 lanes both shapes use
    # every lane, sva in two groups: the banks' word addresses).
    cases = {}
    for shape, name in (((1, 9, 32, 2), "sva"), ((2, 49, 16, 2), "kws")):
        for causal in (True, False):
            key = f"{name}-{'causal' if causal else 'full'}"
            cases[key] = random_case(shape, seed=40 + causal, causal=np.array(causal),
                                     p=np.array(1 + causal))
            cases[f"{key}-softmax"] = softmax_case(cases[key])
    return cases


@pytest.mark.parametrize("lanes", [16, 32])
def test_mac_lanes_bit_exact_on_verilator(attention_build_root, lanes):
    # The shapes: at 16 lanes sva (d_h 32) in two groups, kws (d_h 16) in one; at 32
    # lanes one group each, kws with 16 lanes masked, one out word a bank (a memory of depth
    # 2: Verilator refuses the 0-bit address of depth 1).
    from oscarray.sim.attention import run_attention_rtl_batch
    cases = lane_cases()
    names = list(cases)
    modes = ("analytic", "softmax")
    results = run_attention_rtl_batch([cases[k] for k in names], CONFIG,
                                      build_root=attention_build_root, modes=modes,
                                      max_tokens=64, max_d_h=32, mac_lanes=lanes, seed=4,
                                      ready_prob=[0.7 if "kws-full" in k else 1.0
                                                  for k in names])
    for name, rtl in zip(names, results):
        case = cases[name]
        softmax = name.endswith("softmax")
        gold = softmax_fixed(case) if softmax else attention_fixed(case)
        assert rtl["sim"] == "verilator"
        keys = ("attn_int", "out_int") if softmax else ("attn_int", "out_int", "theta_int",
                                                         "x_int", "h_int")
        for key in keys:
            np.testing.assert_array_equal(rtl[key], gold[key], err_msg=f"{name}: {key}")
        T, d_h = case.q.shape[1:] if softmax else case["q"].shape[1:]
        causal = bool(case.causal if softmax else case["causal"])
        formula = cycles_per_head(T, d_h, causal, CONFIG, mode="softmax" if softmax
                                  else "analytic", mac_lanes=lanes)
        if "kws-full" in name:
            assert (rtl["cycles"] > formula).all(), name    # it waited for the output
        else:
            assert (rtl["cycles"] == formula).all(), name
