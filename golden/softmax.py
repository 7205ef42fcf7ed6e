"""Softmax attention on the oscillator head's front end: float model and bit-exact fixed point.

The reference the oscillator heads are measured against (issue 5): the same case as paper A's
head (golden/attention.py; anchors optional and ignored, and so are sigma, p, mode and the ODE
entries), the same Q/K front end and value path (golden/attention_fixed.py), with the
oscillator stage replaced by

    A_ij = exp(s_ij - max_j s_ij) / sum_j exp(s_ij - max_j s_ij),  s_ij = q_i . k_j / sqrt(d_h)

over the attended j (j <= i when causal), out_i = sum_j A_ij v_j.

Fixed point (the specification of hdl/attention.py's "softmax" mode)
--------------------------------------------------------------------
R(v, s) = floor((v + 2**(s-1)) / 2**s), round half up, as everywhere.
 0. Host: q, k at B bits, v at 18 (`quantize_tensor`, exponents e_q, e_k, e_v). The constant
    c = R(2**C log2(e) / sqrt(d_h)) with the C that puts c in [2**16, 2**17) (17 bits
    unsigned): log2(e) is folded in, so the head needs no multiply beyond the score's.
 1. raw_ij = sum_d q_id k_jd, exact (attention_fixed step 1).
 2. m_ij = raw_ij c, exact and signed: m 2**-F = s_ij log2(e), F = e_q + e_k + C.
 3. M_i = max of m_ij over the attended j.
 4. y_ij = min(R(M_i - m_ij, F - 16), Y_MAX): the base-2 exponent with 16 fraction bits,
    saturated at 64 (where 2**-y is 0 at every width used). A case with F < 16 (scores whose
    LSB is coarser than 2**-16: |q| |k| beyond about 2**40) is refused.
 5. g_ij = exp2_neg(y_ij, 18) (golden/exp2.py: 2**-y in Q1.18, g = 2**18 at the row's max),
    0 where not attended.
 6. S_i = sum_j g_ij >= 2**18; (r_i, L_i) = reciprocal(S_i); attn_ij = R(g_ij r_i, 16 + L_i)
    (Q1.16) and out_id = R(sum_j attn_ij v_jd, 16): attention_fixed steps 10-11, unchanged.

Error budget (error_budget) against softmax_float, per entry
------------------------------------------------------------
A~ is the float softmax of the quantized scores (m 2**-F ln 2: the host's rounding of q, k
and c, entered with its actual value |A~ - A|). The head then computes, with G = 2**18,
g_j = G E_j (1 + d_j) + err_j, E_j = 2**-(M - m_j) 2**-F exactly:
    |d_j| <= delta = (1 + t) 2**(2**-17) - 1: y's rounding (half an LSB of 2**-16, a
             factor 2**(+-2**-17)) and the tables' relative error t (exp2_relative_error)
    |err_j| <= 1/2 (the output rounding of exp2_neg; y's saturation at 64 adds G 2**-64)
With sum E >= 1 (the max term is exactly 1, y = 0), the ratio g_j / S is within
    e_ratio = (2 delta A~_j + (1 + T A~_j) / (2G)) / (1 - delta - T / (2G))
of A~_j; the reciprocal multiplies it by (1 + rho) (attention_fixed.reciprocal_error) and
attn rounds by 2**-17:
    |attn - A| <= |A~ - A| + e_ratio + (A~ + e_ratio) rho + 2**-17.
out: sum_j |attn_j - A_j| |v^_j| + |sum_j A_j (v^_j - v_j)| + 2**-(e_v + 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from .attention import AttentionCase, AttentionCaseError, validate_case
from .attention_fixed import (
    ATTN_TARGET,
    DEFAULT_CONFIG,
    FRAC,
    MAX_TOKENS,
    OUT_TARGET,
    AttentionFixedConfig,
    AttentionFixedError,
    formats,
    quantize_tensor,
    reciprocal,
    reciprocal_error,
)
from .exp2 import Y_FRAC, Y_MAX, exp2_neg, exp2_relative_error

__all__ = ["MECHANISM", "EXP_FRAC", "softmax_case", "softmax_float", "softmax_constant",
           "softmax_front_end", "softmax_fixed", "error_budget"]

MECHANISM = "softmax"           # the case's mode once validated here
EXP_FRAC = 18                   # g = 2**-y in Q1.18
IGNORED = ("anchors", "sigma", "p", "mode", "dt", "max_steps", "tol", "init", "seed")


def softmax_case(arrays) -> AttentionCase:
    """An attention case for softmax: validate_case's checks of q, k, v and causal; anchors
    may be left out (the ignored entries are checked only when given). Returns the
    AttentionCase with mode "softmax"."""
    if isinstance(arrays, AttentionCase):
        return replace(arrays, mode=MECHANISM)
    if not isinstance(arrays, Mapping):
        raise AttentionCaseError(f"a case must be a mapping of arrays, not {type(arrays)}")
    arrays = dict(arrays)
    if arrays.get("anchors") is None and arrays.get("q") is not None:
        q = np.asarray(arrays["q"])
        if q.ndim == 3:                     # a placeholder; validate_case reports a bad q
            arrays["anchors"] = np.ones(q.shape[:2] + (2,))
    if arrays.get("mode") is not None and str(np.asarray(arrays["mode"])) == MECHANISM:
        arrays.pop("mode")
    return replace(validate_case(arrays), mode=MECHANISM)


def _mask(tokens: int, causal: bool) -> np.ndarray:
    return np.tril(np.ones((tokens, tokens), bool)) if causal \
        else np.ones((tokens, tokens), bool)


def _softmax_rows(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax over the last axis where mask, 0 elsewhere (every row has an attended j)."""
    peak = np.max(np.where(mask, scores, -np.inf), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(np.where(mask, scores - peak, 0.0)), 0.0)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_float(case) -> dict:
    """attn (H, T, T) and out (H, T, d_h) in float64."""
    case = softmax_case(case)
    scores = np.einsum("hid,hjd->hij", case.q, case.k) / math.sqrt(case.d_h)
    attn = _softmax_rows(scores, _mask(case.tokens, case.causal))
    return {"attn": attn, "out": attn @ case.v}


def softmax_constant(d_h: int) -> tuple[int, int]:
    """(c, C): c = R(2**C log2(e) / sqrt(d_h)) in [2**16, 2**17)."""
    scale = math.log2(math.e) / math.sqrt(d_h)
    c_bits = FRAC - math.floor(math.log2(scale))
    while math.floor(2.0 ** c_bits * scale + 0.5) >= 1 << (FRAC + 1):
        c_bits -= 1
    while math.floor(2.0 ** c_bits * scale + 0.5) < 1 << FRAC:
        c_bits += 1
    return math.floor(2.0 ** c_bits * scale + 0.5), c_bits


def _round_nonnegative(d: np.ndarray, s: int) -> np.ndarray:
    """R(d, s) for 0 <= d < 2**63 and s >= 0 without int64 overflow: (d >> s) + bit s-1."""
    if s == 0:
        return d
    if s >= 64:
        return np.zeros_like(d)
    return (d >> s) + ((d >> (s - 1)) & 1)


def softmax_front_end(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """Steps 0-5: the quantized inputs (q, k, v, e_q, e_k, e_v), c, C, F, the scores m,
    the mask, y and g. Refusals (AttentionFixedError) before any work."""
    case = softmax_case(case)
    score_bits = formats(case.d_h, case.tokens, 1, config)["score (raw * c)"]
    if score_bits > 63:
        raise AttentionFixedError(
            f"q: d_h = {case.d_h} is too large for {config.qk_bits}-bit q and k: the score "
            f"product needs {score_bits} bits, more than 63")
    if case.tokens > MAX_TOKENS:
        raise AttentionFixedError(f"q: T = {case.tokens} tokens exceeds {MAX_TOKENS}")
    q, e_q = quantize_tensor(case.q, config.qk_bits)
    k, e_k = quantize_tensor(case.k, config.qk_bits)
    v, e_v = quantize_tensor(case.v)
    c, c_bits = softmax_constant(case.d_h)
    full = e_q + e_k + c_bits
    if full < Y_FRAC:
        raise AttentionFixedError(
            f"q, k: scores up to {np.abs(case.q).max() * np.abs(case.k).max():.3g} per "
            f"component product: the score's LSB (2**-{full} in log2 units) is coarser than "
            f"the exponent's 2**-{Y_FRAC}")
    mask = _mask(case.tokens, case.causal)
    scores = np.einsum("hid,hjd->hij", q, k) * c
    peak = np.max(np.where(mask, scores, np.iinfo(np.int64).min), axis=-1, keepdims=True)
    y = np.minimum(_round_nonnegative(np.where(mask, peak - scores, 0), full - Y_FRAC), Y_MAX)
    g = np.where(mask, exp2_neg(y, EXP_FRAC), 0)
    return {"case": case, "q": q, "k": k, "v": v, "e_q": e_q, "e_k": e_k, "e_v": e_v,
            "c": c, "c_bits": c_bits, "full": full, "m": scores, "mask": mask, "y": y, "g": g}


def softmax_fixed(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """Run a case in fixed point: attn (H, T, T), out (H, T, d_h) decoded, and the integers
    attn_int (Q1.16), out_int (v's exponent), g_int (Q1.18), y_int, m_int, scales."""
    fe = softmax_front_end(case, config)
    total = fe["g"].sum(axis=-1)
    r, L = reciprocal(config, total)
    attn = _shift_right(fe["g"] * r[..., None], (FRAC + L)[..., None])
    out = _shift_right(attn @ fe["v"], FRAC)
    scales = {"q": fe["e_q"], "k": fe["e_k"], "v": fe["e_v"], "qk_bits": config.qk_bits,
              "score_constant": fe["c"], "score_constant_bits": fe["c_bits"],
              "score_log2": fe["full"], "y": Y_FRAC, "g": EXP_FRAC, "attn": FRAC,
              "out": fe["e_v"]}
    return {"attn": attn * 2.0 ** -FRAC, "out": out * 2.0 ** -fe["e_v"], "attn_int": attn,
            "out_int": out, "g_int": fe["g"], "y_int": fe["y"], "m_int": fe["m"],
            "scales": scales}


def _shift_right(v, s):
    """R(v, s) for s >= 0 (array shifts): the values here are far below 2**62."""
    v = np.asarray(v, np.int64)
    s = np.broadcast_to(np.asarray(s, np.int64), v.shape)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(v + half, s)


def error_budget(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """The module docstring's bound on |attn - attn_float| and |out - out_float|, from the
    case's actual input quantization; attn_rows (H, T) and out_rows (H, T) per row."""
    fe = softmax_front_end(case, config)
    case = fe["case"]
    mask = fe["mask"]
    a_float = softmax_float(case)["attn"]
    scores_q = fe["m"] * 2.0 ** -fe["full"] * math.log(2)        # quantized scores, nats
    a_tilde = _softmax_rows(scores_q, mask)
    e_in = np.abs(a_tilde - a_float)
    grid = 1 << EXP_FRAC
    delta = (1 + exp2_relative_error()) * 2.0 ** (2.0 ** -(Y_FRAC + 1)) - 1
    slack = case.tokens / (2 * grid)
    err = 0.5 + grid * 2.0 ** -64                  # exp2_neg's rounding, y's saturation
    e_ratio = (2 * delta * a_tilde + (1 + case.tokens * a_tilde) * err / grid) \
        / (1 - delta - slack)
    rho = reciprocal_error(config)
    e_attn = np.where(mask, e_in + e_ratio + (a_tilde + e_ratio) * rho + 2.0 ** -(FRAC + 1),
                      0.0)
    v_hat = fe["v"] * 2.0 ** -fe["e_v"]
    e_out = np.einsum("hij,hjd->hid", e_attn, np.abs(v_hat)) \
        + np.abs(np.einsum("hij,hjd->hid", a_float, v_hat - case.v)) + 2.0 ** -(fe["e_v"] + 1)
    v_max = float(np.abs(case.v).max())
    attn_bound, out_bound = float(e_attn.max()), float(e_out.max())
    return {"attn": attn_bound, "out": out_bound, "attn_target": ATTN_TARGET,
            "out_target": OUT_TARGET * v_max,
            "meets_targets": attn_bound <= ATTN_TARGET and out_bound <= OUT_TARGET * v_max,
            "attn_rows": e_attn.max(-1), "out_rows": e_out.max(-1),
            "terms": {"inputs": float(e_in.max()), "ratio": float(e_ratio.max()),
                      "delta": delta, "reciprocal": rho}}
