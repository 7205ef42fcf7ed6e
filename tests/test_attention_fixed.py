"""Paper A's attention head in fixed point (golden/attention_fixed.py): the integer pipeline
recomputed one scalar at a time from the module docstring, the derived error budget against
the float model (measured on the paper's shapes, every mode, causal or not), the engine's
convergence and start-state semantics, and the refusals."""

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from oscarray.golden import attention_fixed as af
from oscarray.golden.attention import (
    NOT_CONVERGED,
    AttentionCaseError,
    attention_float,
    random_case,
)
from oscarray.golden.attention_fixed import (
    ATTN_TARGET,
    OUT_TARGET,
    AttentionFixedConfig,
    AttentionFixedError,
    attention_fixed,
    error_budget,
    formats,
    quantize_tensor,
    reciprocal_error,
    score_constant,
)
from oscarray.golden.cordic import CordicConfig, cordic_fixed

from oscarray.convergence import example_case

CONFIG = AttentionFixedConfig()
P = CONFIG.phase_bits
DATA_MAX = 2 ** 17 - 1
QK_MAX = 2 ** (CONFIG.qk_bits - 1) - 1
# The ODE settings of the tests: dt = 1 is Euler's monotone limit for |hn| <= 1; tol is the
# default angle (the engine's 2**-14).
ODE = dict(dt=1.0, tol=6e-5, max_steps=3000)
PAIRWISE = ODE


def ode(mode):
    return PAIRWISE if mode == "ode-pairwise" else ODE


# ---------------------------------------------------------------------------------------------
# A scalar reference: the module docstring's steps with Python integers

def R(v: int, s: int) -> int:
    """Round half up by 2**s (a left shift for s <= 0)."""
    return v << -s if s <= 0 else (v + (1 << (s - 1))) >> s


def largest_fitting(values, limit=DATA_MAX):
    """Brute force: the largest e with every floor(v 2**e + 1/2) within +-limit."""
    for e in range(80, -80, -1):
        ints = [math.floor(v * 2.0 ** e + 0.5) for v in values]
        if max(abs(i) for i in ints) <= limit:
            return ints, e
    raise AssertionError("no exponent fits")


def exact_score_constant(d_h):
    getcontext().prec = 60
    bits = 16 + math.ceil(math.log2(d_h) / 2)
    exact = Decimal(2) ** bits / Decimal(d_h).sqrt()
    return int((exact + Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR")), bits


def cordic(mode, x, y, z):
    cfg = CordicConfig(mode, 18, P)
    out = cordic_fixed(cfg, np.array([x]), np.array([y]), np.array([z]))
    return [int(o[0]) for o in out]


def reference_reciprocal(total):
    shift = total.bit_length() - 17
    m = min(R(total, shift), DATA_MAX)
    return cordic("divide", m, 1 << 16, 0)[2], shift


def reference_head(case, head, theta=None):
    """W, h, theta* (or the given theta), attn and out of one head, with scalars."""
    q_all, e_q = largest_fitting(np.ravel(case["q"]), QK_MAX)
    k_all, e_k = largest_fitting(np.ravel(case["k"]), QK_MAX)
    v_all, e_v = largest_fitting(np.ravel(case["v"]))
    H, T, d_h = np.shape(case["q"])
    q = np.array(q_all, dtype=object).reshape(H, T, d_h)[head]
    k = np.array(k_all, dtype=object).reshape(H, T, d_h)[head]
    v = np.array(v_all, dtype=object).reshape(H, T, d_h)[head]
    causal, p = case.get("causal", True), case.get("p", 1)
    c, c_bits = exact_score_constant(d_h)
    full = e_q + e_k + c_bits
    anchors = np.asarray(case["anchors"], float)[head]
    a = [[math.floor(2.0 ** 16 * x / math.hypot(*row) + 0.5) for x in row] for row in anchors]

    W, h, sums = [], [], []
    for i in range(T):
        cols = range(i + 1) if causal else range(T)
        scaled = {j: max(sum(int(q[i][n]) * int(k[j][n]) for n in range(d_h)), 0) * c
                  for j in cols}
        for e in range(90, -90, -1):        # the row's exponent: the largest that fits
            eps = math.floor(1e-3 * 2.0 ** e + 0.5)
            if R(max(scaled.values()), full - e) + eps <= DATA_MAX:
                break
        row = [R(scaled[j], full - e) + eps if j in scaled else 0 for j in range(T)]
        W.append(row)
        h.append([sum(row[j] * a[j][0] for j in range(T)), sum(row[j] * a[j][1] for j in range(T))])
        sums.append(sum(row))
    if theta is None:
        theta = []
        for hx, hy in h:
            shift = max(abs(hx), abs(hy)).bit_length() - 16 if (hx or hy) else 0
            theta.append(cordic("vector", R(hx, shift), R(hy, shift), 0)[2])
    attn, out = [], []
    for i in range(T):
        x, y, _ = cordic("rotate", 1 << 16, 0, int(theta[i]))
        g = []
        for j in range(T):
            u = max(0, (1 << 16) + R(x * a[j][0] + y * a[j][1], 16))
            for _ in range({1: 0, 2: 1, 4: 2}[p]):
                u = R(u * u, 16)
            g.append(u if (j <= i or not causal) else 0)
        r, shift = reference_reciprocal(sum(g))
        row = [R(gj * r, 16 + shift) for gj in g]
        attn.append(row)
        out.append([R(sum(row[j] * int(v[j][n]) for j in range(T)), 16) for n in range(d_h)])
    hn, products = [], []
    for (hx, hy), total, row in zip(h, sums, W):
        r, shift = reference_reciprocal(total)
        hn.append([R(hx * r, 32 + shift), R(hy * r, 32 + shift)])
        products.append([(w * r, 32 + shift) for w in row] if (hx or hy) else [(0, 0)] * T)
    kn, e_k = [], []
    for row in products:            # the pairwise couplings' exponent per row: the largest
        e = 14                      # that fits (a zero row keeps 14)
        if any(value for value, _ in row):
            e = next(e for e in range(60, 0, -1)
                     if max(abs(R(value, shift - e)) for value, shift in row) <= 2 ** 15 - 1)
        kn.append([R(value, shift - e) for value, shift in row])
        e_k.append(e)
    return dict(W=W, h=h, theta=theta, attn=attn, out=out, hn=hn, kn=kn, e_k=e_k, e_v=e_v)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("p", [1, 2, 4])
def test_integers_equal_the_docstring_recomputed_with_scalars(causal, p):
    # Inputs of very different magnitudes (exponents far from 0), unnormalized anchors.
    case = random_case((2, 7, 12, 2), seed=11 + p, causal=causal, p=p)
    case["q"] = case["q"] * 37.0
    case["k"] = case["k"] / 300.0
    case["anchors"] = case["anchors"] * 5.5
    result = attention_fixed(case)
    fe = af.front_end(af.validate_fixed(case))
    hn = af.normalized_drive(fe)
    kn, e_k = af.normalized_couplings(fe)
    for head in range(2):
        ref = reference_head(case, head)
        assert result["w_int"][head].tolist() == ref["W"]
        assert result["h_int"][head].tolist() == ref["h"]
        assert result["theta_int"][head].tolist() == ref["theta"]
        assert result["attn_int"][head].tolist() == ref["attn"]
        assert result["out_int"][head].tolist() == ref["out"]
        assert hn[head].tolist() == ref["hn"]
        assert kn[head].tolist() == ref["kn"] and e_k[head].tolist() == ref["e_k"]
        assert result["scales"]["out"] == ref["e_v"]


def test_ode_readout_uses_the_engine_phases_with_the_same_pipeline():
    case = random_case("sva", seed=4, mode="ode-drive", p=2, **ODE)
    result = attention_fixed(case)
    ref = reference_head(case, 0, theta=result["theta_int"][0])
    assert result["attn_int"][0].tolist() == ref["attn"]
    assert result["out_int"][0].tolist() == ref["out"]


def test_right_shifts_of_63_and_more_round_to_zero():
    # R(m, s) = floor((m + 2**(s-1)) / 2**s) = 0 for |m| < 2**62 and s >= 63; at s = 64 the
    # half 2**63 does not fit int64 (it used to wrap, giving R(m, 64) = -1).
    values = [0, 1, -1, 12345, -12345, 2 ** 61, 2 ** 62 - 1, -(2 ** 62)]
    for s in (62, 63, 64, 65, 100, 4000):
        got = af._shift(np.array(values, np.int64), s)
        assert got.tolist() == [R(v, s) for v in values], s
    assert af._shift(np.int64(2 ** 62 - 1), 64) == 0
    shifts = np.array([1, 63, 64, 65, -3])          # per-element shifts, as the W step uses
    assert af._shift(np.full(5, 2 ** 40 + 1, np.int64), shifts).tolist() == \
        [R(2 ** 40 + 1, int(s)) for s in shifts]


def test_tiny_scores_shift_w_by_64_and_round_to_zero():
    # q, k ~ 2**-18.5: F = e_q + e_k + C = 90 and every row's e_w = 26, so W = R(m, 64) + eps
    # = eps(26) = 67109 (the case the RTL found: golden gave 67108 before the clamp).
    case = random_case((1, 4, 8, 2), seed=0, causal=False)
    case["q"], case["k"] = case["q"] * 2.0 ** -18.5, case["k"] * 2.0 ** -18.5
    fe = af.front_end(af.validate_fixed(case))
    assert fe.e_q + fe.e_k + fe.score_bits == 90 and (fe.e_w == 26).all()
    assert (fe.w == 67109).all()
    ref = reference_head(case, 0)
    result = attention_fixed(case)
    assert result["w_int"][0].tolist() == ref["W"]
    assert result["h_int"][0].tolist() == ref["h"]
    assert result["attn_int"][0].tolist() == ref["attn"]


@pytest.mark.parametrize("scale", [2.0 ** -30, 2.0 ** -18.5, 1e-3, 1.0, 11.0])
def test_w_exponents_lie_in_9_to_26(scale):
    case = random_case((1, 6, 16, 2), seed=2, causal=False)
    case["q"], case["k"] = case["q"] * scale, case["k"] * scale
    e_w = af.front_end(af.validate_fixed(case)).e_w
    assert 9 <= e_w.min() and e_w.max() <= 26
    if scale < 1e-2:
        assert (e_w == 26).all()        # every score rounds away: W = eps(26) alone
    if scale == 11.0:
        assert e_w.min() == 9           # near the largest scores the format holds


# ---------------------------------------------------------------------------------------------
# Formats

@pytest.mark.parametrize("scale", [1e-7, 0.3, 1.0, 5e4])
def test_quantization_picks_the_largest_exponent_that_fits(scale):
    x = np.random.default_rng(5).standard_normal((3, 4, 5)) * scale
    ints, e = quantize_tensor(x)
    assert np.abs(ints).max() <= DATA_MAX
    assert np.abs(np.floor(x * 2.0 ** (e + 1) + 0.5)).max() > DATA_MAX   # e + 1 would not fit
    assert np.abs(ints * 2.0 ** -e - x).max() <= 2.0 ** -(e + 1)
    assert quantize_tensor(np.zeros(3))[1] == 0


@pytest.mark.parametrize("d_h", [1, 4, 16, 64, 256])
def test_score_constant_is_a_shift_when_d_h_is_a_power_of_4(d_h):
    c, bits = score_constant(d_h)
    assert c == 2 ** 16 and c * 2.0 ** -bits == 1 / math.sqrt(d_h)


@pytest.mark.parametrize("d_h", [2, 3, 8, 12, 32, 100, 1000])
def test_score_constant_is_rounded_half_up(d_h):
    c, bits = score_constant(d_h)
    assert (c, bits) == exact_score_constant(d_h)
    assert 2 ** 16 <= c < 2 ** 17
    assert abs(c * 2.0 ** -bits - 1 / math.sqrt(d_h)) <= 2.0 ** -(bits + 1)


def test_every_integer_fits_its_derived_width_at_full_scale():
    # Every input at the largest magnitude: the scores, W, sums and products at their extremes.
    H, T, d_h = 1, 33, 128
    full = np.full((H, T, d_h), QK_MAX / 2.0 ** (CONFIG.qk_bits - 2))   # q = k = 2**(B-1) - 1
    case = dict(q=full, k=full, v=-np.ones((H, T, d_h)), causal=False, p=4)
    widths = formats(d_h, T, 4)

    def fits(values, name):
        values = np.asarray(values, dtype=object)
        sign = 0 if "(u" in name else 1          # unsigned registers have no sign bit
        if not sign:
            assert min(values.ravel()) >= 0
        return max(int(abs(v)).bit_length() for v in values.ravel()) + sign <= widths[name]
    for anchors in ([1.0, 0.0], [0.6, 0.8]):
        case["anchors"] = np.tile(anchors, (H, T, 1))
        result = attention_fixed(case)
        fe = af.front_end(af.validate_fixed(case))
        assert int(fe.raw.max()) == d_h * QK_MAX ** 2 and widths["score (raw * c)"] == 63
        assert fits(fe.raw, "raw (q.k)") and fits(fe.raw * fe.score_c, "score (raw * c)")
        assert fits(fe.h, "h (sum W a)") and fits(result["out_int"], "out")
        assert fits(result["g_int"], "g = u**p (u)") and fits(result["attn_int"], "attn (u, Q1.16)")
        assert int(fe.w.max()) <= DATA_MAX
        # out = -v (every row of attn sums to 1 within the derived rounding)
        assert np.allclose(result["out"], -1, atol=2.0 ** -11)
    with pytest.raises(AttentionFixedError, match="d_h = 129 is too large"):
        attention_fixed(dict(case, q=full[..., :1].repeat(129, -1), k=full[..., :1].repeat(129, -1),
                             v=np.ones((H, T, 129))))


def test_attention_rows_sum_to_one_within_rounding_and_the_mask_is_exact():
    rho = reciprocal_error()
    for causal in (True, False):
        case = random_case("kws", seed=8, causal=causal, p=2)
        attn = attention_fixed(case)["attn_int"]
        T = attn.shape[-1]
        count = np.arange(1, T + 1) if causal else np.full(T, T)
        # Each entry rounds once (1/2 LSB); the reciprocal is within rho of 1 / row sum.
        slack = rho * 2 ** 16 + count / 2
        assert np.all(np.abs(attn.sum(-1) - 2 ** 16) <= slack)
        assert attn.min() >= 0
        upper = np.triu(np.ones((T, T), bool), 1)
        assert (not causal) or np.all(attn[:, upper] == 0)
        if causal:   # a single attended token: attn = g r 2**-(16 + L) = 1 within rho
            assert np.all(np.abs(attn[:, 0, 0] - 2 ** 16) <= rho * 2 ** 16 + 0.5)


# ---------------------------------------------------------------------------------------------
# The error budget against the float model

def measure(case, config=CONFIG):
    result = attention_fixed(case, config)
    ref = attention_float(dict(case, mode="analytic"))
    v_max = np.abs(case["v"]).max()
    return (result, np.abs(result["attn"] - ref["attn"]).max(),
            np.abs(result["out"] - ref["out"]).max() / v_max, v_max)


ROWS = []


@pytest.mark.parametrize("mode", ["analytic", "ode-drive", "ode-pairwise"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", ["kws", "sva"])
def test_measured_error_is_within_the_derived_budget(shape, causal, mode):
    """Measured |fixed - float analytic| against the budget (actual and worst-case input
    quantization) and the issue's targets; prints the table."""
    for p in (1, 2, 4):
        case = random_case(shape, seed=21, causal=causal, mode=mode, p=p, **ode(mode))
        result, attn_err, out_err, v_max = measure(case)
        budget = error_budget(case, result=result)
        worst = error_budget(case, result=result, inputs="worst")
        assert result["converged"].all()
        assert attn_err <= budget["attn"] <= worst["attn"]
        assert out_err * v_max <= budget["out"] <= worst["out"]
        line = (f"{shape:4s} causal={causal:d} {mode:12s} p={p}  attn {attn_err / ATTN_TARGET:6.3f}"
                f" budget {budget['attn'] / ATTN_TARGET:6.3f} (worst inputs "
                f"{worst['attn'] / ATTN_TARGET:5.2f})  out {out_err / OUT_TARGET:6.3f} budget "
                f"{budget['out'] / v_max / OUT_TARGET:6.3f} "
                f"(worst {worst['out'] / v_max / OUT_TARGET:5.2f})"
                f"   [x target]")
        print(line)
        ROWS.append(line)
        # The measurement meets the targets in every mode, and the derived budget does where
        # the formats allow it (module docstring): the analytic mode and the drive form. The
        # pairwise engine's 16-bit couplings (an exponent per row) leave its budget above
        # the target at p = 4 (1.3x on kws and sva).
        assert attn_err <= ATTN_TARGET and out_err <= OUT_TARGET, line
        if mode != "ode-pairwise":
            assert budget["meets_targets"], line
        # The budget is informative: within 25x of the measurement for the attention.
        assert budget["attn"] <= 25 * max(attn_err, 2 ** -16)


def test_pairwise_budget_is_limited_by_the_engines_couplings():
    case = random_case("kws", seed=21, causal=True, mode="ode-pairwise", p=4, **PAIRWISE)
    result = attention_fixed(case)
    budget = error_budget(case, result=result)
    drive_budget = error_budget(dict(case, mode="ode-drive"))
    terms = budget["terms"]
    assert not budget["meets_targets"] and drive_budget["meets_targets"]
    assert terms["engine_target"] > max(terms["detector"], terms["drive_angle"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["analytic", "ode-drive", "ode-pairwise"])
def test_budget_over_many_seeds(mode):
    worst_ratio, worst_measured = 0.0, 0.0
    for shape in ("kws", "sva"):
        for causal in (True, False):
            for seed in range(6):
                for p in (1, 4):
                    case = random_case(shape, seed=seed, causal=causal, mode=mode, p=p,
                                       **ode(mode))
                    result, attn_err, out_err, v_max = measure(case)
                    budget = error_budget(case, result=result)
                    assert attn_err <= budget["attn"] and out_err * v_max <= budget["out"]
                    worst_ratio = max(worst_ratio, budget["attn"] / ATTN_TARGET)
                    worst_measured = max(worst_measured, attn_err / ATTN_TARGET)
    print(f"{mode}: largest budget {worst_ratio:.3f}, largest measured {worst_measured:.3f} "
          f"(x 2^-11)")
    if mode != "ode-pairwise":
        assert worst_ratio <= 1 and worst_measured <= 1


def test_budget_is_uninformative_when_the_detector_never_fired():
    # Three steps from random starts: no head is within 2**-14 rad yet.
    case = random_case("sva", seed=3, mode="ode-drive", dt=1.0, max_steps=3)
    result = attention_fixed(case)
    assert not result["converged"].any()
    assert np.all(result["steps"] == NOT_CONVERGED)
    assert error_budget(case, result=result)["attn"] >= 0.5
    assert error_budget(case)["attn"] < error_budget(case, result=result)["attn"]


# ---------------------------------------------------------------------------------------------
# Convergence, steps and start states

def test_steps_are_the_engine_run_count_for_every_token_of_a_head():
    case = random_case("kws", seed=5, mode="ode-drive", causal=False, **ODE)
    result = attention_fixed(case)
    steps = result["steps"]
    for head in range(2):
        assert len(set(steps[head].tolist())) == 1 and steps[head, 0] > 4
    assert steps[0, 0] != steps[1, 0]          # one engine run per head


@pytest.mark.parametrize("mode", ["ode-drive", "ode-pairwise"])
def test_the_angle_test_settles_a_small_drive_close_to_its_fixed_point(mode):
    # kws seed 18, head 1, row 2 has |hn| = 0.025: the velocity test that the angle test
    # replaced stopped it 1.9e-3 rad from psi (attn 1.12 x the target in both modes); the
    # angle test stops it within its budget's angle (1.1e-3 drive, 4.2e-3 pairwise) and
    # the case within the target (measured 0.20 and 0.32 of it).
    case = example_case("kws", 18, mode=mode)
    result, attn_err, out_err, _ = measure(case)
    fe = af.front_end(af.validate_fixed(case))
    hn = af.normalized_drive(fe)[1, 2] * 2.0 ** -16
    assert 0.02 < np.hypot(*hn) < 0.03
    psi = np.arctan2(fe.h[1, 2, 1], fe.h[1, 2, 0])
    theta = result["theta_int"][1, 2] * 2 * np.pi / 2 ** P
    angle = abs((theta - psi + np.pi) % (2 * np.pi) - np.pi)
    budget = error_budget(case, result=result)
    assert result["converged"].all() and angle <= budget["angle"][1, 2]
    assert angle < 6e-4            # measured: 3.2e-4 (drive), 5.5e-4 (pairwise)
    assert attn_err <= ATTN_TARGET and out_err <= OUT_TARGET


@pytest.mark.parametrize("shape, mode", [("kws", "ode-drive"), ("sva", "ode-pairwise")])
def test_the_case_defaults_settle_a_random_case_within_the_targets(shape, mode):
    # golden/attention.py's DEFAULTS (dt = 1, tol = 6e-5, max_steps = 4000), as
    # `oscarray attention --example` writes them: every head settles well before max_steps,
    # and this case meets the targets.
    case = example_case(shape, 0, mode=mode)
    assert (case["dt"], case["tol"], case["max_steps"]) == (1.0, 6e-5, 4000)
    assert af.angle_shift(case["tol"]) == 14
    result, attn_err, out_err, v_max = measure(case)
    assert result["converged"].all()
    assert 4 < result["steps"].max() <= case["max_steps"] // 20       # kws: 63, 97; sva: 37
    assert attn_err <= ATTN_TARGET and out_err <= OUT_TARGET
    budget = error_budget(case, result=result)
    assert attn_err <= budget["attn"] and out_err * v_max <= budget["out"]


@pytest.mark.parametrize("mode", ["ode-drive", "ode-pairwise"])
def test_warm_start_chains_tokens_through_the_accumulator(mode):
    # Every token has the same query and the same anchors' layout: the same fixed point, so
    # token i >= 1 starts settled and the detector stops after its 4 calm steps.
    rng = np.random.default_rng(6)
    T = 6
    q = np.tile(rng.standard_normal((1, 1, 8)), (1, T, 1))
    k = rng.standard_normal((1, T, 8))
    anchors = rng.standard_normal((1, T, 2))
    case = dict(q=q, k=k, v=rng.standard_normal((1, T, 8)), anchors=anchors, causal=False,
                mode=mode, init="warm", seed=2, **ode(mode))
    result = attention_fixed(case)
    steps = result["steps"][0]
    assert steps[0] > 4 and np.all(steps[1:] == 4)
    assert len(set(result["theta_int"][0].tolist())) <= 2     # one state (within 1 LSB)
    # and each token's result is within its budget
    ref = attention_float(dict(case, mode="analytic"))
    assert np.abs(result["attn"] - ref["attn"]).max() <= error_budget(case, result=result)["attn"]


def test_warm_start_gives_per_token_steps_within_the_budget():
    case = random_case("sva", seed=9, mode="ode-pairwise", init="warm", p=4, **PAIRWISE)
    result, attn_err, out_err, v_max = measure(case)
    budget = error_budget(case, result=result)
    assert len(set(result["steps"][0].tolist())) > 1
    assert attn_err <= budget["attn"] and out_err * v_max <= budget["out"]


def test_zero_init_starts_every_oscillator_at_phase_zero():
    case = random_case("sva", seed=9, mode="ode-drive", init="zero", dt=1.0, tol=1e-2,
                       max_steps=1)
    # One step from theta = 0: the increment is dt * Im(hn) = dt * hn_y (a rotation by 0).
    result = attention_fixed(case)
    fe = af.front_end(af.validate_fixed(case))
    hn = af.normalized_drive(fe)[0] * 2.0 ** -16
    turns = result["theta_int"][0] / 2 ** P
    moved = np.mod(turns + 0.5, 1) - 0.5
    assert np.allclose(moved * 2 * np.pi, hn[:, 1], atol=2e-4)


def test_exact_antipode_escapes_in_fixed_point_where_float_euler_stays():
    # Every anchor along -e_1, equal weights: psi = pi; the zero start is exactly antipodal.
    T = 3
    case = dict(q=np.zeros((1, T, 4)), k=np.ones((1, T, 4)), v=np.eye(T, 4)[None],
                anchors=np.tile([-1.0, 0.0], (1, T, 1)), causal=False, init="zero",
                dt=0.5, max_steps=3000)
    for mode in ("ode-drive", "ode-pairwise"):
        case.update(mode=mode, tol=ode(mode)["tol"])
        result = attention_fixed(case)
        assert result["converged"].all() and result["steps"].min() > 4
        theta = result["theta_int"][0] * 2 * np.pi / 2 ** P
        assert np.all(np.abs(theta - np.pi) <= error_budget(case, result=result)["angle"][0])
    # float Euler in the drive form sits on the antipode (golden/attention.py, edge cases)
    assert attention_float(dict(case, mode="ode-drive"))["steps"].max() == NOT_CONVERGED


def test_zero_drive_rows():
    # Anchors a and -a with equal weights (q = 0): h = 0 exactly in fixed point too.
    case = dict(q=np.zeros((1, 2, 4)), k=np.ones((1, 2, 4)), v=np.arange(8.0).reshape(1, 2, 4),
                anchors=np.array([[[1.0, 0.0], [-1.0, 0.0]]]), causal=False)
    result = attention_fixed(case)
    assert not result["h_int"].any()
    assert np.all(result["theta_int"] == 0)                     # x* = e_1, as the float model
    np.testing.assert_allclose(result["attn"], attention_float(case)["attn"], atol=2.0 ** -14)
    for mode in ("ode-drive", "ode-pairwise"):
        ode_result = attention_fixed(dict(case, mode=mode, init="random", seed=4, **ode(mode)))
        start = af._initial_acc(af.validate_fixed(dict(case, mode=mode, seed=4)), CONFIG)
        assert np.all(ode_result["steps"] == 0)                 # never moves
        shift = CONFIG.acc_bits - P
        start_phase = (start.astype(np.int64) + 2 ** (shift - 1) >> shift) % 2 ** P  # R(., A-P)
        assert ode_result["theta_int"].tolist() == start_phase.tolist()


def partial_zero_case(mode):
    """Causal, q = 0 and anchors +e_1, -e_1 alternating: rows 1 and 3 have h = 0 exactly,
    rows 0 and 2 do not (the zero rows share an engine run with the others)."""
    case = random_case((1, 4, 8, 2), seed=7, causal=np.array(True), p=np.array(2),
                       mode=mode, **ode(mode))
    case["q"] = np.zeros_like(case["q"])
    case["anchors"] = np.array([[[1.0, 0.0], [-1.0, 0.0]] * 2])
    return case


@pytest.mark.parametrize("mode", ["ode-drive", "ode-pairwise"])
def test_zero_drive_rows_beside_driven_ones_let_the_run_settle(mode):
    # A zero row's coupling vector is (0, 0): the angle test counts it calm (it never
    # moves), else the run would never stop.
    case = partial_zero_case(mode)
    result = attention_fixed(case)
    assert af.front_end(af.validate_fixed(case)).zero[0].tolist() == [False, True, False, True]
    assert result["converged"].all()
    assert result["steps"][0, [1, 3]].tolist() == [0, 0]
    assert 4 <= result["steps"][0, 0] == result["steps"][0, 2] < case["max_steps"]


# ---------------------------------------------------------------------------------------------
# Refusals (before any work)

@pytest.fixture
def no_engine(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the engine ran")
    monkeypatch.setattr(af, "run_fixed", fail)


@pytest.mark.parametrize("change,message", [
    ({"anchors": np.ones((1, 9, 17))}, r"d_osc = 17 exceeds 16"),
    ({"sigma": "softplus"}, r"'softplus' is not in fixed point"),
    ({"sigma": "elu1"}, r"'elu1' is not in fixed point"),
    ({"q": np.ones((1, 9, 2048)), "k": np.ones((1, 9, 2048)), "v": np.ones((1, 9, 2048))},
     r"d_h = 2048 is too large"),
    ({"tol": 1e-12}, r"outside the array engine's angle tolerances"),
    ({"q": np.full((1, 9, 32), 300.0)}, r"cannot hold both"),
    ({"dt": 1e9}, r"array engine refuses"),
    ({"p": 3}, r"p: must be one of"),
    ({"mode": "exact"}, r"unknown mode"),
])
def test_refusals_name_the_problem(change, message, no_engine):
    case = random_case("sva", seed=1, mode="ode-pairwise", **ODE)
    case.update(change)
    with pytest.raises(AttentionCaseError, match=message):
        attention_fixed(case)


def test_fixed_point_refusals_are_attention_case_errors():
    assert issubclass(AttentionFixedError, AttentionCaseError)
    with pytest.raises(AttentionFixedError):
        AttentionFixedConfig(phase_bits=30)
    with pytest.raises(ValueError, match="inputs must be"):
        error_budget(random_case("sva"), inputs="typical")


def test_drive_shift_is_the_largest_that_keeps_every_drive_in_the_rotation_input():
    rng = np.random.default_rng(7)
    limit = ((1 << 17) - 1) ** 2
    for scale in (2 ** 16, 2 ** 12, 300, 3):
        hn = rng.integers(-scale, scale + 1, size=(20, 2))
        k = af.drive_shift(hn)
        length2 = (hn ** 2).sum(axis=-1) << (2 * k)
        assert length2.max() <= limit < (length2.max() << 2)
    assert af.drive_shift(np.zeros((3, 2), np.int64)) == 0
    assert af.drive_shift(np.array([[1 << 16, 0]])) == 0     # |hn| = 1: no room to shift


def test_ode_drive_hands_the_engine_hn_shifted_by_drive_shift():
    case = random_case("sva", seed=2, mode="ode-drive", causal=True, **ODE)
    checked = af.validate_fixed(case)
    fe = af.front_end(checked)
    hn = af.normalized_drive(fe)[0]
    (run,) = af.engine_cases(checked, fe)
    k = af.drive_shift(hn)
    assert np.array_equal(run.quantized.drive, hn << k)
    assert run.quantized.e == af.FRAC + k - run.quantized.config.frac_bits


@pytest.mark.parametrize("mode", ["ode-drive", "ode-pairwise"])
def test_engine_constants_are_the_loaders_scales_at_the_runs_exponent(mode):
    # The hardware gets d, s_ref and a from the host and adds its run's exponent to s_ref:
    # k (drive), e - t (pairwise). That must be what the engine's loader chose.
    for seed in range(4):
        case = af.validate_fixed(random_case("sva", seed=seed, mode=mode, dt=0.7, tol=7e-5,
                                             max_steps=50))
        fe = af.front_end(case)
        constants = af.engine_constants(case)
        for run in af.engine_cases(case, fe):
            q = run.quantized
            assert (q.d, q.angle_shift) == (constants["d"], constants["angle_shift"])
            if mode == "ode-drive":
                assert q.s == constants["s_ref"] + af.drive_shift(af.normalized_drive(fe)[0])
            else:
                assert q.s == constants["s_ref"] + q.e - q.t
