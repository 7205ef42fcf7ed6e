"""Paper A's oscillator attention at d_osc > 2 in fixed point: the Lohe flow's fixed point.

At d_osc > 2 each free oscillator is a unit vector x_i on the sphere S^(d_osc-1), and the
attracting fixed point of dx_i/dt = (I - x_i x_i^T) h_i is x*_i = h_i / |h_i|. This module is
the bit-exact specification of the analytic mode there: the front end (steps 0-5 of
golden/attention_fixed.py: q, k, v and anchors quantized, scores, W, h_i = sum_j W_ij a_j,
every integer as at d_osc = 2; only h has d_osc components) and the readout (steps 9-11) are
attention_fixed's, used as they are; what differs is the state (step 6) and the unit vector
(step 8), which at d_osc = 2 are a vectoring CORDIC and a rotation:

 6'. The sphere normalizer, per row: n_i = bitlen(max_c |h_ic|) - 16 and hs = R(h_i, n_i) (a
     left shift, exact, when n_i <= 0), so max_c |hs_c| is in [2**15, 2**16];
     Q_i = sum_c hs_c**2 (below d_osc 2**32); N_i = isqrt(Q_i 4**G), G = NORM_GUARD = 8
     guard bits (floor of the exact square root: a digit-by-digit root, one result bit per
     clock in hardware, no multiplier); (r_i, L_i) = reciprocal(N_i) (step 5's divide-CORDIC
     reciprocal); x_ic = R(hs_c r_i, 32 + L_i - G - 16), the unit vector in Q2.16.
     h_i = 0 exactly (a zero drive) gives x_i = e_1 (2**16, 0, ...), as the float model.
 8'. x_i is the unit vector itself: no rotation.
Decided: a square root and one reciprocal per row, then d_osc multiplies, never a divider per
component, and no CORDIC chain of d_osc - 1 Givens rotations (its angle errors add up per
rotation, and its readout would need the inverse chain per row).

Refused (AttentionFixedError, before any work): the ODE modes at d_osc > 2 (the Lohe flow's
Euler steps with renormalization are not in fixed point yet: only its fixed point is), and
d_osc > MAX_D_OSC (Q_i 4**G must stay at most 2**52, where float64's square root is exact
enough for `isqrt`'s correction steps and int64 holds it).

Error budget (error_budget): the reference is attention_float (analytic: x* = h / |h|).
Inputs enter as in attention_fixed's budget ("actual" or "worst"), the head's arithmetic with
its worst case. chord(e) = 2 sin(asin(e) / 2) bounds |u/|u| - v/|v|| when |u - v| <= e |v|
(2 when e >= 1). Per row i:
  drive     center c_i = sum_j W~_ij a^_j (actual inputs; "worst": h_i); its direction's
            distance |c/|c| - h/|h|| (actual; 0 for "worst") plus chord(E_i / |c_i|), E_i =
            sum_j rho_w_ij |a^_j| (+ sum_j |W~ - W|_ij (1 + |a^ - a|_j) + W_ij |a^ - a|_j
            for "worst"): the W rounding's (and the inputs') perturbation of h.
  normalize chord(sqrt(d_osc) / 2 / 2**15) when n_i > 0 (hs's rounding, |hs| >= 2**15);
            the norm: N_i = |hs| 2**G (1 - e_N), 0 <= e_N <= 2**-(15 + G), and
            r 2**-(32+L) N_i = 1 + e_r, |e_r| <= rho (reciprocal_error), so before its final
            rounding x = (hs / |hs|) 2**16 (1 + e_x) with |e_x| <= (1 + rho) / (1 - e_N) - 1;
            the rounding adds sqrt(d_osc) / 2 LSB. eps_x_i = the sum of these (a distance
            between vectors, in units of 1), 2 for a row whose drive is zero in one model and
            not in the other.
  readout   per entry, cos_ij = x_i . a^_j to within e_c = eps_x_i |a^_j| + |a^_j - a_j| +
            LSB/2 (the dot's rounding); then attention_fixed's numerator, ratio, reciprocal and
            rounding terms ((b) there) with no separate rotation term (a): the state's error
            is counted entry by entry, without the derivative's cancellations.
  out       sum_j (that)_ij |v^_jd| + |sum_j A_ij (v^_jd - v_jd)| + 2**-(e_v + 1).
Measured versus budget: tests/test_attention_sphere.py (TinyStories, d_osc = 8; the sva
shape with d_osc = 4).
"""

from __future__ import annotations

import math

import numpy as np

from .attention import fixed_point, zero_drive_rows
from .attention_fixed import (
    ATTN_TARGET,
    DEFAULT_CONFIG,
    FRAC,
    INPUTS,
    OUT_TARGET,
    AttentionFixedConfig,
    AttentionFixedError,
    _shift,
    front_end,
    input_terms,
    normalize_shift_vector,
    readout_fixed,
    readout_terms,
    reciprocal,
    reciprocal_error,
)

__all__ = ["NORM_GUARD", "MAX_D_OSC", "check_sphere", "isqrt",
           "sphere_state", "attention_sphere", "error_budget"]

NORM_GUARD = 8          # G: fraction bits of the norm N = |hs| 2**G
MAX_D_OSC = 16          # Q 4**G <= 16 * 2**32 * 2**16 = 2**52


def check_sphere(case) -> None:
    """The refusals of d_osc > 2 in fixed point (module docstring), for a validated case."""
    if case.d_osc > MAX_D_OSC:
        raise AttentionFixedError(f"anchors: d_osc = {case.d_osc} exceeds {MAX_D_OSC} (the "
                                  f"sphere normalizer's square root holds 2**52)")
    if case.mode != "analytic":
        raise AttentionFixedError(
            f"mode: {case.mode!r} at d_osc = {case.d_osc} is not in fixed point yet (the Lohe "
            f"flow's Euler steps on the sphere; only its fixed point, mode 'analytic', is)")


def isqrt(values) -> np.ndarray:
    """floor(sqrt(v)) of non-negative integers up to 2**52, exactly (float64's root, then
    corrected by whole steps)."""
    values = np.asarray(values, np.int64)
    root = np.floor(np.sqrt(values.astype(np.float64))).astype(np.int64)
    root = np.where(root * root > values, root - 1, root)
    return np.where((root + 1) * (root + 1) <= values, root + 1, root)


def sphere_state(h, config: AttentionFixedConfig = DEFAULT_CONFIG) -> np.ndarray:
    """x_i in Q2.16 (..., d) from the integer drives h (..., d): step 6' of the module
    docstring; e_1 for a zero drive."""
    hs, _ = normalize_shift_vector(h)
    norm = isqrt((hs * hs).sum(axis=-1) << (2 * NORM_GUARD))
    r, L = reciprocal(config, norm)
    x = _shift(hs * r[..., None], (32 + L - NORM_GUARD - FRAC)[..., None])
    e1 = np.zeros(h.shape[-1], np.int64)
    e1[0] = 1 << FRAC
    return np.where((norm == 0)[..., None], e1, x)


def attention_sphere(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """attention_fixed's result for a validated case at d_osc > 2 (analytic): the same keys,
    with theta_int and phi_int absent (no phases on the sphere) and x_int (H, T, d_osc)."""
    check_sphere(case)
    fe = front_end(case, config)
    x = sphere_state(fe.h, config)
    _, attn, out, g, _ = readout_fixed(x, fe, case.p, config, kind="vector")
    steps = np.zeros((case.heads, case.tokens), np.int64)
    scales = {"q": fe.e_q, "k": fe.e_k, "v": fe.e_v, "qk_bits": config.qk_bits,
              "anchors": FRAC, "score_constant": fe.score_c,
              "score_constant_bits": fe.score_bits, "w": fe.e_w.tolist(),
              "relu_eps_int": fe.eps.tolist(), "h": (fe.e_w + FRAC).tolist(), "x": FRAC,
              "attn": FRAC, "out": fe.e_v, "norm_guard_bits": NORM_GUARD, "engine": []}
    return {"attn": attn * 2.0 ** -FRAC, "out": out * 2.0 ** -fe.e_v,
            "x_star": x * 2.0 ** -FRAC, "steps": steps, "attn_int": attn, "out_int": out,
            "x_int": x, "anchor_int": fe.a, "w_int": fe.w, "h_int": fe.h, "g_int": g,
            "converged": np.ones((case.heads, case.tokens), bool), "scales": scales}


def chord(ratio) -> np.ndarray:
    """The largest |u/|u| - v/|v|| with |u - v| <= ratio |v|: 2 sin(asin(ratio) / 2), 2 from
    ratio 1 on."""
    ratio = np.asarray(ratio, np.float64)
    return np.where(ratio < 1, 2 * np.sin(np.arcsin(np.minimum(ratio, 1.0)) / 2), 2.0)


def error_budget(case, config: AttentionFixedConfig = DEFAULT_CONFIG,
                 inputs: str = "actual") -> dict:
    """Bounds on |attn - attn_float| and |out - out_float| (module docstring) for a validated
    case at d_osc > 2: attention_fixed.error_budget's keys (angle: None; eps_x (H, T), the
    bound on |x_i - x*_i|)."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
    check_sphere(case)
    fe = front_end(case, config)
    worst = inputs == "worst"
    lsb = 2.0 ** -FRAC
    d_osc = case.d_osc
    t = input_terms(case, fe, worst)
    h = t.W @ t.a_f
    # The float model's zero drives (|h| <= ZERO_DRIVE_RTOL sum W: x* = e_1 there).
    zero_float = zero_drive_rows(t.W, h)
    x_f = fixed_point(h, zero_float)

    # The drive's direction.
    a_len = np.linalg.norm(t.a_hat, axis=-1)[:, None, :]          # (H, 1, T)
    if worst:
        center = h
        offset = np.zeros(h.shape[:-1])
        spread = ((t.e_in + t.rho_w) * (1 + t.d_a[:, None, :])).sum(-1) \
            + (t.W * t.d_a[:, None, :]).sum(-1)
    else:
        center = t.W_t @ t.a_hat
        offset = np.linalg.norm(fixed_point(center) - x_f, axis=-1)
        spread = (t.rho_w * a_len).sum(-1)
    c_norm = np.linalg.norm(center, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        front = offset + chord(np.where(c_norm > 0, spread / np.where(c_norm > 0, c_norm, 1),
                                        np.inf))

    # The normalizer's arithmetic.
    _, n = normalize_shift_vector(fe.h)
    shift_term = np.where(n > 0, chord(math.sqrt(d_osc) / 2 * 2.0 ** -15), 0.0)
    rho = reciprocal_error(config)
    e_norm = 2.0 ** -(15 + NORM_GUARD)
    scale_term = (1 + rho) / (1 - e_norm) - 1
    rounding = math.sqrt(d_osc) / 2 * lsb
    eps_x = front + shift_term + scale_term + rounding
    zero_fixed = fe.zero
    eps_x = np.where(zero_fixed & zero_float, rounding, eps_x)
    eps_x = np.where(zero_fixed != zero_float, 2.0, eps_x)
    eps_x = np.minimum(eps_x, 2.0)

    # The readout, entry by entry at the state.
    u = np.maximum(0.0, 1 + np.einsum("hic,hjc->hij", x_f, t.a_f))
    g = np.where(fe.mask, u ** case.p, 0.0)
    S = g.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        A_f = np.where(S > 0, g / np.where(S > 0, S, 1), 0.0)
    if worst:
        a_len = 1 + math.sqrt(d_osc) / 2 * lsb
    e_c = eps_x[..., None] * a_len + t.d_a[:, None, :] + 0.5 * lsb
    e_attn, e_rest, e_g = readout_terms(case.p, fe.mask, np.minimum(2.0, u + e_c), e_c, A_f,
                                        S, 0.0, rho)

    # out = R(attn v^, 16).
    v_hat = np.abs(case.v) + t.d_v
    if worst:
        v_term = t.d_v.max(axis=1)[:, None, :]
    else:
        v_term = np.abs(np.einsum("hij,hjd->hid", A_f, fe.v * 2.0 ** -fe.e_v - case.v))
    e_out = (np.einsum("hij,hjd->hid", e_rest, v_hat) + v_term).max(-1) \
        + 2.0 ** -(fe.e_v + 1)
    v_max = float(np.abs(case.v).max())
    attn_bound, out_bound = float(e_attn.max()), float(e_out.max())
    return {"attn": attn_bound, "out": out_bound, "attn_target": ATTN_TARGET,
            "out_target": OUT_TARGET * v_max, "inputs": inputs,
            "meets_targets": attn_bound <= ATTN_TARGET and out_bound <= OUT_TARGET * v_max,
            "attn_rows": e_attn.max(-1), "out_rows": e_out, "angle": None, "eps_x": eps_x,
            "terms": {"w_input": float(t.e_in.max()), "w_rounding": float(t.rho_w.max()),
                      "anchor": float(t.d_a.max()), "drive_direction": float(front.max()),
                      "normalizer": float(shift_term.max() + scale_term + rounding),
                      "state": float(eps_x.max()), "cos": float(e_c.max()),
                      "numerator": float(e_g.max()), "reciprocal": rho}}
