"""The Kuramoto phase array in fixed point: the bit-exact specification of the array engine.

One Euler step of  dtheta_i/dt = omega_i + sum_j K_ij sin(theta_j - theta_i)  in integers:

    phase     acc_i: unsigned A-bit accumulator, one turn = 2**A (wraps for free). The CORDIC
              sees theta_i = R(acc_i, A - P) mod 2**P, a P-bit binary angle.
    omega     w_i = round(omega_i dt / 2pi * 2**A), added every step (the DDS trick: the
              accumulator is wider than the phase, so slow frequencies are not rounded away).
    coupling  k_ij = round(K_ij * 2**(e + r_i)), 16-bit signed, a block exponent per row:
              e_i = e + r_i is the largest exponent for which every |k_ij| of row i is
              <= 2**15 - 1, e the least e_i over the rows with a coupling, r_i (the row shift,
              0..MAX_ROW_SHIFT; 0 for a row without couplings) the rest (chosen from the
              case's data and reported). Decided after measuring one exponent per matrix: a
              row whose couplings are all small against another row's largest kept few
              significant bits, and in the attention head's rows whose anchors nearly cancel
              that turned the coupling's direction by up to (N / 2 LSB) / |sum| (up to 2.85
              times its attn target on random kws cases; per row at most 0.30).
    sum       S_i in integer units of 2**-(e + r_i + F) (F = the CORDIC's data fraction bits):
      pairwise  S_i = sum_j k_ij * sin_ij,   sin_ij = CORDIC sin of (theta_j - theta_i) mod 2**P
      matvec    C_i = sum_j k_ij cos_j, Z_i = sum_j k_ij sin_j (N CORDIC evaluations, 2N^2 MACs),
                then S_i = Im(e^{-i theta_i} (C_i + i Z_i)): one CORDIC rotation of
                (R(C_i, t + r_i), R(Z_i, t + r_i)) by -theta_i, times 2**(t + r_i)
      drive     the same rotation applied to the given h_i = (h_x, h_y), quantized like C, Z
    step      acc_i += w_i + R(R(S_i, t + r_i) * D, s)  for free i (pairwise: R(S_i, t + r_i)
              is the y); pinned oscillators never change. t (sum shift) makes every possible
              R(S_i, t + r_i) fit the CORDIC's 18-bit input (matvec: the least t with
              sum_j |k_ij| 2**F < 2**(16 + t + r_i) for every row; pairwise, whose sums go to
              the update unrotated: `pairwise_sum_shift`, a bit finer); after it every row's sum
              is in units of 2**-(e + F - t), so D (18-bit) and s (shift) represent
              dt / 2pi * 2**(A - e - F + t) as D * 2**-s for all rows.
    converge  stop when max_i |w_i + inc_i| over free oscillators is below tol (in accumulator
              units) for CONVERGE_STEPS consecutive steps. With angle_shift a > 0 the calm
              test is an angle instead, for every free oscillator: x_i > 0 and |y_i| 2**a <=
              x_i, or x_i = y_i = 0 (no coupling: it never moves), where (x_i, y_i) is the
              coupling vector turned into the oscillator's frame (the rotation's output;
              pairwise: R(C_i, t + r_i) and R(S_i, t + r_i), C_i = sum_j k_ij cos_ij), i.e.
              the coupling's direction is within atan(2**-a) of the oscillator's phase, to
              the resolution of the integers (with x below 2**a only y = 0 passes: about
              (1/2 + the CORDIC's error) / |x| rad). A velocity test stops an oscillator with
              a small coupling |h_i| about tol / |h_i| from its fixed point; the angle test
              does not scale so (meant for omega = 0, where the fixed point is that
              direction).
    antipode  a relative rotation (sin_ij in pairwise form, the final rotation by -theta_i
              otherwise) that lands exactly on the negative x axis (y = 0, x < 0) reports
              y = +1 LSB (pairwise: +1 for j > i, -1 for j < i, so the pair separates). Exactly antipodal is an unstable equilibrium of the equations, and
              in exact integer arithmetic nothing would ever leave it; the nudge starts the
              escape in the positive direction, as any perturbation would. A zero drive
              (x = y = 0) is not nudged: the oscillator then runs at omega, as the equations say.
              The convergence detector does not know stable from unstable equilibria: a
              nudged oscillator moves slowly at first and can look converged (see tests).
    order     (sum_j cos_j, sum_j sin_j) per step; r = |sum| / (N 2**F) computed from them.

The three forms give different integers (their rounding differs); each is specified here and
matched bit for bit by the RTL. Every case is validated against the configuration before any
work: a dt that aliases (|omega dt| >= pi) or whose scale D cannot be represented is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .array import CONVERGENCE_STEPS
from .cordic import CordicConfig, cordic_fixed, error_budget, round_shift

__all__ = ["ArrayFixedConfig", "ArrayFormatError", "QuantizedCase", "quantize_case", "step_scale",
           "MAX_ANGLE_SHIFT", "MAX_ROW_SHIFT", "ROW_SHIFT_BITS", "pairwise_sum_shift",
           "pairwise_term_bound",
           "tol_units",
           "step_fixed", "run_fixed", "step_error_bound", "trajectory_error_bound",
           "lipschitz", "coupling_sums", "FixedRun", "nudge_antipode", "FORMS", "CONVERGE_STEPS"]

FORMS = ("pairwise", "matvec", "drive")
CONVERGE_STEPS = CONVERGENCE_STEPS     # the float model's detector, the same M
COUPLING_BITS = 16
SCALE_BITS = 18            # D, and the CORDIC's inputs
MAX_ANGLE_SHIFT = SCALE_BITS - 1        # |y| 2**a against an 18-bit x
ROW_SHIFT_BITS = 4
MAX_ROW_SHIFT = (1 << ROW_SHIFT_BITS) - 1    # r_i: a row's exponent above the least one


class ArrayFormatError(ValueError):
    """A case that the fixed-point format cannot represent (raised before any work)."""


@dataclass(frozen=True)
class ArrayFixedConfig:
    """The array engine's formats.

    capacity     the most oscillators the engine holds
    phase_bits   P: the binary angle the CORDIC sees
    acc_bits     A: the phase accumulator (A > P keeps slow increments)
    """

    capacity: int = 64
    phase_bits: int = 16
    acc_bits: int = 32

    def __post_init__(self):
        if not 2 <= self.capacity <= 4096:
            raise ArrayFormatError(f"capacity must be 2..4096, not {self.capacity}")
        if not 8 <= self.phase_bits <= 24:
            raise ArrayFormatError(f"phase_bits must be 8..24, not {self.phase_bits}")
        if not self.phase_bits < self.acc_bits <= 48:
            raise ArrayFormatError(f"acc_bits must be in ({self.phase_bits}, 48], "
                                   f"not {self.acc_bits}")

    @property
    def cordic(self) -> CordicConfig:
        return CordicConfig("rotate", data_width=SCALE_BITS, phase_bits=self.phase_bits)

    @property
    def frac_bits(self) -> int:
        return self.cordic.data_frac_bits


@dataclass(frozen=True)
class QuantizedCase:
    """A case in the engine's integers, with the scales that say what they mean."""

    config: ArrayFixedConfig
    form: str
    acc0: np.ndarray          # (N,) uint64 accumulators
    w: np.ndarray             # (N,) int64 per-step omega increments
    k: np.ndarray             # (N, N) int64 couplings, value k_ij * 2**-(e + r_i)
    pinned: np.ndarray        # (N,) bool
    drive: np.ndarray | None  # (N, 2) int64 in the rotation's input units, or None
    e: int                    # coupling exponent
    t: int                    # sum shift
    d: int                    # step scale mantissa
    s: int                    # step scale shift
    steps: int
    tol: int | None           # accumulator units, or None
    dt: float                 # the case's dt (for reports and error bounds)
    angle_shift: int = 0      # a > 0: the angle calm test (module docstring) instead of tol
    row_shift: np.ndarray | None = None   # (N,) int64 r_i; None: all 0

    @property
    def n(self) -> int:
        return self.acc0.size

    @property
    def rows(self) -> np.ndarray:
        """r_i (N,): each row's exponent above e (zeros when the case has none)."""
        if self.row_shift is None:
            return np.zeros(self.n, np.int64)
        return np.asarray(self.row_shift, np.int64)

    def values(self) -> np.ndarray:
        """The couplings k_ij 2**-(e + r_i) as floats (exact)."""
        return self.k * 2.0 ** -(self.e + self.rows[:, None]).astype(float)

    def scales(self) -> dict:
        return {"coupling_exponent": self.e, "row_shift": self.rows.tolist(),
                "sum_shift": self.t, "step_scale": self.d,
                "step_shift": self.s, "acc_bits": self.config.acc_bits,
                "phase_bits": self.config.phase_bits, "angle_shift": self.angle_shift}


def _largest_exponent(values: np.ndarray, bits: int) -> int:
    """The largest e with every |round(v * 2**e)| <= 2**(bits-1) - 1."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak == 0:
        return 0
    e = math.floor(math.log2((2 ** (bits - 1) - 1) / peak))
    while np.max(np.abs(np.round(values * 2.0 ** e))) > 2 ** (bits - 1) - 1:
        e -= 1
    return e


def tol_units(config: ArrayFixedConfig, tol: float) -> int:
    """A tolerance of `tol` radians per step in accumulator units (2**A = one turn)."""
    return int(round(tol / (2 * math.pi) * 2.0 ** config.acc_bits))


def step_scale(config: ArrayFixedConfig, dt: float, unit_exp: int) -> tuple[int, int]:
    """(D, s): D * 2**-s = dt / 2pi * 2**(A - unit_exp), D in [2**16, 2**17) (18-bit signed),
    for a rotation result y in units of 2**-unit_exp (one step adds dt/2pi y turns). Scaling
    y's unit by 2**k leaves D and moves s by k (the hardware adds k to a host's s). The
    range of s is the caller's to check (quantize_case)."""
    scale = dt / (2 * math.pi) * 2.0 ** (config.acc_bits - unit_exp)
    if scale <= 0 or not math.isfinite(scale):
        raise ArrayFormatError(f"dt = {dt} gives no representable step scale")
    s = SCALE_BITS - 1 - math.floor(math.log2(scale)) - 1
    d = round(scale * 2.0 ** s)
    if d >= 2 ** (SCALE_BITS - 1):
        s -= 1
        d = round(scale * 2.0 ** s)
    return d, s


def quantize_case(config: ArrayFixedConfig, theta0, omega, K, pinned, dt, steps, tol=None,
                  drive=None, form="matvec", drive_exponent=None,
                  angle_shift: int = 0) -> QuantizedCase:
    """Validate a float case against the format and convert it to the engine's integers.

    angle_shift: 0 (the velocity calm test on tol) or a in 1 .. MAX_ANGLE_SHIFT (the angle
    test, module docstring; tol must then be given too: it enables the detector).

    drive_exponent (drive form): the drive's unit 2**-drive_exponent, fixed by the caller
    instead of chosen from the data (the attention head's hn is Q2.16 whatever its size, so
    its step scale D, s depends on dt alone); the drive must fit 18 bits there."""
    if form not in FORMS:
        raise ArrayFormatError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")
    theta0, omega = np.asarray(theta0, float), np.asarray(omega, float)
    K, pinned = np.asarray(K, float), np.asarray(pinned, bool)
    n = theta0.size
    if n > config.capacity:
        raise ArrayFormatError(f"N = {n} oscillators exceeds the engine's capacity of "
                               f"{config.capacity}")
    if form == "drive" and drive is None:
        raise ArrayFormatError("form 'drive' needs a drive (N, 2) in the case")
    if isinstance(angle_shift, bool) or not 0 <= int(angle_shift) <= MAX_ANGLE_SHIFT \
            or int(angle_shift) != angle_shift:
        raise ArrayFormatError(f"angle_shift must be an integer 0..{MAX_ANGLE_SHIFT}, not "
                               f"{angle_shift!r}")
    a, f = config.acc_bits, config.frac_bits
    turn = 2.0 ** a
    if not dt > 0:
        raise ArrayFormatError(f"dt must be positive, not {dt}")
    if np.max(np.abs(omega), initial=0) * dt >= math.pi:
        raise ArrayFormatError(f"dt = {dt} makes |omega dt| >= pi: the phase would alias "
                               f"(the largest |omega| is {np.max(np.abs(omega)):.4g})")
    acc0 = np.round(np.mod(theta0 / (2 * math.pi), 1.0) * turn).astype(np.uint64) % np.uint64(2 ** a)
    w = np.round(omega * dt / (2 * math.pi) * turn).astype(np.int64)

    if form == "drive":
        drive = np.asarray(drive, float)
        # The drive enters the rotation directly: its magnitude must fit the 18-bit input.
        unit_exp = _largest_exponent(np.hypot(drive[:, 0], drive[:, 1]), SCALE_BITS)
        if drive_exponent is not None:
            if drive_exponent > unit_exp and np.any(drive):
                raise ArrayFormatError(
                    f"drive up to {np.max(np.hypot(drive[:, 0], drive[:, 1])):.4g} does not "
                    f"fit the {SCALE_BITS}-bit rotation input at 2**-{drive_exponent}")
            unit_exp = int(drive_exponent)
        drive_int = np.round(drive * 2.0 ** unit_exp).astype(np.int64)
        e, t, k = unit_exp - f, 0, np.zeros((n, n), np.int64)
    else:
        e, rows = _row_exponents(K)
        k = np.round(K * 2.0 ** (e + rows)[:, None]).astype(np.int64)
        drive_int = None
        totals = [int(total) for total in np.sum(np.abs(k), axis=1)]
        if form == "pairwise":
            shifts = [pairwise_sum_shift(config, total) for total in totals]
        else:
            # |C_i|, |Z_i| <= sum_j |k_ij| * 2**F: shift until that is below 2**16, so the
            # rotation's input vector (at most sqrt(2) times that) fits 18 bits.
            shifts = [(total << f).bit_length() - (SCALE_BITS - 2) for total in totals]
        t = max(0, max((u - int(r) for u, r in zip(shifts, rows)), default=0))
        unit_exp = e + f - t
    d, s = step_scale(config, dt, unit_exp)
    if s < 0:
        raise ArrayFormatError(f"dt = {dt} is too large for the {a}-bit accumulator "
                               f"(one step would exceed the step scale's range)")
    if s > 62:
        raise ArrayFormatError(f"dt = {dt} is too small: one step of the largest coupling "
                               f"rounds to nothing in the {a}-bit accumulator")
    tol_int = None if tol is None else tol_units(config, tol)
    return QuantizedCase(config, form, acc0, w, k, pinned.copy(), drive_int, e, t, d, s,
                         int(steps), tol_int, float(dt), int(angle_shift),
                         None if form == "drive" else rows)


def pairwise_term_bound(config: ArrayFixedConfig) -> int:
    """M >= |cos_ij|, |sin_ij| of the lane CORDIC (2**F plus its error budget, rounded up)."""
    return (1 << config.frac_bits) + math.ceil(error_budget(config.cordic)["total_lsb"])


def pairwise_sum_shift(config: ArrayFixedConfig, total: int) -> int:
    """u: the pairwise form's shift of a row with sum_j |k_ij| = total, so that R(C_i, u)
    and R(S_i, u) fit the update's 18 bits (they go to it unrotated; matvec's rotation
    input keeps a bit for its sqrt(2)). With v = total M (`pairwise_term_bound`) >= |C_i|,
    |S_i| and w = v + (v >> 17) + 1: u = max(0, bitlen(w) - 17) gives |R(., u)| <= 2**17 - 1:
    u = 0 means w < 2**17, so v <= 2**17 - 2 and R is the identity; else, when w keeps v's
    length b, u = b - 17 and 2**(u-1) <= v >> 17 (v >= 2**(b-1)), so v + 2**(u-1) <= w <
    2**(17+u); when w is one bit longer, u = b - 16 and v + 2**(u-1) < 2**b + 2**(b-17) <
    2**(17+u). In that last case one shift less might have fitted: the rule is the least
    shift or one more (for v within 2**-17 of a power of two), and one rule for golden and
    RTL without a variable shift in the check. Decided after measuring the shift matvec uses: a row summing to 2**e
    left its sums within 2**15, two bits short of the range, and the head's rows whose
    anchors nearly cancel then stopped up to 0.5 / (|hn| 2**15) rad from their direction."""
    v = total * pairwise_term_bound(config)
    return max(0, (v + (v >> (SCALE_BITS - 1)) + 1).bit_length() - (SCALE_BITS - 1))


def _row_exponents(K: np.ndarray) -> tuple[int, np.ndarray]:
    """(e, r (N,)): each row's largest 16-bit exponent e_i (`_largest_exponent`), e the
    least over rows with a coupling, r_i = min(e_i - e, MAX_ROW_SHIFT) there and 0 in rows
    without one."""
    exps = np.array([_largest_exponent(row, COUPLING_BITS) for row in K], np.int64)
    coupled = np.any(K != 0, axis=1)
    if not coupled.any():
        return 0, np.zeros(K.shape[0], np.int64)
    e = int(exps[coupled].min())
    return e, np.where(coupled, np.minimum(exps - e, MAX_ROW_SHIFT), 0)


def _phases(q: QuantizedCase, acc: np.ndarray) -> np.ndarray:
    shift = q.config.acc_bits - q.config.phase_bits
    return (round_shift(acc.astype(np.int64), shift)) % (1 << q.config.phase_bits)


def _cos_sin(q: QuantizedCase, theta: np.ndarray):
    cordic = q.config.cordic
    one = np.full(theta.shape, 1 << q.config.frac_bits, np.int64)
    c, s, _ = cordic_fixed(cordic, one, np.zeros_like(one), theta)
    return c, s


def nudge_antipode(x, y):
    """y, with +1 where the rotated vector lies exactly on the negative x axis."""
    return np.where((y == 0) & (x < 0), 1, y)


def _rotate_by_minus(q: QuantizedCase, x, y, theta):
    """(x, y) rotated by -theta: e^{-i theta} (x + i y)."""
    cordic = q.config.cordic
    minus = (-theta) % (1 << q.config.phase_bits)
    x_out, y_out, _ = cordic_fixed(cordic, x, y, minus)
    return x_out, y_out


def coupling_sums(q: QuantizedCase, acc: np.ndarray):
    """(x_i, S_i, sum cos, sum sin): S_i after the sum shift (the rotation's y output nudged
    off an exact antipode, or the rounded pairwise sum), x_i its partner in the oscillator's
    frame (the rotation's x output, or pairwise R(sum_j k_ij cos_ij, t + r_i)), and the
    order-parameter sums (each row's sums rounded at its shift t + r_i)."""
    theta = _phases(q, acc)
    c, s = _cos_sin(q, theta)
    order = (c.sum(), s.sum())
    shift = q.t + q.rows
    if q.form == "pairwise":
        diff = (theta[None, :] - theta[:, None]) % (1 << q.config.phase_bits)
        cos_ij, sin_ij = _cos_sin(q, diff)
        # sin(pi) is one angle for both i->j and j->i: a nudge of one sign would move both
        # oscillators together and keep them antipodal. The pair's order decides the sign.
        pair_sign = np.where(np.arange(q.n)[None, :] > np.arange(q.n)[:, None], 1, -1)
        antipode = (sin_ij == 0) & (cos_ij < 0)
        total = np.sum(q.k * np.where(antipode, pair_sign, sin_ij), axis=1)
        along = np.sum(q.k * cos_ij, axis=1)
        return round_shift(along, shift), round_shift(total, shift), order[0], order[1]
    if q.form == "matvec":
        x = round_shift(q.k @ c, shift)
        y = round_shift(q.k @ s, shift)
    else:
        x, y = q.drive[:, 0], q.drive[:, 1]
    x_out, y_out = _rotate_by_minus(q, x, y, theta)
    return x_out, nudge_antipode(x_out, y_out), order[0], order[1]


def step_fixed(q: QuantizedCase, acc: np.ndarray):
    """One Euler step: returns (new accumulators, per-oscillator increments, order sums,
    per-oscillator calm flags of this step's test)."""
    along, summed, cos_sum, sin_sum = coupling_sums(q, acc)
    inc = q.w + round_shift(summed * q.d, q.s)
    inc = np.where(q.pinned, 0, inc)
    mask = np.uint64((1 << q.config.acc_bits) - 1)     # acc_bits <= 48 by the config
    new = (acc + inc.astype(np.uint64)) & mask
    return new, inc, (int(cos_sum), int(sin_sum)), _calm(q, inc, along, summed)


def _calm(q: QuantizedCase, inc, along, summed) -> np.ndarray:
    """Each oscillator's calm test (module docstring, converge); `summed` as coupling_sums
    gives it (the antipode nudge only makes y nonzero where x < 0, failing the test anyway)."""
    if q.angle_shift:
        # A zero coupling (0, 0) never moves the oscillator: calm, as a zero increment is.
        return ((along > 0) & ((np.abs(summed) << q.angle_shift) <= along)) \
            | ((along == 0) & (summed == 0))
    tol = 0 if q.tol is None else q.tol
    return np.abs(_wrapped(inc, q.config.acc_bits)) < tol


def _wrapped(inc: np.ndarray, bits: int) -> np.ndarray:
    half = 1 << (bits - 1)
    return (inc + half) % (1 << bits) - half


@dataclass
class FixedRun:
    acc: np.ndarray
    steps_taken: int
    order_sums: np.ndarray        # (steps_taken + 1, 2) int64
    trajectory: np.ndarray | None  # (steps_taken + 1, N) uint64 accumulators
    converged: bool = False       # the detector stopped the run

    def theta(self, q: QuantizedCase) -> np.ndarray:
        return self.acc.astype(np.float64) / 2.0 ** q.config.acc_bits * 2 * math.pi

    def r(self, q: QuantizedCase) -> np.ndarray:
        one = 2.0 ** q.config.frac_bits
        return np.hypot(self.order_sums[:, 0], self.order_sums[:, 1]) / (q.n * one)


def run_fixed(q: QuantizedCase, trace: bool = False) -> FixedRun:
    """Euler steps until `steps` or convergence; the order sums are taken before each step
    and after the last (steps_taken + 1 entries)."""
    acc = q.acc0.copy()
    trajectory = [acc.copy()] if trace else None
    sums, calm, taken = [], 0, 0
    for _ in range(q.steps):
        acc_next, _, order, still = step_fixed(q, acc)
        sums.append(order)
        acc = acc_next
        taken += 1
        if trace:
            trajectory.append(acc.copy())
        if q.tol is not None:
            calm = calm + 1 if still[~q.pinned].all() else 0
            if calm >= CONVERGE_STEPS:
                break
    theta = _phases(q, acc)
    c, s = _cos_sin(q, theta)
    sums.append((int(c.sum()), int(s.sum())))
    return FixedRun(acc, taken, np.array(sums, np.int64),
                    np.array(trajectory) if trace else None, calm >= CONVERGE_STEPS)


def step_error_bound(q: QuantizedCase, K=None) -> float:
    """The largest difference, in radians, between one fixed-point Euler step and one float
    Euler step of the unquantized case, both taken from the same accumulator phases.

    Each term is a bound (units: radians, or radians per unit time before the factor dt):
      omega       w_i's rounding: 1/2 accumulator LSB
      phase       the CORDIC sees theta rounded to P bits: 1/2 LSB per rounded phase, entering
                  sin or the rotation with slope <= 1, weighted by sum_j |K_ij| (or |h_i|)
      cordic      each CORDIC result is within its budget (`error_budget`, integer LSBs)
      couplings   |k 2**-(e + r_i) - K| <= 2**-e / 2 per entry, N entries, |sin| <= 1
      shifts      the sum shift's rounding, 2**(t - e - F) / 2 per rounded sum
      scale       D's rounding: relative 2**-(SCALE_BITS - 2) of the increment
      final       the last shift: 1/2 accumulator LSB
    """
    cfg = q.config
    f, p, a = cfg.frac_bits, cfg.phase_bits, cfg.acc_bits
    acc_lsb = 2 * math.pi / 2 ** a
    phase_lsb = 2 * math.pi / 2 ** p
    budget = error_budget(cfg.cordic)["total_lsb"]
    unit = 2.0 ** (q.t - q.e - f)            # value of one integer unit after the sum shift
    if q.form == "drive":
        magnitude = float(np.max(np.hypot(q.drive[:, 0], q.drive[:, 1]), initial=0)) * unit
        rate = magnitude * 0.5 * phase_lsb + budget * unit + math.sqrt(2) * 0.5 * unit
        largest = magnitude
    else:
        K = np.asarray(K, float)
        row = float(np.max(np.sum(np.abs(K), axis=1), initial=0))
        coupling_rounding = q.n * 0.5 * 2.0 ** -q.e
        cordic_lsb = budget * 2.0 ** -f
        if q.form == "pairwise":
            rate = row * (phase_lsb + cordic_lsb) + coupling_rounding + 0.5 * unit
        else:
            per_sum = row * (cordic_lsb + 0.5 * phase_lsb) + coupling_rounding + 0.5 * unit
            rate = (math.sqrt(2) * per_sum + math.sqrt(2) * row * 0.5 * phase_lsb
                    + budget * unit)
        largest = row
    scale = largest * 2.0 ** -(SCALE_BITS - 2)
    return 0.5 * acc_lsb + q.dt * (rate + scale) + 0.5 * acc_lsb


def lipschitz(q: QuantizedCase, K=None) -> float:
    """L with |f(a) - f(b)|_inf <= L |a - b|_inf for the right-hand side f."""
    if q.form == "drive":
        return float(np.max(np.hypot(q.drive[:, 0], q.drive[:, 1]), initial=0)) \
            * 2.0 ** (q.t - q.e - q.config.frac_bits)
    return 2 * float(np.max(np.sum(np.abs(np.asarray(K, float)), axis=1), initial=0))


def trajectory_error_bound(q: QuantizedCase, K=None, steps: int | None = None) -> float:
    """Bound on |theta_fixed - theta_float| (radians, wrapped) after `steps` Euler steps from
    the same start: local errors e grow at most by (1 + dt L) per step (Gronwall), so
    E_n <= e ((1 + dt L)**n - 1) / (dt L). A worst case: synchronizing dynamics contract."""
    n = q.steps if steps is None else steps
    e = step_error_bound(q, K)
    growth = q.dt * lipschitz(q, K)
    if growth == 0:
        return e * n
    return e * ((1 + growth) ** n - 1) / growth
