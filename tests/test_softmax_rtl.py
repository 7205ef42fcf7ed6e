"""The softmax mode of the attention head (hdl/attention.py) against golden/softmax.py, bit for
bit: Amaranth's simulator on small heads (softmax-only and mixed builds), cocotb on Verilator
in the keyword-spotting and subject-verb shapes, and the clock formula."""

import numpy as np
import pytest
from test_attention_rtl import CONFIG, simulate_head

from oscarray.golden.attention import random_case
from oscarray.golden.attention_fixed import attention_fixed
from oscarray.golden.softmax import softmax_case, softmax_fixed
from oscarray.hdl.attention import (
    AttentionHead,
    AttentionHeadError,
    HEADER,
    check_modes,
    cordic_latencies,
    cycles_per_head,
    decode_items,
    head_writes,
    row_items,
)

SMALL = dict(max_tokens=8, max_d_h=8)


def softmax_random(shape, seed, causal):
    return softmax_case(random_case(shape, seed=seed, causal=np.array(causal)))


@pytest.mark.parametrize("modes,shape,causal,ready", [
    (("softmax",), (1, 5, 6, 2), True, 1.0),
    (("softmax",), (1, 8, 8, 2), False, 0.6),
    (("analytic", "softmax"), (1, 7, 3, 2), False, 1.0),
    (("analytic", "softmax"), (1, 1, 1, 2), True, 1.0),
])
def test_softmax_head_bit_exact_in_amaranth(modes, shape, causal, ready):
    _, T, d_h, _ = shape
    case = softmax_random(shape, T * d_h, causal)
    gold = softmax_fixed(case)
    dut = AttentionHead(CONFIG, modes=modes, **SMALL)
    writes = head_writes(case, CONFIG, modes=modes, **SMALL)[0]
    result = simulate_head(dut, writes, T * row_items(T, d_h), ready_prob=ready, seed=T)
    got = decode_items(result["items"], T, d_h)
    np.testing.assert_array_equal(got["attn"], gold["attn_int"][0])
    np.testing.assert_array_equal(got["out"], gold["out_int"][0])
    # No oscillator in a softmax row: its header is zeros, "converged", 0 steps.
    assert not got["theta"].any() and not got["h"].any() and not got["x"].any()
    assert got["converged"].all() and not got["steps"].any()
    assert not result["error"]
    formula = cycles_per_head(T, d_h, causal, CONFIG, mode="softmax")
    assert result["cycles"] == formula if ready == 1 else result["cycles"] > formula


def test_mixed_build_still_runs_analytic_cases():
    case = random_case((1, 6, 5, 2), seed=9, causal=np.array(True), p=np.array(2))
    modes = ("analytic", "softmax")
    result = simulate_head(AttentionHead(CONFIG, modes=modes, **SMALL),
                           head_writes(case, CONFIG, modes=modes, **SMALL)[0],
                           6 * row_items(6, 5))
    got, gold = decode_items(result["items"], 6, 5), attention_fixed(case)
    np.testing.assert_array_equal(got["attn"], gold["attn_int"][0])
    np.testing.assert_array_equal(got["theta"], gold["theta_int"][0])
    assert result["cycles"] == cycles_per_head(6, 5, True, CONFIG)


def test_modes_and_refusals():
    assert check_modes(("softmax",)) == ("softmax",)
    assert check_modes(("ode-drive", "softmax")) == ("analytic", "ode-drive", "softmax")
    oscillator = random_case((1, 4, 4, 2), seed=1)
    with pytest.raises(AttentionHeadError, match="'analytic' is not in this build"):
        head_writes(oscillator, CONFIG, modes=("softmax",), **SMALL)
    with pytest.raises(AttentionHeadError, match="'softmax' is not in this build"):
        head_writes(softmax_case(oscillator), CONFIG, modes=("analytic",), **SMALL)


def test_softmax_cycle_formula_closed_form():
    L_d = cordic_latencies(CONFIG)[2]
    for T, d_h, causal in ((9, 32, True), (49, 16, False), (1, 1, True)):
        N = T * (T + 1) // 2 if causal else T * T
        closed = T * (T + d_h + L_d + 27) + (2 * d_h + 2) * N
        assert cycles_per_head(T, d_h, causal, CONFIG, mode="softmax") == closed
    assert len(HEADER) == 8


def test_softmax_bit_exact_on_verilator(attention_build_root):
    from oscarray.sim.attention import run_attention_rtl_batch
    cases = {f"{shape}-{'causal' if causal else 'full'}":
             softmax_random(shape, seed, causal)
             for seed, (shape, causal) in enumerate([("kws", True), ("kws", False),
                                                      ("sva", True), ("sva", False)])}
    names = list(cases)
    results = run_attention_rtl_batch([cases[n] for n in names], CONFIG, max_tokens=64,
                                      max_d_h=32, modes=("softmax",),
                                      build_root=attention_build_root, seed=5)
    for name, rtl in zip(names, results):
        case, gold = cases[name], softmax_fixed(cases[name])
        assert rtl["sim"] == "verilator"
        np.testing.assert_array_equal(rtl["attn_int"], gold["attn_int"], err_msg=name)
        np.testing.assert_array_equal(rtl["out_int"], gold["out_int"], err_msg=name)
        assert not rtl["error"].any()
        formula = cycles_per_head(case.tokens, case.d_h, case.causal, CONFIG, mode="softmax")
        assert (rtl["cycles"] == formula).all(), name
