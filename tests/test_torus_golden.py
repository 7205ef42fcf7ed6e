"""Paper B's Kuramoto attention on the torus: the float model (golden/torus.py) against a
direct loop over the formulas, the fixed-point specification (golden/torus_fixed.py)
recomputed one scalar at a time with Python integers, the derived error budget against the
measured error, and the refusals."""

import math

import numpy as np
import pytest
from oscarray.golden.exp2 import Y_MAX, exp2_neg
from oscarray.golden.torus import (
    TorusCaseError,
    random_case,
    torus_float,
    validate_case,
    wrap_phase,
)
from oscarray.golden.torus_fixed import (
    ATTN_TARGET,
    DEFAULT_CONFIG,
    EXP_FRAC,
    TorusFixedConfig,
    TorusFixedError,
    error_budget,
    host_constants,
    measured_errors,
    reciprocal,
    torus_fixed,
    validate_fixed,
)


def R(v: int, s: int) -> int:
    """The specification's rounding with Python integers."""
    return v << -s if s <= 0 else (v + (1 << (s - 1))) >> s


# ---------------------------------------------------------------------------------------------
# Float model

def loop_reference(case):
    """The module docstring's formulas, one scalar at a time."""
    T, D = case.theta.shape
    theta_next = np.zeros((T, D))
    attn = np.zeros((T, T))
    for t in range(T):
        us = range(t + 1) if case.causal else range(T)
        s = {u: sum(case.g[k] * math.cos(case.theta[t, k] - case.theta[u, k]
                                         - case.omega[k] * (t - u)) for k in range(D))
             for u in us}
        top = max(s.values())
        z = sum(math.exp((s[u] - top) / case.tau) for u in us)
        for u in us:
            attn[t, u] = math.exp((s[u] - top) / case.tau) / z
        for k in range(D):
            coupling = sum(attn[t, u] * math.sin(case.theta[u, k] - case.theta[t, k]) for u in us)
            x = case.theta[t, k] + case.eta[k] * coupling
            theta_next[t, k] = x - 2 * math.pi * math.floor((x + math.pi) / (2 * math.pi))
    return theta_next, attn


@pytest.mark.parametrize("shape,causal", [((7, 3), True), ((5, 4), False), ((1, 1), True)])
def test_float_model_matches_the_formulas(shape, causal):
    case = validate_case(random_case(*shape, seed=3, causal=np.asarray(causal)))
    result = torus_float(case)
    theta_next, attn = loop_reference(case)
    np.testing.assert_allclose(result["attn"], attn, atol=1e-13)
    assert np.abs(wrap_phase(result["theta_next"] - theta_next)).max() < 1e-12
    assert np.all(result["theta_next"] >= -math.pi) and np.all(result["theta_next"] < math.pi)
    np.testing.assert_allclose(result["attn"].sum(1), 1.0, atol=1e-13)
    if causal:
        assert np.all(np.triu(result["attn"], 1) == 0)


def test_float_model_properties():
    # eta = 0: nothing moves (theta wrapped to [-pi, pi)); g = 0: uniform attention.
    arrays = random_case(6, 3, seed=1)
    arrays["theta"] = arrays["theta"] + 4 * math.pi
    case = validate_case({**arrays, "eta": np.zeros(3), "g": np.zeros(3)})
    result = torus_float(case)
    np.testing.assert_allclose(result["theta_next"], wrap_phase(arrays["theta"]), atol=1e-12)
    expected = np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None]
    np.testing.assert_allclose(result["attn"], expected, atol=1e-15)
    # One token attends only to itself: sin(0) = 0, nothing moves.
    case = validate_case(random_case(1, 4, seed=2))
    np.testing.assert_allclose(torus_float(case)["theta_next"], wrap_phase(case.theta),
                               atol=1e-15)
    # Synchronization: a positive eta pulls the phases of a token towards the attended mean.
    case = validate_case(random_case(8, 2, seed=5))
    result = torus_float(case)
    spread = np.abs(wrap_phase(case.theta - case.theta.mean(0)))
    spread_next = np.abs(wrap_phase(result["theta_next"] - result["theta_next"].mean(0)))
    assert np.isfinite(spread_next).all() and spread.shape == spread_next.shape


def test_random_case_defaults():
    arrays = random_case()
    case = validate_case(arrays)
    assert (case.tokens, case.d) == (16, 8)
    assert case.causal and case.tau == 0.5
    np.testing.assert_allclose(case.omega, 10000.0 ** (-np.arange(8) / 8))
    assert np.all(case.g >= 0) and np.all(case.eta > 0)
    np.testing.assert_array_equal(random_case(seed=4)["theta"], random_case(seed=4)["theta"])


@pytest.mark.parametrize("change,message", [
    ({"theta": np.zeros((3,))}, "theta: must have shape"),
    ({"theta": np.zeros((0, 2))}, "theta: must have shape"),
    ({"g": np.ones(3)}, "g: must have shape"),
    ({"omega": np.ones((2, 1))}, "omega: must have shape"),
    ({"eta": np.array([1.0, np.nan])}, "eta: contains NaN"),
    ({"theta": np.array([[np.inf, 0.0]] * 4)}, "theta: contains NaN"),
    ({"g": np.array([1.0, -0.5])}, "g: gates must be >= 0"),
    ({"tau": np.asarray(0.0)}, "tau: must be > 0"),
    ({"tau": np.asarray(-1.0)}, "tau: must be > 0"),
    ({"tau": np.ones(2)}, "tau: must be a scalar"),
    ({"causal": np.asarray(1)}, "causal: must be a 0-d bool"),
    ({"theta": np.full((4, 2), 2.0 ** 21)}, "theta: |theta| must be below"),
    ({"omega": np.array([0.0, 3e6])}, "omega: |omega| must be below"),
    ({"g": np.array(["a", "b"])}, "g: must be real numbers"),
    ({"extra": np.zeros(2)}, "extra: unknown key"),
    ({"tau": None}, "tau: missing"),
])
def test_refusals(change, message):
    arrays = {**random_case(4, 2, seed=0), **change}
    with pytest.raises(TorusCaseError, match=message.replace("|", r"\|").replace("(", r"\(")):
        validate_case(arrays)
    with pytest.raises(TorusCaseError):
        torus_fixed(arrays)


def test_fixed_refusals():
    with pytest.raises(TorusFixedError, match="T = 1025 tokens exceeds"):
        validate_fixed(random_case(1025, 1))
    with pytest.raises(TorusFixedError, match="D = 65 coordinates exceeds"):
        validate_fixed(random_case(2, 65))
    with pytest.raises(TorusFixedError, match="tau: tau = .* is too small"):
        validate_fixed(random_case(4, 2, tau=np.asarray(1e-30)))
    with pytest.raises(TorusFixedError):
        TorusFixedConfig(phase_bits=20, acc_bits=20)
    assert issubclass(TorusFixedError, TorusCaseError) and issubclass(TorusCaseError, ValueError)


# ---------------------------------------------------------------------------------------------
# Fixed point: the integers, one scalar at a time

def scalar_pipeline(case, config=DEFAULT_CONFIG):
    """Steps 2-6 of the module docstring with Python integers, from step 1's tables (the
    CORDIC's own golden model, tested elsewhere) and the host constants."""
    result = torus_fixed(case, config)
    host = host_constants(case, config)
    A, P = config.acc_bits, config.phase_bits
    T, D = case.theta.shape
    cp, sp, ct, st = (result[key].tolist() for key in ("cp", "sp", "ct", "st"))
    # step 1's angles
    for t in range(T):
        for k in range(D):
            psi = (int(host.theta_acc[t, k]) - t * int(host.w[k])) % (1 << A)
            assert psi == result["psi"][t, k]
    attn = [[0] * T for _ in range(T)]
    theta_next = [[0] * D for _ in range(T)]
    for t in range(T):
        us = list(range(t + 1)) if case.causal else list(range(T))
        score = {u: sum(int(host.g_int[k]) * R(cp[t][k] * cp[u][k] + sp[t][k] * sp[u][k], 16)
                        for k in range(D)) for u in us}
        top = max(score.values())
        e = {}
        for u in us:
            y = min(R((top - score[u]) * host.soft_k, host.soft_shift), Y_MAX)
            e[u] = int(exp2_neg(np.array([y]), EXP_FRAC)[0])
            assert result["score_int"][t, u] == score[u] and result["y_int"][t, u] == y
        z = sum(e.values())
        r, L = (int(v[0]) for v in reciprocal(config.reciprocal, np.array([z])))
        for u in us:
            attn[t][u] = R(e[u] * r, 16 + L)
        for k in range(D):
            C = sum(attn[t][u] * ct[u][k] for u in us)
            S = sum(attn[t][u] * st[u][k] for u in us)
            q = R(ct[t][k] * R(S, 16) - st[t][k] * R(C, 16), 16)
            delta = R(int(host.eta_int[k]) * q, host.update_shift) % (1 << A)
            theta_next[t][k] = (int(host.theta_acc[t, k]) + delta) % (1 << A)
    assert P < A
    return result, np.array(attn), np.array(theta_next)


@pytest.mark.parametrize("arrays", [
    random_case(6, 3, seed=11),
    random_case(5, 2, seed=12, causal=np.asarray(False)),
    random_case(4, 3, seed=13, eta=np.array([-0.3, 40.0, 1e-9])),        # left shift, tiny
    random_case(4, 2, seed=14, eta=np.array([300.0, -2000.0])),            # clamped left shift
    random_case(4, 2, seed=15, g=np.zeros(2)),                             # uniform attention
    random_case(4, 2, seed=16, g=np.array([1e-12, 2e-12])),                # softmax shift 63
    random_case(5, 2, seed=17, g=np.array([40.0, 10.0]), tau=np.asarray(0.05)),  # saturating y
])
def test_fixed_integers_follow_the_specification(arrays):
    case = validate_case(arrays)
    result, attn, theta_next = scalar_pipeline(case)
    np.testing.assert_array_equal(result["attn_int"], attn)
    np.testing.assert_array_equal(result["theta_next_acc"], theta_next)
    assert result["theta_next"].min() >= -math.pi and result["theta_next"].max() < math.pi


def test_scales_and_host_constants():
    case = validate_case(random_case(16, 8, seed=0))
    host = host_constants(case)
    scales = torus_fixed(case)["scales"]
    assert scales["g"] == host.e_g and scales["softmax_k"] == host.soft_k
    assert 2 ** 16 <= host.soft_k <= 2 ** 17 and 0 <= host.soft_shift <= 63
    assert host.g_int.max() <= 2 ** 17 - 1 and host.g_int.max() >= 2 ** 16   # scale from data
    assert np.abs(host.eta_int).max() >= 2 ** 16
    np.testing.assert_allclose(host.g_int * 2.0 ** -host.e_g, case.g, atol=2.0 ** -(host.e_g + 1))
    # uniform attention for g = 0, exactly representable: 1/n rounded
    uniform = torus_fixed(random_case(4, 2, seed=1, g=np.zeros(2)))
    assert uniform["attn_int"][3, 0] in (2 ** 14, 2 ** 14 + 1, 2 ** 14 - 1)


# ---------------------------------------------------------------------------------------------
# Error budget

BUDGET_CASES = [((16, 8), True), ((9, 8), True), ((16, 16), False), ((49, 16), True),
                ((9, 32), True), ((128, 32), True)]


@pytest.mark.parametrize("shape,causal", BUDGET_CASES)
def test_measured_error_within_budget_and_target(shape, causal):
    worst = {"attn": 0.0, "theta": 0.0, "attn_budget": 0.0, "theta_budget": 0.0}
    for seed in range(3 if shape[0] < 100 else 1):
        case = validate_case(random_case(*shape, seed=seed, causal=np.asarray(causal)))
        result = torus_fixed(case)
        budget = error_budget(case)
        float_result = torus_float(case)
        err_attn = np.abs(result["attn"] - float_result["attn"])
        err_theta = np.abs(wrap_phase(result["theta_next"] - float_result["theta_next"]))
        assert np.all(err_attn <= budget["attn_entries"]), seed
        assert np.all(err_theta <= budget["theta_entries"]), seed
        assert err_attn.max() <= ATTN_TARGET, seed
        measured = measured_errors(case, result, float_result)
        for key in ("attn", "theta"):
            worst[key] = max(worst[key], measured[key])
            worst[f"{key}_budget"] = max(worst[f"{key}_budget"], budget[key])
    print(f"\n{shape} causal={causal}: attn {worst['attn'] / ATTN_TARGET:.3f} / budget "
          f"{worst['attn_budget'] / ATTN_TARGET:.3f} (x 2**-11); theta {worst['theta']:.3g} / "
          f"budget {worst['theta_budget']:.3g} rad")


def test_budget_holds_on_hard_cases():
    """Sharp softmax (large g / tau), large and negative eta, no drift, non-causal."""
    cases = [
        random_case(12, 4, seed=21, g=np.array([3.0, 2.0, 0.5, 1.0]), tau=np.asarray(0.2)),
        random_case(12, 4, seed=22, eta=np.array([-5.0, 3.0, 0.0, 20.0])),
        random_case(12, 4, seed=23, omega=np.zeros(4), causal=np.asarray(False)),
        random_case(10, 3, seed=24, theta=np.zeros((10, 3))),                   # all equal
    ]
    for arrays in cases:
        case = validate_case(arrays)
        result, budget, reference = torus_fixed(case), error_budget(case), torus_float(case)
        assert np.all(np.abs(result["attn"] - reference["attn"]) <= budget["attn_entries"])
        assert np.all(np.abs(wrap_phase(result["theta_next"] - reference["theta_next"]))
                      <= budget["theta_entries"])


# ---------------------------------------------------------------------------------------------
# The flow (oscarray/torus_flow.py), golden engines

def test_flow_golden_engines(tmp_path):
    from oscarray.torus_flow import torus_example, torus_run
    case_path = tmp_path / "case.npz"
    torus_example(case_path, tokens=9, d=8, seed=1)
    for engine in ("golden-float", "golden-fixed"):
        out = tmp_path / f"{engine}.npz"
        summary = torus_run(case_path, engine, out)
        assert summary["shape"] == [9, 8] and summary["out"] == str(out)
        saved = np.load(out)
        assert saved["theta_next"].shape == (9, 8) and saved["attn"].shape == (9, 9)
        assert np.all(np.triu(saved["attn"], 1) == 0)
        assert str(saved["engine"]) == engine
        if engine == "golden-fixed":
            assert summary["within_budget"] and summary["max_attn_err"] <= ATTN_TARGET
            assert "scales" in saved.files and saved["attn_int"].dtype.kind == "i"
        else:
            assert summary["max_attn_err"] == 0


def test_flow_refuses_before_writing(tmp_path):
    from oscarray.golden.npz import write_npz
    from oscarray.torus_flow import torus_run
    out = tmp_path / "result.npz"
    bad = tmp_path / "bad.npz"
    write_npz(bad, {**random_case(4, 2), "g": np.array([1.0, -1.0])})
    with pytest.raises(TorusCaseError, match="g: gates must be >= 0"):
        torus_run(bad, "golden-fixed", out)
    small_tau = tmp_path / "tau.npz"
    write_npz(small_tau, random_case(4, 2, tau=np.asarray(1e-30)))
    with pytest.raises(TorusFixedError, match="too small"):
        torus_run(small_tau, "golden-fixed", out)
    big = tmp_path / "big.npz"
    write_npz(big, random_case(2, 65))
    with pytest.raises(TorusFixedError, match="exceeds"):
        torus_run(big, "rtl", out)
    with pytest.raises(ValueError, match="unknown torus engine"):
        torus_run(bad, "magic", out)
    with pytest.raises(FileNotFoundError):
        torus_run(small_tau, "golden-float", tmp_path / "missing" / "r.npz")
    with pytest.raises(TorusCaseError, match="does not exist"):
        torus_run(tmp_path / "none.npz", "golden-float", out)
    assert not out.exists()


@pytest.mark.parametrize("tokens,d,causal", [(9, 8, True), (49, 16, False), (128, 32, True)])
def test_fast_form_equals_the_definition(tokens, d, causal):
    from oscarray.golden.torus import random_case, torus_float, torus_float_fast
    case = random_case(tokens, d, seed=tokens, causal=np.array(causal))
    slow, fast = torus_float(case), torus_float_fast(case)
    np.testing.assert_allclose(fast["attn"], slow["attn"], atol=1e-12)
    diff = np.angle(np.exp(1j * (fast["theta_next"] - slow["theta_next"])))
    assert np.abs(diff).max() < 1e-12
