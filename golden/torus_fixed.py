"""Paper B's Kuramoto attention on the torus in fixed point: the bit-exact specification.

Every integer below is what the RTL (hdl/torus.py, `TorusLayer`) produces, bit for bit. The
float reference is golden/torus.py (`torus_float`; the mathematics and which of it is
reconstructed are documented there). One rounding policy everywhere:
R(v, s) = floor((v + 2**(s-1)) / 2**s), round half up (golden/cordic.py's round_shift);
R(v, s) with s <= 0 is the exact left shift v * 2**-s.

Formats (TorusFixedConfig: phase_bits P = 20, acc_bits A = 32)
--------------------------------------------------------------
    theta, psi    A-bit unsigned binary angles (2**A = one turn): wrap-around mod 2 pi is
                  free, and A > P keeps the input phase (and the updated one) to 2**-A of a
                  turn: the DDS trick, the state is not rounded to the CORDIC's P bits
    omega         A-bit binary angle per token of distance (w_k)
    CORDIC angle  P-bit, R(angle, A - P) mod 2**P (golden/cordic.py, CordicConfig("rotate",
                  18, P): rotating (2**16, 0) gives (cos, sin) in Q2.16)
    cos, sin      Q2.16, 18-bit signed (value = integer / 2**16)
    g             17-bit unsigned, one power-of-two exponent e_g from the data (g ~ g_int 2**-e_g)
    eta           18-bit signed, exponent e_eta from the data: eta / (2 pi) ~ eta_int 2**-e_eta
                  (the 1 / 2 pi of radians -> turns folded in by the host)
    score s_int   signed, value s_int 2**-(16 + e_g) (widths: `formats`)
    y             unsigned, 16 fraction bits, saturated at exp2's Y_MAX (y < 64)
    e             exp2_neg(y, 20): Q1.20, 21-bit unsigned, e <= 2**20 (= 1 at the row's max)
    attn          Q1.16, 17-bit unsigned (value attn_int / 2**16)
    q             Q2.16 signed: sum_u A_tu sin(theta_u - theta_t)
`scales` in the result lists every exponent and constant, `formats` every register width.

The pipeline, in order (t, u tokens, k coordinates; attended: u <= t when causal, else all)
----------------------------------------------------------------------------------------
 0. Host conversion (float -> integer, once per case; nothing wraps or clips silently):
      theta_acc_tk = floor(2**A frac(theta_tk / 2 pi) + 1/2) mod 2**A
      w_k          = floor(2**A frac(omega_k / 2 pi) + 1/2) mod 2**A
      g_int, e_g   = floor(g 2**e_g + 1/2), e_g the largest exponent with max g_int <= 2**17 - 1
                     (all-zero g: e_g = 0)
      eta_int, e_eta likewise for eta / (2 pi) at 18 bits signed (|eta_int| <= 2**17 - 1)
      the softmax constant c = log2(e) / tau * 2**-e_g (y LSBs per score LSB) as K 2**-S:
                     S = 16 - floor(log2 c), K = floor(c 2**S + 1/2) in [2**16, 2**17]; when
                     S > 63 it is clamped to 63 (K < 2**16 then, y = 0 for every score: the
                     scores are below y's LSB); S < 0 is refused (tau too small for g's scale)
      the update shift U = e_eta + 16 - A, clamped to [-A, 40] (both clamps change nothing:
                     |eta_int q| < 2**36 gives R(., >= 37) = 0, and a left shift by >= A is 0
                     mod 2**A)
 1. ROTATE, per (t, k): psi_tk = (theta_acc_tk - t w_k) mod 2**A (rotary drift; the RTL
    accumulates t w_k token by token, exactly this integer), and
      (cp_tk, sp_tk) = CORDIC rotation of (2**16, 0) by R(psi_tk, A - P) mod 2**P
      (ct_tk, st_tk) = CORDIC rotation of (2**16, 0) by R(theta_acc_tk, A - P) mod 2**P
    Decided: 2 T D rotations, then products, instead of a rotation per (t, u, k): since
    theta_tk - theta_uk - omega_k (t - u) = psi_tk - psi_uk,
    cos(psi_t - psi_u) = cp_t cp_u + sp_t sp_u (RoPE's own trick).
 2. SCORE, per attended (t, u): cs_tuk = R(cp_tk cp_uk + sp_tk sp_uk, 16) (Q2.16) and
      s_int_tu = sum_k g_int_k cs_tuk (exact).
 3. SOFTMAX, per row t: m_t = max_u s_int_tu (attended u); d_tu = m_t - s_int_tu >= 0;
      y_tu = min(R(d_tu K, S), Y_MAX); e_tu = exp2_neg(y_tu, 20) (golden/exp2.py: 2**-y);
      Z_t = sum_u e_tu (>= 2**20: the max gives e = 2**20 exactly). Decided: e with 20
      fraction bits, not 17: Z sums T half-LSB roundings (the budget's n beta), which at
      T = 128 and 17 bits alone took 0.24 of the 2**-11 target.
 4. RECIPROCAL, once per row: (r_t, L_t) = golden/attention_fixed.reciprocal(Z_t) (the
    divide-mode CORDIC, 1 / Z ~ r 2**-(32 + L)); attn_tu = R(e_tu r_t, 16 + L_t), 0 where not
    attended. Decided: one CORDIC division per row and multiplies, never a divider per entry.
 5. UPDATE, per (t, k): C_tk = sum_u attn_tu ct_uk, S_tk = sum_u attn_tu st_uk (exact, over
    the attended u); Cr = R(C, 16), Sr = R(S, 16); q_tk = R(ct_tk Sr - st_tk Cr, 16)
    (= sum_u A_tu sin(theta_u - theta_t) in Q2.16: cos theta_t S - sin theta_t C);
      delta_tk = R(eta_int_k q_tk, U) mod 2**A (a turn fraction in A-bit units)
      theta_next_acc_tk = (theta_acc_tk + delta_tk) mod 2**A.
    Every token is updated from the old phases (ct, st are of the old theta).
 6. Output: theta_next = 2 pi sgn_A(theta_next_acc) / 2**A in [-pi, pi) (sgn_A: the A-bit
    two's complement reading), attn = attn_int / 2**16.

Refusals (TorusFixedError, a TorusCaseError, before any work; validate_fixed)
----------------------------------------------------------------------------
Every float-model refusal (golden/torus.validate_case: shapes, NaN/inf, negative g, tau <= 0,
|theta|, |omega| >= 2**20), then T > MAX_TOKENS (1024), D > MAX_D (64), and a softmax shift
S < 0 (log2(e) / tau above 2**(16 + e_g): tau too small for the gates' scale).

Error budget (error_budget): |attn - attn_float| and |wrap(theta_next - theta_next_float)|
--------------------------------------------------------------------------------------------
Derived term by term; the CORDIC, exp2 and reciprocal enter with their own derived budgets
(golden/cordic.error_budget, golden/exp2.exp2_relative_error,
golden/attention_fixed.reciprocal_error); the host's quantization of g and eta with its
actual value (a known function of the case), the angles' with its worst case.
LSB = 2**-16.
  vectors   e_rot = (rounding + sqrt(1/2)) LSB + rel: the rotation CORDIC's output vector for
            the unit input versus the exact rotation by its P-bit angle (micro-op rounding,
            the final rounding per component, the owed angle and the gain error); the angle
            itself is off by phi_theta = pi 2**-A (host) + pi 2**-P (R to P bits) + the float
            reduction, and psi_t by t (pi 2**-A + float) more (w_k's rounding, t times):
            e_theta = e_rot + phi_theta, e_psi = e_rot + phi_psi(T - 1) (chord <= arc).
  score     |cs - cos(psi_t - psi_u)| <= e_psi (2 + e_psi) + LSB/2;
            E_s = sum_k g^_k (that) + sum_k |g^_k - g_k| for every (t, u).
  softmax   lambda = 2 E_s / tau bounds |log A*_tu - log A_tu| (A* the exact softmax of the
            fixed scores). y's constant and rounding: |y - y*| <= y* |K 2**-S / c - 1| + 2**-17
            (y* <= the float y + 2 E_s log2(e) / tau, capped at 64: beyond, e = 0 and 2**-y* <
            2**-64); exp2: e = 2**-y (1 + alpha_e) +- beta, alpha_e = exp2_relative_error,
            beta = 2**-21; so e = 2**-y* (1 +- alpha_u) +- beta with
            alpha_u = (1 + alpha_e) 2**(|y - y*|) - 1. The score error moves A by at most
            Delta = lambda min(1, A e**lambda) max(0, 1 - A e**-lambda) (|dA_u| <= A_u (1 - A_u)
            2 E_s / tau along the straight path between the two score rows, A_u staying within
            A e**+-lambda on it): A* in [A_lo, A_hi] = [A - Delta, A + Delta]. The ratio, Z* >= 1:
              attn_hi = (A_hi (1 + alpha_u) + beta') / (1 - abar - n beta') (1 + rho) + 2**-17
              attn_lo = (A_lo (1 - alpha_u) - beta') / (1 + abar + n beta') (1 - rho) - 2**-17
            abar = sum_v A_hi,v alpha_v, n the attended count, rho the reciprocal's relative
            error; beta' = beta / Z*, Z* >= e**-lambda / max_u A_tu (the float row's sum of
            2**-y is 1 / max A); the bound per entry is max(attn_hi - A, A - attn_lo).
  update    |(C^, S^) - (C, S)| <= E_CS = (1 + e_theta) sum_u B_tu + e_theta; the roundings
            to Q2.16: E_W = E_CS + LSB / sqrt 2; |q - K| <= e_theta (|W| + E_W) + E_W + LSB/2
            (K = sum_u A sin(theta_u - theta_t) = v_t x W, W = sum_u A_u v_u, |W| <= 1);
            |delta - eta K| <= |eta^| E_q + |eta^ - eta| |K| + pi 2**-A (delta's rounding);
            theta_next: that plus the input's pi 2**-A + float reduction.

Measured versus budget (tests/test_torus_golden.py prints these; random_case defaults: g
uniform in [0, 2/sqrt D), tau 0.5, eta in [0.1, 0.5), RoPE omega; seeds 0-2, tinystories
seed 0; the largest over them; attn in units of 2**-11, theta in radians)

    | T   | D  | causal | attn  | budget | theta   | budget  |
    |-----|----|--------|-------|--------|---------|---------|
    | 16  | 8  | yes    | 0.049 | 0.554  | 1.4e-5  | 3.0e-4  |
    | 9   | 8  | yes    | 0.045 | 0.380  | 9.9e-6  | 1.5e-4  |
    | 16  | 16 | no     | 0.047 | 0.453  | 2.2e-5  | 2.5e-4  |
    | 49  | 16 | yes    | 0.045 | 0.456  | 3.3e-5  | 3.7e-4  |
    | 9   | 32 | yes    | 0.035 | 0.300  | 1.2e-5  | 1.4e-4  |
    | 128 | 32 | yes    | 0.054 | 0.425  | 6.1e-5  | 6.5e-4  |

The derived attn budget meets the 2**-11 target on every shape here. Its largest terms: the
score error through lambda = 2 E_s / tau (E_s = sum g * e_cos, e_cos ~ 3.8 LSB of the
CORDIC's derived vector budget, so it grows as sum_k g_k / tau: a sharper softmax or larger
gates can exceed the target), the reciprocal's rho (7.7e-5) and exp2's table error
(alpha_e). The theta budget is dominated by |eta| times E_q, whose largest part is
sum_u B_tu: every attn entry's worst-case error taken with the same sign (T final
roundings of 2**-17 alone at T = 128 give 9.8e-4 of it before eta); measured errors are
10 to 20 times smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .attention_fixed import AttentionFixedConfig, quantize_tensor, reciprocal, reciprocal_error
from .attention_fixed import _half_up
from .attention_fixed import _shift as round_shift_array     # R(v, s), arrays of shifts
from .cordic import CordicConfig, cordic_fixed
from .cordic import error_budget as cordic_budget
from .exp2 import Y_MAX, exp2_neg, exp2_relative_error
from .torus import TorusCase, TorusCaseError, torus_float, validate_case, wrap_phase

__all__ = [
    "ATTN_TARGET", "DATA_BITS", "EXP_FRAC", "FRAC", "G_BITS", "MAX_D", "MAX_TOKENS",
    "UPDATE_SHIFT_MAX", "DEFAULT_CONFIG", "TorusFixedConfig", "TorusFixedError",
    "HostConstants", "angle_to_acc", "acc_to_radians", "error_budget", "formats",
    "host_constants", "rotations", "softmax_constant", "torus_fixed",
    "validate_fixed", "round_shift_array",
]

FRAC = 16                       # Q2.16: cos, sin, dot, q, attn
DATA_BITS = 18
DATA_MAX = (1 << (DATA_BITS - 1)) - 1
G_BITS = 17                     # unsigned gates
EXP_FRAC = 20                   # e in Q1.20 (exp2_neg's out_frac)
MAX_TOKENS = 1024
MAX_D = 64
MAX_RIGHT_SHIFT = 63
UPDATE_SHIFT_MAX = 40           # |eta_int q| < 2**36: R(., s) = 0 for every s >= 37
ATTN_TARGET = 2.0 ** -11        # the softmax target


class TorusFixedError(TorusCaseError):
    """A case the fixed-point layer cannot run (raised before any work)."""


@dataclass(frozen=True)
class TorusFixedConfig:
    """The layer's formats: phase_bits P (the CORDIC's binary angles), acc_bits A (the phase
    state and omega, A > P)."""

    phase_bits: int = 20
    acc_bits: int = 32

    def __post_init__(self):
        if not 8 <= self.phase_bits <= 24:
            raise TorusFixedError(f"phase_bits must be 8..24, not {self.phase_bits}")
        if not self.phase_bits < self.acc_bits <= 48:
            raise TorusFixedError(f"acc_bits must be in ({self.phase_bits}, 48], not "
                                  f"{self.acc_bits}")

    @cached_property
    def rotate(self) -> CordicConfig:
        return CordicConfig("rotate", DATA_BITS, self.phase_bits)

    @cached_property
    def reciprocal(self) -> AttentionFixedConfig:
        """The configuration golden/attention_fixed.reciprocal and hdl's Reciprocal read
        (its divide-mode CORDIC: CordicConfig("divide", 18, P))."""
        return AttentionFixedConfig(phase_bits=min(self.phase_bits, 22),
                                    acc_bits=max(self.acc_bits, min(self.phase_bits, 22) + 1))


DEFAULT_CONFIG = TorusFixedConfig()


# ---------------------------------------------------------------------------------------------
# Integer helpers

def angle_to_acc(x, acc_bits: int) -> np.ndarray:
    """Radians -> A-bit binary angles: floor(2**A frac(x / 2 pi) + 1/2) mod 2**A (int64)."""
    turns = np.mod(np.asarray(x, dtype=np.float64) / (2 * math.pi), 1.0)
    return _half_up(np.ldexp(turns, acc_bits)) % (1 << acc_bits)


def acc_to_radians(acc, acc_bits: int) -> np.ndarray:
    """A-bit binary angles -> radians in [-pi, pi) (the two's complement reading)."""
    acc = np.asarray(acc, dtype=np.int64) % (1 << acc_bits)
    signed = np.where(acc >= (1 << (acc_bits - 1)), acc - (1 << acc_bits), acc)
    return signed * (2 * math.pi / 2.0 ** acc_bits)


def _bits(n: int) -> int:
    """ceil(log2 n) for n >= 1 (0 for 1)."""
    return max(0, (int(n) - 1).bit_length())


def formats(tokens: int, d: int, config: TorusFixedConfig = DEFAULT_CONFIG) -> dict:
    """The width in bits of every integer of the layer (signed unless marked "u"): what each
    register and adder must hold, for T tokens and D coordinates."""
    log_t, log_d = _bits(tokens), _bits(d)
    cs = DATA_BITS                                    # |cs| <= 2**16 + 4
    score = G_BITS + cs + log_d + 1                   # sum of D products g (u17) x cs (s18)
    diff = score + 1                                  # d = m - s (u), < 2**(score)
    return {
        "theta, omega, psi (u, A)": config.acc_bits, "angle (u, P)": config.phase_bits,
        "cos, sin (Q2.16)": DATA_BITS, "g (u)": G_BITS, "eta": DATA_BITS,
        "cp cp + sp sp": 2 * DATA_BITS, "cs (Q2.16)": cs, "score": score,
        "d (u)": diff, "d K (u)": diff + DATA_BITS, "y (u)": 22, "e (u, Q1.20)": EXP_FRAC + 1,
        "Z (u)": EXP_FRAC + 1 + log_t, "attn (u, Q1.16)": FRAC + 1,
        "attn cos": FRAC + 1 + DATA_BITS, "C, S": FRAC + 1 + DATA_BITS + log_t,
        "Cr, Sr (Q2.16)": DATA_BITS + 1, "q (Q2.16)": DATA_BITS + 1,
        "eta q": 2 * DATA_BITS + 1,
    }


# ---------------------------------------------------------------------------------------------
# Validation and host constants

def softmax_constant(tau: float, e_g: int) -> tuple[int, int, float]:
    """(K, S, c): c = log2(e) / tau * 2**-e_g, S = 16 - floor(log2 c) clamped at 63,
    K = floor(c 2**S + 1/2). Raises TorusFixedError when S < 0."""
    c = math.log2(math.e) / tau * 2.0 ** -e_g
    if c == 0 or not math.isfinite(c):
        raise TorusFixedError(f"tau: log2(e) / tau * 2**-{e_g} = {c!r} cannot be represented")
    _, exponent = math.frexp(c)                       # c = m 2**exponent, m in [0.5, 1)
    shift = 16 - (exponent - 1)
    if shift < 0:
        raise TorusFixedError(
            f"tau: tau = {tau:.6g} is too small for the gates' scale (g up to "
            f"{2.0 ** -e_g * ((1 << G_BITS) - 1):.6g}): the softmax constant log2(e) / tau "
            f"would need a left shift (y would saturate for every score difference of one "
            f"LSB); raise tau or scale g down")
    shift = min(shift, MAX_RIGHT_SHIFT)
    K = math.floor(math.ldexp(c, shift) + 0.5)
    return K, shift, c


@dataclass(frozen=True)
class HostConstants:
    """Host step 0 (module docstring)."""

    theta_acc: np.ndarray       # (T, D) int64, A-bit binary angles
    w: np.ndarray               # (D,) omega, A-bit binary angles per token
    g_int: np.ndarray           # (D,) 17-bit unsigned
    e_g: int
    eta_int: np.ndarray         # (D,) 18-bit signed: eta / 2 pi ~ eta_int 2**-e_eta
    e_eta: int
    soft_k: int                 # K
    soft_shift: int             # S
    softmax_c: float            # c (float, for the budget)
    update_shift: int           # U (clamped)

    def scales(self, config: TorusFixedConfig) -> dict:
        """The exponents and constants of a result (value = integer 2**-exponent)."""
        return {"theta": config.acc_bits, "theta_unit": "turns", "omega": config.acc_bits,
                "g": self.e_g, "eta_over_2pi": self.e_eta, "score": FRAC + self.e_g,
                "cos_sin": FRAC, "y": FRAC, "e": EXP_FRAC, "attn": FRAC, "q": FRAC,
                "softmax_k": self.soft_k, "softmax_shift": self.soft_shift,
                "update_shift": self.update_shift, "phase_bits": config.phase_bits,
                "acc_bits": config.acc_bits}


def validate_fixed(case, config: TorusFixedConfig = DEFAULT_CONFIG) -> TorusCase:
    """The float model's validate_case, then the fixed-point refusals (module docstring);
    every one before any work."""
    case = validate_case(case)
    if case.tokens > MAX_TOKENS:
        raise TorusFixedError(f"theta: T = {case.tokens} tokens exceeds {MAX_TOKENS}")
    if case.d > MAX_D:
        raise TorusFixedError(f"theta: D = {case.d} coordinates exceeds {MAX_D}")
    host_constants(case, config)            # the softmax constant's refusal
    return case


def host_constants(case: TorusCase, config: TorusFixedConfig = DEFAULT_CONFIG
                   ) -> HostConstants:
    """Step 0: the integers and constants the host loads."""
    A = config.acc_bits
    g_int, e_g = quantize_tensor(case.g, G_BITS + 1)          # g >= 0: 17 bits unsigned
    eta_int, e_eta = quantize_tensor(case.eta / (2 * math.pi), DATA_BITS)
    K, S, c = softmax_constant(case.tau, e_g)
    U = max(-A, min(UPDATE_SHIFT_MAX, e_eta + FRAC - A))
    return HostConstants(theta_acc=angle_to_acc(case.theta, A), w=angle_to_acc(case.omega, A),
                         g_int=g_int, e_g=e_g, eta_int=eta_int, e_eta=e_eta, soft_k=K,
                         soft_shift=S, softmax_c=c, update_shift=U)


# ---------------------------------------------------------------------------------------------
# The pipeline

def cordic_angle(acc, config: TorusFixedConfig = DEFAULT_CONFIG) -> np.ndarray:
    """R(acc, A - P) mod 2**P: the CORDIC's P-bit angle of an A-bit one."""
    return round_shift_array(acc, config.acc_bits - config.phase_bits) % (1 << config.phase_bits)


def unit_vectors(angle, config: TorusFixedConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) in Q2.16 of P-bit angles: the rotation CORDIC of (2**16, 0)."""
    angle = np.asarray(angle, np.int64)
    one = np.full(angle.shape, 1 << FRAC, np.int64)
    c, s, _ = cordic_fixed(config.rotate, one, np.zeros_like(one), angle)
    return c.astype(np.int64), s.astype(np.int64)


def rotations(host: HostConstants, config: TorusFixedConfig = DEFAULT_CONFIG) -> dict:
    """Step 1: psi (T, D) and the four (T, D) tables cp, sp (of psi), ct, st (of theta)."""
    A = config.acc_bits
    tokens = host.theta_acc.shape[0]
    drift = (np.arange(tokens, dtype=np.int64)[:, None] * host.w[None, :]) % (1 << A)
    psi = (host.theta_acc - drift) % (1 << A)
    cp, sp = unit_vectors(cordic_angle(psi, config), config)
    ct, st = unit_vectors(cordic_angle(host.theta_acc, config), config)
    return {"psi": psi, "cp": cp, "sp": sp, "ct": ct, "st": st}


def torus_fixed(case, config: TorusFixedConfig = DEFAULT_CONFIG) -> dict:
    """The layer in fixed point (module docstring). Returns the float model's keys decoded
    from the integers (theta_next, attn) and the integers: theta_acc, theta_next_acc, psi,
    cp, sp, ct, st (T, D), score_int, y_int, e_int, attn_int (T, T; 0 where not attended),
    z_int, recip_r, recip_shift (T,), q_int, delta (T, D), and scales."""
    case = validate_fixed(case, config)
    A = config.acc_bits
    host = host_constants(case, config)
    rot = rotations(host, config)
    cp, sp, ct, st = rot["cp"], rot["sp"], rot["ct"], rot["st"]
    mask = case.mask

    # 2. scores
    dot = cp[:, None, :] * cp[None, :, :] + sp[:, None, :] * sp[None, :, :]      # [t, u, k]
    cs = round_shift_array(dot, FRAC)
    score = np.einsum("k,tuk->tu", host.g_int, cs)
    score = np.where(mask, score, 0)

    # 3. softmax numerators
    peak = np.where(mask, score, np.iinfo(np.int64).min).max(axis=1)
    diff = np.where(mask, peak[:, None] - score, 0)
    y = np.minimum(round_shift_array(diff * host.soft_k, host.soft_shift), Y_MAX)
    e = np.where(mask, exp2_neg(y, EXP_FRAC), 0)
    z = e.sum(axis=1)

    # 4. one reciprocal per row, multiplies
    r, L = reciprocal(config.reciprocal, z)
    attn = np.where(mask, round_shift_array(e * r[:, None], FRAC + L[:, None]), 0)

    # 5. the Kuramoto update from the old phases
    C = attn @ ct
    S = attn @ st
    Cr, Sr = round_shift_array(C, FRAC), round_shift_array(S, FRAC)
    q = round_shift_array(ct * Sr - st * Cr, FRAC)
    product = host.eta_int[None, :] * q
    U = host.update_shift
    if U >= 0:
        delta = round_shift_array(product, U) % (1 << A)
    else:           # the bits that survive the left shift mod 2**A (no int64 overflow)
        delta = ((product & ((1 << (A + U)) - 1)) << -U) % (1 << A) if U > -A \
            else np.zeros_like(product)
    theta_next_acc = (host.theta_acc + delta) % (1 << A)

    return {
        "theta_next": acc_to_radians(theta_next_acc, A),
        "attn": attn * 2.0 ** -FRAC,
        "theta_acc": host.theta_acc, "theta_next_acc": theta_next_acc, "psi": rot["psi"],
        "cp": cp, "sp": sp, "ct": ct, "st": st, "score_int": score,
        "y_int": np.where(mask, y, 0), "e_int": e, "z_int": z, "recip_r": r, "recip_shift": L,
        "attn_int": attn, "q_int": q, "delta": delta, "scales": host.scales(config),
    }


# ---------------------------------------------------------------------------------------------
# Error budget

def rotation_vector_error(config: TorusFixedConfig = DEFAULT_CONFIG) -> float:
    """e_rot: |CORDIC (cos, sin) of the unit input - the exact rotation by its P-bit angle|
    in real units (the micro-ops' rounding, the final rounding sqrt(1/2) LSB, the owed angle
    and gain error, stated by cordic.error_budget for the corner magnitude 2 sqrt 2)."""
    terms = cordic_budget(config.rotate)["terms"]
    lsb = 2.0 ** -FRAC
    corner = 2 * math.sqrt(2) * 2.0 ** FRAC
    return (terms["rounding"] + math.sqrt(0.5)) * lsb + (terms["angle"] + terms["gain"]) / corner


def error_budget(case, config: TorusFixedConfig = DEFAULT_CONFIG) -> dict:
    """Bounds on |attn - attn_float| (per entry, (T, T)) and on
    |wrap(theta_next - theta_next_float)| (per (t, k)), derived in the module docstring.

    Returns attn (the largest entry bound), attn_entries, theta (largest), theta_entries,
    attn_target, meets_attn_target and terms (each term's largest value)."""
    case = validate_fixed(case, config)
    host = host_constants(case, config)
    float_result = torus_float(case)
    A_f, mask = float_result["attn"], case.mask
    P, Ab = config.phase_bits, config.acc_bits
    lsb = 2.0 ** -FRAC
    tokens = case.tokens

    # vectors
    e_rot = rotation_vector_error(config)
    float_theta = (np.abs(case.theta).max() + 2 * math.pi) * 2.0 ** -52
    float_omega = (np.abs(case.omega).max() + 2 * math.pi) * 2.0 ** -52
    host_angle = math.pi * 2.0 ** -Ab
    phi_theta = host_angle + math.pi * 2.0 ** -P + float_theta
    phi_psi = phi_theta + (tokens - 1) * (host_angle + float_omega)
    e_theta, e_psi = e_rot + phi_theta, e_rot + phi_psi

    # score
    g_hat = host.g_int * 2.0 ** -host.e_g
    e_cos = e_psi * (2 + e_psi) + lsb / 2
    E_s = float(g_hat.sum() * e_cos + np.abs(g_hat - case.g).sum())

    # softmax
    log2e = math.log2(math.e)
    lam = 2 * E_s / case.tau
    s_f = float_result["scores"]
    s_max = np.where(mask, s_f, -np.inf).max(axis=1, keepdims=True)
    y_hi = np.minimum(np.where(mask, (s_max - s_f) * log2e / case.tau, 0) + lam * log2e, 64.0)
    kappa = abs(host.soft_k * 2.0 ** -host.soft_shift / host.softmax_c - 1)
    dy = y_hi * kappa + 2.0 ** -17
    alpha_e = exp2_relative_error()
    alpha = (1 + alpha_e) * 2.0 ** dy - 1
    beta = 2.0 ** -(EXP_FRAC + 1)
    rho = reciprocal_error(config.reciprocal)
    n = mask.sum(axis=1, keepdims=True)
    # A* within Delta of A: |dA_u/dx| <= A_u (1 - A_u) 2 E_s / tau along the path from the
    # float scores to the fixed ones, A_u within [A e**-lambda, A e**lambda] on it.
    delta = lam * np.minimum(1.0, A_f * math.exp(lam)) * np.maximum(0.0, 1 - A_f * math.exp(-lam))
    a_hi, a_lo = np.minimum(A_f + delta, 1.0), np.maximum(A_f - delta, 0.0)
    abar = (np.where(mask, a_hi * alpha, 0)).sum(axis=1, keepdims=True)
    # beta relative to Z* = sum_u 2**-y*_u >= e**-lambda / max_u A_tu (Z = 1 / max A in float)
    beta_z = beta * np.where(mask, A_f, 0).max(axis=1, keepdims=True) * math.exp(lam)
    hi = (a_hi * (1 + alpha) + beta_z) / (1 - abar - n * beta_z) * (1 + rho) + 2.0 ** -17
    lo = (a_lo * (1 - alpha) - beta_z) / (1 + abar + n * beta_z) * (1 - rho) - 2.0 ** -17
    lo = np.maximum(lo, 0.0)
    B = np.where(mask, np.maximum(hi - A_f, A_f - lo), 0.0)

    # update
    E_CS = (1 + e_theta) * B.sum(axis=1) + e_theta                      # (T,)
    E_W = E_CS + lsb / math.sqrt(2)
    v = np.stack([np.cos(case.theta), np.sin(case.theta)], -1)        # (T, D, 2)
    W = np.einsum("tu,ukc->tkc", A_f, v)
    W_norm = np.linalg.norm(W, axis=-1)                                # (T, D)
    E_q = e_theta * (W_norm + E_W[:, None]) + E_W[:, None] + lsb / 2
    eta_hat = host.eta_int * 2.0 ** -host.e_eta * 2 * math.pi
    K_f = float_result["coupling"]
    theta_b = (host_angle + float_theta + np.abs(eta_hat)[None, :] * E_q
               + np.abs(eta_hat - case.eta)[None, :] * np.abs(K_f)
               + (host_angle if host.update_shift > 0 else 0.0) + 1e-15)
    return {
        "attn": float(B.max()), "attn_entries": B, "theta": float(theta_b.max()),
        "theta_entries": theta_b, "attn_target": ATTN_TARGET,
        "meets_attn_target": bool(B.max() <= ATTN_TARGET),
        "terms": {"e_rot": e_rot, "e_theta": e_theta, "e_psi": e_psi, "e_cos": e_cos,
                  "score": E_s, "lambda": lam, "alpha_max": float(alpha.max()),
                  "beta": beta, "rho": rho, "kappa": kappa, "E_q": float(E_q.max()),
                  "eta_quantization": float(np.abs(eta_hat - case.eta).max())},
    }


def measured_errors(case, result: dict, float_result: dict | None = None) -> dict:
    """max |attn - float| and max |wrap(theta_next - float)| of a fixed (or RTL) result."""
    case = validate_case(case)
    if float_result is None:
        float_result = torus_float(case)
    return {"attn": float(np.abs(result["attn"] - float_result["attn"]).max()),
            "theta": float(np.abs(wrap_phase(result["theta_next"]
                                              - float_result["theta_next"])).max())}


__all__ += ["measured_errors", "rotation_vector_error", "cordic_angle", "unit_vectors"]
