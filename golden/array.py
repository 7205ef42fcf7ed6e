"""The general coupled-oscillator array (a Kuramoto phase array): case, float model, physics.

The model
---------
    dtheta_i/dt = omega_i + sum_j K_ij sin(theta_j - theta_i)          (pairwise coupling)
    dtheta_i/dt = omega_i + h_y,i cos(theta_i) - h_x,i sin(theta_i)    (with a drive h_i)
    r e^{i psi} = (1/N) sum_j e^{i theta_j}                            (order parameter)

The drive form is Im(e^{-i theta_i} (h_x + i h_y)); with h_i = sum_j K_ij e^{i theta_j} it is the
pairwise sum, so a drive precomputed from fixed partners (Paper A's anchors) turns O(N^2)
work per step into O(N). When a case has a drive, K is validated but not used.
Pinned oscillators never move: their velocity is zero and their phases are never written.

Integration is forward Euler with the case's dt and steps (the scheme the hardware uses);
RK4 is the accuracy reference. Phases are integrated unwrapped (no reduction mod 2 pi, so no
rounding is added and drift is easy to measure): compare phases from different engines with
`wrap_phase(a - b)`.

Convergence: with a `tol`, the run stops once the largest wrapped phase increment of a free
oscillator, |wrap(theta_i(t+1) - theta_i(t))|, has been below `tol` (strictly) for
`CONVERGENCE_STEPS` consecutive steps; steps_taken counts the steps executed. Without a tol
every step runs.

A case is an npz of arrays (scalars as 0-d arrays, as np.savez writes them):
    theta0 (N,) radians, omega (N,) radians per unit time, K (N, N), pinned (N,) bool,
    dt > 0, steps >= 0 (integer); optional tol > 0, drive (N, 2) = (h_x, h_y) per oscillator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .npz import read_npz

__all__ = [
    "CONVERGENCE_STEPS", "REQUIRED_KEYS", "OPTIONAL_KEYS", "CaseError", "ArrayCase",
    "ArrayResult", "validate_case", "load_case", "save_case", "check_capacity", "wrap_phase",
    "order_parameter", "coupling", "drive_term", "coupling_drive", "simulate_float",
    "save_result", "locking_threshold", "locked_phase_difference", "slip_rate",
    "predicted_order_parameter",
]

# M: consecutive quiet steps before the convergence detector stops a run.
CONVERGENCE_STEPS = 4

REQUIRED_KEYS = ("theta0", "omega", "K", "pinned", "dt", "steps")
OPTIONAL_KEYS = ("tol", "drive")

FORMS = ("naive", "matvec")
METHODS = ("euler", "rk4")


class CaseError(ValueError):
    """An array case that is malformed: the message names the key and the problem."""


@dataclass(frozen=True)
class ArrayCase:
    """A validated case: read-only float64 arrays (pinned is bool) and Python scalars."""

    theta0: np.ndarray          # (N,) radians
    omega: np.ndarray           # (N,) radians per unit time
    K: np.ndarray               # (N, N) coupling, row i acts on oscillator i
    pinned: np.ndarray          # (N,) bool: never updated
    dt: float
    steps: int
    tol: float | None = None
    drive: np.ndarray | None = None     # (N, 2): (h_x, h_y) replaces the pairwise sum

    @property
    def n(self) -> int:
        return self.theta0.size

    @property
    def free(self) -> np.ndarray:
        return ~self.pinned


@dataclass(frozen=True)
class ArrayResult:
    """What an engine returns; r and psi have one entry per state (steps_taken + 1)."""

    theta: np.ndarray                   # (N,) final phases, radians
    r: np.ndarray                       # (steps_taken + 1,)
    psi: np.ndarray                     # (steps_taken + 1,)
    steps_taken: int
    trajectory: np.ndarray | None = None    # (steps_taken + 1, N) when traced
    converged: bool = False             # the convergence detector stopped the run
    cycles: int | None = None           # clock cycles, for RTL engines


# ---------------------------------------------------------------------------------------------
# Validation

def _real_array(key: str, value) -> np.ndarray:
    """A finite float64 copy of a real numeric array; bool, complex, text, objects refused."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise CaseError(f"{key}: must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise CaseError(f"{key}: contains NaN or inf")
    return array


def _shape(key: str, array: np.ndarray, shape: tuple, meaning: str):
    if array.shape != shape:
        raise CaseError(f"{key}: must have shape {meaning} = {shape}, got {array.shape}")


def _scalar(key: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 0:
        raise CaseError(f"{key}: must be a scalar (0-d array), got shape {array.shape}")
    return array


def _positive(key: str, value) -> float:
    number = float(_real_array(key, _scalar(key, value)))
    if not number > 0:
        raise CaseError(f"{key}: must be > 0, got {number}")
    return number


def _steps(value) -> int:
    array = _scalar("steps", value)
    if array.dtype.kind not in "iu":
        raise CaseError(f"steps: must be an integer, got dtype {array.dtype}")
    steps = int(array)
    if steps < 0:
        raise CaseError(f"steps: must be >= 0, got {steps}")
    return steps


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def check_capacity(n: int, capacity: int | None):
    """Refuse an array larger than an engine's configured capacity (None: no limit)."""
    if capacity is not None and n > capacity:
        raise CaseError(f"theta0: N = {n} oscillators is above the capacity {capacity}")


def validate_case(arrays: Mapping, capacity: int | None = None) -> ArrayCase:
    """Check every key of a case (see the module docstring) and return it as an ArrayCase.

    Raises CaseError naming the first bad key: missing or unknown keys, wrong dtypes, shapes
    that disagree with N = len(theta0), NaN or inf, dt <= 0, steps < 0, tol <= 0, N = 0 or
    N above `capacity`.
    """
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise CaseError(f"{missing[0]}: missing (a case needs {', '.join(REQUIRED_KEYS)})")
    unknown = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        # Refused rather than ignored: a misspelt "tol" or "drive" must not pass silently.
        raise CaseError(f"{unknown[0]}: unknown key (allowed: "
                        f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")

    theta0 = _real_array("theta0", arrays["theta0"])
    if theta0.ndim != 1 or theta0.size == 0:
        raise CaseError(f"theta0: must have shape (N,) with N >= 1, got {theta0.shape}")
    n = theta0.size
    check_capacity(n, capacity)

    omega = _real_array("omega", arrays["omega"])
    _shape("omega", omega, (n,), "(N,)")
    K = _real_array("K", arrays["K"])
    _shape("K", K, (n, n), "(N, N)")
    pinned = np.asarray(arrays["pinned"])
    if pinned.dtype != np.bool_:
        raise CaseError(f"pinned: must be bool, got dtype {pinned.dtype}")
    _shape("pinned", pinned, (n,), "(N,)")

    drive = None
    if arrays.get("drive") is not None:
        drive = _real_array("drive", arrays["drive"])
        _shape("drive", drive, (n, 2), "(N, 2)")
    tol = None if arrays.get("tol") is None else _positive("tol", arrays["tol"])

    return ArrayCase(
        theta0=_read_only(theta0), omega=_read_only(omega), K=_read_only(K),
        pinned=_read_only(pinned.copy()), dt=_positive("dt", arrays["dt"]),
        steps=_steps(arrays["steps"]), tol=tol,
        drive=None if drive is None else _read_only(drive))


def load_case(path, capacity: int | None = None) -> ArrayCase:
    """Read and validate a case npz; any problem with the file is a CaseError."""
    arrays = read_npz(path, CaseError)
    try:
        return validate_case(arrays, capacity)
    except CaseError as error:
        raise CaseError(f"{path}: {error}") from None


def save_case(path, **arrays):
    """Write a case npz (validated first, so an invalid case is never written)."""
    validate_case(arrays)
    _save_npz_atomic(path, {k: np.asarray(v) for k, v in arrays.items() if v is not None})


# ---------------------------------------------------------------------------------------------
# The right-hand side

def wrap_phase(x):
    """Reduce radians to (-pi, pi]."""
    return x - 2 * np.pi * np.ceil((np.asarray(x) - np.pi) / (2 * np.pi))


def order_parameter(theta) -> tuple[float, float]:
    """(r, psi) with r e^{i psi} the mean of e^{i theta_j} over all oscillators."""
    z = np.mean(np.exp(1j * np.asarray(theta, dtype=np.float64)))
    return float(abs(z)), float(np.angle(z))


def coupling(K: np.ndarray, theta: np.ndarray, form: str = "matvec") -> np.ndarray:
    """sum_j K_ij sin(theta_j - theta_i) for every i.

    "naive":  the O(N^2) sum as written (N^2 sines).
    "matvec": cos(theta_i) (K @ sin theta)_i - sin(theta_i) (K @ cos theta)_i, the angle
              difference identity: two mat-vec products and 2N sines/cosines.
    """
    _check_form(form)
    if form == "naive":
        return np.sum(K * np.sin(theta[np.newaxis, :] - theta[:, np.newaxis]), axis=1)
    c, s = np.cos(theta), np.sin(theta)
    return c * (K @ s) - s * (K @ c)


def _check_form(form: str):
    if form not in FORMS:
        raise ValueError(f"unknown coupling form {form!r}; choose one of {', '.join(FORMS)}")


def drive_term(drive: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Im(e^{-i theta_i} (h_x + i h_y)) = h_y cos(theta_i) - h_x sin(theta_i)."""
    return drive[:, 1] * np.cos(theta) - drive[:, 0] * np.sin(theta)


def coupling_drive(case: ArrayCase, theta: np.ndarray, form: str = "matvec") -> np.ndarray:
    """The right-hand side dtheta/dt: omega plus the coupling (or the drive); 0 when pinned."""
    forcing = (drive_term(case.drive, theta) if case.drive is not None
               else coupling(case.K, theta, form))
    return np.where(case.pinned, 0.0, case.omega + forcing)


# ---------------------------------------------------------------------------------------------
# Integration

def _euler_increment(case: ArrayCase, theta: np.ndarray, form: str) -> np.ndarray:
    return case.dt * coupling_drive(case, theta, form)


def _rk4_increment(case: ArrayCase, theta: np.ndarray, form: str) -> np.ndarray:
    dt = case.dt
    k1 = coupling_drive(case, theta, form)
    k2 = coupling_drive(case, theta + 0.5 * dt * k1, form)
    k3 = coupling_drive(case, theta + 0.5 * dt * k2, form)
    k4 = coupling_drive(case, theta + dt * k3, form)
    return dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


_INCREMENTS = {"euler": _euler_increment, "rk4": _rk4_increment}


class _ConvergenceDetector:
    """Counts consecutive steps whose largest free-oscillator increment is below tol."""

    def __init__(self, tol: float | None, free: np.ndarray, needed: int = CONVERGENCE_STEPS):
        self.tol, self.free, self.needed, self.quiet = tol, free, needed, 0

    def update(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Record one step; True once `needed` consecutive steps were quiet."""
        if self.tol is None:
            return False
        step = np.abs(wrap_phase(after[self.free] - before[self.free]))
        largest = step.max() if step.size else 0.0     # nothing free: nothing moves
        self.quiet = self.quiet + 1 if largest < self.tol else 0
        return self.quiet >= self.needed


def simulate_float(case: ArrayCase, method: str = "euler", trace: bool = False,
                   form: str = "matvec") -> ArrayResult:
    """Integrate the case in float64 with Euler (the hardware's scheme) or RK4 (reference).

    Pinned phases are never written, so they stay bit-identical to theta0.
    """
    if method not in _INCREMENTS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    _check_form(form)       # up front: drive-mode cases never reach `coupling`
    increment = _INCREMENTS[method]
    free = case.free
    detector = _ConvergenceDetector(case.tol, free)

    theta = case.theta0.copy()
    r = np.empty(case.steps + 1)
    psi = np.empty(case.steps + 1)
    trajectory = np.empty((case.steps + 1, case.n)) if trace else None
    r[0], psi[0] = order_parameter(theta)
    if trace:
        trajectory[0] = theta

    taken, converged = 0, False
    while taken < case.steps and not converged:
        before = theta.copy()
        theta[free] += increment(case, theta, form)[free]
        taken += 1
        r[taken], psi[taken] = order_parameter(theta)
        if trace:
            trajectory[taken] = theta
        converged = detector.update(before, theta)

    return ArrayResult(theta=theta, r=r[:taken + 1], psi=psi[:taken + 1], steps_taken=taken,
                       trajectory=None if trajectory is None else trajectory[:taken + 1],
                       converged=converged)


# ---------------------------------------------------------------------------------------------
# Result files

def _save_npz_atomic(path, arrays: dict):
    """np.savez to a temporary file next to `path`, then rename: never a partial file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "xb") as file:     # a file object: savez adds no ".npz"
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_result(result: ArrayResult, path, extra: dict | None = None):
    """Write result.npz: theta, r, steps_taken; cycles if known; trajectory if traced."""
    arrays = {"theta": result.theta, "r": result.r,
              "steps_taken": np.asarray(result.steps_taken, dtype=np.int64)}
    if result.cycles is not None:
        arrays["cycles"] = np.asarray(result.cycles, dtype=np.int64)
    if result.trajectory is not None:
        arrays["trajectory"] = result.trajectory
    for key, value in (extra or {}).items():
        if key in arrays:
            raise ValueError(f"extra key {key!r} would overwrite a result array")
        arrays[key] = np.asarray(value)
    _save_npz_atomic(path, arrays)


# ---------------------------------------------------------------------------------------------
# Physics: the closed forms the tests check the model against

def locking_threshold(domega: float, k: float) -> bool:
    """Two oscillators, K = [[0, k], [k, 0]]: they phase-lock iff |domega| <= 2k.

    The difference phi = theta_2 - theta_1 obeys dphi/dt = domega - 2k sin(phi), which has a
    fixed point exactly when |domega / 2k| <= 1.
    """
    return abs(domega) <= 2 * k


def locked_phase_difference(domega: float, k: float) -> float:
    """The stable locked phi = theta_2 - theta_1 = asin(domega / 2k) (cos phi > 0)."""
    return math.asin(domega / (2 * k))


def slip_rate(domega: float, k: float) -> float:
    """Mean dphi/dt of two drifting oscillators: sqrt(domega^2 - 4k^2) * sign(domega).

    The period of dphi/dt = domega - 2k sin(phi) is the integral of dphi over one turn,
    2 pi / sqrt(domega^2 - 4k^2).
    """
    return math.copysign(math.sqrt(domega * domega - 4 * k * k), domega)


def _self_consistency(detuning: np.ndarray, coupling_strength: float, r: float) -> float:
    """(1/N) sum over locked i of sqrt(1 - (detuning_i / (K r))^2); 0 at r = 0."""
    if r <= 0:
        return 0.0
    x = detuning / (coupling_strength * r)
    locked = np.abs(x) <= 1
    return float(np.sum(np.sqrt(1 - x[locked] ** 2)) / detuning.size)


def predicted_order_parameter(omega, K: float, *, tol: float = 1e-13,
                              max_iter: int = 100_000) -> float:
    """Steady r of all-to-all coupling K_ij = K/N for these natural frequencies (finite N).

    Mean-field: each oscillator feels K r sin(psi - theta_i). In the frame turning at
    Omega = mean(omega) (the exact mean velocity, since the coupling sums to zero), oscillator
    i locks at sin(theta_i - psi) = (omega_i - Omega) / (K r) when |omega_i - Omega| <= K r,
    contributing cos(theta_i - psi) = sqrt(1 - ((omega_i - Omega) / (K r))^2); drifting
    oscillators contribute zero along psi on average (each one's time-averaged cos vanishes).
    So r solves r = f(r) = (1/N) sum_locked sqrt(1 - ((omega_i - Omega) / (K r))^2).

    Approximations: the locked cluster turns at Omega (exact for symmetric frequency sets;
    drifting oscillators pull it off by (1/N) sum_drift sign(d_i) sqrt(d_i^2 - (K r)^2), so
    heavy-tailed samples, e.g. Cauchy with its outliers, break it: prefer Gaussian ones); the
    drifting oscillators' fluctuating O(sqrt(N_drift) / N) contribution is neglected. When
    every oscillator locks the prediction is exact (the locked state is a rigid rotation).

    Solved by monotone fixed-point iteration from r = 1: f is nondecreasing in r and
    f(1) <= 1, so the iterates decrease to the largest fixed point (0 below the threshold).
    """
    omega = np.asarray(omega, dtype=np.float64)
    if K <= 0:
        return 0.0
    detuning = omega - omega.mean()
    r = 1.0
    for _ in range(max_iter):
        new = _self_consistency(detuning, K, r)
        if abs(new - r) <= tol:
            return new
        r = new
    return r    # critical slowing down near the threshold: the last iterate
