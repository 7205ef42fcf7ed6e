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

The ode-drive mode (the Lohe flow's Euler steps, `lohe_flow`): each oscillator integrates
dx/dt = (I - x x^T) hn on its own, hn_i = normalized_drive (attention_fixed step 5: h / sum_j
W_ij in Q2.16), from x0 = round(start 2**16) (the float model's `initial_state`, quantized by
the host; "warm": token 0's start, then each token from the last token's final state). With
D = round(dt 2**16) and tol_q = round(tol dt 2**16), one step of an active oscillator is

    c  = R(x . hn, 16)                   the drive along the state (Q2.16)
    v  = hn - R(c x, 16)                 the tangential drive (Q2.16, per component)
         (v = e_k, 1 LSB, k the first component of x with the smallest |x_k|, when v = 0
         and c < 0: the exact antipode, where the flow would stall; the flow then grows
         that perturbation, as the d_osc = 2 engine's 1-LSB nudge)
    x' = sphere_state(x 2**16 + D v)     Euler, then the normalizer of step 6'
    calm: max_c |x'_c - x_c| < tol_q and c > 0 (on the near side of the sphere)

and the first calm step freezes the oscillator (steps = that step, as the float model's
`settle`); one never calm runs max_steps (NOT_CONVERGED, its last state used). A zero drive
never moves (its start, 0 steps), as the float model. In hardware: 3 d_osc multiplies and the
normalizer per oscillator and step, all through the normalizer's one multiplier.

The ode-pairwise mode (`lohe_pairwise_step`): the same flow with its coupling evaluated term
by term, sum_j W_ij (a_j - (x . a_j) x), as a physical array's oscillator feels each anchor.
One step of an active oscillator, with W_ij the head's integer couplings (step 3, 0 where
masked) and (r, L) = reciprocal(sum_j W_ij) (step 5, as ode-drive's hn):

    c_j = R(x . a_j, 16)                 each anchor's alignment (Q2.16)
    t_j = a_j - R(c_j x, 16)             its tangential pull (Q2.16, per component)
    V   = sum_j W_ij t_j,  C = sum_j W_ij c_j     (exact)
    v   = R(V r, 32 + L)                 the row-normalized tangential drive (Q2.16): the
                                         tangent terms summed like h, normalized like hn
    (v = e_k when v = 0 and C < 0, as ode-drive's antipode)
    x'  = sphere_state(x 2**16 + D v);  calm: max_c |x'_c - x_c| < tol_q and C > 0

Decided: the couplings enter unrounded (W, not W / sum W rounded per term): the flow's fixed
point is then the direction of h itself, and the one normalization per step only scales the
speed; rounding W_ij / s_i per term would turn that direction by up to T / 2 LSB / |hn|. In
hardware: 3 d_osc + 1 multiplies per anchor and step, d_osc for the normalization.

Refused (AttentionFixedError, before any work): a dt whose D is outside 1 .. 2**17 - 1, a tol whose
tol_q is below 2 LSB (the flow's noise floor: at its discrete fixed point a step still moves
x by up to 1 LSB per component), and d_osc > MAX_D_OSC (Q_i 4**G must stay at most 2**52,
where float64's square root is exact enough for `isqrt`'s correction steps and int64 holds
it).

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
  flow      (the ODE modes, in place of normalize) eps_x_i = drive + flow_distance: the
            settled state's distance from h_i / |h_i|, derived in flow_distance's docstring
            from the calm step (its move below tol_q per component, the normalizer's error
            and the tangential drive's rounding E_v bound the angle to the effective drive g):
            S + U + chord(sine) + the angle from g to h. ode-drive: g = hn, rounded
            (E_v = (sqrt(d) + 1 + U) / 2 LSB, plus hn's rounding chord(sqrt(d) / 2 LSB /
            |hn|)); ode-pairwise: g = h r 2**-(32+L), h's direction exactly (no rounding
            term), E_v = ((1 + rho) (sqrt(d) + 1 + U) / 2 + sqrt(d) / 2) LSB (each term's
            two roundings, averaged with W / s, then v's own), and its calm test's C > 0 only
            gives x . h / s > -LSB / 2 (delta may pass pi / 2 slightly: 2 when the sine bound
            cannot exclude that). 2 for a row that never calmed or whose drive is zero (it
            keeps its start).
  readout   per entry, cos_ij = x_i . a^_j to within e_c = eps_x_i |a^_j| + |a^_j - a_j| +
            LSB/2 (the dot's rounding); then attention_fixed's numerator, ratio, reciprocal and
            rounding terms ((b) there) with no separate rotation term (a): the state's error
            is counted entry by entry, without the derivative's cancellations.
  out       sum_j (that)_ij |v^_jd| + |sum_j A_ij (v^_jd - v_jd)| + 2**-(e_v + 1).
Measured versus budget: tests/test_attention_sphere.py (TinyStories, d_osc = 8; the sva
shape with d_osc = 4; the ODE modes also the kws shape with d_osc = 3).
"""

from __future__ import annotations

import math

import numpy as np

from .attention import NOT_CONVERGED, fixed_point, initial_state, zero_drive_rows
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
    normalized_drive,
    readout_fixed,
    readout_terms,
    reciprocal,
    reciprocal_error,
)

__all__ = ["NORM_GUARD", "MAX_D_OSC", "TOL_FLOOR", "check_sphere", "isqrt", "sphere_state",
           "lohe_step", "lohe_pairwise_step", "lohe_settle", "lohe_flow", "flow_constants",
           "flow_start",
           "attention_sphere", "error_budget"]

NORM_GUARD = 8          # G: fraction bits of the norm N = |hs| 2**G
MAX_D_OSC = 16          # Q 4**G <= 16 * 2**32 * 2**16 = 2**52
TOL_FLOOR = 2           # the smallest tol_q (module docstring)
TOL_BITS = 16           # tol_q's register
TOL_MAX = (1 << TOL_BITS) - 1


def check_sphere(case) -> None:
    """The refusals of d_osc > 2 in fixed point (module docstring), for a validated case."""
    if case.d_osc > MAX_D_OSC:
        raise AttentionFixedError(f"anchors: d_osc = {case.d_osc} exceeds {MAX_D_OSC} (the "
                                  f"sphere normalizer's square root holds 2**52)")
    if case.mode != "analytic":
        step, tol_q = flow_constants(case)
        if not 1 <= step <= (1 << (FRAC + 1)) - 1:
            raise AttentionFixedError(f"dt: {case.dt:.3g} is outside the sphere flow's step "
                                      f"format (round(dt 2**16) in 1 .. 2**17 - 1)")
        if tol_q > TOL_MAX:
            raise AttentionFixedError(
                f"tol: tol * dt = {case.tol * case.dt:.3g} does not fit the sphere flow's "
                f"{TOL_BITS}-bit tol_q (round(tol dt 2**16) <= {TOL_MAX})")
        if tol_q < TOL_FLOOR:
            raise AttentionFixedError(
                f"tol: tol * dt = {case.tol * case.dt:.3g} is below the sphere flow's noise "
                f"floor ({TOL_FLOOR} LSB of 2**-16 per step): its detector could never fire")


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


def lohe_step(x, hn, step: int, config: AttentionFixedConfig = DEFAULT_CONFIG):
    """One Euler step of the Lohe flow for states x and drives hn (..., d) in Q2.16 (module
    docstring): (x', c)."""
    c = _shift((x * hn).sum(axis=-1), FRAC)
    v = hn - _shift(c[..., None] * x, FRAC)
    return _euler(x, v, c, step, config), c


def lohe_pairwise_step(x, anchors, weights, r, L, step: int,
                       config: AttentionFixedConfig = DEFAULT_CONFIG):
    """One Euler step of the Lohe flow term by term (module docstring, ode-pairwise) for
    states x (N, d), each oscillator's anchors (N, T, d) and couplings W (N, T), and its row
    sum's reciprocal (r, L) (N,): (x', C)."""
    c = _shift(np.einsum("nc,ntc->nt", x, anchors), FRAC)
    tangent = anchors - _shift(c[..., None] * x[:, None, :], FRAC)
    total = np.einsum("nt,ntc->nc", weights, tangent)
    along = (weights * c).sum(axis=-1)
    v = _shift(total * r[:, None], (32 + L)[:, None])
    return _euler(x, v, along, step, config), along


def _euler(x, v, along, step: int, config: AttentionFixedConfig):
    """x' = sphere_state(x 2**16 + D v), v nudged off the exact antipode (v = 0, along < 0)."""
    antipode = (v == 0).all(axis=-1) & (along < 0)
    nudge = np.arange(x.shape[-1]) == np.argmin(np.abs(x), axis=-1)[..., None]
    v = np.where(antipode[..., None], nudge.astype(np.int64), v)
    return sphere_state((x << FRAC) + step * v, config)


def lohe_settle(x0, zero, advance, tol_q: int, max_steps: int):
    """Settle independent oscillators (N, d) from x0; `zero` (N,) never move; advance(states,
    index) -> (next states, along) of the oscillators `index`: (states (N, d), steps (N,),
    NOT_CONVERGED where never calm)."""
    state = np.array(x0, np.int64)
    steps = np.full(state.shape[0], NOT_CONVERGED, np.int64)
    steps[zero] = 0
    active = np.flatnonzero(~zero)
    for count in range(1, max_steps + 1):
        if active.size == 0:
            break
        moved, along = advance(state[active], active)
        calm = (np.abs(moved - state[active]).max(axis=-1) < tol_q) & (along > 0)
        state[active] = moved
        steps[active[calm]] = count
        active = active[~calm]
    return state, steps


def _flow_rows(case, fe, config: AttentionFixedConfig):
    """The flow's oscillators as rows (H T, ...): (zero (H T,), advance(states, rows)) for
    the case's ODE mode; `rows` are the H T indices of the oscillators being run."""
    H, T, d = fe.h.shape
    step, _ = flow_constants(case)
    if case.mode == "ode-drive":
        hn = normalized_drive(fe, config).reshape(H * T, d)

        def advance(states, rows):
            return lohe_step(states, hn[rows], step, config)
        return (hn == 0).all(axis=-1), advance
    r, L = (value.reshape(H * T) for value in reciprocal(config, fe.w_sum))
    weights = fe.w.reshape(H * T, T)
    head = np.repeat(np.arange(H), T)

    def advance(states, rows):
        return lohe_pairwise_step(states, fe.a[head[rows]], weights[rows], r[rows], L[rows],
                                  step, config)
    return fe.zero.reshape(H * T), advance


def lohe_flow(case, fe, config: AttentionFixedConfig = DEFAULT_CONFIG):
    """The ODE modes at d_osc > 2 (module docstring): states (H, T, d) in Q2.16, steps
    (H, T) and the flow's constants (step D, tol_q)."""
    step, tol_q = flow_constants(case)
    start = flow_start(case)
    H, T, d = fe.h.shape
    zero, advance = _flow_rows(case, fe, config)
    if case.init != "warm":
        states, steps = lohe_settle(start.reshape(H * T, d), zero, advance, tol_q,
                                    case.max_steps)
        return states.reshape(H, T, d), steps.reshape(H, T), step, tol_q
    states = np.empty((H, T, d), np.int64)
    steps = np.empty((H, T), np.int64)
    current = start[:, 0]
    for token in range(T):
        rows = np.arange(H) * T + token
        current, steps[:, token] = lohe_settle(
            current, zero[rows], lambda s, index: advance(s, rows[index]), tol_q,
            case.max_steps)
        states[:, token] = current
    return states, steps, step, tol_q


def flow_constants(case) -> tuple[int, int]:
    """(D, tol_q) of the flow (both ODE modes): round(dt 2**16), round(tol dt 2**16)."""
    return round(case.dt * 2 ** FRAC), round(case.tol * case.dt * 2 ** FRAC)


def flow_start(case) -> np.ndarray:
    """x0 (H, T, d) in Q2.16: the float model's `initial_state`, rounded (the host's step;
    "warm" uses token 0's only)."""
    start = initial_state(case.init, case.heads, case.tokens, case.d_osc, case.seed)
    return np.round(start * 2 ** FRAC).astype(np.int64)


def attention_sphere(case, config: AttentionFixedConfig = DEFAULT_CONFIG) -> dict:
    """attention_fixed's result for a validated case at d_osc > 2 (any mode):
    the same keys, with theta_int and phi_int absent (no phases on the sphere) and x_int
    (H, T, d_osc)."""
    check_sphere(case)
    fe = front_end(case, config)
    flow = {}
    if case.mode == "analytic":
        x = sphere_state(fe.h, config)
        steps = np.zeros((case.heads, case.tokens), np.int64)
    else:
        x, steps, step, tol_q = lohe_flow(case, fe, config)
        flow = {"flow_step": step, "flow_tol": tol_q}
    _, attn, out, g, _ = readout_fixed(x, fe, case.p, config, kind="vector")
    scales = {"q": fe.e_q, "k": fe.e_k, "v": fe.e_v, "qk_bits": config.qk_bits,
              "anchors": FRAC, "score_constant": fe.score_c,
              "score_constant_bits": fe.score_bits, "w": fe.e_w.tolist(),
              "relu_eps_int": fe.eps.tolist(), "h": (fe.e_w + FRAC).tolist(), "x": FRAC,
              "attn": FRAC, "out": fe.e_v, "norm_guard_bits": NORM_GUARD, "engine": [],
              **flow}
    return {"attn": attn * 2.0 ** -FRAC, "out": out * 2.0 ** -fe.e_v,
            "x_star": x * 2.0 ** -FRAC, "steps": steps, "attn_int": attn, "out_int": out,
            "x_int": x, "anchor_int": fe.a, "w_int": fe.w, "h_int": fe.h, "g_int": g,
            "converged": steps != NOT_CONVERGED, "scales": scales}


def chord(ratio) -> np.ndarray:
    """The largest |u/|u| - v/|v|| with |u - v| <= ratio |v|: 2 sin(asin(ratio) / 2), 2 from
    ratio 1 on."""
    ratio = np.asarray(ratio, np.float64)
    return np.where(ratio < 1, 2 * np.sin(np.arcsin(np.minimum(ratio, 1.0)) / 2), 2.0)


def flow_distance(case, fe, config: AttentionFixedConfig, normalizer: float,
                  steps=None) -> np.ndarray:
    """Both ODE modes: a bound (H, T) on |x_i - h_i / |h_i||, the settled state against the
    direction of the head's drive h_i = sum_j W_ij a_j, for each row that converged (2 for
    one that did not; `normalizer`: the normalizer's error without its shift term; `steps`:
    the flow's (H, T) step counts, run here when None). Derivation, for the calm step from x
    to x' (vectors in units of 1, LSB = 2**-16, dt = D LSB):
      - every state is within U of the unit sphere: U = the normalizer's error eps_N (its
        shift term included: x 2**16 + D v is far above 2**16) or the start's rounding;
      - the step moved x by at most S = sqrt(d) (tol_q - 1) LSB (the calm test);
      - x 2**16 + D v = 2**32 u with u = x + dt (g - (x . g) x) + dt e: g the step's
        effective drive, |e| <= E_v its tangential rounding (per mode, below); x' = u / |u|
        within eps_N;
      - so u / |u| is within K = eps_N + S + U of x / |x| (a chord), u turned by
        phi = 2 asin(K / 2) from x / |x| (no bound, 2, when phi >= pi / 2); u's part along
        x / |x| is at most a = 1 + U + dt |g| (2 U + U**2) + dt E_v and its part across it at
        least dt (|g| sin(delta) - E_v), delta the angle from x to g, so
        sin(delta) <= sine = (tan(phi) a + dt E_v) / (dt |g|);
      - when delta < pi / 2 is known, delta <= asin(sine) and |x' - h / |h|| <= S + U +
        chord(sine) + |g / |g| - h / |h||.
    ode-drive: g = hn = R(h r, 32 + L) (normalized_drive); c = x . hn + gamma and
    R(c x, 16) = c x + beta, |gamma| <= LSB / 2, |beta| <= sqrt(d) / 2 LSB, so e = -gamma x -
    beta, E_v = (sqrt(d) + 1 + U) / 2 LSB; the calm test's c = R(x . hn, 16) > 0 means
    x . hn >= LSB / 2, delta < pi / 2; hn's rounding turns it by at most chord(sqrt(d) / 2
    LSB / |hn|) from h.
    ode-pairwise: per anchor c_j = x . a_j + gamma_j and R(c_j x, 16) = c_j x + beta_j (the
    same bounds), so t_j = a_j - (x . a_j) x - gamma_j x - beta_j; with s = sum_j W_ij and
    gamma, beta the W / s averages of gamma_j, beta_j (the same bounds again), V / s =
    h / s - (x . h / s) x - gamma x - beta exactly. r 2**-(32+L) = (1 + e_r) / s with
    |e_r| <= rho (reciprocal_error), and v's own rounding rho_v (|rho_v| <= sqrt(d) / 2 LSB):
    v = g - (x . g) x + e, g = (1 + e_r) h / s = h r 2**-(32+L) (computed here in floats,
    exactly h's direction: no rounding term), e = rho_v - (1 + e_r) (gamma x + beta),
    E_v = ((1 + rho) (sqrt(d) + 1 + U) / 2 + sqrt(d) / 2) LSB. The calm test's
    C = sum_j W_ij c_j > 0 gives only x . h / s > -gamma >= -LSB / 2 (C > 0 with x . h < 0
    happens: the roundings of c_j may all go up): cos(delta) > -kappa, kappa = LSB / 2 /
    ((1 - U) |h| / s), so delta < pi / 2 + asin(kappa). An angle in [pi / 2, that) has
    sin(delta) >= sqrt(1 - kappa**2): sine**2 < 1 - kappa**2 excludes it (delta < pi / 2
    as above), and otherwise the bound is 2.
    Measured against it: tests/test_attention_sphere.py."""
    d = case.d_osc
    lsb = 2.0 ** -FRAC
    step, tol_q = flow_constants(case)
    if steps is None:
        _, steps, _, _ = lohe_flow(case, fe, config)
    steps = np.asarray(steps)
    dt = step * lsb
    eps_n = chord(math.sqrt(d) / 2 * 2.0 ** -15) + normalizer
    unit = max(eps_n, math.sqrt(d) / 2 * lsb)
    moved = math.sqrt(d) * (tol_q - 1) * lsb
    turn = eps_n + moved + unit
    if turn >= math.sqrt(2) or unit >= 1:           # phi >= pi / 2: no bound
        return np.full(steps.shape, 2.0)
    tangent = math.tan(2 * math.asin(turn / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        if case.mode == "ode-drive":
            drive = np.linalg.norm(normalized_drive(fe, config) * lsb, axis=-1)
            e_v = (math.sqrt(d) + 1 + unit) / 2 * lsb
            kappa = np.zeros(drive.shape)
            rotate = chord(np.where(drive > 0, math.sqrt(d) / 2 * lsb
                                    / np.where(drive > 0, drive, 1), np.inf))
        else:
            r, L = reciprocal(config, fe.w_sum)
            h_len = np.linalg.norm(fe.h.astype(np.float64), axis=-1) * lsb
            drive = h_len * r * np.exp2(-(32.0 + L))
            rho = reciprocal_error(config)
            e_v = ((1 + rho) * (math.sqrt(d) + 1 + unit) / 2 + math.sqrt(d) / 2) * lsb
            g_len = np.where(fe.w_sum > 0, h_len / np.where(fe.w_sum > 0, fe.w_sum, 1), 0.0)
            kappa = np.where(g_len > 0, lsb / 2 / ((1 - unit) * np.where(g_len > 0, g_len, 1)),
                             np.inf)
            rotate = np.zeros(drive.shape)
        along = 1 + unit + dt * drive * (2 * unit + unit ** 2) + dt * e_v
        across = (tangent * along + dt * e_v) / dt
        sine = np.where(drive > 0, across / np.where(drive > 0, drive, 1), np.inf)
        near = sine ** 2 < 1 - np.minimum(kappa, 1) ** 2
    distance = np.where(near, moved + unit + chord(sine) + rotate, 2.0)
    return np.where(steps == NOT_CONVERGED, 2.0, np.minimum(distance, 2.0))


def error_budget(case, config: AttentionFixedConfig = DEFAULT_CONFIG,
                 inputs: str = "actual", result=None) -> dict:
    """Bounds on |attn - attn_float| and |out - out_float| (module docstring) for a validated
    case at d_osc > 2: attention_fixed.error_budget's keys (angle: None; eps_x (H, T), the
    bound on |x_i - x*_i|). The ODE modes need the flow's step counts (which oscillators
    converged): `result` (attention_sphere's for this case) gives them, else the flow is run
    here."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
    check_sphere(case)
    fe = front_end(case, config)
    steps = None
    if result is not None and case.mode != "analytic":
        steps = np.asarray(result["steps"])
        if steps.shape != fe.w_sum.shape:
            raise ValueError(f"result: steps {steps.shape} are not this case's "
                             f"{fe.w_sum.shape}")
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
    zero_fixed = fe.zero
    if case.mode == "analytic":
        eps_x = front + shift_term + scale_term + rounding
        eps_x = np.where(zero_fixed & zero_float, rounding, eps_x)
    else:
        eps_x = front + flow_distance(case, fe, config, scale_term + rounding, steps)
        eps_x = np.where(zero_fixed, 2.0, eps_x)      # a zero drive keeps its start
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
