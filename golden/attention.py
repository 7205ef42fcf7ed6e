"""Paper A's fixed-query oscillator attention (arXiv:2606.12059): case, float model, oracles.

The model (per head; tokens i, j = 0 .. T-1)
--------------------------------------------
    raw_ij = q_i . k_j / sqrt(d_h)
    W_ij   = sigma(raw_ij)     sigma: "softplus" log(1 + e^x), "relu_eps" max(x, 0) + 1e-3,
                               "elu1" elu(x) + 1 (x + 1 above 0, e^x below)
    W_ij   = 0 for j > i       when causal
    a_j    = anchors[j] / |anchors[j]|      unit vectors in R^d_osc (d_osc >= 2)
    h_i    = sum_j W_ij a_j                 the drive
    x_i*   = h_i / |h_i|                    the unique attracting fixed point of the flow
    A_ij   = max(0, 1 + x_i . a_j)^p, masked like W, each row divided by its sum
    out_i  = sum_j A_ij v_j

`mode` chooses the state x_i that the readout uses:
    "analytic"      x_i = x_i*; steps = 0.
    "ode-drive", "ode-pairwise"
                    the settled state of forward Euler (time step dt) on the flow with the
                    row-normalized drive hn_i = sum_j Wn_ij a_j, Wn = W with each row divided
                    by its sum (the authors' scalar module; it bounds the velocity by 1):
        d_osc = 2 (phases, a_j = (cos phi_j, sin phi_j), x_i = (cos theta_i, sin theta_i)):
            dtheta_i/dt = sum_j Wn_ij sin(phi_j - theta_i) = Im(e^{-i theta_i} hn_i)
        d_osc > 2 (the Lohe flow on the sphere):
            dx_i/dt = sum_j Wn_ij (a_j - (x_i . a_j) x_i) = (I - x_i x_i^T) hn_i,
            each Euler step followed by x <- x / |x|.
    The two ODE modes are the same mathematics: "ode-pairwise" sums the T terms one by one
    (the left-hand forms above, as coupled hardware does; O(T d_osc) per oscillator and
    step), "ode-drive" uses the precomputed drive hn_i (the right-hand forms; O(d_osc)).
    They agree to rounding (~1e-15 per step, contracting). Normalizing the rows does not
    move the fixed point (hn_i is parallel to h_i); it scales time: the settling time
    constant is 1 / |hn_i| (>= 1).

Settling (ODE modes): free oscillators are not coupled to each other, so each one is
integrated on its own. Oscillator i is converged when its angle to x_i* is below `tol`: at
d_osc = 2 |wrap(theta_i - angle(h_i))| < tol, above it 2 asin(|x_i - x_i*| / 2) < tol (the
same angle, computed without the cancellation of acos near 1). It then stops (is frozen) at
the first such step, and steps[h, i] is that step count (0 when the start already is). One
that never gets there runs `max_steps` steps, steps[h, i] = NOT_CONVERGED (-1), and its last
state is what the readout uses. `x_star` in the result is always the state the readout used.

The defaults, dt = 1, tol = 6e-5, max_steps = 4000, init "random" (measured with
`python -m oscarray.convergence` on the random cases of `oscarray attention --example`):
  - What makes an oscillator slow is |hn_i| alone: Euler needs about
    ln(tan(d0 / 2) / tan(tol / 2)) / (dt |hn_i|) steps from an angle d0 (the oracle below), and
    rows whose anchors nearly cancel have a small |hn| (0.1 % of rows below 0.011 on kws,
    below 0.028 on sva, the smallest seen 0.0009; tinystories, at d_osc = 8, above 0.04).
    The slowest 0.1 % of kws oscillators all have |hn| <= 0.013, with ordinary starts (median
    angle 2 rad; starts within 0.04 rad of the antipode cost a median 16 steps more). The
    start rule (random, zero and warm need the same steps within noise) and tol
    (logarithmic) matter little. The old defaults (dt = 0.05, tol = 1e-3,
    max_steps = 2000, i.e. t = 100) left 4.5 % of kws, 0.9 % of sva and 0.2 % of tinystories
    oscillators unsettled, and the fixed-point engine 55 % of kws heads.
  - dt = 1 is the largest monotone step (dt |hn| <= 1); steps scale as 1 / dt. dt = 1.5
    saves a third of them, but the overshoot makes the fixed-point pairwise engine's phase
    cycle wider than its detector (16 % of kws heads never settled, measured with the
    velocity detector the engine had then).
  - tol = 6e-5: an angle here, keeping attn within 0.06 x 2**-11. The fixed-point engine
    at d_osc = 2 tests the same angle, rounded to a power of two (2**-14 = 6.1e-5;
    golden/attention_fixed.py, angle_shift); its limit cycle near equilibrium is then
    calm at 2**-14 but not always at 2**-15 (pairwise). It used to stop on a velocity,
    |hn| sin(angle) < tol, about tol / |hn| from x*, which missed the attn target on 9 of
    350 random kws cases (up to 3.6x).
  - max_steps = 4000: the fixed-point engine runs a head until its slowest token is calm,
    so it needs the per-head tail: with the angle test every head of 200 random kws and
    200 sva cases settles, the slowest after 3046 steps; the float model settles 99.995 %
    of kws oscillators by 4000. A typical run is far shorter (table: p50 / p99 / max).

        shape        engine, cases          settled    per oscillator        per head
        kws          float, both, 50        100 %      27 / 268 / 2254       219 / 1375 / 2254
        kws          fixed, drive, 200      100 %      (per head)            207 / 1691 / 3046
        kws          fixed, pairwise, 200   100 %      (per head)            187 / 1443 / 2445
        sva          float, both, 50        100 %      8 / 122 / 261         36 / 261 / 261
        sva          fixed, drive, 200      100 %      (per head)            43 / 319 / 1735
        sva          fixed, pairwise, 200   100 %      (per head)            42 / 277 / 1457
        tinystories  float, both, 50        100 %      43 / 115 / 249        124 / 213 / 249
        tinystories  fixed, both, 50        100 %      37 / 87 / 169         93 / 151 / 169
    (fixed at d_osc = 2: the engine's angle test at 2**-14; tinystories at d_osc = 8: the
    sphere flow's velocity stop, golden/attention_sphere.py.)
    On 1000 kws (3000 sva) cases the float model settles 99.994 % (99.996 %) of oscillators
    within 3000 steps, 99.91 % (99.98 %) within 1000.

Initial states (`init`):
    "random"  seeded numpy default_rng(seed): phases uniform in [-pi, pi) (d_osc = 2), or
              normalized standard Gaussians, uniform on the sphere (d_osc > 2); one draw of
              shape (H, T) or (H, T, d_osc).
    "zero"    theta = 0, or x = e_1.
    "warm"    token i starts from token i-1's settled state (in the same head), token 0 from
              the "random" start of the same seed; tokens are settled one after the other.
              It saves steps when consecutive fixed points are close (slowly varying
              queries: about a quarter fewer on "kws" shapes at dt = 1, tested); with
              independent random queries consecutive x* are unrelated and it saves nothing.

Edge cases:
  - Zero drive. W > 0 for every sigma except where it underflows (softplus or elu1 of a very
    negative score), so h_i = 0 means the anchors cancel (e.g. a and -a with equal weights).
    A row is treated as zero-driven when |h_i| <= ZERO_DRIVE_RTOL * sum_j W_ij (below that,
    the direction of h_i is rounding noise). Then x_i* = e_1 in "analytic" mode; in the ODE
    modes the flow is identically zero (its drive row is set to exactly 0 in both forms), the
    oscillator stays at its initial state and steps = 0 (every state is an equilibrium).
  - The antipode x_i = -x_i* is an equilibrium of the exact flow, unstable. Float Euler
    does not perturb it, and at a floating-point antipode it stays: the velocity there is
    only the rounding of the antipode (|hn| times ~1e-16; exactly 0 when x and h lie on one
    axis: theta = 0 with h along -e_1 in "ode-drive", x = e_1 with every unmasked anchor
    -e_1 in both forms at d_osc > 2), and dt times that
    is below half an ulp of the state, so the update rounds away. The oscillator then sits
    there for all max_steps (steps = -1). It escapes only where the state's float grid is
    finer than that residual: at theta = 0 "ode-pairwise" evaluates sin(pi - 0) = 1.2e-16
    (pi is not representable), theta moves to dt times that and grows by (1 + dt |hn|) a
    step, settling after roughly ln(1e16 / tol) / ln(1 + dt |hn|) steps, while "ode-drive"
    sees exactly 0 there; this is the one place where the two ODE modes differ. (The
    fixed-point engine nudges the antipode by one LSB instead, golden/array_fixed.py.) Random
    starts land on an antipode with probability ~1e-16.
  - A zero row sum in the readout (x_i exactly antipodal to every unmasked anchor, which
    needs a stuck antipode as above) leaves row i of attn and out_i at zero. It cannot
    happen in "analytic" mode: x_i* . h_i = |h_i| > 0 makes some x_i* . a_j positive (and
    e_1, for a zero drive, is antipodal to every anchor only if all are -e_1, so h != 0).
  - Euler is stable here for dt |hn| < 2 and monotone for dt |hn| <= 1; with the
    row-normalized drive |hn| <= 1, so any dt <= 1 is safe (the default dt = 1 is the
    largest). Larger dt is allowed (it is the user's experiment) and may not converge.

Closed-form oracle (from the flow's geometry; used by the tests): with c = x . h / |h|,
dc/dt = |h| (1 - c^2), so c(t) = tanh(|h| t + atanh c(0)); at d_osc = 2 with psi = angle(h),
d/dt tan((theta - psi) / 2) = -|h| tan((theta - psi) / 2), so it decays as exp(-|h| t).

A case is a mapping (or an npz, scalars as 0-d arrays and strings as 0-d unicode arrays, as
np.savez writes them):
    q, k, v (H, T, d_h), anchors (H, T, d_osc) (any nonzero lengths: they are normalized);
    optional sigma ("relu_eps"), p (1; 1, 2 or 4), causal (True), mode ("analytic"),
    dt (1.0), max_steps (4000), tol (6e-5 rad), init ("random"), seed (0).
The ODE keys are validated in every mode and ignored by "analytic".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .npz import read_npz

__all__ = [
    "SIGMAS", "MODES", "INITS", "POWERS", "SHAPES", "DEFAULTS", "REQUIRED_KEYS",
    "OPTIONAL_KEYS", "NOT_CONVERGED", "RELU_EPS", "ZERO_DRIVE_RTOL", "AttentionCaseError",
    "AttentionCase", "validate_case", "load_case", "random_case", "coupling_weights",
    "unit_anchors", "drive", "row_normalize", "zero_drive_rows", "fixed_point", "readout",
    "phase_velocity", "phase_velocity_pairwise", "sphere_velocity", "sphere_velocity_pairwise",
    "euler_phase", "euler_sphere", "initial_state", "settle", "attention_float",
    "closed_form_alignment", "closed_form_phase", "wrap_phase",
]

SIGMAS = ("softplus", "relu_eps", "elu1")
MODES = ("analytic", "ode-drive", "ode-pairwise")
INITS = ("random", "zero", "warm")
POWERS = (1, 2, 4)

RELU_EPS = 1e-3                 # relu_eps(x) = max(x, 0) + RELU_EPS
ZERO_DRIVE_RTOL = 1e-12         # |h_i| <= this * sum_j W_ij: a zero drive
NOT_CONVERGED = -1              # steps[h, i] of an oscillator not within tol after max_steps

# The paper's model shapes: (H, T, d_h, d_osc).
SHAPES = {
    "kws": (2, 49, 16, 2),              # keyword spotting
    "sva": (1, 9, 32, 2),               # subject-verb agreement
    "tinystories": (4, 128, 32, 8),     # causal language modelling
}

REQUIRED_KEYS = ("q", "k", "v", "anchors")
# The ODE settings: dt = 1 (Euler's monotone limit for |hn| <= 1), tol = 6e-5 (an angle; the
# fixed-point engine at d_osc = 2 tests 2**-14), max_steps = 4000 (every head of 200 random
# kws and sva cases settles in the fixed-point engine, 99.995 % of kws oscillators in float;
# the old 0.05, 1e-3, 2000 settled 95.5 % of kws oscillators). Measured: the module
# docstring, "defaults".
DEFAULTS = {"sigma": "relu_eps", "p": 1, "causal": True, "mode": "analytic", "dt": 1.0,
            "max_steps": 4000, "tol": 6e-5, "init": "random", "seed": 0}
OPTIONAL_KEYS = tuple(DEFAULTS)


class AttentionCaseError(ValueError):
    """An attention case that is malformed: the message names the key and the problem."""


@dataclass(frozen=True)
class AttentionCase:
    """A validated case: read-only float64 arrays (anchors as given, not yet normalized)."""

    q: np.ndarray               # (H, T, d_h)
    k: np.ndarray               # (H, T, d_h)
    v: np.ndarray               # (H, T, d_h)
    anchors: np.ndarray         # (H, T, d_osc), every row of nonzero finite length
    sigma: str = DEFAULTS["sigma"]
    p: int = DEFAULTS["p"]
    causal: bool = DEFAULTS["causal"]
    mode: str = DEFAULTS["mode"]
    dt: float = DEFAULTS["dt"]
    max_steps: int = DEFAULTS["max_steps"]
    tol: float = DEFAULTS["tol"]
    init: str = DEFAULTS["init"]
    seed: int = DEFAULTS["seed"]

    @property
    def heads(self) -> int:
        return self.q.shape[0]

    @property
    def tokens(self) -> int:
        return self.q.shape[1]

    @property
    def d_h(self) -> int:
        return self.q.shape[2]

    @property
    def d_osc(self) -> int:
        return self.anchors.shape[2]


# ---------------------------------------------------------------------------------------------
# Validation

def _real_array(key: str, value) -> np.ndarray:
    """A finite float64 copy of a real numeric array; bool, complex, text, objects refused."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise AttentionCaseError(f"{key}: must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise AttentionCaseError(f"{key}: contains NaN or inf")
    return array


def _scalar(key: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 0:
        raise AttentionCaseError(f"{key}: must be a scalar (0-d array), got shape {array.shape}")
    return array


def _positive(key: str, value) -> float:
    number = float(_real_array(key, _scalar(key, value)))
    if not number > 0:
        raise AttentionCaseError(f"{key}: must be > 0, got {number}")
    return number


def _integer(key: str, value, minimum: int) -> int:
    array = _scalar(key, value)
    if array.dtype.kind not in "iu":
        raise AttentionCaseError(f"{key}: must be an integer, got dtype {array.dtype}")
    number = int(array)
    if number < minimum:
        raise AttentionCaseError(f"{key}: must be >= {minimum}, got {number}")
    return number


def _choice(key: str, value, choices: tuple) -> str:
    array = _scalar(key, value)
    if array.dtype.kind != "U":
        raise AttentionCaseError(f"{key}: must be a string, got dtype {array.dtype}")
    text = str(array)
    if text not in choices:
        raise AttentionCaseError(f"{key}: unknown {key} {text!r} (choose one of "
                                 f"{', '.join(choices)})")
    return text


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def validate_case(arrays: Mapping) -> AttentionCase:
    """Check every key of a case (see the module docstring) and return it as an AttentionCase.

    Raises AttentionCaseError naming the first bad key: missing or unknown keys, wrong dtypes,
    ranks or shapes (q, k, v must share (H, T, d_h), anchors (H, T, d_osc) with d_osc >= 2,
    no zero length), NaN or inf, an anchor that cannot be normalized to a unit vector, an
    unknown sigma, mode or init, p not in {1, 2, 4}, dt <= 0, max_steps < 1, tol <= 0,
    seed < 0, causal not a bool. Entries that are None take their defaults.
    """
    missing = [key for key in REQUIRED_KEYS if arrays.get(key) is None]
    if missing:
        raise AttentionCaseError(f"{missing[0]}: missing (a case needs "
                                 f"{', '.join(REQUIRED_KEYS)})")
    unknown = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        # Refused rather than ignored: a misspelt "tol" or "sigma" must not pass silently.
        raise AttentionCaseError(f"{unknown[0]}: unknown key (allowed: "
                                 f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")

    q = _real_array("q", arrays["q"])
    if q.ndim != 3 or 0 in q.shape:
        raise AttentionCaseError(f"q: must have shape (H, T, d_h) with no zero length, "
                                 f"got {q.shape}")
    for key in ("k", "v"):
        other = _real_array(key, arrays[key])
        if other.shape != q.shape:
            raise AttentionCaseError(f"{key}: must have the shape of q, (H, T, d_h) = "
                                     f"{q.shape}, got {other.shape}")
        if key == "k":
            k = other
        else:
            v = other
    anchors = _real_array("anchors", arrays["anchors"])
    if anchors.ndim != 3 or anchors.shape[:2] != q.shape[:2]:
        raise AttentionCaseError(f"anchors: must have shape (H, T, d_osc) = "
                                 f"({q.shape[0]}, {q.shape[1]}, d_osc), got {anchors.shape}")
    if anchors.shape[2] < 2:
        raise AttentionCaseError(f"anchors: d_osc must be >= 2, got {anchors.shape[2]}")
    with np.errstate(over="ignore", under="ignore"):    # reported below as a bad anchor
        norms = np.linalg.norm(anchors, axis=-1)
    bad = np.argwhere(~((norms > 0) & np.isfinite(norms)))
    if bad.size:
        head, token = bad[0]
        raise AttentionCaseError(f"anchors: anchor (head {head}, token {token}) has length "
                                 f"{norms[head, token]} and cannot be normalized to a unit "
                                 f"vector")

    entries = {key: (DEFAULTS[key] if arrays.get(key) is None else arrays[key])
               for key in OPTIONAL_KEYS}
    causal = _scalar("causal", entries["causal"])
    if causal.dtype != np.bool_:
        raise AttentionCaseError(f"causal: must be a bool, got dtype {causal.dtype}")
    p = _integer("p", entries["p"], 1)
    if p not in POWERS:
        raise AttentionCaseError(f"p: must be one of {', '.join(map(str, POWERS))}, got {p}")

    return AttentionCase(
        q=_read_only(q), k=_read_only(k), v=_read_only(v), anchors=_read_only(anchors),
        sigma=_choice("sigma", entries["sigma"], SIGMAS), p=p, causal=bool(causal),
        mode=_choice("mode", entries["mode"], MODES), dt=_positive("dt", entries["dt"]),
        max_steps=_integer("max_steps", entries["max_steps"], 1),
        tol=_positive("tol", entries["tol"]), init=_choice("init", entries["init"], INITS),
        seed=_integer("seed", entries["seed"], 0))


def load_case(path) -> AttentionCase:
    """Read and validate a case npz; any problem with the file is an AttentionCaseError."""
    arrays = read_npz(path, AttentionCaseError)
    try:
        return validate_case(arrays)
    except AttentionCaseError as error:
        raise AttentionCaseError(f"{path}: {error}") from None


def random_case(shape="kws", seed: int = 0, **entries) -> dict:
    """A random valid case: q, k, v standard normal, anchors normalized standard Gaussians.

    `shape` is a name in SHAPES ("kws", "sva", "tinystories") or (H, T, d_h, d_osc);
    keyword arguments add or replace entries (validated when the case is used).
    """
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)} "
                             f"or give (H, T, d_h, d_osc)")
        shape = SHAPES[shape]
    heads, tokens, d_h, d_osc = (int(n) for n in shape)
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((heads, tokens, d_h)) for _ in range(3))
    anchors = rng.standard_normal((heads, tokens, d_osc))
    anchors /= np.linalg.norm(anchors, axis=-1, keepdims=True)
    return dict(q=q, k=k, v=v, anchors=anchors, **entries)


# ---------------------------------------------------------------------------------------------
# The mathematics, step by step (every function works on whole (H, T, ...) arrays)

def wrap_phase(x):
    """Reduce radians to (-pi, pi]."""
    return x - 2 * np.pi * np.ceil((np.asarray(x) - np.pi) / (2 * np.pi))


def _sigma(name: str, raw: np.ndarray) -> np.ndarray:
    if name == "softplus":
        return np.logaddexp(0.0, raw)               # log(1 + e^x) without overflow
    if name == "relu_eps":
        return np.maximum(raw, 0.0) + RELU_EPS
    if name == "elu1":
        return np.where(raw > 0, raw + 1.0, np.exp(np.minimum(raw, 0.0)))
    raise ValueError(f"unknown sigma {name!r}; choose one of {', '.join(SIGMAS)}")


def _causal_mask(tokens: int) -> np.ndarray:
    """(T, T) bool: True where j <= i."""
    return np.tril(np.ones((tokens, tokens), dtype=bool))


def coupling_weights(q: np.ndarray, k: np.ndarray, sigma: str = DEFAULTS["sigma"],
                     causal: bool = DEFAULTS["causal"]) -> np.ndarray:
    """W (H, T, T): sigma(q_i . k_j / sqrt(d_h)), zero for j > i when causal."""
    raw = np.einsum("hid,hjd->hij", q, k) / math.sqrt(q.shape[-1])
    weights = _sigma(sigma, raw)
    if causal:
        weights = np.where(_causal_mask(q.shape[1]), weights, 0.0)
    return weights


def unit_anchors(anchors: np.ndarray) -> np.ndarray:
    """Each anchor divided by its length (validated nonzero)."""
    return anchors / np.linalg.norm(anchors, axis=-1, keepdims=True)


def drive(weights: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """h (H, T, d_osc): h_i = sum_j W_ij a_j (anchors already unit vectors)."""
    return weights @ anchors


def row_normalize(weights: np.ndarray) -> np.ndarray:
    """W with each row divided by its sum; a row summing to 0 stays 0."""
    sums = weights.sum(axis=-1, keepdims=True)
    return np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)


def zero_drive_rows(weights: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(H, T) bool: rows whose drive is zero, |h_i| <= ZERO_DRIVE_RTOL * sum_j W_ij."""
    return np.linalg.norm(h, axis=-1) <= ZERO_DRIVE_RTOL * weights.sum(axis=-1)


def fixed_point(h: np.ndarray, zero: np.ndarray | None = None) -> np.ndarray:
    """x* = h / |h| per row; e_1 where `zero` (default: where |h| = 0)."""
    norms = np.linalg.norm(h, axis=-1)
    if zero is None:
        zero = norms == 0
    e1 = np.zeros(h.shape[-1])
    e1[0] = 1.0
    safe = np.where(zero, 1.0, norms)[..., np.newaxis]
    return np.where(zero[..., np.newaxis], e1, h / safe)


def readout(x: np.ndarray, anchors: np.ndarray, v: np.ndarray, p: int = DEFAULTS["p"],
            causal: bool = DEFAULTS["causal"]) -> tuple[np.ndarray, np.ndarray]:
    """(attn (H, T, T), out (H, T, d_h)) from unit states x and unit anchors (H, T, d_osc).

    A_ij = max(0, 1 + x_i . a_j)^p, zero for j > i when causal, each row divided by its
    sum (a zero row sum leaves the row zero); out = A v.
    """
    cosine = np.einsum("hid,hjd->hij", x, anchors)
    scores = np.maximum(0.0, 1.0 + cosine) ** p
    if causal:
        scores = np.where(_causal_mask(x.shape[1]), scores, 0.0)
    attn = row_normalize(scores)
    return attn, attn @ v


# ---------------------------------------------------------------------------------------------
# The flow: velocities and Euler steps. `theta` (N,), `x` (N, d); drives (N, d); pairwise
# weights (N, T) with their anchors' phases (N, T) or unit vectors (N, T, d).

def phase_velocity(theta: np.ndarray, h: np.ndarray) -> np.ndarray:
    """dtheta/dt from a precomputed drive: Im(e^{-i theta} h) = h_y cos theta - h_x sin theta."""
    return h[..., 1] * np.cos(theta) - h[..., 0] * np.sin(theta)


def phase_velocity_pairwise(theta: np.ndarray, weights: np.ndarray,
                            phi: np.ndarray) -> np.ndarray:
    """dtheta/dt term by term: sum_j W_j sin(phi_j - theta)."""
    return np.sum(weights * np.sin(phi - theta[..., np.newaxis]), axis=-1)


def sphere_velocity(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """dx/dt from a precomputed drive: (I - x x^T) h = h - (x . h) x."""
    return h - np.sum(x * h, axis=-1, keepdims=True) * x


def sphere_velocity_pairwise(x: np.ndarray, weights: np.ndarray,
                             anchors: np.ndarray) -> np.ndarray:
    """dx/dt term by term: sum_j W_j (a_j - (x . a_j) x)."""
    xs = x[..., np.newaxis, :]
    along = np.sum(anchors * xs, axis=-1, keepdims=True)
    return np.sum(weights[..., np.newaxis] * (anchors - along * xs), axis=-2)


def euler_phase(theta: np.ndarray, h: np.ndarray, dt: float, steps: int) -> np.ndarray:
    """`steps` forward Euler steps of dtheta/dt = Im(e^{-i theta} h) (no stopping rule)."""
    theta = np.array(theta, dtype=np.float64)
    for _ in range(steps):
        theta = theta + dt * phase_velocity(theta, h)
    return theta


def euler_sphere(x: np.ndarray, h: np.ndarray, dt: float, steps: int) -> np.ndarray:
    """`steps` Euler steps of dx/dt = (I - x x^T) h, each followed by x <- x / |x|."""
    x = np.array(x, dtype=np.float64)
    for _ in range(steps):
        x = x + dt * sphere_velocity(x, h)
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return x


# ---------------------------------------------------------------------------------------------
# Settling

def initial_state(init: str, heads: int, tokens: int, d_osc: int, seed: int = 0) -> np.ndarray:
    """The start of every oscillator: phases (H, T) at d_osc = 2, else unit vectors (H, T, d).

    "random" (and "warm", whose token 0 uses it; the other tokens' draws are then unused):
    default_rng(seed), uniform phases in [-pi, pi) or normalized Gaussians. "zero": 0 or e_1.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if init == "zero":
        if d_osc == 2:
            return np.zeros((heads, tokens))
        start = np.zeros((heads, tokens, d_osc))
        start[..., 0] = 1.0
        return start
    rng = np.random.default_rng(seed)
    if d_osc == 2:
        return rng.uniform(-np.pi, np.pi, (heads, tokens))
    start = rng.standard_normal((heads, tokens, d_osc))
    return fixed_point(start)       # normalized; a zero draw (probability 0) would give e_1


def _distance(state: np.ndarray, target: np.ndarray, phases: bool) -> np.ndarray:
    """Angle to the fixed point: |wrap(theta - psi)|, or 2 asin(|x - x*| / 2)."""
    if phases:
        return np.abs(wrap_phase(state - target))
    chord = np.linalg.norm(state - target, axis=-1)
    return 2.0 * np.arcsin(np.minimum(1.0, chord / 2.0))


def settle(start: np.ndarray, target: np.ndarray, zero: np.ndarray, velocity, dt: float,
           max_steps: int, tol: float, history: list | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Euler-integrate N independent oscillators until each is within tol of its fixed point.

    start: phases (N,) or unit vectors (N, d); target: angle(h) (N,) or x* (N, d); zero (N,)
    bool: zero-drive oscillators (they do not move, steps 0); velocity(state, index) -> the
    velocity of the oscillators `index` at `state`. Returns (settled state, steps (N,) int64),
    steps = NOT_CONVERGED for those not within tol after max_steps. See the module docstring.
    history: if a list, every oscillator's angle to its fixed point (N,) is appended before
    the first step and after each (the settling curves; NaN once an oscillator has settled).
    """
    phases = start.ndim == 1
    state = np.array(start, dtype=np.float64)
    steps = np.full(state.shape[0], NOT_CONVERGED, dtype=np.int64)
    distance = _distance(state, target, phases)
    done = zero | (distance < tol)
    steps[done] = 0
    active = np.flatnonzero(~done)
    if history is not None:
        history.append(np.where(zero, np.nan, distance))
    for step in range(1, max_steps + 1):
        if active.size == 0:
            break
        moved = state[active] + dt * velocity(state[active], active)
        if not phases:
            moved /= np.linalg.norm(moved, axis=-1, keepdims=True)
        state[active] = moved
        distance = _distance(moved, target[active], phases)
        if history is not None:
            history.append(np.full(state.shape[0], np.nan))
            history[-1][active] = distance
        hit = distance < tol
        if hit.any():       # a new index array only when it changes (velocity may cache)
            steps[active[hit]] = step
            active = active[~hit]
    return state, steps


def _settle_case(case: AttentionCase, weights: np.ndarray, anchors: np.ndarray,
                 h: np.ndarray, zero: np.ndarray, curves: list | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ODE modes: settled unit states (H, T, d_osc) and steps (H, T); `curves` (a list)
    receives the settling curves, (steps + 1, H, T) arrays: one, or one per token (warm)."""
    heads, tokens, d_osc = anchors.shape
    phases = d_osc == 2
    normalized = np.where(zero[..., np.newaxis], 0.0, row_normalize(weights))
    hn = normalized @ anchors          # exactly zero on zero-drive rows, like `normalized`
    target = np.arctan2(h[..., 1], h[..., 0]) if phases else fixed_point(h, zero)
    start = initial_state(case.init, heads, tokens, d_osc, case.seed)

    # Flatten to oscillators n = (head, token) [or (head,) for one token of a warm start];
    # the pairwise form needs each oscillator's head's anchors.
    def velocity_for(hn_rows, weight_rows, anchor_rows):
        if case.mode == "ode-drive":
            rows, function = (hn_rows,), phase_velocity if phases else sphere_velocity
        elif phases:
            rows = (weight_rows, np.arctan2(anchor_rows[..., 1], anchor_rows[..., 0]))
            function = phase_velocity_pairwise
        else:
            rows, function = (weight_rows, anchor_rows), sphere_velocity_pairwise
        cache = [None, None]        # the last index array and its rows: `settle` reuses it

        def velocity(state, index):
            if cache[0] is not index:
                cache[:] = [index, [r[index] for r in rows]]
            return function(state, *cache[1])
        return velocity

    state_shape = (heads, tokens) if phases else (heads, tokens, d_osc)
    if case.init != "warm":
        n = heads * tokens
        per_token_anchors = np.broadcast_to(anchors[:, np.newaxis], (heads, tokens) +
                                            anchors.shape[1:])
        velocity = velocity_for(hn.reshape(n, d_osc), normalized.reshape(n, tokens),
                                per_token_anchors.reshape(n, tokens, d_osc))
        history = None if curves is None else []
        settled, steps = settle(start.reshape((n,) + start.shape[2:]),
                                target.reshape((n,) + target.shape[2:]), zero.reshape(n),
                                velocity, case.dt, case.max_steps, case.tol, history)
        settled, steps = settled.reshape(state_shape), steps.reshape(heads, tokens)
        if curves is not None:
            curves.append(np.array(history).reshape(-1, heads, tokens))
    else:
        settled = np.empty(state_shape)
        steps = np.empty((heads, tokens), dtype=np.int64)
        current = start[:, 0]
        for token in range(tokens):
            velocity = velocity_for(hn[:, token], normalized[:, token], anchors)
            history = None if curves is None else []
            current, steps[:, token] = settle(current, target[:, token], zero[:, token],
                                              velocity, case.dt, case.max_steps, case.tol,
                                              history)
            settled[:, token] = current
            if curves is not None:
                curve = np.full((len(history), heads, tokens), np.nan)
                curve[:, :, token] = np.array(history)
                curves.append(curve)
    if phases:
        settled = np.stack([np.cos(settled), np.sin(settled)], axis=-1)
    return settled, steps


def attention_float(case, settling: bool = False) -> dict:
    """Run a case (a mapping, validated first, or an AttentionCase) in float64.

    Returns attn (H, T, T), out (H, T, d_h), x_star (H, T, d_osc): the unit states the readout
    used (x* in "analytic" mode, the settled states in the ODE modes), steps (H, T) int64: the
    Euler steps each oscillator took to come within tol of x* (0 in "analytic" mode,
    NOT_CONVERGED = -1 if it never did). With `settling` (ODE modes): also settling
    (S + 1, H, T), each oscillator's angle to x* before step 1 and after each step (S the
    most steps any took; NaN once it has settled, and for zero drives).
    """
    if not isinstance(case, AttentionCase):
        case = validate_case(case)
    anchors = unit_anchors(case.anchors)
    weights = coupling_weights(case.q, case.k, case.sigma, case.causal)
    h = drive(weights, anchors)
    zero = zero_drive_rows(weights, h)
    if case.mode == "analytic":
        x = fixed_point(h, zero)
        steps = np.zeros((case.heads, case.tokens), dtype=np.int64)
    else:
        curves = [] if settling else None
        x, steps = _settle_case(case, weights, anchors, h, zero, curves)
    attn, out = readout(x, anchors, case.v, case.p, case.causal)
    result = {"attn": attn, "out": out, "x_star": x, "steps": steps}
    if settling and case.mode != "analytic":
        result["settling"] = _merge_curves(curves)
    return result


def _merge_curves(curves: list) -> np.ndarray:
    """One (S + 1, H, T) array from runs of different lengths (NaN-padded, then combined:
    each oscillator belongs to one run)."""
    length = max(curve.shape[0] for curve in curves)
    merged = np.full((length,) + curves[0].shape[1:], np.nan)
    for curve in curves:
        padded = np.full(merged.shape, np.nan)
        padded[:curve.shape[0]] = curve
        merged = np.where(np.isnan(merged), padded, merged)
    return merged


# ---------------------------------------------------------------------------------------------
# Closed-form oracles

def closed_form_alignment(c0, h_norm, t):
    """c(t) = x(t) . h / |h| of the exact flow dx/dt = (I - x x^T) h: tanh(|h| t + atanh c0).

    c0 in (-1, 1] (c0 = -1 is the antipode, which never moves; c0 = 1 stays 1).
    """
    c0 = np.asarray(c0, dtype=np.float64)
    return np.where(c0 >= 1.0, 1.0,
                    np.tanh(np.asarray(h_norm) * np.asarray(t)
                            + np.arctanh(np.clip(c0, -1.0, np.nextafter(1.0, 0.0)))))


def closed_form_phase(theta0, psi, h_norm, t):
    """theta(t) of dtheta/dt = |h| sin(psi - theta): tan((theta - psi)/2) decays as e^{-|h| t}.

    Returned as psi + 2 atan(tan((theta0 - psi)/2) e^{-|h| t}), in (psi - pi, psi + pi).
    """
    delta = wrap_phase(np.asarray(theta0, dtype=np.float64) - psi)
    return psi + 2.0 * np.arctan(np.tan(delta / 2.0) * np.exp(-np.asarray(h_norm) *
                                                              np.asarray(t)))
