"""Paper A's oscillator attention at d_osc = 2 in fixed point: the bit-exact specification.

(d_osc > 2, the analytic fixed point on the sphere: golden/attention_sphere.py, which reuses
this module's front end and readout; attention_fixed and error_budget hand such cases to it.)

Every integer below is what the RTL (Amaranth, later) must produce, bit for bit. The float
reference is golden/attention.py (attention_float); the array engine is golden/array_fixed.py,
used as it is. One rounding policy everywhere: R(v, s) = floor((v + 2**(s-1)) / 2**s), round
half up (golden/cordic.py's round_shift); R(v, s) with s <= 0 is the exact left shift
v * 2**-s. Every value rounded is below 2**62 in magnitude (the 63-bit score m_ij is the
widest), so R(v, s) = 0 for every s >= 63: right shifts are clamped to 63, which gives
exactly that 0 within 64-bit arithmetic (the shift F - e_w of step 3 has no upper bound: F
grows as q and k shrink). Values never wrap: every width below is derived (`formats`) so
that nothing saturates except where a step says so.

Scope and refusals (AttentionFixedError, a subclass of AttentionCaseError, raised by
validate_fixed / front_end / the engine's loader before any Euler step): d_osc > 16 and the
sphere flow's tol and dt formats (golden/attention_sphere.py), sigma "softplus" and "elu1"
(they need exponentials of scores outside the hyperbolic CORDIC's range; only "relu_eps"),
d_h so large that the score product exceeds 63 bits (d_h > 128 with 20-bit q and k),
T > 2048, a row whose largest score leaves relu_eps's 1e-3 below one LSB of the 18-bit W
(scores above ~256), at d_osc = 2 a tol that rounds to an angle outside 2**-1 .. 2**-17,
and whatever the array engine's loader refuses (a dt whose step scale cannot be represented).
Every float-model check (validate_case) comes first.

Formats (AttentionFixedConfig: qk_bits B = 20, phase_bits P = 20, acc_bits A = 32)
--------------------------------------------------------------------------------------
    q, k      B-bit signed, one power-of-two exponent per tensor (all heads): e_q, e_k
    v         18-bit signed, exponent e_v per tensor
    anchors   parameters, prepared once on the host: unit vectors a_j in Q2.16 (18-bit) and
              phases phi_acc_j in A-bit accumulator units (the engine sees R(phi_acc, A - P))
    W         17-bit unsigned (<= 2**17 - 1), one exponent e_w per row (scale-free use below)
    angles    P-bit binary angles (2**P = one turn); the engine's accumulators A bits
    unit      (cos, sin), 1 + cos, attn, reciprocals: Q2.16 (value = integer / 2**16)
    out       19-bit signed, exponent e_v (the value of v)
The CORDICs are golden/cordic.py's with data_width 18 and phase_bits P (vector, rotate,
divide modes; N, G, H chosen there). `scales` in the result lists every exponent (value =
integer * 2**-exponent) and `formats` every register width.

The pipeline, in order (per head; i, j tokens; "attended" = j <= i when causal, else all)
-----------------------------------------------------------------------------------------
 0. Host conversion (float -> integer, once per case): x_int = floor(x 2**e + 1/2), e the
    largest exponent with every |x_int| <= 2**(bits-1) - 1 (an all-zero tensor: e = 0):
    q, k at B bits, v at 18. Anchors: a_j = floor(2**16 a / |a| + 1/2) per component,
    phi_acc_j = floor(2**A frac(atan2(a_y, a_x) / 2 pi) + 1/2) mod 2**A. The constant
    c = floor(2**C / sqrt(d_h) + 1/2), C = 16 + ceil(log2(d_h) / 2), so 2**16 <= c < 2**17;
    when d_h is a power of 4, c = 2**16 and the multiply is a shift (decided: one formula).
 1. raw_ij = sum_d q_id k_jd, exact (2(B-1) + ceil(log2 d_h) + 1 bits).
 2. m_ij = max(raw_ij, 0) * c, exact; relu(score_ij) = m_ij 2**-F, F = e_q + e_k + C.
 3. W, per row i over the attended j: e_w_i = the largest e with
    R(max_j m_ij, F - e) + eps_i(e) <= 2**17 - 1, eps_i(e) = floor(1e-3 2**e + 1/2) (host
    constant); W_ij = R(m_ij, F - e_w_i) + eps_i; W_ij = 0 where not attended. W exponents
    lie in [9, 26]: W_ij >= eps_i, so eps(e_w) <= 2**17 - 1 and e_w <= 26 (eps(26) = 67109,
    eps(27) = 134218); a row with eps(e_w) = 0, i.e. e_w <= 8 (eps(8) = 0, eps(9) = 1;
    scores above ~256), is refused (see the refusals above). (The row's largest score is
    needed first: two passes over the row, or T buffered scores.) Decided: a per-row
    exponent, because everything downstream is scale-free per row (the angle of h_i,
    h_i / sum_j W_ij, W_ij / sum_j W_ij); one exponent per head left rows of small scores
    (W ~ 1e-3) with 5 significant bits.
 4. h_i = sum_j W_ij a_j (x and y, exact; value h 2**-(e_w_i + 16)); s_i = sum_j W_ij. A row
    with h_i = (0, 0) exactly is a zero drive (the float model's zero_drive_rows).
 5. reciprocal(S) for S > 0 (rows of W, and the readout): L = bitlen(S) - 17,
    m = min(R(S, L), 2**17 - 1), r = z_out of the divide CORDIC (x = m, y = 2**16, z = 0),
    so r ~ 2**32 / m in Q2.16 and 1 / S ~ r 2**-(32 + L); S = 0 gives r = 0. Decided: one
    CORDIC division per row and then multiplies, never a divider per entry.
 6. The state theta_i (P bits), by mode:
    analytic   the normalize shift n_i = bitlen(max(|h_x|, |h_y|)) - 16 and (x, y) =
               R(h_i, n_i), so max(|x|, |y|) is in [2**15, 2**16]; theta_i = z_out of the
               vectoring CORDIC (x, y, z = 0); h = 0 gives theta = 0 (x* = e_1, as float).
    ode-drive  hn_i = R(h_i r_i, 32 + L_i) with (r_i, L_i) = reciprocal(s_i): h_i / s_i in
               Q2.16 (|hn| <= 1); the array engine's drive form, below.
    ode-pairwise kn_ij = R(W_ij r_i, 32 + L_i - e_i) = (W_ij / s_i) 2**e_i, e_i the largest
               exponent of row i with every |kn_ij| <= 2**15 - 1; zero-drive rows are 0; the
               array engine's pairwise form with 2T oscillators, below.
 7. (ODE modes) theta_i = R(acc_i, A - P) mod 2**P of the engine's final accumulator.
 8. x_i = the rotation CORDIC of (2**16, 0) by theta_i: (cos, sin) in Q2.16. Decided: one
    rotation per token and a dot product with the anchors (T rotations, 2 T^2 MACs), not a
    rotation per pair.
 9. u_ij = max(0, 2**16 + R(x_ix a_jx + x_iy a_jy, 16)) (1 + cos, Q2.16, 18 bits unsigned);
    g_ij = u (p = 1), R(u u, 16) (p = 2), R(g2 g2, 16) with g2 = R(u u, 16) (p = 4);
    g_ij = 0 where not attended.
10. S_i = sum_j g_ij; (r_i, L_i) = reciprocal(S_i); attn_ij = R(g_ij r_i, 16 + L_i)
    (Q1.16, 17 bits unsigned; S_i = 0 leaves the row zero, as the float model).
11. out_id = R(sum_j attn_ij v_jd, 16), value out 2**-e_v.

The ODE modes on the array engine (golden/array_fixed.py)
--------------------------------------------------------
ArrayFixedConfig(capacity N, phase_bits P, acc_bits A), omega = 0, the case's dt, max_steps
Euler steps at most, and the engine's angle test at 2**-a, a = `angle_shift(tol)`.
    ode-drive    one run per head: T free oscillators, drive = hn << k (`drive_shift`: the
                 largest k with max |hn|**2 4**k <= (2**17 - 1)**2), unit 2**-(16 + k)
                 (quantize_case's drive_exponent). The step scale is then D, s0 + k with
                 (D, s0) dt's at k = 0: the hardware finds k from a running max of squares,
                 never a square root.
    ode-pairwise one run per head: oscillators 0..T-1 free (the tokens), T..2T-1 pinned at
                 acc = phi_acc_j; K[i, T + j] = kn_ij 2**-e_i, every other K zero: the
                 engine's loader takes the rows' exponents as they are (its per-row coupling
                 exponent: e = min_i e_i, row shift e_i - e), so it re-expresses nothing.
    start        "random": the float model's draw (initial_state, the case's seed), theta in
                 [-pi, pi) to acc = floor(2**A frac(theta / 2 pi) + 1/2) mod 2**A; "zero":
                 acc = 0; "warm": one run per (head, token) with a single free oscillator
                 (drive: N = 1; pairwise: 1 + T), token 0 from the random draw of token 0,
                 token i from token i-1's final accumulator (all A bits: the engine's state).
    zero drives  a run whose drives are all exactly zero is not made (nothing would move).
    convergence  the engine's angle detector (golden/array_fixed.py, angle_shift a =
                 `angle_shift(tol)`: tol rounded to the nearest power of two, 6e-5 -> 2**-14):
                 stop once, for 4 consecutive steps, every free oscillator's coupling vector
                 in its own frame (x_i, y_i) (drive: the rotation of hn by -theta_i;
                 pairwise: (R(C_i, t), R(S_i, t)), C_i = sum_j kn_ij cos(phi_j - theta_i))
                 has x_i > 0 and |y_i| 2**a <= x_i: the state is within atan(2**-a) of the
                 coupling's direction (to the integers' resolution: with x below 2**a only
                 y = 0 passes, about (1/2 + rounding) / |x| rad), like the float model's
                 angle tol; a zero drive, (x, y) = (0, 0), is calm (it never moves).
                 Decided after measuring the velocity test this replaced (|increment| <
                 tol dt): it stops an oscillator with a small drive about tol / |hn_i| from
                 its fixed point, and at the default tol missed the attn target on 9 of 350
                 random kws cases (up to 3.6 times). Near equilibrium the P-bit phase may
                 step between the grid points around it (a limit cycle of a few LSB of y);
                 the detector fires when that cycle is within x 2**-a: at a = 15 (tol 3e-5)
                 the pairwise form missed it on 3 of 30 random kws cases' heads, at a = 14
                 on none.
    steps        steps[h, i] = the run's steps_taken if the detector fired, NOT_CONVERGED (-1)
                 if not: one engine run serves a whole head, so every token of a head reports
                 the head's count ("warm": per token, from its own run); zero-drive rows 0.
    antipode     the engine's nudge (golden/array_fixed.py) moves an oscillator that starts
                 exactly antipodal, where float Euler in the drive form stays (tested).

Result (attention_fixed): the float model's keys decoded from the integers (attn, out,
x_star = x / 2**16, steps) and attn_int, out_int, x_int, theta_int, phi_int, anchor_int,
w_int, h_int, g_int, converged (H, T), scales.

Error budget (error_budget): |attn - attn_float| and |out - out_float|
----------------------------------------------------------------------
The reference is attention_float in "analytic" mode (x* = h / |h|) for every mode, the same
case. Notation: psi_i = angle(h_i), phi_j the anchors' float angles, A, S, u = 1 + cos the float
readout, LSB = 2**-16, rho the reciprocal's relative error. The head's arithmetic enters with
its worst case; the host's input quantization (q, k, v, the anchors, eps, c) enters with its
actual value (inputs="actual", the default: it is a known function of the case) or with half
an LSB per element (inputs="worst", a bound for any data with these float values).
  W         W~_ij = relu(s^_ij) + eps^_i (s^ = q^.k^ c 2**-C exactly: the inputs' and the
            constants' rounding); the head rounds once: |W^ - W~| <= 2**-(e_w_i + 1) where a
            right shift rounds a positive score, else 0. "worst": |W~ - W| <= the score error
            sum_d (dq |k_jd| + |q_id| dk + dq dk) / sqrt(d_h) + |raw| |c 2**-C - 1/sqrt(d_h)|
            (zero where both scores are negative), plus |eps^ - 1e-3|.
  drive     h^_i = sum_j W^_ij a^_j: around the center c_i = sum_j W~_ij a^_j (or h_i), the
            perturbations have components along c_i at most E_par = sum_j |dW_ij| |a^_j|
            (+ sum_j W_ij |a^_j - a_j| for "worst") and across it at most E_perp =
            sum_j |dW_ij| |a^_j x c_i / |c_i|| (+ the same anchor term), so
            |angle(h^_i) - psi_i| <= |angle(c_i) - psi_i| + atan(E_perp / (|c_i| - E_par)).
  state     delta_i >= |theta_i - psi_i|, by mode:
            analytic  the drive term + asin(2**-0.5 2**-15) (normalize shift, |v| >= 2**15)
                      + the vectoring CORDIC's angle budget rescaled to |v| >= 2**15
                      (output + owed + rounding 2**-8 / |v|, in P-bit LSBs).
            ode-drive the drive term + asin(2**-0.5 LSB / |hn|_low) (hn's rounding) + the
                      detector: the last test saw x, y within e = rounding + rel |d| of
                      |d| (cos psi, sin psi) (psi = angle(d) - theta16, d the engine's drive
                      integers, rounding and rel the rotation CORDIC's absolute and relative
                      error terms) and |y| 2**a <= x, so |sin psi| <= 2**-a + (1 + 2**-a)
                      ((1/2 + rounding) / |d|_low + rel) and cos psi > -e / |d| (pi when that
                      does not pin psi to the near side), + one P-bit LSB + the last step
                      (dt 2**-a |hn| at most, + one accumulator LSB: the final phase versus
                      the one the detector saw).
            ode-pairwise the angle of V_i = sum_j kn_ij e^{i phi^_j} around sum_j W~_ij e^{i phi^_j}
                      (kn's rounding: 2**-(e_i+1) s_i / (1 - rho) per entry, along and across,
                      and W's rounding) + the detector: C_i and S_i are each within
                      (1/2 + rounding + 2**16 rel + 1 (sin's nudge)) per |k_ij| LSB of
                      2**16 V_i's parts in the oscillator's frame, and the row's sum shift
                      adds 2**(t + r_i - 1); with |R(S, t + r_i)| 2**a <= R(C, t + r_i) as
                      above, + one P-bit LSB + the last step.
            An oscillator that did not converge (result given), or a zero-drive row: pi.
  readout   (a) the state's error moves A_i(theta) along the exact curve:
            |A_ij(theta) - A_ij(psi)| <= |dA_ij/dtheta(psi)| delta + M2 delta**2 / 2, with
            the signed derivative (g' S - g S') / S**2 and M2 >= |A''| over |theta - psi| <=
            delta from per-entry bounds on g, g', g'' (u <= min(2, u + delta)) and
            S >= S - delta sum |g'|;
            (b) at the state theta, per entry: cos to within
            e_c = eps_x |a^_j| + |a^_j - a_j| + LSB/2 (eps_x = (rounding + 2**-0.5) LSB + rel,
            the rotation's (cos, sin) error); numerators e_g = e_c (p = 1),
            (2u + e_c) e_c + LSB/2 (p = 2), (2u**2 + e_g2) e_g2 + LSB/2 (p = 4); the ratio
            g^ / S^ - g / S <= (e_g (1 - A) + A (sum_k e_g - e_g)) / (S_lo - sum_k e_g)
            (maximized over A +- (a)); the reciprocal (A + (a) + ratio) rho with
            rho = (1 + B_div 2**-15) / (1 - 1.5 2**-16) - 1 (m's rounding and the divide
            CORDIC's budget B_div on a quotient >= 2**15); the final rounding LSB/2.
  out       |sum_j dA_ij/dtheta v_jd| delta + sum_j (M2 delta**2 / 2 + |dA/dtheta| delta
            |v^ - v|) |v^_jd| + sum_j (b)_ij |v^_jd| + |sum_j A_ij (v^_jd - v_jd)| + 2**-(e_v + 1).

Measured versus budget (random_case, seeds 0-5 and 21, p = 1, 2, 4; the largest over them;
attn: measured error and budgets in units of 2**-11; out: in units of 2**-8 max|v|; "worst" =
the budget with worst-case input rounding; ODE runs with dt = 1, tol = 6e-5 (the engine's
angle test at 2**-14); every measured value is within its budget; tests/test_attention_fixed.py
prints the seed-21 rows)

    | mode         | shape | causal | attn  | budget | worst | out   | budget | worst |
    |--------------|-------|--------|-------|--------|-------|-------|--------|-------|
    | analytic     | kws   | yes    | 0.105 | 0.346  | 0.87  | 0.010 | 0.065  | 0.16  |
    | analytic     | kws   | no     | 0.057 | 0.207  | 0.70  | 0.011 | 0.085  | 0.23  |
    | analytic     | sva   | yes    | 0.113 | 0.356  | 1.15  | 0.013 | 0.060  | 0.14  |
    | analytic     | sva   | no     | 0.066 | 0.293  | 0.87  | 0.008 | 0.052  | 0.11  |
    | ode-drive    | kws   | yes    | 0.131 |  0.833 |  1.16 | 0.020 |  0.100 |  0.21 |
    | ode-drive    | kws   | no     | 0.182 |  0.433 |  0.94 | 0.048 |  0.149 |  0.30 |
    | ode-drive    | sva   | yes    | 0.082 |  0.793 |  1.54 | 0.011 |  0.108 |  0.18 |
    | ode-drive    | sva   | no     | 0.118 |  0.531 |  1.13 | 0.015 |  0.075 |  0.14 |
    | ode-pairwise | kws   | yes    | 0.147 |  1.315 |  1.81 | 0.020 |  0.321 |  0.45 |
    | ode-pairwise | kws   | no     | 0.053 |  1.252 |  1.60 | 0.015 |  0.423 |  0.54 |
    | ode-pairwise | sva   | yes    | 0.175 |  1.317 |  2.11 | 0.021 |  0.157 |  0.24 |
    | ode-pairwise | sva   | no     | 0.032 |  0.689 |  0.87 | 0.008 |  0.094 |  0.12 |

What the targets need (max |attn - attn_float| <= 2**-11, max |out - out_float| <= 2**-8 max|v|)
-----------------------------------------------------------------------------------------------
The widths were chosen so that the derived budget (actual input rounding) meets both
targets in the analytic mode and the drive form on the kws and sva shapes (table): 20-bit q
and k (at 18 bits the budget reaches 0.77x in analytic mode and 1.2x in the drive form, the
worst-input budget 3.4x: the score's input rounding, amplified by 1 / |hn| in rows whose
drive nearly cancels), per-row W exponents, host-prepared anchors (preparing them with the
vectoring and rotation CORDICs adds ~2e-4 rad per anchor at P = 16), P = 20 (measured with
the velocity detector the engine had then: at P = 18 its floor forced a tol that took the
budget to 1.2x). With worst-case input rounding
the attn budget is up to 1.15x (analytic) and 1.6x (drive) the target at 20-bit q and k,
0.77x and 1.29x at 21 bits (d_h <= 32 then keeps the score product within 63 bits); the
out target is met with room everywhere (the pairwise form's budget at most 0.56x).
ode-pairwise meets both targets on every measured case, and its budget guarantees them at
p = 1 and 2 but not at p = 4 (1.3x). The array engine's couplings are 16 bits with an
exponent per row (e_i: each row's largest entry uses the 16 bits), and its pairwise sums
are shifted to use the update's whole 18 bits (`pairwise_sum_shift`). Before, one exponent
per matrix (a causal head's row 0 has W / s = 1, so every kn carried 2**-15 against entries
~1/T) turned a row whose anchors nearly cancel (small |hn|) by up to (T / 2 LSB) / |hn|: up
to 2.85x the attn target on 200 random kws cases (5 missed it; kws seed 21, causal, p = 4:
1.35x), sva 0.68x. The row exponents took that to one miss (kws seed 68, 1.47x); the rest
was the pairwise sum's rounding: R(S_i, t + r_i) had about |hn_i| 2**15 LSB along the
coupling vector, two bits short of the 18-bit range, and the angle test (y = 0 below
x = 2**a) stops anywhere within about 0.5 / (|hn_i| 2**15) rad of it (seed 68's row 1,
|hn| = 0.014: 1.5e-3 rad). With both, on the same 200 cases per shape at the defaults: kws
attn at most 0.72x (seed 68), sva 0.64x (seed 76, row 7, |hn| = 0.0054); out at most 0.09x
and 0.13x. What is left is that window, now 0.5 / (|hn_i| 2**16) rad. A sum shift chosen
from each row's own |S_i| every step (golden emulation) would shrink it further, but then
the CORDIC's per-term error (about 2**-16 |k_ij| per term, 2**-16 / |hn_i| rad in all)
keeps some rows from ever passing the angle test. The drive form has the same kind of
window at the rotation's input (hn in Q2.16, shifted by the run's largest). The head's RTL
engine runs at P = 20 (its Verilator tests, tests/test_attention_rtl.py).
The case defaults (golden/attention.py: dt = 1, tol = 6e-5, max_steps = 4000; before them
dt = 0.05, tol = 1e-3, max_steps = 2000 left 55 % of random kws heads unsettled here): the
engine's angle test at 2**-14 settles every head of 200 random kws and 200 sva cases in
both modes (steps per head p50 / p99 / max: kws drive 207 / 1691 / 3046, pairwise 201 /
1539 / 2697 with the row exponents and the finer sum; sva 43 / 303 / 1554), and the drive form meets both targets on all of them
(attn at most 0.26x on kws, 0.50x on sva). The velocity test it replaced (|increment| < tol dt) stopped a row
about tol / |hn_i| from x* and missed the target on 9 of 350 random kws cases, by up to
3.6x; at 2**-15 the pairwise form's limit cycle near equilibrium kept 3 of 30 kws heads
from ever being calm. The tests above use dt = 1, tol = 6e-5, max_steps = 3000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from .array_fixed import (MAX_ANGLE_SHIFT, ArrayFixedConfig, ArrayFormatError, quantize_case,
                          run_fixed, step_scale)
from .attention import (
    NOT_CONVERGED,
    RELU_EPS,
    AttentionCase,
    AttentionCaseError,
    coupling_weights,
    drive,
    initial_state,
    unit_anchors,
    validate_case,
)
from .cordic import CordicConfig, cordic_fixed
from .cordic import error_budget as cordic_budget

__all__ = [
    "ATTN_TARGET", "DATA_BITS", "FRAC", "INPUTS", "OUT_TARGET", "AttentionFixedConfig",
    "AttentionFixedError", "EngineRun", "FrontEnd", "analytic_phases", "attention_fixed",
    "angle_shift", "drive_shift", "engine_constants", "engine_cases", "error_budget",
    "formats", "front_end", "input_terms", "readout_terms", "InputTerms",
    "normalize_shift", "normalize_shift_vector", "normalized_couplings", "normalized_drive",
    "ode_phases",
    "prepare_anchors", "quantize_tensor", "readout_fixed", "reciprocal", "reciprocal_error",
    "rotation_error", "score_constant", "unit_from_phase", "validate_fixed",
]

DATA_BITS = 18                  # v, anchors, W, CORDIC inputs: signed 18-bit
FRAC = DATA_BITS - 2            # Q2.16: unit vectors, 1 + cos, attn, reciprocals
DATA_MAX = (1 << (DATA_BITS - 1)) - 1
MAX_TOKENS = 2048               # the pairwise engine holds 2T <= 4096 oscillators
MAX_RIGHT_SHIFT = 63            # `_shift`: R(v, s) = 0 for s >= 63 when |v| < 2**62
ATTN_TARGET = 2.0 ** -11        # the targets: |attn - attn_float| ...
OUT_TARGET = 2.0 ** -8          # ... and |out - out_float| / max|v|


class AttentionFixedError(AttentionCaseError):
    """A case the fixed-point head cannot run (raised before any work)."""


@dataclass(frozen=True)
class AttentionFixedConfig:
    """The head's formats (module docstring). phase_bits P: the binary angles of the state,
    the anchors' engine phases and every CORDIC; acc_bits A: the engine's accumulators
    (A > P); qk_bits B: q and k (v, W and the anchors are 18-bit)."""

    phase_bits: int = 20
    acc_bits: int = 32
    qk_bits: int = 20

    def __post_init__(self):
        if not 8 <= self.qk_bits <= 22:     # 22 bits: the score product fits 63 bits to d_h = 8
            raise AttentionFixedError(f"qk_bits must be 8..22, not {self.qk_bits}")
        if not 8 <= self.phase_bits <= 22:
            raise AttentionFixedError(f"phase_bits must be 8..22, not {self.phase_bits}")
        if not self.phase_bits < self.acc_bits <= 48:
            raise AttentionFixedError(f"acc_bits must be in ({self.phase_bits}, 48], not "
                                      f"{self.acc_bits}")

    @cached_property
    def vector(self) -> CordicConfig:
        return CordicConfig("vector", DATA_BITS, self.phase_bits)

    @cached_property
    def rotate(self) -> CordicConfig:
        return CordicConfig("rotate", DATA_BITS, self.phase_bits)

    @cached_property
    def divide(self) -> CordicConfig:
        return CordicConfig("divide", DATA_BITS, self.phase_bits)

    def engine(self, oscillators: int) -> ArrayFixedConfig:
        return ArrayFixedConfig(capacity=max(2, oscillators), phase_bits=self.phase_bits,
                                acc_bits=self.acc_bits)


DEFAULT_CONFIG = AttentionFixedConfig()


# ---------------------------------------------------------------------------------------------
# Integer helpers

def _shift(v, s):
    """v * 2**-s for integer arrays and per-element shifts s: R(v, s) for s > 0 (round half
    up), an exact left shift for s <= 0.

    Right shifts are clamped to MAX_RIGHT_SHIFT = 63: for |v| < 2**62 (every value shifted
    here: the score m_ij is the widest, below 2**62 by the 63-bit check in validate_fixed),
    R(v, s) = floor((v + 2**(s-1)) / 2**s) is 0 for every s >= 63, and R(v, 63) computes
    that 0 within int64 (v + 2**62 in [0, 2**63)). Unclamped, the half 1 << (s - 1) wraps
    to -2**63 at s = 64 and R(m, 64) came out -1."""
    v = np.asarray(v, dtype=np.int64)
    s = np.broadcast_to(np.asarray(s, dtype=np.int64), v.shape)
    right = np.clip(s, 0, MAX_RIGHT_SHIFT)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    return np.where(s > 0, np.right_shift(v + half, right), np.left_shift(v, np.maximum(-s, 0)))


def _bit_length(v):
    """Bit length of non-negative int64 arrays (0 for 0)."""
    v = np.asarray(v, dtype=np.int64)
    out = np.zeros(v.shape, dtype=np.int64)
    for bit in range(63):
        out = np.where(v >= (np.int64(1) << bit), bit + 1, out)
    return out


def _half_up(x):
    """Host-side float -> integer conversion: round half up, floor(x + 1/2)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def quantize_tensor(x, bits: int = DATA_BITS) -> tuple[np.ndarray, int]:
    """(integers, e): x ~ integers * 2**-e, integers = floor(x 2**e + 1/2), e the largest
    exponent with every |integer| <= 2**(bits-1) - 1 (an all-zero tensor: e = 0)."""
    x = np.asarray(x, dtype=np.float64)
    limit = (1 << (bits - 1)) - 1
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0:
        return np.zeros(x.shape, np.int64), 0

    def fits(e):
        return int(np.max(np.abs(_half_up(np.ldexp(x, e))))) <= limit
    e = math.floor(math.log2(limit / peak))
    while not fits(e):
        e -= 1
    while fits(e + 1):
        e += 1
    return _half_up(np.ldexp(x, e)), e


def score_constant(d_h: int) -> tuple[int, int]:
    """(c, C): c = round half up(2**C / sqrt(d_h)) with C = 16 + ceil(log2(d_h) / 2), so
    2**16 <= c < 2**17 (17 bits unsigned); for d_h a power of 4, c = 2**16 exactly and the
    multiply is a shift. Computed exactly in integers."""
    ceil_log2 = (d_h - 1).bit_length()
    c_bits = FRAC + (ceil_log2 + 1) // 2
    c = (math.isqrt((4 << (2 * c_bits)) // d_h) + 1) // 2
    return c, c_bits


def normalize_shift_vector(h) -> tuple[np.ndarray, np.ndarray]:
    """(hs, n): each integer vector h (..., d) shifted by its own power of two, n =
    bitlen(max_c |h_c|) - 16 (right shifts round half up; left shifts are exact; a zero
    vector stays), so that max_c |hs_c| lies in [2**15, 2**16]: the magnitude then fits the
    CORDIC's 18-bit input (d = 2) or the sphere normalizer's square root (d > 2)."""
    h = np.asarray(h, np.int64)
    peak = np.abs(h).max(axis=-1)
    n = np.where(peak > 0, _bit_length(peak) - FRAC, 0)
    return _shift(h, n[..., None]), n


def normalize_shift(x, y):
    """`normalize_shift_vector` of the vectors (x, y): returns (x, y, shift)."""
    hs, n = normalize_shift_vector(np.stack([np.asarray(x, np.int64),
                                             np.asarray(y, np.int64)], axis=-1))
    return hs[..., 0], hs[..., 1], n


def reciprocal(config: AttentionFixedConfig, sums):
    """(r, L) for positive integer sums S: m = min(R(S, L), 2**17 - 1) (L = bitlen(S) - 17;
    a left shift when L < 0), r = the CORDIC's divide-mode quotient 2**16 / m in Q2.16
    (x = m, y = 2**16, z = 0), so 1/S ~ r * 2**-(32 + L). S = 0 gives r = 0, L = 0."""
    sums = np.asarray(sums, np.int64)
    positive = sums > 0
    L = np.where(positive, _bit_length(sums) - (FRAC + 1), 0)
    m = np.minimum(_shift(sums, L), DATA_MAX)
    m = np.where(positive, m, 1 << FRAC)
    _, _, r = cordic_fixed(config.divide, m, np.full(m.shape, 1 << FRAC, np.int64),
                           np.zeros(m.shape, np.int64))
    return np.where(positive, r, 0), L


def _causal_mask(tokens: int, causal: bool) -> np.ndarray:
    if not causal:
        return np.ones((tokens, tokens), bool)
    return np.tril(np.ones((tokens, tokens), bool))


def formats(d_h: int, tokens: int, p: int = 1,
            config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """The width in bits of every integer of the head (signed two's complement unless marked
    "u", unsigned), derived from the formats: what each register and adder must hold."""
    log_t = max(1, (tokens - 1).bit_length())          # ceil(log2 T), at least 1
    log_d = (d_h - 1).bit_length()                     # ceil(log2 d_h)
    raw = 2 * (config.qk_bits - 1) + log_d + 1         # |q . k| <= d_h (2**(B-1) - 1)**2
    g_bits = {1: 18, 2: 19, 4: 21}[p]                  # u <= 2**17 + 4, u**2 / 2**16, ...
    return {
        "q, k": config.qk_bits, "v": DATA_BITS, "raw (q.k)": raw,
        "score (raw * c)": raw + FRAC + 1,
        "W (u)": DATA_BITS - 1, "anchor a (Q2.16)": DATA_BITS,
        "h (sum W a)": (DATA_BITS - 1) + FRAC + 1 + log_t + 1,
        "W row sum (u)": DATA_BITS - 1 + log_t, "m, r (reciprocal)": DATA_BITS,
        "h * r": (DATA_BITS - 1) + FRAC + 1 + log_t + 1 + FRAC + 1,
        "hn (Q2.16)": DATA_BITS, "W * r (u)": 2 * (DATA_BITS - 1), "kn": 16,
        "x (Q2.16)": DATA_BITS, "x . a": 2 * DATA_BITS, "u = 1 + cos (u)": DATA_BITS,
        "g = u**p (u)": g_bits, "g row sum (u)": g_bits + log_t,
        "g * r (u)": g_bits + FRAC + 1, "attn (u, Q1.16)": FRAC + 1,
        "attn . v": (FRAC + 1) + DATA_BITS + log_t, "out": DATA_BITS + 1,
    }


# ---------------------------------------------------------------------------------------------
# Validation

def validate_fixed(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> AttentionCase:
    """The float model's validate_case, then what the fixed-point head needs (shapes and
    scalars; the data-dependent checks follow in front_end and the engine's loader)."""
    if not isinstance(case, AttentionCase):
        case = validate_case(case)
    if case.d_osc > 2:
        from .attention_sphere import check_sphere
        check_sphere(case)          # d_osc <= 16, the flow's tol and dt formats
    if case.sigma != "relu_eps":
        raise AttentionFixedError(
            f"sigma: {case.sigma!r} is not in fixed point yet (it needs an exponential "
            f"{'and a logarithm ' if case.sigma == 'softplus' else ''}of scores outside the "
            f"hyperbolic CORDIC's range); use 'relu_eps'")
    score_bits = formats(case.d_h, case.tokens, case.p, config)["score (raw * c)"]
    if score_bits > 63:
        raise AttentionFixedError(
            f"q: d_h = {case.d_h} is too large for {config.qk_bits}-bit q and k: the score "
            f"product (d_h terms of {config.qk_bits} x {config.qk_bits} bits, times the 17-bit "
            f"1/sqrt(d_h) constant) needs {score_bits} bits, more than 63")
    if case.tokens > MAX_TOKENS:
        raise AttentionFixedError(f"q: T = {case.tokens} tokens exceeds {MAX_TOKENS} (the "
                                  f"pairwise engine holds 2T <= 4096 oscillators)")
    if case.mode != "analytic" and case.d_osc == 2 \
            and not 1 <= angle_shift(case.tol) <= MAX_ANGLE_SHIFT:
        raise AttentionFixedError(
            f"tol: {case.tol:.3g} rad is outside the array engine's angle tolerances "
            f"2**-1 .. 2**-{MAX_ANGLE_SHIFT} (tol is rounded to the nearest power of two)")
    return case


# ---------------------------------------------------------------------------------------------
# Front end: quantized inputs, scores, W, anchors, drive

@dataclass(frozen=True)
class FrontEnd:
    """The integer front end of every head (see the module docstring, steps 1-6)."""

    q: np.ndarray             # (H, T, d_h) int, value q * 2**-e_q
    k: np.ndarray
    v: np.ndarray
    e_q: int
    e_k: int
    e_v: int
    a: np.ndarray             # (H, T, 2) unit anchors (cos phi, sin phi), Q2.16
    phi_acc: np.ndarray       # (H, T) uint64 anchor phases, A-bit accumulator units
    phi: np.ndarray           # (H, T) the P-bit phases the engine sees: R(phi_acc, A - P)
    score_c: int              # the 1/sqrt(d_h) constant and its fraction bits
    score_bits: int
    raw: np.ndarray           # (H, T, T) q_i . k_j, exact
    mask: np.ndarray          # (T, T) bool, True where j is attended
    e_w: np.ndarray           # (H, T) W exponent per row
    eps: np.ndarray           # (H, T) relu_eps's 1e-3 in the row's W units
    w: np.ndarray             # (H, T, T) W, value w * 2**-e_w[row] (0 where masked)
    h: np.ndarray             # (H, T, 2) drive sum_j w_ij a_j, value h * 2**-(e_w[row] + 16)
    w_sum: np.ndarray         # (H, T) sum_j w_ij

    @property
    def zero(self) -> np.ndarray:
        """(H, T) rows whose drive is exactly zero."""
        return np.all(self.h == 0, axis=-1)


def prepare_anchors(anchors, config: AttentionFixedConfig = DEFAULT_CONFIG):
    """The anchors are parameters (independent of the input): the host normalizes them once
    and loads (a, phi_acc): a = floor(2**16 a / |a| + 1/2) per component (Q2.16) and
    phi_acc = floor(2**A frac(atan2(a_y, a_x) / 2 pi) + 1/2) mod 2**A."""
    unit = unit_anchors(np.asarray(anchors, dtype=np.float64))
    a = _half_up(unit * 2.0 ** FRAC)
    turns = np.mod(np.arctan2(unit[..., 1], unit[..., 0]) / (2 * math.pi), 1.0)
    phi_acc = (_half_up(turns * 2.0 ** config.acc_bits) % (1 << config.acc_bits))
    return a, phi_acc.astype(np.uint64)


def unit_from_phase(config: AttentionFixedConfig, phase):
    """(cos, sin) in Q2.16 of P-bit angles: the CORDIC rotation of (2**16, 0)."""
    phase = np.asarray(phase, np.int64)
    one = np.full(phase.shape, 1 << FRAC, np.int64)
    c, s, _ = cordic_fixed(config.rotate, one, np.zeros_like(one), phase)
    return np.stack([c, s], axis=-1)


def _w_exponent(m_max: int, full: int) -> tuple[int, int]:
    """The largest e_w with R(m_max, full - e_w) + eps(e_w) <= 2**17 - 1; returns (e_w, eps)."""
    def value(e):
        eps = math.floor(RELU_EPS * 2.0 ** e + 0.5)
        return int(_shift(np.int64(m_max), full - e)) + eps, eps
    peak = m_max * 2.0 ** -full + RELU_EPS
    e = math.floor(math.log2(DATA_MAX / peak))
    while value(e)[0] > DATA_MAX:
        e -= 1
    while value(e + 1)[0] <= DATA_MAX:
        e += 1
    return e, value(e)[1]


def front_end(case: AttentionCase, config: AttentionFixedConfig = DEFAULT_CONFIG) -> FrontEnd:
    """Steps 0-4 of the module docstring (host conversion, scores, W, drive), in integers."""
    q, e_q = quantize_tensor(case.q, config.qk_bits)
    k, e_k = quantize_tensor(case.k, config.qk_bits)
    v, e_v = quantize_tensor(case.v)
    a, phi_acc = prepare_anchors(case.anchors, config)
    phi = _shift(phi_acc.astype(np.int64), config.acc_bits - config.phase_bits) \
        % (1 << config.phase_bits)

    c, c_bits = score_constant(case.d_h)
    raw = np.einsum("hid,hjd->hij", q, k)
    mask = _causal_mask(case.tokens, case.causal)
    scaled = np.maximum(raw, 0) * c                       # relu before the rounding shift
    full = e_q + e_k + c_bits                             # scaled * 2**-full = relu(score)
    # One exponent per row (W's meaning downstream is scale-free per row: the angle of h_i,
    # h_i / sum_j W_ij and W_ij / sum_j W_ij), chosen from the row's largest score.
    row_max = np.max(np.where(mask, scaled, 0), axis=-1)            # (H, T)
    e_w = np.zeros(row_max.shape, np.int64)
    eps = np.zeros(row_max.shape, np.int64)
    for head, token in np.ndindex(row_max.shape):
        e, eps_int = _w_exponent(int(row_max[head, token]), full)
        if eps_int < 1:
            raise AttentionFixedError(
                f"q, k: head {head}, token {token} has scores up to "
                f"{row_max[head, token] * 2.0 ** -full:.4g}: the 18-bit W format (2**-{e}) "
                f"cannot hold both that and relu_eps's {RELU_EPS} (needs max score < "
                f"{DATA_MAX * 2.0 ** -9 - RELU_EPS:.0f})")
        e_w[head, token], eps[head, token] = e, eps_int
    w = np.where(mask, _shift(scaled, full - e_w[..., None]) + eps[..., None], 0)
    h = w @ a                                              # (H, T, 2), exact
    return FrontEnd(q, k, v, e_q, e_k, e_v, a, phi_acc, phi, c, c_bits, raw, mask, e_w, eps,
                    w, h, w.sum(axis=-1))


# ---------------------------------------------------------------------------------------------
# The state x_i: analytic (vectoring CORDIC) or the array engine's Euler steps

def analytic_phases(fe: FrontEnd, config: AttentionFixedConfig = DEFAULT_CONFIG):
    """theta*_i: the vectoring CORDIC's angle of the normalize-shifted drive (0 for h = 0)."""
    x, y, _ = normalize_shift(fe.h[..., 0], fe.h[..., 1])
    _, _, theta = cordic_fixed(config.vector, x, y, np.zeros_like(x))
    return theta


def normalized_drive(fe: FrontEnd, config: AttentionFixedConfig = DEFAULT_CONFIG):
    """hn = h / sum_j w_ij in Q2.16: R(h * r, 32 + L) with (r, L) = reciprocal(w_sum)."""
    r, L = reciprocal(config, fe.w_sum)
    return _shift(fe.h * r[..., None], (32 + L)[..., None])


def normalized_couplings(fe: FrontEnd, config: AttentionFixedConfig = DEFAULT_CONFIG):
    """(kn (H, T, T), e (H, T)): kn_ij = R(w_ij r_i, 32 + L_i - e_i) = W_ij / sum_j W_ij *
    2**e_i, e_i the largest exponent of row i with every |kn_ij| <= 2**15 - 1 (the array
    engine's per-row coupling exponent); zero-drive rows are zero, with e_i = 14."""
    r, L = reciprocal(config, fe.w_sum)
    product = np.where(fe.zero[..., None], 0, fe.w * r[..., None])
    exps = np.full(fe.w_sum.shape, 14, np.int64)
    limit = (1 << 15) - 1
    for head, token in np.ndindex(exps.shape):
        row, shift = product[head, token], 32 + int(L[head, token])
        if not row.any():
            continue
        e = 14                  # the row sums to 2**e: its largest entry >= 2**e / T
        while int(_shift(row, shift - (e + 1)).max()) <= limit:
            e += 1
        exps[head, token] = e
    return _shift(product, (32 + L - exps)[..., None]), exps


def _initial_acc(case: AttentionCase, config: AttentionFixedConfig):
    """(H, T) uint64 start accumulators: the float model's draw ("random", and token 0 of
    "warm") rounded half up to A bits, or 0 ("zero")."""
    start = initial_state("random" if case.init == "warm" else case.init,
                          case.heads, case.tokens, 2, case.seed)
    turn = 1 << config.acc_bits
    acc = _half_up(np.mod(start / (2 * math.pi), 1.0) * 2.0 ** config.acc_bits) % turn
    return acc.astype(np.uint64)


@dataclass(frozen=True)
class EngineRun:
    """One array-engine case of the head: the QuantizedCase and which oscillators are the
    head's tokens (free)."""

    head: int
    tokens: np.ndarray        # the head's token indices run here
    quantized: object         # golden.array_fixed.QuantizedCase; None: all drives zero
    free: np.ndarray          # engine indices of those tokens' oscillators


def engine_cases(case: AttentionCase, fe: FrontEnd,
                 config: AttentionFixedConfig = DEFAULT_CONFIG) -> list[EngineRun]:
    """The array-engine cases of an ODE mode, built and checked before any Euler step.

    ode-drive: one oscillator per token, drive = hn (Q2.16) given to the engine's loader as
    the exact values hn * 2**-16 at exponent 16 + drive_shift(the run's hn).
    ode-pairwise: T free oscillators (tokens) and T pinned ones at the anchor phases
    (phi << (A - P)), K[i, T + j] = kn_ij * 2**-e_i, zero elsewhere.
    "warm": one case per (head, token) with one free oscillator (token i's start is token
    i-1's final accumulator, set when the runs are made); otherwise one case per head.
    The start accumulators are placeholders here (zeros) for warm runs.
    """
    tokens = case.tokens
    acc0 = _initial_acc(case, config)
    tol = case.tol * case.dt          # enables the detector; its test is the angle
    shift = angle_shift(case.tol)
    runs = []
    if case.mode == "ode-drive":
        hn = normalized_drive(fe, config)
    else:
        kn, exps = normalized_couplings(fe, config)
    groups = ([[i] for i in range(tokens)] if case.init == "warm"
              else [list(range(tokens))])
    for head in range(case.heads):
        for group in groups:
            group = np.array(group)
            n = group.size
            start = acc0[head, group] if case.init != "warm" else np.zeros(n, np.uint64)
            if fe.zero[head, group].all():      # nothing would move: no engine run
                runs.append(EngineRun(head, group, None, np.arange(n)))
                continue
            if case.mode == "ode-drive":
                values = hn[head, group] * 2.0 ** -FRAC
                exponent = FRAC + drive_shift(hn[head, group])
                n_osc, K = n, np.zeros((n, n))
                pinned = np.zeros(n, bool)
                theta0 = np.zeros(n)
                free = np.arange(n)
                acc = start
            else:
                n_osc = n + tokens
                K = np.zeros((n_osc, n_osc))
                K[:n, n:] = kn[head, group] * 2.0 ** -exps[head, group][:, None]
                pinned = np.arange(n_osc) >= n
                theta0 = np.zeros(n_osc)
                free = np.arange(n)
                values, exponent = None, None
                acc = np.concatenate([start, fe.phi_acc[head]])
            try:
                quantized = quantize_case(config.engine(n_osc), theta0, np.zeros(n_osc), K,
                                          pinned, case.dt, case.max_steps, tol=tol,
                                          drive=values, drive_exponent=exponent,
                                          form="drive" if values is not None else "pairwise",
                                          angle_shift=shift)
            except ArrayFormatError as error:
                raise AttentionFixedError(f"dt, tol: the array engine refuses head {head}: "
                                          f"{error}") from None
            quantized = replace(quantized, acc0=acc.astype(np.uint64))
            _check_loaded(quantized, values, K)
            runs.append(EngineRun(head, group, quantized, free))
    return runs


def engine_constants(case: AttentionCase, config: AttentionFixedConfig = DEFAULT_CONFIG
                     ) -> dict:
    """What the host gives the hardware for an ODE run: d (the step scale mantissa D) and
    s_ref, its shift for rotation results in units of 2**-16 (`step_scale`; the hardware
    adds its run's exponent: ode-drive k, ode-pairwise e - t), angle_shift (the detector's
    a), acc0 ((H, T) uint64 start accumulators: the random or zero draw; "warm" uses token
    0's) and phi_acc ((H, T) the anchors' accumulators, ode-pairwise's pinned
    oscillators)."""
    engine = config.engine(2)
    d, s_ref = step_scale(engine, case.dt, engine.frac_bits)
    _, phi_acc = prepare_anchors(case.anchors, config)
    return {"d": d, "s_ref": s_ref, "angle_shift": angle_shift(case.tol),
            "acc0": _initial_acc(case, config), "phi_acc": phi_acc}


def angle_shift(tol: float) -> int:
    """a: the engine's angle tolerance 2**-a, tol (radians) rounded to the nearest power of
    two (in log2)."""
    return round(math.log2(1 / tol))


def drive_shift(hn) -> int:
    """k: the largest left shift with every drive's (x 2**k)**2 + (y 2**k)**2 <= (2**17 - 1)**2,
    the rotation's 18-bit input (0 for an all-zero run). Exact in integers: in hardware two
    squares, a running max and a compare per k, where the loader's choice (by the rounded
    float length) would need a square root."""
    hn = np.asarray(hn, np.int64)
    peak = int(np.max(hn[..., 0] ** 2 + hn[..., 1] ** 2, initial=0))
    limit = DATA_MAX ** 2
    k = 0
    while peak and peak << (2 * (k + 1)) <= limit:
        k += 1
    return k


def _check_loaded(quantized, values, K):
    """The loader only ever re-expresses our integers exactly (a left shift)."""
    if values is not None:
        unit = quantized.e + quantized.config.frac_bits
        ok = np.array_equal(quantized.drive * 2.0 ** -unit, values)
    else:
        ok = np.array_equal(quantized.values(), K)
    if not ok:          # cannot happen: the loader's exponent is never below ours
        raise AssertionError("array engine loader changed the head's integers")


def ode_phases(case: AttentionCase, fe: FrontEnd,
               config: AttentionFixedConfig = DEFAULT_CONFIG):
    """Run the array engine: theta (H, T) P-bit, steps (H, T), converged (H, T) bool, and
    each run's loader scales (golden.array_fixed.QuantizedCase.scales, its tol in
    accumulator units, the head and tokens)."""
    runs = engine_cases(case, fe, config)
    theta = np.zeros((case.heads, case.tokens), np.int64)
    steps = np.zeros((case.heads, case.tokens), np.int64)
    converged = np.zeros((case.heads, case.tokens), bool)
    shift = config.acc_bits - config.phase_bits
    carried = {}
    start = _initial_acc(case, config)
    engine_scales = []
    for run in runs:
        quantized = run.quantized
        if case.init == "warm":
            first = np.array([carried.get(run.head, start[run.head, 0])], np.uint64)
        else:
            first = start[run.head, run.tokens]
        if quantized is None:                   # every drive of the run is zero
            final, taken, done = first, 0, True
        else:
            if case.init == "warm":
                acc = quantized.acc0.copy()
                acc[run.free] = first
                quantized = replace(quantized, acc0=acc)
            result = run_fixed(quantized)
            final, taken, done = result.acc[run.free], result.steps_taken, result.converged
            engine_scales.append(dict(quantized.scales(), tol=quantized.tol, head=run.head,
                                      tokens=run.tokens.tolist()))
        theta[run.head, run.tokens] = (_shift(final.astype(np.int64), shift)
                                       % (1 << config.phase_bits))
        steps[run.head, run.tokens] = taken if done else NOT_CONVERGED
        converged[run.head, run.tokens] = done
        if case.init == "warm":
            carried[run.head] = final[0]
    zero = fe.zero
    steps[zero] = 0            # a zero drive never moves: its steps are known to be 0
    converged[zero] = True
    return theta, steps, converged, engine_scales


# ---------------------------------------------------------------------------------------------
# Readout

def readout_fixed(state, fe: FrontEnd, p: int, config: AttentionFixedConfig = DEFAULT_CONFIG,
                  *, kind: str = "phase"):
    """(x (H, T, d_osc) Q2.16, attn (H, T, T) Q1.16, out (H, T, d_h) at v's exponent, the
    numerators g and their row sums); module docstring, steps 8-11. `state`: the P-bit
    phases theta (kind "phase", d_osc = 2: x by the rotation CORDIC) or the unit vectors x
    in Q2.16 themselves (kind "vector": golden/attention_sphere.py)."""
    x = unit_from_phase(config, state) if kind == "phase" else np.asarray(state, np.int64)
    dot = np.einsum("hic,hjc->hij", x, fe.a)                 # Q4.32, exact
    u = np.maximum(0, (1 << FRAC) + _shift(dot, FRAC))       # 1 + cos, Q2.16, >= 0
    g = u
    for _ in range({1: 0, 2: 1, 4: 2}[p]):
        g = _shift(g * g, FRAC)
    g = np.where(fe.mask, g, 0)
    total = g.sum(axis=-1)
    r, L = reciprocal(config, total)
    attn = _shift(g * r[..., None], (FRAC + L)[..., None])
    out = _shift(attn @ fe.v, FRAC)
    return x, attn, out, g, total


def attention_fixed(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """Run a case in fixed point (validated first; every refusal is an AttentionFixedError
    raised before any Euler step). Returns the float model's keys, decoded from the integers:
    attn (H, T, T), out (H, T, d_h), x_star (H, T, 2), steps (H, T); and the integers:
    attn_int, out_int, x_int, theta_int (P-bit), phi_int, anchor_int (unit anchors, Q2.16),
    w_int, h_int, g_int (numerators), converged (H, T), scales (exponents: value =
    integer * 2**-exponent)."""
    case = validate_fixed(case, config)
    if case.d_osc > 2:
        from .attention_sphere import attention_sphere
        return attention_sphere(case, config)
    fe = front_end(case, config)
    if case.mode == "analytic":
        theta = analytic_phases(fe, config)
        steps = np.zeros((case.heads, case.tokens), np.int64)
        converged = np.ones((case.heads, case.tokens), bool)
        engine = []
    else:
        theta, steps, converged, engine = ode_phases(case, fe, config)
    x, attn, out, g, _ = readout_fixed(theta, fe, case.p, config)
    scales = {"q": fe.e_q, "k": fe.e_k, "v": fe.e_v, "qk_bits": config.qk_bits,
              "anchors": FRAC, "anchor_phase_acc_bits": config.acc_bits,
              "score_constant": fe.score_c, "score_constant_bits": fe.score_bits,
              "w": fe.e_w.tolist(), "relu_eps_int": fe.eps.tolist(),
              "h": (fe.e_w + FRAC).tolist(), "x": FRAC, "attn": FRAC, "out": fe.e_v,
              "phase_bits": config.phase_bits, "acc_bits": config.acc_bits, "engine": engine}
    return {"attn": attn * 2.0 ** -FRAC, "out": out * 2.0 ** -fe.e_v, "x_star": x * 2.0 ** -FRAC,
            "steps": steps, "attn_int": attn, "out_int": out, "x_int": x, "theta_int": theta,
            "phi_int": fe.phi, "anchor_int": fe.a, "w_int": fe.w, "h_int": fe.h, "g_int": g,
            "converged": converged, "scales": scales}


# ---------------------------------------------------------------------------------------------
# Error budget

INPUTS = ("actual", "worst")


def _asin(ratio):
    """asin(ratio) as an angle bound; pi where ratio >= 1 (the direction is then unknown)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    return np.where(ratio < 1, np.arcsin(np.minimum(np.abs(ratio), 1.0)), np.pi)


def _turn(center, par, perp):
    """Bound on the angle between c and c + e for |e_par| <= par, |e_perp| <= perp (components
    along and across c): atan(perp / (|c| - par)), pi when par >= |c|."""
    length = np.linalg.norm(center, axis=-1)
    room = length - par
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(room > 0, np.arctan(perp / np.where(room > 0, room, 1.0)), np.pi)


def _across(vectors, center):
    """|v x u| for vectors (..., J, 2) and unit directions u of center (..., 2)."""
    length = np.linalg.norm(center, axis=-1, keepdims=True)
    u = center / np.where(length > 0, length, 1.0)
    return np.abs(vectors[..., 0] * u[..., None, 1] - vectors[..., 1] * u[..., None, 0])


def _wrap(x):
    return np.abs(np.mod(x + np.pi, 2 * np.pi) - np.pi)


def _vector_angle_error(config: AttentionFixedConfig, magnitude_lsb: float) -> float:
    """The vectoring CORDIC's angle error (radians) for inputs of magnitude >= magnitude_lsb:
    its budget's output and owed terms, its rounding term scaled from the promised 2**-8 to
    the actual magnitude (cordic.error_budget: an error e on |v| turns v by <= e / |v|)."""
    terms = cordic_budget(config.vector)["angle_terms"]
    small = 2.0 ** -8 * 2.0 ** FRAC
    lsb = terms["output"] + terms["owed"] + terms["rounding"] * small / magnitude_lsb
    return lsb * 2 * math.pi / 2 ** config.phase_bits


def rotation_error(config: AttentionFixedConfig = DEFAULT_CONFIG) -> tuple[float, float]:
    """(absolute, relative): a rotation CORDIC's output vector is within absolute (LSB, the
    micro-ops' rounding) plus relative * |v| (the owed angle and the gain error) of the exact
    rotation, before the final rounding (1/2 LSB per component). From cordic.error_budget,
    whose angle and gain terms are stated for the corner magnitude 2 sqrt 2."""
    terms = cordic_budget(config.rotate)["terms"]
    corner = 2 * math.sqrt(2) * 2.0 ** FRAC
    return terms["rounding"], (terms["angle"] + terms["gain"]) / corner


def reciprocal_error(config: AttentionFixedConfig = DEFAULT_CONFIG) -> float:
    """rho: |r 2**-(32+L) S - 1| <= rho for `reciprocal` (m's rounding and saturation, at
    most 1.5 LSB of m >= 2**16; the divide CORDIC's budget on a quotient >= 2**15)."""
    b_div = cordic_budget(config.divide)["total_lsb"]
    return (1 + b_div * 2.0 ** -(FRAC - 1)) / (1 - 1.5 * 2.0 ** -FRAC) - 1


class InputTerms(NamedTuple):
    """The float reference's W and anchors beside the head's: what the host's input
    quantization and the head's one W rounding do (error_budget's "W" term)."""

    W: np.ndarray          # (H, T, T) the float model's W
    W_t: np.ndarray        # W~ = relu(s^) + eps^: W before the head's rounding
    e_in: np.ndarray       # |W~ - W| (actual), or its bound ("worst")
    rho_w: np.ndarray      # the bound on the head's rounding |W^ - W~| per entry
    a_f: np.ndarray        # (H, T, d_osc) the float unit anchors
    a_hat: np.ndarray      # the head's anchors (Q2.16) as values
    d_a: np.ndarray        # (H, T) |a^ - a| per anchor (actual, or its bound)
    d_v: np.ndarray        # |v^ - v| per element (actual, or its bound)
    full: int              # F: the score's fraction bits


def input_terms(case, fe: FrontEnd, worst: bool) -> InputTerms:
    """error_budget's "W" term (module docstring) and the anchors' and v's quantization, for
    the actual inputs or their worst case."""
    d_h, lsb = case.d_h, 2.0 ** -FRAC
    mask = fe.mask
    a_f = unit_anchors(case.anchors)
    W = coupling_weights(case.q, case.k, case.sigma, case.causal)

    # Steps 0-3, scores and W: W~ = relu(s^) + eps^ is W before the head's one rounding.
    full = fe.e_q + fe.e_k + fe.score_bits
    s_hat = fe.raw.astype(np.float64) * fe.score_c * 2.0 ** -full
    eps_hat = fe.eps * 2.0 ** -fe.e_w.astype(float)                # (H, T)
    W_t = np.where(mask, np.maximum(s_hat, 0) + eps_hat[..., None], 0.0)
    w_half = 2.0 ** -(fe.e_w.astype(float) + 1)[..., None]
    rho_w = np.where(mask & (s_hat > 0) & ((full - fe.e_w) > 0)[..., None], w_half, 0.0)
    a_hat = fe.a * lsb
    if worst:
        dq, dk = 2.0 ** -(fe.e_q + 1), 2.0 ** -(fe.e_k + 1)
        raw_f = np.einsum("hid,hjd->hij", case.q, case.k)
        d_raw = (dq * np.abs(case.k).sum(-1)[:, None, :]
                 + dk * np.abs(case.q).sum(-1)[:, :, None] + d_h * dq * dk)
        c_err = abs(fe.score_c * 2.0 ** -fe.score_bits - 1 / math.sqrt(d_h))
        e_score = d_raw / math.sqrt(d_h) + (np.abs(raw_f) + d_raw) * c_err
        s_f = raw_f / math.sqrt(d_h)
        e_eps = np.abs(eps_hat - RELU_EPS)[..., None]
        e_in = np.where(mask, np.where(s_f + e_score > 0, e_score, 0.0) + e_eps, 0.0)
        rho_w = np.where(mask & (s_f + e_score > 0) & ((full - fe.e_w) > 0)[..., None],
                         w_half, 0.0)                 # W rounds wherever s^ may be positive
        d_a = np.full(fe.a.shape[:2], math.sqrt(case.d_osc) * lsb / 2)    # |a^ - a|
        d_v = np.full(case.v.shape, 2.0 ** -(fe.e_v + 1))
    else:
        e_in = np.abs(W_t - W)
        d_a = np.linalg.norm(a_hat - a_f, axis=-1)
        d_v = np.abs(fe.v * 2.0 ** -fe.e_v - case.v)
    return InputTerms(W, W_t, e_in, rho_w, a_f, a_hat, d_a, d_v, full)


def readout_terms(p: int, mask, u_up, e_c, A_f, S_lo, rot, rho):
    """(e_attn, e_rest, e_g): error_budget's readout term (b) and its total with (a) = `rot`,
    per entry, from the cosine's error e_c (u_up: the largest 1 + cos at the state; S_lo:
    the smallest float row sum there; A_f: the float attention)."""
    lsb = 2.0 ** -FRAC
    e_g = e_c
    if p >= 2:
        e_g = (2 * u_up + e_g) * e_g + 0.5 * lsb
    if p == 4:
        e_g = (2 * u_up ** 2 + e_g) * e_g + 0.5 * lsb
    e_g = np.where(mask, e_g, 0.0)
    e_S = e_g.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = [e_g + np.clip(A_f + sign * rot, 0, 1) * (e_S - 2 * e_g) for sign in (-1, 1)]
        e_ratio = np.where(S_lo > e_S, np.maximum(*ratio) / (S_lo - e_S), np.inf)
    e_rest = np.where(mask, e_ratio + (A_f + rot + e_ratio) * rho + 0.5 * lsb, 0.0)
    return np.where(mask, rot + e_rest, 0.0), e_rest, e_g


def error_budget(case, config: AttentionFixedConfig = DEFAULT_CONFIG, result=None,
                 inputs: str = "actual") -> dict:
    """Bounds on |attn_fixed - attn_float| and |out_fixed - out_float| for this case, with
    the float reference attention_float in "analytic" mode (x* = h / |h|) for every mode.

    Derived term by term in the module docstring ("Error budget"). The head's arithmetic
    (every rounding, CORDIC, reciprocal, the engine's steps and detector) enters with its
    worst case. The host's quantization of the inputs (q, k, v, the anchors, and the two
    constants 1/sqrt(d_h) and 1e-3) enters with its actual value when inputs="actual" (it
    is a known function of the case), or with its worst case (half an LSB per element)
    when inputs="worst". For the ODE modes the bound assumes the convergence detector fired;
    pass `result` (attention_fixed's) to mark oscillators that did not converge (bound pi
    for their angle).

    Returns: attn, out (the bounds; out in v's units), attn_target, out_target,
    meets_targets, attn_rows (H, T), out_rows (H, T), angle (H, T) (the bound delta_i on
    |theta_i - angle(h_i)|, radians) and terms (the largest value of each term).
    """
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
    case = validate_fixed(case, config)
    if case.d_osc > 2:
        from .attention_sphere import error_budget as sphere_budget
        return sphere_budget(case, config, inputs, result=result)
    fe = front_end(case, config)
    worst = inputs == "worst"
    P, A = config.phase_bits, config.acc_bits
    rot_abs, rot_rel = rotation_error(config)
    lsb = 2.0 ** -FRAC
    phase_lsb = 2 * math.pi / 2 ** P
    eps_x = (rot_abs + math.sqrt(0.5)) * lsb + rot_rel    # |CORDIC (cos, sin) - e^{i angle}|
    rho = reciprocal_error(config)
    mask = fe.mask

    t = input_terms(case, fe, worst)
    W, W_t, e_in, rho_w = t.W, t.W_t, t.e_in, t.rho_w
    a_f, a_hat, d_a, d_v = t.a_f, t.a_hat, t.d_a, t.d_v
    phi_f = np.arctan2(a_f[..., 1], a_f[..., 0])
    h = drive(W, a_f)
    psi = np.arctan2(h[..., 1], h[..., 0])
    ws_t = W_t.sum(-1)
    ws_up = ws_t + rho_w.sum(-1)

    # Step 4, the drive h^ = sum_j W^_ij a^_j and the angle by which it misses h.
    if worst:
        center = h
        a_across = _across(np.broadcast_to(a_f[:, None], W.shape + (2,)), h) \
            + d_a[:, None, :]
        par = ((e_in + rho_w) * (1 + d_a[:, None, :])).sum(-1) + (W * d_a[:, None, :]).sum(-1)
        perp = ((e_in + rho_w) * a_across).sum(-1) + (W * d_a[:, None, :]).sum(-1)
        offset = np.zeros_like(psi)
        ws_up = W.sum(-1) + (e_in + rho_w).sum(-1)
    else:
        center = W_t @ a_hat
        a_across = _across(np.broadcast_to(a_hat[:, None], W.shape + (2,)), center)
        par = (rho_w * np.linalg.norm(a_hat, axis=-1)[:, None, :]).sum(-1)
        perp = (rho_w * a_across).sum(-1)
        offset = _wrap(np.arctan2(center[..., 1], center[..., 0]) - psi)
    front = offset + _turn(center, par, perp)
    h_low = np.linalg.norm(center, axis=-1) - par
    terms = {"drive_angle": float(front.max())}

    if case.mode == "analytic":
        vec = math.asin(math.sqrt(0.5) * 2.0 ** -15) + _vector_angle_error(config, 2.0 ** 15)
        delta = front + vec
        terms["vectoring"] = vec
    else:
        tilt = 2.0 ** -angle_shift(case.tol)
        acc_lsb = 2 * math.pi / 2.0 ** A
        target = np.zeros_like(psi)
        detector = np.zeros_like(psi)
        last_step = np.zeros_like(psi)
        if case.mode == "ode-pairwise":
            _, exps = normalized_couplings(fe, config)
            phi_hat = fe.phi * (2 * math.pi / 2 ** P)
            e_phase = np.stack([np.cos(phi_hat), np.sin(phi_hat)], -1)      # e^{i phi^}
            count = mask.sum(-1)
            k_half = 2.0 ** -(exps.astype(float) + 1)                 # per row
            if worst:
                p_center = h
                d_phase = math.pi / 2 ** P + math.pi / 2 ** A
                ph_across = _across(np.broadcast_to(a_f[:, None], W.shape + (2,)), h) + d_phase
                p_par = (e_in + rho_w).sum(-1) + W.sum(-1) * d_phase
                p_perp = ((e_in + rho_w) * ph_across).sum(-1) + W.sum(-1) * d_phase
                p_offset = np.zeros_like(psi)
            else:
                p_center = W_t @ e_phase
                ph_across = _across(np.broadcast_to(e_phase[:, None], W.shape + (2,)), p_center)
                p_par = rho_w.sum(-1)
                p_perp = (rho_w * ph_across).sum(-1)
                p_offset = _wrap(np.arctan2(p_center[..., 1], p_center[..., 0]) - psi)
            # kn's rounding, k_half per entry, in units of W: times sum W^ / (1 - rho).
            k_scale = k_half * ws_up / (1 - rho)
            p_par = p_par + count * k_scale
            p_perp = p_perp + (np.where(mask, ph_across, 0).sum(-1)) * k_scale
            # The pairwise engine's target is angle(V), not angle(h^): it replaces `front`.
            target = p_offset + _turn(p_center, p_par, p_perp)
            v_low = (1 - rho) / ws_up * (np.linalg.norm(p_center, axis=-1) - p_par)
        for run in engine_cases(case, fe, config):
            qc, hd, rows = run.quantized, run.head, run.tokens
            if qc is None:               # zero drives only: delta = pi below
                continue
            # The angle test |y| 2**a <= x with x, y within `slack` of the exact coupling
            # vector's |c| cos(psi), |c| sin(psi): |sin psi| <= 2**-a + (1 + 2**-a) slack / |c|
            # and cos psi > -slack / |c| (x > 0).
            if case.mode == "ode-drive":
                hn_low = h_low[hd, rows] / ws_up[hd, rows] * (1 - rho) * 2.0 ** FRAC   # LSB
                target[hd, rows] = _asin(math.sqrt(0.5) / hn_low)
                d_low = (hn_low - math.sqrt(0.5)) * 2.0 ** (qc.e + qc.config.frac_bits - FRAC)
                skew = (0.5 + rot_abs) / d_low + rot_rel              # slack / |c|
                # The last step: dt |y| in hn's units, |y| <= 2**-a x, |x| <= |hn| (1 + rel)
                # + rounding, |hn| <= (1 + rho)(1 + 2**-15).
                moved = case.dt * tilt * ((1 + rho) * (1 + 2.0 ** -15) * (1 + rot_rel)
                                          + rot_abs * 2.0 ** -FRAC)
            else:
                shift = qc.rows[run.free]                        # r_i of these rows
                b = 2.0 ** (qc.e + shift)
                k_sum = b * ((1 + rho) + count[rows] * k_half[hd, rows])
                # Per pair: cos_ij and sin_ij within rounding + rel (+ 1, sin's pair nudge);
                # the row's sum shift t + r_i rounds by 2**(t + r_i - 1).
                per_term = 0.5 + rot_abs + 2.0 ** FRAC * rot_rel + 1
                slack = per_term * k_sum + 2.0 ** (qc.t + shift - 1)
                skew = slack / (2.0 ** FRAC * b * v_low[hd, rows])
                moved = (case.dt * tilt * (2.0 ** FRAC * k_sum + slack) / (2.0 ** FRAC * b)
                         * (1 + 2.0 ** -16))
            sine = tilt + (1 + tilt) * skew
            near = (sine > 0) & (sine ** 2 + skew ** 2 < 1)
            detector[hd, rows] = np.where(near, _asin(sine), np.pi)
            last_step[hd, rows] = moved + acc_lsb
        # drive: angle(h^) + hn's rounding; pairwise: angle(V) directly.
        aim = front + target if case.mode == "ode-drive" else target
        delta = aim + detector + phase_lsb + last_step
        if result is not None:
            delta = np.where(np.asarray(result["converged"]), delta, np.pi)
        terms.update(engine_target=float(aim.max()), detector=float(detector.max()),
                     phase_step=phase_lsb + float(last_step.max()))
    delta = np.where(fe.zero | (np.linalg.norm(h, axis=-1) == 0), np.pi, delta)
    delta = np.minimum(delta, np.pi)

    # Steps 8-10, the readout. (a) The state's angle error delta_i moves A_i(theta) along the
    # exact curve: |A(theta) - A(psi)| <= |A'(psi)| delta + M2 delta^2 / 2 (signed derivative, so
    # the row sum's cancellations count). (b) At the state theta, every other error of the
    # readout per entry, worst case: cos (rotation, anchors, rounding), powers, row sum,
    # reciprocal, final rounding.
    dphi = psi[:, :, None] - phi_f[:, None, :]
    dd = delta[:, :, None]
    p = case.p
    u = 1 + np.cos(dphi)
    g = np.where(mask, u ** p, 0.0)
    g1 = np.where(mask, -p * u ** (p - 1) * np.sin(dphi), 0.0)          # dg/dtheta
    S = g.sum(-1, keepdims=True)
    S1 = g1.sum(-1, keepdims=True)
    A_f = g / S
    A1 = (g1 * S - g * S1) / S ** 2                                      # dA/dtheta at psi
    u_up = np.minimum(2.0, u + dd)                                       # over |theta-psi|<=delta
    G0 = np.where(mask, u_up ** p, 0.0)
    G1 = np.where(mask, p * u_up ** (p - 1), 0.0)
    G2 = np.where(mask, p * (p - 1) * u_up ** max(p - 2, 0) + p * u_up ** (p - 1), 0.0)
    S_lo = S - dd[..., 0:1] * G1.sum(-1, keepdims=True)
    S_hi = S + dd[..., 0:1] * G1.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        M2 = np.where(S_lo > 0, (G2 * S_hi + G0 * G2.sum(-1, keepdims=True)) / S_lo ** 2
                      + 2 * G1.sum(-1, keepdims=True)
                      * (G1 * S_hi + G0 * G1.sum(-1, keepdims=True)) / S_lo ** 3, np.inf)
    rot = np.where(mask, np.abs(A1) * dd + M2 * dd ** 2 / 2, 0.0)
    rot = np.where(dd >= np.pi, 1.0, rot)

    a_len = 1 + math.sqrt(0.5) * lsb if worst else np.linalg.norm(a_hat, axis=-1)[:, None, :]
    e_c = eps_x * a_len + d_a[:, None, :] + 0.5 * lsb       # cos at theta, not from delta
    e_attn, e_rest, e_g = readout_terms(p, mask, u_up, e_c, A_f, S_lo, rot, rho)

    # Step 11, out = R(attn v^, 16): the rotation part with its signed derivative, the rest
    # entry by entry, v's quantization, the output rounding.
    v_hat = np.abs(case.v) + d_v
    if worst:
        v_term = d_v.max(axis=1)[:, None, :]                     # sum_j A_ij |v^_j - v_j|
    else:
        v_term = np.abs(np.einsum("hij,hjd->hid", A_f, fe.v * 2.0 ** -fe.e_v - case.v))
    out_rot = (np.abs(np.einsum("hij,hjd->hid", A1, case.v)) * delta[..., None]
               + np.einsum("hij,hjd->hid", np.where(mask, M2, 0.0) * dd ** 2 / 2, v_hat)
               + np.einsum("hij,hjd->hid", np.abs(A1) * dd, v_hat - np.abs(case.v)))
    out_rot = np.where(delta[..., None] >= np.pi, 2 * np.abs(case.v).max(), out_rot)
    e_out = (out_rot + np.einsum("hij,hjd->hid", e_rest, v_hat) + v_term).max(-1) \
        + 2.0 ** -(fe.e_v + 1)

    v_max = float(np.abs(case.v).max())
    attn_bound, out_bound = float(e_attn.max()), float(e_out.max())
    terms.update(w_input=float(e_in.max()), w_rounding=float(rho_w.max()),
                 anchor=float(d_a.max()), angle=float(delta.max()), attn_rotation=float(rot.max()),
                 cos=float(np.max(e_c)), numerator=float(e_g.max()), reciprocal=rho)
    return {"attn": attn_bound, "out": out_bound, "attn_target": ATTN_TARGET,
            "out_target": OUT_TARGET * v_max, "inputs": inputs,
            "meets_targets": attn_bound <= ATTN_TARGET and out_bound <= OUT_TARGET * v_max,
            "attn_rows": e_attn.max(-1), "out_rows": e_out, "angle": delta, "terms": terms}
