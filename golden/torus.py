"""Paper B's Kuramoto attention on the torus (arXiv:2606.11585): case, float model, examples.

Only the paper's abstract is public (../shared/DESIGN.md section 1). Confirmed there: each
hidden coordinate is an angle; scores are a gated cosine similarity over previous tokens
(causal); the update is the tangent component of the attention-weighted circular mean, the
Kuramoto coupling term sum_u A_tu sin(theta_u - theta_t); rotary position enters as a
position-dependent phase drift in the score.

RECONSTRUCTED (the formulas below are ours, not the paper's; every piece is a case entry, so
it can be switched off or changed without touching the code: g = 1 for an ungated cosine,
omega = 0 for no drift, causal = False for full attention, eta per coordinate):

    s_tu  = sum_k g_k cos(theta_tk - theta_uk - omega_k (t - u)),  u <= t (causal),  g_k >= 0
    A_tu  = softmax_u(s_tu / tau)            over the attended u (u <= t when causal)
    theta_tk <- theta_tk + eta_k sum_u A_tu sin(theta_uk - theta_tk)     (mod 2 pi)

One layer, one step: every token t is updated from the OLD phases (a Jacobi step, not
Gauss-Seidel). Tokens t, u = 0 .. T-1, coordinates k = 0 .. D-1.

Case (npz; 0-d arrays for scalars)
----------------------------------
    theta   (T, D)  phases, radians (any finite value, |theta| < 2**20; reduced mod 2 pi)
    g       (D,)    gates, >= 0
    omega   (D,)    rotary drift, radians per token of distance (|omega| < 2**20)
    tau     ()      softmax temperature, > 0
    eta     (D,)    update gains (any finite sign)
    causal  ()      optional bool, default True (u <= t); False: every u attends

Result (torus_float): theta_next (T, D) radians in [-pi, pi) (the convention of every engine
here: theta - 2 pi floor((theta + pi) / 2 pi)), attn (T, T) (zero above the diagonal when
causal), scores (T, T) (s_tu; 0 where not attended) and coupling (T, D)
(sum_u A_tu sin(theta_uk - theta_tk), before eta).

Bad input raises TorusCaseError (a ValueError) naming the key, before any work: missing or
unknown keys, non-real dtypes, wrong ranks or shapes (T, D >= 1), NaN or inf, negative g,
tau <= 0, |theta| or |omega| >= 2**20 (their reduction mod 2 pi would lose the fixed-point
model's 32 fraction bits of a turn in float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .npz import read_npz

__all__ = ["REQUIRED_KEYS", "OPTIONAL_KEYS", "ANGLE_LIMIT", "TorusCase", "TorusCaseError",
           "validate_case", "load_case", "random_case", "torus_float", "wrap_phase",
           "case_arrays"]

REQUIRED_KEYS = ("theta", "g", "omega", "tau", "eta")
OPTIONAL_KEYS = ("causal",)
ANGLE_LIMIT = 2.0 ** 20          # |theta|, |omega| below this (radians)


class TorusCaseError(ValueError):
    """A torus case that is malformed: the message names the key and the problem."""


@dataclass(frozen=True)
class TorusCase:
    """A validated case: read-only float64 arrays."""

    theta: np.ndarray           # (T, D)
    g: np.ndarray               # (D,)
    omega: np.ndarray           # (D,)
    tau: float
    eta: np.ndarray             # (D,)
    causal: bool = True

    @property
    def tokens(self) -> int:
        return self.theta.shape[0]

    @property
    def d(self) -> int:
        return self.theta.shape[1]

    @property
    def mask(self) -> np.ndarray:
        """(T, T) bool: True where u is attended by t."""
        full = np.ones((self.tokens, self.tokens), bool)
        return np.tril(full) if self.causal else full


def _real(key: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TorusCaseError(f"{key}: must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise TorusCaseError(f"{key}: contains NaN or inf")
    return array


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.float64)
    array.setflags(write=False)
    return array


def validate_case(arrays: Mapping) -> TorusCase:
    """Check every key (module docstring) and return the case; TorusCaseError names the first
    bad key. A TorusCase passes through unchanged."""
    if isinstance(arrays, TorusCase):
        return arrays
    if not isinstance(arrays, Mapping):
        raise TorusCaseError(f"a case is a mapping of named arrays, not {type(arrays).__name__}")
    missing = [key for key in REQUIRED_KEYS if arrays.get(key) is None]
    if missing:
        raise TorusCaseError(f"{missing[0]}: missing (a case needs {', '.join(REQUIRED_KEYS)})")
    unknown = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise TorusCaseError(f"{unknown[0]}: unknown key (allowed: "
                             f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    theta = _real("theta", arrays["theta"])
    if theta.ndim != 2 or 0 in theta.shape:
        raise TorusCaseError(f"theta: must have shape (T, D) with T, D >= 1, got {theta.shape}")
    d = theta.shape[1]
    vectors = {}
    for key in ("g", "omega", "eta"):
        vector = _real(key, arrays[key])
        if vector.shape != (d,):
            raise TorusCaseError(f"{key}: must have shape (D,) = ({d},) like theta's second "
                                 f"axis, got {vector.shape}")
        vectors[key] = vector
    if np.any(vectors["g"] < 0):
        raise TorusCaseError(f"g: gates must be >= 0, got {float(vectors['g'].min())} at "
                             f"k = {int(np.argmin(vectors['g']))}")
    for key, array in (("theta", theta), ("omega", vectors["omega"])):
        if np.any(np.abs(array) >= ANGLE_LIMIT):
            raise TorusCaseError(f"{key}: |{key}| must be below 2**20 rad (got "
                                 f"{float(np.abs(array).max()):.6g}): reducing it mod 2 pi "
                                 f"in float64 would lose the 32 fraction bits of a turn")
    tau = np.asarray(arrays["tau"])
    if tau.ndim != 0:
        raise TorusCaseError(f"tau: must be a scalar (0-d array), got shape {tau.shape}")
    tau = float(_real("tau", tau))
    if not tau > 0:
        raise TorusCaseError(f"tau: must be > 0, got {tau}")
    causal = arrays.get("causal")
    if causal is None:
        causal = True
    else:
        flag = np.asarray(causal)
        if flag.ndim != 0 or flag.dtype.kind != "b":
            raise TorusCaseError(f"causal: must be a 0-d bool, got dtype {flag.dtype} shape "
                                 f"{flag.shape}")
        causal = bool(flag)
    return TorusCase(theta=_read_only(theta), g=_read_only(vectors["g"]),
                     omega=_read_only(vectors["omega"]), tau=tau,
                     eta=_read_only(vectors["eta"]), causal=causal)


def load_case(path) -> TorusCase:
    """Read and validate a case npz; any problem with the file is a TorusCaseError."""
    arrays = read_npz(path, TorusCaseError)
    try:
        return validate_case(arrays)
    except TorusCaseError as error:
        raise TorusCaseError(f"{path}: {error}") from None


def case_arrays(case: TorusCase) -> dict:
    """The npz arrays of a case (every entry written out)."""
    return {"theta": np.array(case.theta), "g": np.array(case.g),
            "omega": np.array(case.omega), "tau": np.asarray(case.tau),
            "eta": np.array(case.eta), "causal": np.asarray(case.causal)}


def random_case(tokens: int = 16, d: int = 8, seed: int = 0, **entries) -> dict:
    """A random valid case (arrays for validate_case / an npz):
    theta uniform in [-pi, pi); rotary frequencies omega_k = 10000**(-k / D) (RoPE's);
    gates g_k uniform in [0, 2 / sqrt(D)) (so sum_k g_k ~ sqrt(D)); tau = 0.5; eta_k uniform
    in [0.1, 0.5); causal. Keyword arguments replace entries (validated when used)."""
    tokens, d = int(tokens), int(d)
    if tokens < 1 or d < 1:
        raise ValueError(f"random_case: T and D must be >= 1, got ({tokens}, {d})")
    rng = np.random.default_rng(seed)
    arrays = {
        "theta": rng.uniform(-np.pi, np.pi, (tokens, d)),
        "g": rng.uniform(0.0, 2.0 / np.sqrt(d), d),
        "omega": 10000.0 ** (-np.arange(d) / d),
        "tau": np.asarray(0.5),
        "eta": rng.uniform(0.1, 0.5, d),
        "causal": np.asarray(True),
    }
    arrays.update(entries)
    return arrays


def wrap_phase(x):
    """Radians to [-pi, pi): x - 2 pi floor((x + pi) / 2 pi)."""
    x = np.asarray(x, dtype=np.float64)
    return x - 2 * np.pi * np.floor((x + np.pi) / (2 * np.pi))


def scores(case: TorusCase) -> np.ndarray:
    """(T, T) s_tu = sum_k g_k cos(theta_tk - theta_uk - omega_k (t - u)) (every pair)."""
    t = np.arange(case.tokens, dtype=np.float64)
    lag = t[:, None] - t[None, :]                                    # t - u
    angle = (case.theta[:, None, :] - case.theta[None, :, :]
             - case.omega[None, None, :] * lag[:, :, None])
    return np.einsum("k,tuk->tu", case.g, np.cos(angle))


def softmax_rows(s: np.ndarray, tau: float, mask: np.ndarray) -> np.ndarray:
    """Row softmax of s / tau over the attended entries; 0 elsewhere."""
    z = np.where(mask, s / tau, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def torus_float(case) -> dict:
    """One layer in float64 (module docstring): theta_next, attn, scores, coupling."""
    case = validate_case(case)
    mask = case.mask
    s = scores(case)
    attn = softmax_rows(s, case.tau, mask)
    # sum_u A_tu sin(theta_u - theta_t) = cos(theta_t) S_t - sin(theta_t) C_t
    diff = case.theta[None, :, :] - case.theta[:, None, :]          # [t, u, k] theta_u - theta_t
    coupling = np.einsum("tu,tuk->tk", attn, np.sin(diff))
    theta_next = wrap_phase(case.theta + case.eta[None, :] * coupling)
    return {"theta_next": theta_next, "attn": attn, "scores": np.where(mask, s, 0.0),
            "coupling": coupling}


def torus_float_fast(case) -> dict:
    """torus_float's theta_next and attn by matrix products (the fastest NumPy form, the
    bench's reference): with psi_tk = theta_tk - t omega_k, s = (g cos psi) cos psi^T +
    (g sin psi) sin psi^T, and the coupling cos(theta_t) (A sin theta) - sin(theta_t)
    (A cos theta): 2 T D cos/sin and three (T, D) x (D, T) products instead of T^2 D
    cos/sin. Equal to torus_float to rounding (tested)."""
    case = validate_case(case)
    psi = case.theta - np.arange(case.tokens)[:, None] * case.omega[None, :]
    cp, sp = np.cos(psi), np.sin(psi)
    s = (cp * case.g) @ cp.T + (sp * case.g) @ sp.T
    attn = softmax_rows(s, case.tau, case.mask)
    ct, st = np.cos(case.theta), np.sin(case.theta)
    coupling = ct * (attn @ st) - st * (attn @ ct)
    return {"theta_next": wrap_phase(case.theta + case.eta[None, :] * coupling), "attn": attn}

