"""golden/attention_sphere.py: paper A's oscillator attention at d_osc > 2 in fixed point (the
analytic fixed point and the Lohe flow, ode-drive and ode-pairwise), against the float model
and its derived error budget (the issue's target at d_osc = 8 in the TinyStories shape:
|attn - attn_float| <= 2**-10)."""

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
    DEFAULT_CONFIG,
    FRAC,
    AttentionFixedError,
    attention_fixed,
    error_budget,
    front_end,
    readout_fixed,
    reciprocal,
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
    budget = sphere.error_budget(case, result=fixed)       # the flow's steps: not run again
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
    states, steps = sphere.lohe_settle(
        x0, (hn == 0).all(-1), lambda s, index: sphere.lohe_step(s, hn[index], one), 4, 200)
    assert steps[0] > 0 and states[0, 0] < -one + 8             # reached -e_1
    assert steps[1] == 0 and (states[1] == x0[1]).all()
    # Without the antipode rule the state would never move: the first step does.
    moved, c = sphere.lohe_step(x0[:1], hn[:1], one)
    assert c[0] == -one and not (moved == x0[:1]).all()


# ---------------------------------------------------------------------------------------------
# ode-pairwise at d_osc > 2

def _r(value: int, shift: int) -> int:
    """R(v, s) as the module docstrings define it: round half up, floor((v + 2**(s-1)) / 2**s),
    for s > 0; an exact left shift for s <= 0 (Python ints: no overflow, floor shifts)."""
    return (value + (1 << (shift - 1))) >> shift if shift > 0 else value << -shift


def _recip(total: int) -> tuple[int, int]:
    """Step 5's divide-CORDIC reciprocal (r, L) of one integer (attention_fixed's)."""
    r, L = reciprocal(DEFAULT_CONFIG, np.array([total], np.int64))
    return int(r[0]), int(L[0])


def _sphere_state_loop(h: list[int]) -> list[int]:
    """Step 6' of attention_sphere's docstring, one vector at a time: n = bitlen(max|h_c|) - 16,
    hs = R(h, n), N = isqrt(sum hs**2 4**G) (G = 8), (r, L) = reciprocal(N),
    x_c = R(hs_c r, 32 + L - G - 16); e_1 for h = 0."""
    peak = max(abs(c) for c in h)
    if peak == 0:
        return [1 << FRAC] + [0] * (len(h) - 1)
    hs = [_r(c, peak.bit_length() - FRAC) for c in h]
    r, L = _recip(math.isqrt(sum(c * c for c in hs) << 16))
    return [_r(c * r, 32 + L - 8 - FRAC) for c in hs]


def _pairwise_step_loop(x, anchors, weights, r, L, step):
    """The ode-pairwise step of attention_sphere's docstring, term by term in Python ints:
    (x', C, v before the antipode's nudge)."""
    d = len(x)
    c = [_r(sum(xc * ac for xc, ac in zip(x, a)), FRAC) for a in anchors]
    t = [[a[k] - _r(cj * x[k], FRAC) for k in range(d)] for a, cj in zip(anchors, c)]
    V = [sum(w * tj[k] for w, tj in zip(weights, t)) for k in range(d)]
    C = sum(w * cj for w, cj in zip(weights, c))
    v = [_r(Vk * r, 32 + L) for Vk in V]
    moved = v
    if all(vk == 0 for vk in v) and C < 0:          # the antipode: e_k, k the first smallest
        k = min(range(d), key=lambda i: abs(x[i]))
        moved = [int(i == k) for i in range(d)]
    return _sphere_state_loop([(xk << FRAC) + step * vk for xk, vk in zip(x, moved)]), C, v


def _special_rows(d: int):
    """(x, anchors (3, d), W (3,)) rows that exercise the step's edges."""
    one = 1 << FRAC
    e = [[one * (i == k) for i in range(d)] for k in range(d)]
    neg = [[-c for c in row] for row in e]
    a = [one // 2, -(one // 3), 52383] + [0] * (d - 3)             # a unit vector
    x_tilt = [one, 1] + [0] * (d - 2)          # x . (0, -+2**15, ...) = -+2**15 exactly
    up = [0, one // 2, 56756] + [0] * (d - 3)
    down = [0, -(one // 2), 56756] + [0] * (d - 3)
    return [
        (e[0], [neg[0], neg[0], neg[0]], [7, 1, 130000]),      # exact antipode: v = 0, C < 0
        (e[0], [neg[0], e[1], neg[0]], [5, 0, 3]),             # the same, one anchor masked
        (e[0], [e[0], e[0], e[1]], [9, 4, 0]),                 # at the fixed point: v = 0, C > 0
        (e[1], [a, [-c for c in a], e[2]], [11, 11, 0]),       # zero drive: a and -a
        (e[2], [a, e[0], e[1]], [0, 0, 0]),                    # every coupling 0 (s = 0)
        # C > 0 although x . h < 0: c = R(-2**15, 16) = 0 and R(2**15, 16) = 1, both rounded
        # up by 1/2 LSB, so C = 3 * 0 + 1 * 1 while sum_j W_j x . a_j = -2**16.
        (x_tilt, [down, up, e[0]], [3, 1, 0]),
    ]


def test_lohe_pairwise_step_is_its_docstring_equations():
    # Bit-exact against the equations evaluated in plain Python, on random near-unit states,
    # anchors and couplings (some masked), random steps D, and the edge rows; and the error
    # budget's per-step ingredients (flow_distance): the tangential rounding
    # |v - (g - (x . g) x)| <= E_v, g = h r 2**-(32+L), and C > 0 => x . h / s > -LSB / 2.
    rng = np.random.default_rng(11)
    lsb = 2.0 ** -FRAC
    rho = reciprocal_error()
    worst = 0.0
    for d in (3, 4, 8):
        count, tokens = 150, 7
        unit = rng.normal(size=(count, d))
        unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
        x = np.round(unit * 2 ** FRAC).astype(np.int64) + rng.integers(-3, 4, (count, d))
        a = rng.normal(size=(count, tokens, d))
        a = np.round(a / np.linalg.norm(a, axis=-1, keepdims=True) * 2 ** FRAC).astype(np.int64)
        w = rng.integers(0, 1 << 17, (count, tokens)) * (rng.random((count, tokens)) > 0.3)
        specials = _special_rows(d)
        x[:len(specials)] = [row[0] for row in specials]
        a[:len(specials), :3] = [row[1] for row in specials]
        w[:len(specials), :3] = [row[2] for row in specials]
        w[:len(specials), 3:] = 0
        r, L = reciprocal(DEFAULT_CONFIG, w.sum(-1))
        for step in (1 << FRAC, int(rng.integers(1, 1 << (FRAC + 1)))):
            moved, along = sphere.lohe_pairwise_step(x, a, w, r, L, step)
            for n in range(count):
                ref, C, v = _pairwise_step_loop(x[n].tolist(), a[n].tolist(), w[n].tolist(),
                                                int(r[n]), int(L[n]), step)
                assert moved[n].tolist() == ref and along[n] == C, (d, n)
                s = int(w[n].sum())
                if s == 0:
                    assert v == [0] * d and C == 0
                    continue
                xv, h = x[n] * lsb, (w[n] @ a[n]) * lsb
                g = h * float(r[n]) * 2.0 ** -(32 + int(L[n]))
                e_v = ((1 + rho) * (math.sqrt(d) + np.linalg.norm(xv)) / 2 + math.sqrt(d) / 2)
                miss = np.linalg.norm(np.array(v) * lsb - (g - (xv @ g) * xv)) / lsb
                assert miss <= e_v, (d, n, miss, e_v)
                worst = max(worst, miss / e_v)
                if C > 0:
                    assert xv @ h / s > -lsb / 2
            if step == 1 << FRAC:
                # The edge rows: the antipode is nudged along e_2 (x's first smallest
                # component; v = 0, C < 0), the fixed point is not (v = 0, C > 0).
                assert along[0] < 0 and along[1] < 0 and moved[0, 1] > 0 and moved[1, 1] > 0
                assert along[2] > 0 and not moved[2, 1:].any()
        assert along[5] > 0 and x[5] @ (w[5] @ a[5]) < 0    # why the budget has kappa
    assert worst > 0.3, worst               # E_v is not loose by far (0.48 measured)


def test_lohe_pairwise_leaves_the_antipode_and_a_zero_drive_stays():
    one = 1 << FRAC
    x0 = np.array([[one, 0, 0], [0, one, 0]], np.int64)
    anchors = np.array([[[-one, 0, 0], [-one, 0, 0]], [[0, 0, one], [0, 0, -one]]], np.int64)
    w = np.array([[3, 5], [2, 2]], np.int64)               # antipodal; a zero drive
    r, L = reciprocal(DEFAULT_CONFIG, w.sum(-1))
    zero = (np.einsum("nt,ntc->nc", w, anchors) == 0).all(-1)
    states, steps = sphere.lohe_settle(
        x0, zero, lambda s, i: sphere.lohe_pairwise_step(s, anchors[i], w[i], r[i], L[i], one),
        4, 200)
    assert steps[0] > 0 and states[0, 0] < -one + 8             # reached -e_1
    assert steps[1] == 0 and (states[1] == x0[1]).all()


def pairwise_flows():
    """ode-pairwise at d_osc > 2: TinyStories (d_osc 8) seeds 0 and 3, sva with d_osc 4 seeds
    0 and 3, kws with d_osc 3 seed 1; causal and not, every start (its seed the case's). Each
    flow is read out at p = 1, 2, 4 (the flow does not depend on p)."""
    for shape, seeds in (("tinystories", (0, 3)), ((1, 9, 32, 4), (0, 3)), ((2, 49, 16, 3),
                                                                            (1,))):
        for seed in seeds:
            for causal in (True, False):
                for init in ("random", "zero", "warm"):
                    yield validate_case({**random_case(shape, seed, mode="ode-pairwise",
                                                       init=init, causal=causal), "seed": seed})


@pytest.mark.parametrize("base", list(pairwise_flows()),
                         ids=lambda c: f"T{c.tokens}-d{c.d_osc}-{c.init}-causal{int(c.causal)}-"
                                       f"seed{c.seed}")
def test_lohe_pairwise_is_within_its_budget(base):
    fixed = attention_fixed(base)
    assert base.p == 1 and (fixed["steps"] > 0).all() and fixed["converged"].all()
    fe = front_end(base)
    d, lsb = base.d_osc, 2.0 ** -FRAC
    # The flow against its own bound (flow_distance): x_i within it of h_i / |h_i|.
    normalizer = ((1 + reciprocal_error()) / (1 - 2.0 ** -(15 + sphere.NORM_GUARD)) - 1
                  + math.sqrt(d) / 2 * lsb)
    bound = sphere.flow_distance(base, fe, DEFAULT_CONFIG, normalizer, fixed["steps"])
    direction = fe.h / np.linalg.norm(fe.h, axis=-1, keepdims=True)
    distance = np.linalg.norm(fixed["x_int"] * lsb - direction, axis=-1)
    assert np.all(distance <= bound) and bound.max() < 0.1     # no row's bound gave up (2)
    assert distance.max() > 0.05 * bound.max()          # the bound is not vacuous
    whole = base.tokens < 100 and base.init != "warm"     # the public paths, where cheap
    for p in (1, 2, 4):
        case = dataclasses.replace(base, p=p)
        if p == 1:
            attn, out = fixed["attn"], fixed["out"]
        else:
            _, attn, out, _, _ = readout_fixed(fixed["x_int"], fe, p, kind="vector")
            attn, out = attn * lsb, out * 2.0 ** -fe.e_v
            if whole:                                   # the shortcut is attention_fixed's
                np.testing.assert_array_equal(attention_fixed(case)["attn"], attn)
        exact = attention_float(dataclasses.replace(case, mode="analytic"))
        budget = sphere.error_budget(case, result=fixed)
        attn_err = np.abs(attn - exact["attn"]).max()
        assert attn_err <= budget["attn"]
        np.testing.assert_array_less(np.abs(out - exact["out"]).max(-1),
                                     budget["out_rows"] + 1e-300)
        x_err = np.linalg.norm(fixed["x_star"] - exact["x_star"], axis=-1)
        assert np.all(x_err <= budget["eps_x"]) and budget["eps_x"].max() < 0.1
        if d == 8:                              # the issue's target at TinyStories' d_osc
            assert attn_err <= TARGET_D8
            if p == 1:     # guaranteed by the budget at p = 1 (at p = 2, 4 the calm step's
                assert budget["attn"] <= TARGET_D8     # distance counts p times: not always)
        worst = sphere.error_budget(case, inputs="worst", result=fixed)
        assert worst["attn"] >= budget["attn"]
    if whole:
        # Without `result` the budget runs the flow itself: the same bound.
        budget = error_budget(base)
        np.testing.assert_array_equal(budget["eps_x"],
                                      sphere.error_budget(base, result=fixed)["eps_x"])


def test_flow_distance_grows_with_tol_and_gives_up_past_a_right_angle():
    # flow_distance without running the flow (steps given): it grows with tol, is 2 for a
    # row that never calmed and everywhere once the calm step's chord could reach a right
    # angle; the pairwise bound is the drive's within a few percent (both are dominated by
    # the calm step's tol / |g|; pairwise has a larger E_v but no rounding of hn).
    base = validate_case(random_case((1, 9, 32, 4), 2, mode="ode-pairwise"))
    fe = front_end(base)
    steps = np.ones(fe.w_sum.shape, np.int64)
    steps[0, 3] = -1                                            # NOT_CONVERGED
    normalizer = 1e-5
    bounds = {}
    for mode in ("ode-drive", "ode-pairwise"):
        last = np.zeros(steps.shape)
        for tol in (6e-5, 1e-3, 2e-2, 0.5, 0.9):
            case = dataclasses.replace(base, mode=mode, tol=tol)
            bound = sphere.flow_distance(case, fe, DEFAULT_CONFIG, normalizer, steps)
            assert bound[0, 3] == 2 and np.all(bound >= last) and np.all(bound <= 2)
            last = bound
            bounds[mode, tol] = bound
        assert np.all(bounds[mode, 0.5] == 2)           # the sine bound passes 1 (tol_q 32768)
        assert np.all(last == 2)                        # tol_q = 58982: phi >= pi / 2
    ratio = bounds["ode-pairwise", 6e-5] / bounds["ode-drive", 6e-5]
    assert 0.95 < ratio.min() and ratio.max() < 1.05, ratio


def test_lohe_pairwise_settles_like_the_float_flows_and_the_drive_form():
    # The same flow as ode-drive up to rounding: per oscillator steps within a few of the
    # fixed drive form's, and near the float model's (pairwise and drive: the float stops on
    # the angle to x*, the fixed flow on a velocity).
    case = validate_case(random_case("tinystories", 1, mode="ode-pairwise"))
    fixed = attention_fixed(case)
    drive = attention_fixed(dataclasses.replace(case, mode="ode-drive"))
    assert fixed["converged"].all() and drive["converged"].all()
    assert np.abs(fixed["steps"] - drive["steps"]).max() <= 8
    for mode in ("ode-pairwise", "ode-drive"):
        exact = attention_float(dataclasses.replace(case, mode=mode))
        assert (exact["steps"] >= 0).all()
        ratio = np.median(fixed["steps"]) / np.median(exact["steps"])
        assert 0.5 <= ratio <= 2, (mode, ratio)
    assert fixed["scales"]["flow_step"] == 2 ** 16 and fixed["scales"]["flow_tol"] == 4


def test_bad_flow_constants_and_very_wide_anchors_are_refused():
    # Both ODE modes share the flow's step format and the detector's noise floor; ode-pairwise
    # at d_osc = 8 itself is accepted (it was refused before it was in fixed point).
    sphere.check_sphere(validate_case(random_case("tinystories", 0, mode="ode-pairwise")))
    for mode in ("ode-drive", "ode-pairwise"):
        for run in (attention_fixed, error_budget):
            with pytest.raises(AttentionFixedError, match="below the sphere flow's noise floor"):
                run(random_case("tinystories", 0, mode=mode, tol=2e-5))     # tol_q = 1
            with pytest.raises(AttentionFixedError, match="outside the sphere flow's step format"):
                run(random_case("tinystories", 0, mode=mode, dt=2.5))
            with pytest.raises(AttentionFixedError, match="outside the sphere flow's step format"):
                run(random_case("tinystories", 0, mode=mode, dt=5e-6))      # D = 0
        # The floor itself (tol_q = 2) is accepted.
        assert sphere.flow_constants(validate_case(
            random_case("tinystories", 0, mode=mode, tol=3.1e-5)))[1] == sphere.TOL_FLOOR
        sphere.check_sphere(validate_case(random_case("tinystories", 0, mode=mode, tol=3.1e-5)))
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
