"""CORDIC: configuration, float ideal, bit-exact fixed-point model and error budget.

The fixed-point model here is the specification of `oscarray.hdl.cordic`: both read the same
`CordicConfig` and its micro-op schedule, so they cannot drift.

Number formats (W = data_width, F = W - 2, P = phase_bits, G = guard bits, H = angle guard bits)
------------------------------------------------------------------------------------------------
- x, y: signed W-bit two's complement, Q2.F (value = integer / 2**F, range [-2, 2)).
- z, circular modes: unsigned P-bit binary angle (value = integer / 2**P turns).
- z, linear and hyperbolic modes: signed W-bit Q2.F, like x and y.
- Inside, x and y carry G extra fraction bits and 2 extra integer bits (the circular gain
  K ~ 1.647 times the corner magnitude 2*sqrt(2) stays below 8); z carries H extra fraction bits.

Rounding policy (one policy, the same in the RTL): every right shift rounds half up,
R(v, s) = floor((v + 2**(s-1)) / 2**s); outputs then saturate to the W-bit range. In the RTL,
x - R(y, s) is a single adder: x + ~(y >> s) + (1 - y[s-1]), so rounding costs no extra logic.

Modes
-----
rotate     (x, y) rotated counter-clockwise by z; z_out = residual angle (~0).
vector     x_out = |(x, y)|, y_out = residual (~0), z_out = z + atan2(y, x) (mod 1 turn);
           the zero vector gives x_out = 0 and z_out = z (atan2(0, 0) = 0, as NumPy).
multiply   y_out = y + x * z; x_out = x, z_out = residual (~0).
divide     z_out = z + y / x, valid while |y| < 2 |x| (otherwise the quotient saturates
           towards +-2); x_out = |x|, y_out = residual (~0); x = 0 gives the saturated quotient.
hyperbolic x_out = cosh z, y_out = sinh z, z_out = exp z (x and y inputs are ignored); range
           reduction z = q ln 2 + r with |r| <= ln2/2 puts every z in [-2, 2) in range.

Circular modes reach the full circle by a half-turn pre-rotation (negate x and y), so the
micro-rotations only ever see angles within +-90 degrees (convergence range +-99.88 degrees).
Gain compensation is a product of factors (1 + s 2**-k), each applied to x and y by the same
shift-and-add as a micro-rotation, so the iterative architecture reuses its adders for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

__all__ = [
    "MODES", "CIRCULAR", "LINEAR", "HYPERBOLIC", "MicroOp", "CordicConfig", "CordicConfigError",
    "cordic_fixed", "cordic_ideal", "error_budget", "round_shift", "saturate",
    "promised_errors", "error_stats", "check_inputs",
]

CIRCULAR, LINEAR, HYPERBOLIC = "circular", "linear", "hyperbolic"
MODES = {
    "rotate": CIRCULAR,
    "vector": CIRCULAR,
    "multiply": LINEAR,
    "divide": LINEAR,
    "hyperbolic": HYPERBOLIC,
}
VECTORING_MODES = {"vector", "divide"}

# Accuracy the defaults are designed for, in output LSBs (see `error_budget`).
DEFAULT_TARGET_LSB = 2.0
# Vectoring accuracy is promised for inputs at least this large (real units).
DEFAULT_MIN_VECTOR_MAGNITUDE = 2.0 ** -8
# Division accuracy is promised for divisors at least this large (real units).
DEFAULT_MIN_DIVISOR = 0.5
# Hyperbolic range reduction: q = round(z / ln 2) takes these values for z in [-2, 2).
HYPERBOLIC_Q_RANGE = range(-3, 4)


class CordicConfigError(ValueError):
    """A CORDIC configuration that is invalid or cannot reach its precision target."""


@dataclass(frozen=True)
class MicroOp:
    """One step of the CORDIC schedule.

    kind      "rotation": x -= m*d*R(y, shift); y += d*R(x, shift); z -= d*angle
              "scale":    x += sign*R(x, shift); y += sign*R(y, shift)  (gain compensation)
    shift     the right shift k of this step
    angle     rotation steps: the z constant (atan, atanh or 2**-k) in internal z LSBs
    sign      scale steps: +1 or -1
    """

    kind: str
    shift: int
    angle: int = 0
    sign: int = 0


def round_shift(v, s):
    """R(v, s): arithmetic right shift by s >= 0 that rounds half up (the project's policy);
    s may be an array of per-element shifts (broadcast against v)."""
    if np.ndim(s) == 0:
        if s == 0:
            return v
        return (v + (1 << (s - 1))) >> s
    s = np.asarray(s, np.int64)
    half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
    return (np.asarray(v, np.int64) + half) >> s


def saturate(v, width: int):
    """Clamp integers to the signed `width`-bit range."""
    return np.clip(v, -(1 << (width - 1)), (1 << (width - 1)) - 1)


def _hyperbolic_shifts(count: int) -> list[int]:
    """Shifts 1, 2, 3, 4, 4, 5, ..., 13, 13, ...: steps 4, 13, 40, ... repeat for convergence."""
    shifts, k, repeat = [], 1, 4
    while len(shifts) < count:
        shifts.append(k)
        if k == repeat and len(shifts) < count:
            shifts.append(k)
            repeat = 3 * repeat + 1
        k += 1
    return shifts


@lru_cache(maxsize=None)
def _gain_factors(target: float, tolerance: float) -> tuple[tuple[int, int], ...]:
    """Greedy product of (1 + sign * 2**-shift) factors within `tolerance` of `target`."""
    factors, remaining = [], target
    while abs(remaining - 1) > tolerance:
        _, shift, sign = min(
            (abs(remaining / (1 + sign * 2.0 ** -shift) - 1), shift, sign)
            for shift in range(1, 64) for sign in (1, -1))
        factors.append((sign, shift))
        remaining /= 1 + sign * 2.0 ** -shift
    return tuple(factors)


@dataclass(frozen=True)
class CordicConfig:
    """Everything that defines a CORDIC core; read by the golden model and the RTL alike.

    mode         one of MODES
    data_width   W: bits of x and y (and of z outside the circular modes), Q2.(W-2)
    phase_bits   P: bits of the binary angle z in the circular modes
    iterations   micro-rotation count; None picks the smallest that meets `target_lsb`
    guard_bits   G: extra fraction bits of x and y inside; None picks the smallest
    angle_guard_bits  H: extra fraction bits of z inside; None picks the smallest
    target_lsb   the error budget the core must meet, in output LSBs
    """

    mode: str = "rotate"
    data_width: int = 18
    phase_bits: int = 16
    iterations: int | None = None
    guard_bits: int | None = None
    angle_guard_bits: int | None = None
    target_lsb: float = DEFAULT_TARGET_LSB
    _resolved: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise CordicConfigError(
                f"unknown CORDIC mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not (8 <= self.data_width <= 32):
            raise CordicConfigError(f"data_width must be 8..32 bits, not {self.data_width}")
        if not (8 <= self.phase_bits <= 32):
            raise CordicConfigError(f"phase_bits must be 8..32 bits, not {self.phase_bits}")
        for name in ("iterations", "guard_bits", "angle_guard_bits"):
            value = getattr(self, name)
            if value is not None and not (0 <= value <= 48):
                raise CordicConfigError(f"{name} must be 0..48, not {value}")
        if self.iterations is not None and self.iterations < 4:
            raise CordicConfigError(f"iterations must be at least 4, not {self.iterations}")
        if not self.target_lsb > 0.5:
            raise CordicConfigError(
                f"target_lsb must exceed the 0.5 LSB of the final rounding, not {self.target_lsb}")
        if self._resolved:
            return
        resolved = self._resolve()
        for name in ("iterations", "guard_bits", "angle_guard_bits"):
            object.__setattr__(self, name, getattr(resolved, name))
        object.__setattr__(self, "_resolved", True)
        budget = error_budget(self)
        if budget["total_lsb"] > self.target_lsb:
            raise CordicConfigError(
                f"{self.mode} CORDIC with {self.iterations} iterations, {self.guard_bits} guard "
                f"bits and {self.angle_guard_bits} angle guard bits cannot reach "
                f"{self.target_lsb} LSB: its error budget is {budget['total_lsb']:.3f} LSB "
                f"({budget['limited_by']}). Leave the parameter unset to have it chosen.")

    def _resolve(self) -> "CordicConfig":
        """Fill unset parameters with the cheapest values whose budget meets the target."""
        return _resolve_cached(self.mode, self.data_width, self.phase_bits, self.iterations,
                               self.guard_bits, self.angle_guard_bits, self.target_lsb)

    def _resolve_uncached(self) -> "CordicConfig":
        def candidates(value, lo, hi):
            return [value] if value is not None else range(lo, hi)
        best = None
        for n in candidates(self.iterations, 8, 49):
            for g in candidates(self.guard_bits, 2, 17):
                for h in candidates(self.angle_guard_bits, 2, 17):
                    trial = CordicConfig(self.mode, self.data_width, self.phase_bits, n, g, h,
                                         self.target_lsb, _resolved=True)
                    if error_budget(trial)["total_lsb"] <= self.target_lsb:
                        # Area: the adders of every micro-op, x and y plus z.
                        cost = len(trial.schedule) * (2 * trial.x_width + trial.z_width)
                        if best is None or cost < best[0]:
                            best = (cost, trial)
                        break
        if best is None:
            # No choice meets the target: keep the largest, the budget check explains why.
            return CordicConfig(self.mode, self.data_width, self.phase_bits,
                                self.iterations if self.iterations is not None else 48,
                                self.guard_bits if self.guard_bits is not None else 16,
                                self.angle_guard_bits if self.angle_guard_bits is not None else 16,
                                self.target_lsb, _resolved=True)
        return best[1]

    # -- formats ---------------------------------------------------------------------------
    @property
    def coordinates(self) -> str:
        return MODES[self.mode]

    @property
    def vectoring(self) -> bool:
        return self.mode in VECTORING_MODES

    @property
    def data_frac_bits(self) -> int:
        return self.data_width - 2

    @property
    def x_width(self) -> int:
        """Width of x and y inside: 2 more integer bits and G more fraction bits."""
        return self.data_width + 2 + self.guard_bits

    @property
    def z_in_width(self) -> int:
        return self.phase_bits if self.coordinates == CIRCULAR else self.data_width

    @property
    def z_frac_bits(self) -> int:
        """Fraction bits of z inside (turns in circular mode, real units otherwise)."""
        base = self.phase_bits if self.coordinates == CIRCULAR else self.data_frac_bits
        return base + self.angle_guard_bits

    @property
    def z_width(self) -> int:
        if self.coordinates == CIRCULAR:
            return self.phase_bits + self.angle_guard_bits      # wraps modulo one turn
        return self.data_width + 1 + self.angle_guard_bits      # z + y/x reaches +-4

    # -- schedule --------------------------------------------------------------------------
    @cached_property
    def rotation_shifts(self) -> list[int]:
        if self.coordinates == HYPERBOLIC:
            return _hyperbolic_shifts(self.iterations)
        return list(range(self.iterations))

    @cached_property
    def rotation_gain(self) -> float:
        """The magnitude gain of the micro-rotations (1 in linear mode)."""
        m = {CIRCULAR: 1, LINEAR: 0, HYPERBOLIC: -1}[self.coordinates]
        return math.prod(math.sqrt(1 + m * 4.0 ** -k) for k in self.rotation_shifts)

    @cached_property
    def gain_factors(self) -> list[tuple[int, int]]:
        """(sign, shift) factors whose product approximates 1/K in circular mode."""
        if self.coordinates != CIRCULAR:
            return []
        return _gain_factors(1 / self.rotation_gain, 2.0 ** -(self.x_frac_bits + 1))

    @property
    def x_frac_bits(self) -> int:
        return self.data_frac_bits + self.guard_bits

    def _angle(self, shift: int) -> float:
        if self.coordinates == CIRCULAR:
            return math.atan(2.0 ** -shift) / (2 * math.pi)
        if self.coordinates == HYPERBOLIC:
            return math.atanh(2.0 ** -shift)
        return 2.0 ** -shift

    @cached_property
    def schedule(self) -> tuple[MicroOp, ...]:
        """The micro-ops in order: rotations, then gain-compensation scales."""
        rotations = [MicroOp("rotation", k, round(self._angle(k) * 2 ** self.z_frac_bits))
                     for k in self.rotation_shifts]
        scales = [MicroOp("scale", shift, sign=sign) for sign, shift in self.gain_factors]
        return tuple(rotations + scales)

    @cached_property
    def hyperbolic_start(self) -> int:
        """x at the start of hyperbolic rotation: 1/K_h, so no multiply is needed after."""
        return round(2 ** self.x_frac_bits / self.rotation_gain)

    @cached_property
    def ln2(self) -> int:
        """ln 2 in internal z LSBs (hyperbolic range reduction)."""
        return round(math.log(2) * 2 ** self.z_frac_bits)

    @cached_property
    def hyperbolic_thresholds(self) -> tuple[int, ...]:
        """z >= thresholds[j] for each j counted gives q + 3 (q = round(z / ln 2))."""
        return tuple(round((q - 0.5) * math.log(2) * 2 ** self.z_frac_bits)
                     for q in HYPERBOLIC_Q_RANGE[1:])

    @property
    def latency_pipelined(self) -> int:
        """Clock cycles from input accepted to output valid in the pipelined architecture."""
        return self.pre_stages + len(self.schedule) + self.post_stages

    @property
    def pre_stages(self) -> int:
        return 2 if self.mode in ("rotate", "hyperbolic") else 1

    @property
    def post_stages(self) -> int:
        return 5 if self.coordinates == HYPERBOLIC else 2


@lru_cache(maxsize=None)
def _resolve_cached(mode, data_width, phase_bits, iterations, guard_bits, angle_guard_bits,
                    target_lsb) -> CordicConfig:
    partial = CordicConfig(mode, data_width, phase_bits, iterations, guard_bits,
                           angle_guard_bits, target_lsb, _resolved=True)
    return partial._resolve_uncached()


# ---------------------------------------------------------------------------------------------
# Bit-exact fixed-point model
# ---------------------------------------------------------------------------------------------

def _as_int64(name: str, values, width: int, signed: bool) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not {array.dtype}")
    array = array.astype(np.int64)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    if array.size and (array.min() < lo or array.max() > hi):
        raise ValueError(f"{name} holds values outside the {width}-bit "
                         f"{'signed' if signed else 'unsigned'} range [{lo}, {hi}]")
    return array


def check_inputs(config: CordicConfig, x, y, z):
    """Validate and broadcast the integer inputs of a CORDIC (raises before any work)."""
    x = _as_int64("x", x, config.data_width, True)
    y = _as_int64("y", y, config.data_width, True)
    z = _as_int64("z", z, config.z_in_width, config.coordinates != CIRCULAR)
    return np.broadcast_arrays(x, y, z)


def _wrap(v, width: int):
    """Two's complement wrap to `width` bits (the z register's modular arithmetic)."""
    half = 1 << (width - 1)
    return ((v + half) & ((1 << width) - 1)) - half


def _pre(config: CordicConfig, x, y, z):
    """Input stage: move to internal formats and bring the problem into convergence range.

    Returns x, y, z (internal) and the hyperbolic range-reduction exponent q (else zeros).
    """
    g, h = config.guard_bits, config.angle_guard_bits
    x, y = x << g, y << g
    q = np.zeros_like(x)
    if config.mode == "rotate":
        p = config.phase_bits
        quadrant = z >> (p - 2)
        flip = (quadrant == 1) | (quadrant == 2)
        x, y = np.where(flip, -x, x), np.where(flip, -y, y)
        z = _wrap(np.where(flip, z ^ (1 << (p - 1)), z), p) << h
    elif config.mode == "vector":
        flip = x < 0
        x, y = np.where(flip, -x, x), np.where(flip, -y, y)
        z = _wrap((z << h) + np.where(flip, 1 << (config.z_width - 1), 0), config.z_width)
    elif config.mode == "divide":
        flip = x < 0
        x, y = np.where(flip, -x, x), np.where(flip, -y, y)
        z = z << h
    elif config.mode == "multiply":
        z = z << h
    else:  # hyperbolic: q = round(z / ln 2) by comparisons, then r = z - q ln 2
        z = z << h
        q = sum((z >= t).astype(np.int64) for t in config.hyperbolic_thresholds) \
            + HYPERBOLIC_Q_RANGE[0]
        z = z - q * config.ln2
        x = np.full_like(x, config.hyperbolic_start)
        y = np.zeros_like(y)
    return x, y, z, q


def _micro_ops(config: CordicConfig, x, y, z):
    """Run the schedule: micro-rotations, then gain-compensation scales."""
    m = {CIRCULAR: 1, LINEAR: 0, HYPERBOLIC: -1}[config.coordinates]
    for op in config.schedule:
        k = op.shift
        if op.kind == "scale":
            x, y = x + op.sign * round_shift(x, k), y + op.sign * round_shift(y, k)
            continue
        # d = +1 rotates counter-clockwise: towards z = 0, or towards y = 0 when vectoring.
        d = np.where(y < 0, 1, -1) if config.vectoring else np.where(z >= 0, 1, -1)
        x, y = x - m * d * round_shift(y, k), y + d * round_shift(x, k)
        z = _wrap(z - d * op.angle, config.z_width)
    return x, y, z


def _shift_by(v, q):
    """v * 2**q for a small signed exponent q: left shift, or the rounded right shift."""
    out = v.copy()
    for exponent in np.unique(q):
        sel = q == exponent
        out[sel] = v[sel] << exponent if exponent >= 0 else round_shift(v[sel], -exponent)
    return out


def _post(config: CordicConfig, x, y, z, q, zero, z_in):
    """Output stage: round to the output formats and saturate."""
    g, h, w = config.guard_bits, config.angle_guard_bits, config.data_width
    if config.coordinates == HYPERBOLIC:
        e_plus, e_minus = x + y, x - y                        # e**r and e**-r
        a, b = _shift_by(e_plus, q), _shift_by(e_minus, -q)   # e**z and e**-z
        return (saturate(round_shift(a + b, g + 1), w), saturate(round_shift(a - b, g + 1), w),
                saturate(round_shift(a, g), w))
    x_out = saturate(round_shift(x, g), w)
    y_out = saturate(round_shift(y, g), w)
    if config.coordinates == CIRCULAR:
        z_out = round_shift(z, h) & ((1 << config.phase_bits) - 1)
        if config.mode == "vector":
            z_out = np.where(zero, z_in, z_out)
    else:
        z_out = saturate(round_shift(z, h), w)
    return x_out, y_out, z_out


def cordic_fixed(config: CordicConfig, x, y, z):
    """The bit-exact model of the RTL: integer arrays in, integer arrays out.

    x, y: signed data_width-bit integers; z: a phase_bits-bit unsigned binary angle (circular
    modes) or a signed data_width-bit integer (other modes). Returns (x_out, y_out, z_out) in
    the same formats.
    """
    x, y, z = check_inputs(config, x, y, z)
    zero = (x == 0) & (y == 0)
    xi, yi, zi, q = _pre(config, x, y, z)
    xi, yi, zi = _micro_ops(config, xi, yi, zi)
    return _post(config, xi, yi, zi, q, zero, z)


# ---------------------------------------------------------------------------------------------
# Float ideal
# ---------------------------------------------------------------------------------------------

def cordic_ideal(config: CordicConfig, x, y, z):
    """The exact mathematics in float64, in output LSB units (not rounded, clipped to range).

    Angles come back in phase LSBs (turns * 2**phase_bits), wrapped to [0, 2**phase_bits).
    """
    x, y, z = check_inputs(config, x, y, z)
    f = config.data_frac_bits
    scale = 2.0 ** f
    lo, hi = -(2 ** (config.data_width - 1)), 2 ** (config.data_width - 1) - 1
    xr, yr = x / scale, y / scale
    mode = config.mode

    def clip(v):
        return np.clip(v * scale, lo, hi)

    if mode in ("rotate", "vector"):
        turns = 2.0 ** config.phase_bits
        theta = z / turns * 2 * np.pi
        if mode == "rotate":
            c, s = np.cos(theta), np.sin(theta)
            return clip(xr * c - yr * s), clip(xr * s + yr * c), np.zeros_like(xr)
        angle = np.mod(z + np.arctan2(yr, xr) / (2 * np.pi) * turns, turns)
        return clip(np.hypot(xr, yr)), np.zeros_like(xr), angle
    zr = z / scale
    if mode == "multiply":
        return clip(xr), clip(yr + xr * zr), np.zeros_like(xr)
    if mode == "divide":
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = np.where(x != 0, yr / np.where(x != 0, xr, 1), np.sign(yr) * np.inf)
        return clip(np.abs(xr)), np.zeros_like(xr), clip(zr + quotient)
    return clip(np.cosh(zr)), clip(np.sinh(zr)), clip(np.exp(zr))


# ---------------------------------------------------------------------------------------------
# Error budget
# ---------------------------------------------------------------------------------------------

def error_budget(config: CordicConfig) -> dict:
    """Worst-case error versus `cordic_ideal`, derived term by term, in output LSBs.

    The terms (each a bound, added without cancellation):
      rounding   every micro-op rounds its shifted operand: <= 1/2 internal LSB per component,
                 i.e. a vector of <= sqrt(2)/2 * 2**-G output LSB per step. Later steps rotate
                 and scale it by at most the remaining gain, compensation divides by K, so each
                 step contributes at most its own size (hyperbolic: the gain is < 1).
      angle      circular: the rotation still owed after the last step, atan(2**-(N-1)), plus the
                 atan table's rounding, 1/2 z LSB per entry; it turns a vector of the largest
                 magnitude (2*sqrt(2), the corner of the input square) by that much.
                 Linear: the residual |z_N| <= 2**-(N-1) times |x| < 2.
      gain       circular: the gain factors' product differs from 1/K by a relative epsilon.
      output     the final round half up: 1/2 LSB.
    Vectoring angles are in phase LSBs for inputs of magnitude >= 2**-8: a rounding error e
    on a vector of length |v| turns it by at most e/|v| radians.
    """
    n, g = config.iterations, config.guard_bits
    f, p = config.data_frac_bits, config.phase_bits
    lsb = 2.0 ** f                       # output LSBs per unit
    step_error = math.sqrt(2) / 2 * 2.0 ** -g
    scale_steps = len(config.gain_factors)
    terms: dict[str, float] = {"output": 0.5}
    if config.coordinates == CIRCULAR:
        corner = 2 * math.sqrt(2)
        owed_turns = (math.atan(2.0 ** -(n - 1)) / (2 * math.pi)
                      + n * 0.5 * 2.0 ** -config.z_frac_bits)
        product = math.prod(1 + s * 2.0 ** -k for s, k in config.gain_factors)
        epsilon = abs(product * config.rotation_gain - 1)
        rounding = (n + 1.5 * scale_steps) * step_error   # scales: partial products <= 1.5
        if config.mode == "rotate":
            terms.update(rounding=rounding, angle=corner * lsb * 2 * math.pi * owed_turns,
                         gain=corner * lsb * epsilon)
        else:
            # Magnitude: the owed angle shortens x by 1 - cos, negligible but counted.
            terms.update(rounding=rounding, gain=corner * lsb * epsilon,
                         angle=corner * lsb * (1 - math.cos(2 * math.pi * owed_turns)))
            small = DEFAULT_MIN_VECTOR_MAGNITUDE * lsb     # the smallest promised |v|, in LSB
            angle_terms = {
                "output": 0.5,
                "owed": owed_turns * 2 ** p,
                "rounding": n * step_error / small / (2 * math.pi) * 2 ** p,
            }
            angle_total = sum(angle_terms.values())
            total = sum(terms.values())
            return {"total_lsb": max(total, angle_total), "magnitude_lsb": total,
                    "angle_lsb": angle_total, "terms": terms, "angle_terms": angle_terms,
                    "limited_by": "vectoring angle" if angle_total > total else "magnitude"}
    elif config.coordinates == LINEAR:
        residual = 2.0 ** -(n - 1)
        if config.mode == "multiply":
            terms.update(rounding=n * 0.5 * 2.0 ** -g, residual=2 * residual * lsb)
        else:
            # Quotient: the residual y_N / x and the rounding of y, divided by |x| >= 1/2.
            terms.update(residual=residual * lsb,
                         rounding=n * 0.5 * 2.0 ** -g / DEFAULT_MIN_DIVISOR)
    else:
        # Hyperbolic: r is off by the ln 2 constant's rounding times |q| <= 2 for in-range
        # outputs, plus the residual atanh(2**-k_last) and the table's rounding; the start
        # value 1/K_h is rounded; e**+-z multiplies these by up to 2**2 (|q| <= 2 in range),
        # and the outputs (< 2 when not saturated) carry them as relative errors.
        last = config.rotation_shifts[-1]
        z_lsb = 2.0 ** -config.z_frac_bits
        owed = math.atanh(2.0 ** -last) + (n * 0.5 + 2 * 0.5 + 0.5) * z_lsb
        terms.update(angle=2 * owed * lsb,
                     rounding=4 * (n * step_error + 2.0 ** -g),
                     shifting=0.5)
    total = sum(terms.values())
    return {"total_lsb": total, "terms": terms, "limited_by": max(terms, key=terms.get)}


# ---------------------------------------------------------------------------------------------
# Measured error versus the ideal
# ---------------------------------------------------------------------------------------------

def promised_errors(config: CordicConfig, x, y, z, outputs) -> dict[str, np.ndarray]:
    """|output - ideal| in output LSBs for every output the mode promises, on its domain.

    rotate: x and y. vector: x (magnitude) everywhere, z (angle, phase LSBs, wrapped) where
    |(x, y)| >= 2**-8. multiply: y. divide: z where |x| >= 1/2 and |y / x| is within the
    convergence range. hyperbolic: x, y and z. Residual outputs (~0) are not promised.
    """
    x, y, z = check_inputs(config, x, y, z)
    ideal = dict(zip("xyz", cordic_ideal(config, x, y, z)))
    got = dict(zip("xyz", (np.asarray(o, dtype=np.int64) for o in outputs)))
    err = {k: np.abs(got[k] - ideal[k]) for k in "xyz"}
    lsb = 2.0 ** config.data_frac_bits
    mode = config.mode
    if mode == "rotate":
        return {"x": err["x"], "y": err["y"]}
    if mode == "vector":
        turns = 2 ** config.phase_bits
        angle = np.abs((got["z"] - ideal["z"] + turns / 2) % turns - turns / 2)
        large = np.hypot(x, y) >= DEFAULT_MIN_VECTOR_MAGNITUDE * lsb
        return {"x": err["x"], "z": angle[large]}
    if mode == "multiply":
        return {"y": err["y"]}
    if mode == "divide":
        reach = 2 - 2.0 ** -(config.iterations - 2)
        domain = (np.abs(x) >= DEFAULT_MIN_DIVISOR * lsb) & (np.abs(y) < reach * np.abs(x))
        return {"z": err["z"][domain]}
    return err


def error_stats(errors: dict[str, np.ndarray]) -> dict:
    """Max and RMS over all promised outputs, and per output, in output LSBs."""
    everything = np.concatenate([e.ravel() for e in errors.values()]) if errors else np.zeros(0)
    if everything.size == 0:
        return {"max_err_lsb": 0.0, "rms_err_lsb": 0.0, "per_output": {}}

    def stats(e):
        if e.size == 0:
            return {"max": 0.0, "rms": 0.0, "count": 0}
        return {"max": float(e.max()), "rms": float(np.sqrt(np.mean(e ** 2))),
                "count": int(e.size)}

    return {"max_err_lsb": float(everything.max()),
            "rms_err_lsb": float(np.sqrt(np.mean(everything ** 2))),
            "per_output": {k: stats(e) for k, e in errors.items()}}
