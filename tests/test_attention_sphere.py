"""golden/attention_sphere.py: paper A's analytic fixed point at d_osc > 2 in fixed point,
against the float model and its derived error budget (the issue's target at d_osc = 8 in the
TinyStories shape: |attn - attn_float| <= 2**-10)."""

import dataclasses
import math

import numpy as np
import pytest

from oscarray.cli import main
from oscarray.golden import attention_sphere as sphere
from oscarray.golden.attention import (
    attention_float,
    fixed_point,
    random_case,
    validate_case,
)
from oscarray.golden.attention_fixed import (
    FRAC,
    AttentionFixedError,
    attention_fixed,
    error_budget,
    reciprocal_error,
)

TARGET_D8 = 2.0 ** -10          # the attn target at d_osc = 8


def test_isqrt_is_the_exact_integer_root():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.integers(0, 2 ** 52, 4000), np.arange(0, 300),
                             np.array([(2 ** 26 - 1) ** 2, (2 ** 26 - 1) ** 2 - 1, 2 ** 52 - 1])])
    squares = rng.integers(0, 2 ** 26, 2000)
    values = np.concatenate([values, squares ** 2, squares ** 2 - 1, squares ** 2 + 1])
    values = values[values >= 0]
    expected = np.array([math.isqrt(int(v)) for v in values])
    np.testing.assert_array_equal(sphere.isqrt(values), expected)


def test_sphere_state_is_the_unit_vector_within_its_arithmetic_bound():
    rng = np.random.default_rng(2)
    for d in (3, 4, 8, 16):
        h = rng.integers(-2 ** 40, 2 ** 40, (500, d)) >> rng.integers(0, 40, (500, 1))
        x = sphere.sphere_state(h)
        exact = h / np.linalg.norm(h, axis=-1, keepdims=True)
        error = np.linalg.norm(x * 2.0 ** -FRAC - exact, axis=-1)
        # The budget's normalizer terms (hs's rounding, the norm and the reciprocal, x's
        # rounding), here with no drive error.
        bound = (sphere.chord(math.sqrt(d) / 2 * 2.0 ** -15)
                 + (1 + reciprocal_error()) / (1 - 2.0 ** -23) - 1
                 + math.sqrt(d) / 2 * 2.0 ** -FRAC)
        assert error.max() <= bound, d
        assert error.max() > 0                      # the comparison can fail


def test_a_zero_drive_gives_e1_as_the_float_model():
    h = np.zeros((2, 5), np.int64)
    h[1] = [0, 3, -4, 0, 0]
    x = sphere.sphere_state(h)
    np.testing.assert_array_equal(x[0], [1 << FRAC, 0, 0, 0, 0])
    np.testing.assert_array_equal(x[0] * 2.0 ** -FRAC, fixed_point(np.zeros((1, 5)))[0])
    np.testing.assert_allclose(x[1] * 2.0 ** -FRAC, [0, 0.6, -0.8, 0, 0], atol=2 ** -15)


def sphere_cases():
    """TinyStories (d_osc = 8, the example's draw) and d_osc = 4 on the sva shape."""
    for seed in (0, 3):
        for causal in (True, False):
            for p in (1, 2, 4):
                yield validate_case(random_case("tinystories", seed, causal=causal, p=p))
    rng = np.random.default_rng(5)
    for p in (1, 4):
        arrays = random_case("sva", 7, p=p)
        arrays["anchors"] = rng.normal(size=(1, 9, 4))
        yield validate_case(arrays)


@pytest.mark.parametrize("case", list(sphere_cases()),
                         ids=lambda c: f"T{c.tokens}-d{c.d_osc}-p{c.p}-causal{int(c.causal)}")
def test_fixed_point_is_within_its_budget_and_the_target(case):
    fixed, exact = attention_fixed(case), attention_float(case)
    budget = error_budget(case)
    attn_err = np.abs(fixed["attn"] - exact["attn"]).max()
    out_err = np.abs(fixed["out"] - exact["out"]).max(-1)
    assert attn_err <= budget["attn"] <= TARGET_D8
    np.testing.assert_array_less(out_err, budget["out_rows"] + 1e-300)
    assert budget["out"] <= budget["out_target"]
    # Worst-case input rounding contains the actual inputs' budget.
    assert error_budget(case, inputs="worst")["attn"] >= budget["attn"]
    # The state: every x_i within eps_x of h_i / |h_i|.
    x_err = np.linalg.norm(fixed["x_star"] - exact["x_star"], axis=-1)
    assert np.all(x_err <= budget["eps_x"])
    assert fixed["x_int"].shape == case.anchors.shape and "theta_int" not in fixed


def flow_cases():
    """ode-drive at d_osc > 2: TinyStories (d_osc 8), sva with d_osc 4, kws with d_osc 3;
    every start, p and causal."""
    for shape, seeds in (("tinystories", (0, 3)), ((1, 9, 32, 4), (0, 3)), ((2, 49, 16, 3),
                                                                            (1,))):
        for seed in seeds:
            for init in ("random", "zero", "warm"):
                for p, causal in ((1, True), (2, False), (4, True)):
                    yield validate_case(random_case(shape, seed, mode="ode-drive", init=init,
                                                    p=p, causal=causal))


@pytest.mark.parametrize("case", list(flow_cases()),
                         ids=lambda c: f"T{c.tokens}-d{c.d_osc}-{c.init}-p{c.p}-"
                                       f"causal{int(c.causal)}-seed{c.seed}")
def test_lohe_flow_is_within_its_budget(case):
    fixed = attention_fixed(case)
    exact = attention_float(dataclasses.replace(case, mode="analytic"))
    budget = error_budget(case)
    assert (fixed["steps"] > 0).all() and fixed["converged"].all()
    attn_err = np.abs(fixed["attn"] - exact["attn"]).max()
    assert attn_err <= budget["attn"]
    np.testing.assert_array_less(np.abs(fixed["out"] - exact["out"]).max(-1),
                                 budget["out_rows"] + 1e-300)
    x_err = np.linalg.norm(fixed["x_star"] - exact["x_star"], axis=-1)
    assert np.all(x_err <= budget["eps_x"])
    if case.d_osc == 8:                     # the issue's target at TinyStories' d_osc
        assert attn_err <= TARGET_D8
        # Guaranteed by the budget at p = 1, 2; at p = 4 the velocity stop's distance
        # (tol / |hn|) is amplified 4 times and the bound exceeds the target (README).
        if case.p <= 2:
            assert budget["attn"] <= TARGET_D8


def test_lohe_flow_settles_like_the_float_flow():
    # Per oscillator steps near the float model's (both stop on the same dynamics; the
    # fixed flow on a velocity, the float on the angle to x*), every one settled.
    case = validate_case(random_case("tinystories", 1, mode="ode-drive"))
    fixed, exact = attention_fixed(case), attention_float(case)
    assert fixed["converged"].all() and (exact["steps"] >= 0).all()
    ratio = np.median(fixed["steps"]) / np.median(exact["steps"])
    assert 0.5 <= ratio <= 2, ratio
    assert fixed["scales"]["flow_step"] == 2 ** 16 and fixed["scales"]["flow_tol"] == 4


def test_lohe_step_leaves_the_antipode_and_a_zero_drive_stays():
    one = 1 << FRAC
    x0 = np.array([[one, 0, 0], [0, one, 0]], np.int64)
    hn = np.array([[-one, 0, 0], [0, 0, 0]], np.int64)          # antipodal; zero
    states, steps = sphere.lohe_settle(x0, hn, one, 4, 200)
    assert steps[0] > 0 and states[0, 0] < -one + 8             # reached -e_1
    assert steps[1] == 0 and (states[1] == x0[1]).all()
    # Without the antipode rule the state would never move: the first step does.
    moved, c = sphere.lohe_step(x0[:1], hn[:1], one)
    assert c[0] == -one and not (moved == x0[:1]).all()


def test_the_ode_modes_and_very_wide_anchors_are_refused():
    case = random_case("tinystories", 0, mode="ode-pairwise")
    with pytest.raises(AttentionFixedError, match="'ode-pairwise' at d_osc = 8 is not in fix"):
        attention_fixed(case)
    with pytest.raises(AttentionFixedError, match="below the sphere flow's noise floor"):
        attention_fixed(random_case("tinystories", 0, mode="ode-drive", tol=2e-5))
    with pytest.raises(AttentionFixedError, match="outside the sphere flow's step format"):
        attention_fixed(random_case("tinystories", 0, mode="ode-drive", dt=2.5))
    with pytest.raises(AttentionFixedError, match="d_osc = 20 exceeds 16"):
        attention_fixed({**random_case("sva", 0), "anchors": np.ones((1, 9, 20))})


def test_cli_runs_tinystories_in_golden_fixed(tmp_path, capsys):
    import json
    case = tmp_path / "tiny.npz"
    assert main(["attention", "--example", "tinystories", "--out", str(case)]) == 0
    out = tmp_path / "r.npz"
    capsys.readouterr()
    assert main(["attention", "--in", str(case), "--engine", "golden-fixed", "--out", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == [4, 128, 32, 8] and report["max_attn_err"] <= TARGET_D8
    with np.load(out) as result:
        assert result["x_int"].shape == (4, 128, 8) and "theta_int" not in result
