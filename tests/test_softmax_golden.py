"""Softmax attention: the float model's mathematics and the fixed point within its budget."""

import math

import numpy as np
import pytest

from oscarray.golden.attention import AttentionCaseError, random_case
from oscarray.golden.attention_fixed import AttentionFixedError, reciprocal_error
from oscarray.golden.softmax import (EXP_FRAC, error_budget, softmax_case, softmax_constant,
                                     softmax_fixed, softmax_float)


def test_float_is_softmax_of_scaled_scores():
    case = random_case((1, 5, 4, 2), seed=3, causal=np.array(False))
    got = softmax_float(case)
    q, k, v = case["q"][0], case["k"][0], case["v"][0]
    for i in range(5):
        e = [math.exp(q[i] @ k[j] / 2.0) for j in range(5)]
        row = np.array(e) / sum(e)
        np.testing.assert_allclose(got["attn"][0, i], row, rtol=1e-12)
        np.testing.assert_allclose(got["out"][0, i], row @ v, rtol=1e-12, atol=1e-15)


def test_causal_rows_see_only_the_past():
    case = random_case((2, 7, 8, 2), seed=1)
    attn = softmax_float(case)["attn"]
    assert np.all(np.triu(attn[0], 1) == 0) and np.allclose(attn.sum(-1), 1)
    assert attn[0, 0, 0] == 1.0
    fixed = softmax_fixed(case)["attn_int"]
    assert np.all(np.triu(fixed[0], 1) == 0)
    # Row 0 is the one term 1: only the reciprocal's error and the rounding remain.
    assert abs(fixed[0, 0, 0] - (1 << 16)) <= (1 << 16) * reciprocal_error() + 0.5


def test_anchors_optional_and_ignored():
    case = random_case((1, 6, 8, 2), seed=2)
    without = {key: value for key, value in case.items() if key != "anchors"}
    np.testing.assert_array_equal(softmax_fixed(case)["attn_int"],
                                  softmax_fixed(without)["attn_int"])
    assert softmax_case(without).mode == "softmax"


@pytest.mark.parametrize("bad, message", [
    ({"q": np.zeros((1, 4))}, "q: must have shape"),
    ({"k": np.full((1, 4, 8), np.nan)}, "k: contains NaN"),
    ({"causal": np.array(1)}, "causal: must be a bool"),
])
def test_bad_cases_refused(bad, message):
    case = random_case((1, 4, 8, 2), seed=0)
    case.update(bad)
    with pytest.raises(AttentionCaseError, match=message):
        softmax_fixed(case)


def test_huge_scores_refused():
    case = random_case((1, 4, 8, 2), seed=0)
    case["q"] = case["q"] * 2.0 ** 30
    case["k"] = case["k"] * 2.0 ** 30
    with pytest.raises(AttentionFixedError, match="coarser"):
        softmax_fixed(case)


@pytest.mark.parametrize("d_h", [1, 2, 4, 9, 16, 32, 128])
def test_constant_in_range(d_h):
    c, bits = softmax_constant(d_h)
    assert 1 << 16 <= c < 1 << 17
    assert abs(c * 2.0 ** -bits - math.log2(math.e) / math.sqrt(d_h)) <= 2.0 ** -(bits + 1)


@pytest.mark.parametrize("shape", ["kws", "sva", "tinystories"])
@pytest.mark.parametrize("causal", [True, False])
def test_fixed_within_budget_and_target(shape, causal):
    for seed in range(4):
        case = random_case(shape, seed=seed, causal=np.array(causal))
        exact, fixed, budget = softmax_float(case), softmax_fixed(case), error_budget(case)
        attn_err = np.abs(fixed["attn"] - exact["attn"])
        out_err = np.abs(fixed["out"] - exact["out"])
        assert np.all(attn_err.max(-1) <= budget["attn_rows"])
        assert np.all(out_err.max(-1) <= budget["out_rows"])
        assert attn_err.max() <= 2.0 ** -11                        # the target
        assert out_err.max() <= 2.0 ** -8 * np.abs(case["v"]).max()
        assert budget["meets_targets"]
        assert fixed["g_int"].max() == 1 << EXP_FRAC               # every row's max term


def test_scale_free_in_the_inputs():
    # Power-of-two rescaling of q, k, v changes only the exponents, never the integers.
    case = random_case("sva", seed=5)
    base = softmax_fixed(case)
    scaled = dict(case, q=case["q"] * 8, k=case["k"] / 8, v=case["v"] * 2 ** -5)
    other = softmax_fixed(scaled)
    np.testing.assert_array_equal(base["attn_int"], other["attn_int"])
    np.testing.assert_array_equal(base["out_int"], other["out_int"])
    assert other["scales"]["v"] == base["scales"]["v"] + 5
