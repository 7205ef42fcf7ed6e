"""The fixed-point array model: its derived bounds against float Euler, and its decisions."""


import numpy as np
import pytest

from oscarray.golden.array_fixed import (FORMS, ArrayFixedConfig, ArrayFormatError, quantize_case,
                                         run_fixed, step_error_bound, step_fixed,
                                         trajectory_error_bound)

CONFIG = ArrayFixedConfig(capacity=64)
TURN = 2.0 ** CONFIG.acc_bits


def random_case(rng, n=24, strength=2.0):
    theta = rng.uniform(0, 2 * np.pi, n)
    omega = rng.normal(0, 0.5, n)
    K = rng.uniform(-1, 1, (n, n)) * strength / n
    pinned = np.zeros(n, bool)
    pinned[:2] = True
    drive = rng.normal(0, 1, (n, 2))
    return theta, omega, K, pinned, drive


def float_rhs(theta, omega, K, form, drive):
    """The equations in float64, written independently of golden/array.py."""
    if form == "drive":
        coupling = drive[:, 1] * np.cos(theta) - drive[:, 0] * np.sin(theta)
    else:
        coupling = np.sum(K * np.sin(theta[None, :] - theta[:, None]), axis=1)
    return omega + coupling


def wrapped(a):
    return np.abs((a + np.pi) % (2 * np.pi) - np.pi)


@pytest.mark.parametrize("form", FORMS)
def test_one_step_within_derived_bound(form):
    rng = np.random.default_rng(1)
    for trial in range(10):
        theta, omega, K, pinned, drive = random_case(rng, strength=rng.uniform(0.1, 8))
        dt = rng.uniform(0.005, 0.1)
        q = quantize_case(CONFIG, theta, omega, K, pinned, dt, 1, drive=drive, form=form)
        bound = step_error_bound(q, K)
        acc = rng.integers(0, 2 ** 32, theta.size).astype(np.uint64)
        new, *_ = step_fixed(q, acc)
        start = acc / TURN * 2 * np.pi
        want = np.where(pinned, start, start + dt * float_rhs(start, omega, K, form, drive))
        error = wrapped(new / TURN * 2 * np.pi - want).max()
        assert error <= bound, (trial, error, bound)
        assert bound < 1e-3 * dt * max(1.0, np.abs(K).sum(axis=1).max())   # informative


@pytest.mark.parametrize("form", FORMS)
def test_trajectory_within_gronwall_bound(form):
    # Short enough that (1 + dt L)**n stays small: the bound is then informative.
    rng = np.random.default_rng(2)
    theta, omega, K, pinned, drive = random_case(rng, strength=1.0)
    dt, steps = 0.01, 100
    q = quantize_case(CONFIG, theta, omega, K, pinned, dt, steps, drive=drive, form=form)
    run = run_fixed(q)
    phase = np.mod(theta, 2 * np.pi)
    phase = np.where(pinned, q.acc0 / TURN * 2 * np.pi, phase)   # pinned: the same start
    for _ in range(steps):
        phase = np.where(pinned, phase, phase + dt * float_rhs(phase, omega, K, form, drive))
    bound = trajectory_error_bound(q, K)
    start_rounding = 0.5 * 2 * np.pi / TURN
    assert wrapped(run.theta(q) - phase).max() <= bound + start_rounding
    assert bound < 1e-2        # informative: far below a turn


def test_pinned_never_move_and_k0_advances_by_omega_exactly():
    rng = np.random.default_rng(3)
    theta, omega, K, pinned, _ = random_case(rng)
    q = quantize_case(CONFIG, theta, omega, np.zeros_like(K), pinned, 0.05, 37, form="matvec")
    run = run_fixed(q, trace=True)
    assert (run.trajectory[:, pinned] == q.acc0[pinned]).all()
    free = ~pinned
    expected = (q.acc0[free].astype(object) + 37 * q.w[free].astype(object)) % 2 ** 32
    assert [int(v) for v in run.acc[free]] == [int(v) for v in expected]
    q = quantize_case(CONFIG, theta, omega, K, pinned, 0.05, 37, form="pairwise")
    assert (run_fixed(q).acc[pinned] == q.acc0[pinned]).all()


@pytest.mark.parametrize("form", ["pairwise", "matvec"])
def test_exact_antipode_escapes_and_locks(form):
    # Two identical oscillators exactly half a turn apart: an unstable equilibrium.
    theta, omega = np.array([0.0, np.pi]), np.zeros(2)
    K = np.array([[0, 1.0], [1.0, 0]])
    q = quantize_case(CONFIG, theta, omega, K, np.zeros(2, bool), 0.05, 2000, form=form)
    run = run_fixed(q)
    assert wrapped(run.theta(q)[0] - run.theta(q)[1]) < 1e-3      # in phase at the end


def test_drive_antipode_escapes_and_zero_drive_runs_free():
    theta = np.array([np.pi, 0.3])
    drive = np.array([[1.0, 0.0], [0.0, 0.0]])    # oscillator 0 starts exactly antipodal
    omega = np.array([0.0, 0.7])
    q = quantize_case(CONFIG, theta, omega, np.zeros((2, 2)), np.zeros(2, bool), 0.05, 1500,
                      drive=drive, form="drive")
    run = run_fixed(q)
    assert wrapped(run.theta(q)[0] - 0.0) < 1e-3                    # reached the drive
    assert run.acc[1] == (q.acc0[1] + 1500 * q.w[1]) % 2 ** 32       # zero drive: free run


def test_convergence_detector_stops_after_calm_steps():
    theta, omega = np.array([0.0, 0.5]), np.zeros(2)
    K = np.array([[0, 1.0], [1.0, 0]])
    tol = 1e-6
    q = quantize_case(CONFIG, theta, omega, K, np.zeros(2, bool), 0.05, 100000, tol=tol)
    run = run_fixed(q, trace=True)
    assert run.steps_taken < 100000
    steps = np.diff(run.trajectory.astype(np.int64), axis=0)
    steps = (steps + 2 ** 31) % 2 ** 32 - 2 ** 31
    largest = np.abs(steps).max(axis=1) / TURN * 2 * np.pi
    assert (largest[-4:] < tol * (1 + 1e-6)).all() and largest[-5] >= tol * (1 - 1e-6)
    assert run.r(q).shape == (run.steps_taken + 1,)


@pytest.mark.parametrize("kwargs,message", [
    ({"dt": 0.0}, "dt must be positive"),
    ({"dt": 5.0}, "alias"),
    ({"n": 65}, "capacity"),
    ({"form": "spectral"}, "unknown form"),
    ({"form": "drive", "drive": None}, "needs a drive"),
])
def test_unrepresentable_cases_are_refused(kwargs, message):
    n = kwargs.pop("n", 4)
    args = dict(theta0=np.zeros(n), omega=np.ones(n), K=np.ones((n, n)), pinned=np.zeros(n, bool),
                dt=0.1, steps=10, form="matvec", drive=np.ones((n, 2)))
    args.update(kwargs)
    with pytest.raises(ArrayFormatError, match=message):
        quantize_case(CONFIG, **args)


def test_cli_golden_fixed_agrees_with_float_within_bound(tmp_path, capsys):
    from oscarray.cli import main
    from oscarray.flows import _quantized
    from oscarray.golden.array import load_case

    rng = np.random.default_rng(5)
    n = 16
    case = tmp_path / "case.npz"
    np.savez(case, theta0=rng.uniform(0, 2 * np.pi, n), omega=rng.normal(0, 0.3, n),
             K=np.full((n, n), 0.5 / n), pinned=np.arange(n) < 2, dt=np.float64(0.02),
             steps=np.int64(100))
    results = {}
    for engine in ("golden-float", "golden-fixed"):
        out = tmp_path / f"{engine}.npz"
        assert main(["array", "--in", str(case), "--engine", engine, "--form", "pairwise",
                     "--out", str(out)]) == 0
        results[engine] = np.load(out)
    loaded = load_case(case)
    q = _quantized(loaded, "pairwise")
    bound = trajectory_error_bound(q, loaded.K) + 0.5 * 2 * np.pi / TURN
    difference = wrapped(results["golden-fixed"]["theta"] - results["golden-float"]["theta"])
    assert difference.max() <= bound
    assert results["golden-fixed"]["r"].shape == (101,)


def test_cli_golden_fixed_refuses_over_capacity_and_writes_nothing(tmp_path, capsys):
    from oscarray.cli import main
    n = 70
    case = tmp_path / "case.npz"
    np.savez(case, theta0=np.zeros(n), omega=np.zeros(n), K=np.zeros((n, n)),
             pinned=np.zeros(n, bool), dt=np.float64(0.1), steps=np.int64(5))
    out = tmp_path / "result.npz"
    assert main(["array", "--in", str(case), "--engine", "golden-fixed", "--out", str(out)]) == 2
    assert "capacity of 64" in capsys.readouterr().err and not out.exists()
    assert main(["array", "--in", str(case), "--engine", "golden-fixed", "--capacity", "128",
                 "--out", str(out)]) == 0 and out.exists()
