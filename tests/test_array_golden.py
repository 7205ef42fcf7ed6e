"""The coupled-oscillator array's float model against the physics it must reproduce, its
case validation, and the `oscarray array` command. Every tolerance says where it comes from."""

import json
import math

import numpy as np
import pytest

from oscarray import flows
from oscarray.cli import main
from oscarray.golden.array import (CONVERGENCE_STEPS, CaseError, check_capacity, coupling,
                                   load_case, locked_phase_difference, locking_threshold,
                                   predicted_order_parameter, save_case, simulate_float,
                                   slip_rate, validate_case, wrap_phase)

EPS = np.finfo(np.float64).eps


def make_case(n=8, seed=0, **overrides):
    """A valid random case; keyword arguments replace its arrays."""
    rng = np.random.default_rng(seed)
    arrays = dict(theta0=rng.uniform(-np.pi, np.pi, n), omega=rng.normal(0, 1, n),
                  K=rng.uniform(0, 1, (n, n)) / n, pinned=np.zeros(n, bool), dt=0.01,
                  steps=100)
    arrays.update(overrides)
    return arrays


def two_oscillators(domega, k, dt, steps, method="euler"):
    """K = [[0, k], [k, 0]], omega = (0, domega): phi = theta_2 - theta_1 over time."""
    case = validate_case(dict(theta0=np.zeros(2), omega=np.array([0.0, domega]),
                              K=np.array([[0.0, k], [k, 0.0]]), pinned=np.zeros(2, bool),
                              dt=dt, steps=steps))
    result = simulate_float(case, method, trace=True)
    return result.trajectory[:, 1] - result.trajectory[:, 0]


# ---------------------------------------------------------------------------------------------
# The right-hand side

def test_naive_and_matvec_coupling_agree():
    # Both are sums of N = 200 terms of size <= 1: rounding differs by ~N eps ~ 4e-14, so
    # 1e-12 is a bound with margin. Asymmetric K and phases far from 0 on purpose.
    rng = np.random.default_rng(1)
    K = rng.uniform(-1, 1, (200, 200))
    theta = rng.uniform(-50, 50, 200)
    np.testing.assert_allclose(coupling(K, theta, "naive"), coupling(K, theta, "matvec"),
                               rtol=0, atol=1e-12)
    case = validate_case(make_case(n=50, seed=2, steps=20))
    runs = [simulate_float(case, form=form).theta for form in ("naive", "matvec")]
    np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=1e-12)


def test_zero_coupling_advances_each_phase_by_omega_t():
    # With K = 0 the right-hand side is the constant omega and Euler is exact: theta_n =
    # theta0 + n dt omega. Only float rounding remains, at most one ulp of |theta| per step.
    steps, dt = 1000, 0.01
    case = validate_case(make_case(n=16, seed=3, K=np.zeros((16, 16)), dt=dt, steps=steps))
    result = simulate_float(case, trace=True)
    n = np.arange(steps + 1)[:, None]
    exact = case.theta0 + n * dt * case.omega
    bound = steps * EPS * np.abs(exact).max()
    np.testing.assert_allclose(result.trajectory, exact, rtol=0, atol=bound)
    assert result.steps_taken == steps and result.r.shape == (steps + 1,)


def test_drive_equals_pairwise_coupling_held_at_current_phases():
    # h_i = sum_j K_ij e^{i theta_j} makes Im(e^{-i theta_i} h_i) the pairwise sum: one Euler
    # step must agree up to rounding of two N = 30 term sums (1e-12 has a wide margin).
    arrays = make_case(n=30, seed=4, steps=1, pinned=np.arange(30) % 7 == 0)
    h = arrays["K"] @ np.exp(1j * arrays["theta0"])
    pairwise = simulate_float(validate_case(arrays))
    driven = simulate_float(validate_case(dict(arrays, drive=np.stack([h.real, h.imag], 1))))
    np.testing.assert_allclose(driven.theta, pairwise.theta, rtol=0, atol=1e-12)
    assert not np.array_equal(pairwise.theta, arrays["theta0"])


# ---------------------------------------------------------------------------------------------
# Two oscillators

def test_two_oscillators_lock_below_threshold():
    domega, k = 0.6, 0.5
    assert locking_threshold(domega, k)
    phi = two_oscillators(domega, k, dt=0.05, steps=4000)
    # The locked state is a rigid rotation, an exact fixed point of Euler's map too, and the
    # approach is exp(-2k cos(phi*) t) = exp(-160) here: only rounding is left (1e-9).
    assert abs(phi[-1] - locked_phase_difference(domega, k)) < 1e-9
    assert abs(phi[-1] - math.asin(0.6)) < 1e-9


@pytest.mark.parametrize("method, dt, tolerance", [
    # RK4: global error O(dt^4) ~ 1e-8 at dt = 0.01; the crossing-time interpolation is
    # O(dt^2 / T) ~ 1e-7 relative: bound 1e-6 (measured 1.2e-8).
    # Euler: its modified equation dphi/dt = f - (dt/2) f f' changes the period by
    # (dt/2) [ln f] over one turn = 0, so the mean slip rate is off by O(dt^2) = 1e-4 only
    # (measured 1.3e-6): bound 1e-4.
    ("rk4", 0.01, 1e-6),
    ("euler", 0.01, 1e-4),
])
def test_two_oscillators_drift_above_threshold(method, dt, tolerance):
    domega, k = 1.0, 0.3          # |domega| > 2k: slip rate sqrt(1 - 0.36) = 0.8
    assert not locking_threshold(domega, k)
    steps = 40_000                # t = 400: about 50 slips
    phi = two_oscillators(domega, k, dt, steps, method)
    t = np.arange(steps + 1) * dt
    # The difference grows without bound (never settles): ~ rate * t = 320 rad at the end.
    assert phi[-1] > 0.9 * slip_rate(domega, k) * t[-1]
    assert np.all(np.diff(phi) > 0)      # domega - 2k sin(phi) >= 0.4 > 0: always slipping
    # Mean slip rate from the first and last crossings of whole turns (linear interpolation).
    turns = np.floor(phi / (2 * np.pi))
    crossings = np.flatnonzero(np.diff(turns) > 0)
    times = [t[i] + (2 * np.pi * turns[i + 1] - phi[i]) / (phi[i + 1] - phi[i]) * dt
             for i in (crossings[0], crossings[-1])]
    rate = 2 * np.pi * (turns[crossings[-1] + 1] - turns[crossings[0] + 1]) / (times[1] - times[0])
    assert abs(rate / slip_rate(domega, k) - 1) < tolerance


# ---------------------------------------------------------------------------------------------
# All-to-all coupling

def test_predicted_order_parameter_closed_forms():
    # Identical frequencies: perfect synchrony. Two groups at +-1: all lock iff K r >= 1, and
    # r = sqrt(1 - 1/(K r)^2), i.e. r^2 = (1 + sqrt(1 - 4/K^2)) / 2 (K = 4: 0.9659).
    assert predicted_order_parameter(np.full(10, 0.3), 1.0) == 1.0
    omega = np.array([-1.0, 1.0] * 5)
    assert abs(predicted_order_parameter(omega, 4.0)
               - math.sqrt((1 + math.sqrt(1 - 4 / 16)) / 2)) < 1e-12
    assert predicted_order_parameter(omega, 1.0) == 0.0      # K r < 1 for every r <= 1


@pytest.mark.parametrize("K, tolerance", [
    # K = 4 (2.5x critical, K_c = 2 / (pi g(0)) = 1.60 for unit Gaussians): every oscillator
    # locks, the prediction is exact and only convergence/rounding is left.
    (4.0, 1e-9),
    # K = 2.5: 5 of 200 drift. Their O(sqrt(5)/200) = 0.011 fluctuation of r is averaged
    # over 200 time units (observed deviation 3e-5 to 5e-4 over four seeds): bound 0.01.
    (2.5, 1e-2),
])
def test_all_to_all_synchronizes_to_the_predicted_order_parameter(K, tolerance):
    n = 200
    rng = np.random.default_rng(0)
    omega = rng.normal(0, 1, n)
    case = validate_case(dict(theta0=rng.uniform(-np.pi, np.pi, n), omega=omega,
                              K=np.full((n, n), K / n), pinned=np.zeros(n, bool),
                              dt=0.05, steps=8000))
    result = simulate_float(case)
    assert result.r[0] < 0.2                                  # starts incoherent
    assert abs(result.r[-4000:].mean() - predicted_order_parameter(omega, K)) < tolerance


# ---------------------------------------------------------------------------------------------
# Pinned oscillators, integrators, convergence

@pytest.mark.parametrize("method", ["euler", "rk4"])
@pytest.mark.parametrize("driven", [False, True])
def test_pinned_oscillators_never_move(method, driven):
    n = 12
    pinned = np.arange(n) % 3 == 0
    theta0 = np.random.default_rng(5).uniform(-40, 40, n)
    theta0[0] = -0.0                  # x + 0.0 would turn it into +0.0: must not be touched
    arrays = make_case(n=n, seed=5, theta0=theta0, pinned=pinned, K=np.full((n, n), 2.0),
                       steps=300)
    if driven:
        arrays["drive"] = np.ones((n, 2))
    result = simulate_float(validate_case(arrays), method, trace=True)
    bits = result.trajectory[:, pinned].view(np.int64)
    assert np.array_equal(bits, np.broadcast_to(theta0[pinned].view(np.int64), bits.shape))
    assert np.all(result.trajectory[-1, ~pinned] != theta0[~pinned])


def test_euler_converges_to_rk4_at_first_order():
    # Global Euler error ~ C dt: halving dt halves it. The O(dt^2) remainder moves the ratio
    # by ~ dt C'/C; [1.8, 2.2] allows 10 %. The RK4 reference (dt = 1e-3, error ~1e-12) is
    # exact at this scale.
    arrays = make_case(n=10, seed=6, K=np.random.default_rng(6).uniform(-2, 2, (10, 10)))
    t_end = 2.0

    def final(method, dt):
        case = validate_case(dict(arrays, dt=dt, steps=round(t_end / dt)))
        return simulate_float(case, method).theta

    reference = final("rk4", 1e-3)
    errors = [np.abs(final("euler", dt) - reference).max() for dt in (0.02, 0.01, 0.005)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(1.8 < ratio < 2.2 for ratio in ratios), ratios


def test_convergence_detector_stops_at_the_right_step():
    # One free oscillator drawn to 0 by a drive h = (1, 0): dtheta/dt = -sin(theta). Its
    # Euler increments -dt sin(theta_n) shrink geometrically; the expected stop is counted
    # here with plain floats: the first step n whose increment and the M - 1 before it are all
    # below tol.
    theta0, dt, tol = 2.0, 0.1, 1e-3
    quiet, theta, expected = 0, theta0, None
    for n in range(1, 1000):
        step = -dt * math.sin(theta)
        theta += step
        quiet = quiet + 1 if abs(step) < tol else 0
        if quiet == CONVERGENCE_STEPS:
            expected = n
            break
    case = validate_case(dict(theta0=np.array([theta0, 0.5]), omega=np.zeros(2),
                              K=np.zeros((2, 2)), pinned=np.array([False, True]), dt=dt,
                              steps=1000, tol=tol, drive=np.array([[1.0, 0.0], [0.0, 0.0]])))
    result = simulate_float(case)
    assert result.converged and result.steps_taken == expected == 60
    assert result.r.shape == (expected + 1,) and abs(result.theta[0] - theta) < 1e-15
    # Without tol every step runs; tol never met runs every step and does not converge.
    assert simulate_float(validate_case(dict(make_case(), steps=37))).steps_taken == 37
    never = simulate_float(validate_case(make_case(tol=1e-12, steps=50)))
    assert never.steps_taken == 50 and not never.converged


def test_convergence_detector_needs_m_consecutive_quiet_steps():
    # omega = 0, K = 0: nothing moves, so it stops after exactly M steps; with steps < M it
    # runs them all without claiming convergence. Increments are wrapped: a 2 pi step is 0.
    still = make_case(n=3, omega=np.zeros(3), K=np.zeros((3, 3)), tol=1e-9, steps=100)
    assert simulate_float(validate_case(still)).steps_taken == CONVERGENCE_STEPS
    short = simulate_float(validate_case(dict(still, steps=CONVERGENCE_STEPS - 1)))
    assert short.steps_taken == CONVERGENCE_STEPS - 1 and not short.converged
    turning = dict(still, omega=np.full(3, 2 * np.pi), dt=1.0)
    assert simulate_float(validate_case(turning)).steps_taken == CONVERGENCE_STEPS
    assert wrap_phase(np.pi) == np.pi and wrap_phase(-np.pi) == np.pi


# ---------------------------------------------------------------------------------------------
# Invalid cases: CaseError naming the key, and no output file (through the CLI too)

INVALID = {
    "missing K": ({"K": None}, "K"),
    "unknown key": ({"tolerance": 1e-3}, "tolerance"),
    "theta0 2-D": ({"theta0": np.zeros((8, 1))}, "theta0"),
    "theta0 empty": ({"theta0": np.zeros(0)}, "theta0"),
    "theta0 complex": ({"theta0": np.zeros(8, complex)}, "theta0"),
    "theta0 text": ({"theta0": np.array(["a"] * 8)}, "theta0"),
    "theta0 NaN": ({"theta0": np.full(8, np.nan)}, "theta0"),
    "omega inf": ({"omega": np.full(8, np.inf)}, "omega"),
    "omega short": ({"omega": np.zeros(7)}, "omega"),
    "K not square": ({"K": np.zeros((8, 7))}, "K"),
    "K NaN": ({"K": np.where(np.eye(8) > 0, np.nan, 0.0)}, "K"),
    "pinned int": ({"pinned": np.zeros(8, int)}, "pinned"),
    "pinned short": ({"pinned": np.zeros(7, bool)}, "pinned"),
    "dt zero": ({"dt": np.float64(0.0)}, "dt"),
    "dt negative": ({"dt": np.float64(-0.1)}, "dt"),
    "dt inf": ({"dt": np.float64(np.inf)}, "dt"),
    "dt vector": ({"dt": np.array([0.1])}, "dt"),
    "dt bool": ({"dt": np.bool_(True)}, "dt"),
    "steps negative": ({"steps": np.int64(-1)}, "steps"),
    "steps float": ({"steps": np.float64(10.0)}, "steps"),
    "tol zero": ({"tol": np.float64(0.0)}, "tol"),
    "tol NaN": ({"tol": np.float64(np.nan)}, "tol"),
    "drive shape": ({"drive": np.zeros((8, 3))}, "drive"),
    "drive inf": ({"drive": np.full((8, 2), -np.inf)}, "drive"),
}


def write_raw_case(path, changes):
    """np.savez without validation: the bad files users might bring."""
    arrays = {k: np.asarray(v) for k, v in {**make_case(), **changes}.items() if v is not None}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_case_is_refused(tmp_path, name):
    changes, key = INVALID[name]
    with pytest.raises(CaseError, match=f"^{key}: "):
        validate_case({k: v for k, v in {**make_case(), **changes}.items() if v is not None})
    path = write_raw_case(tmp_path / "case.npz", changes)
    with pytest.raises(CaseError, match=f"case.npz: {key}: "):
        load_case(path)


@pytest.mark.parametrize("name", list(INVALID))
def test_cli_refuses_invalid_case_without_output(tmp_path, capsys, name):
    changes, key = INVALID[name]
    path = write_raw_case(tmp_path / "case.npz", changes)
    out = tmp_path / "result.npz"
    code = main(["array", "--in", str(path), "--engine", "golden-float", "--out", str(out),
                 "--plot", str(tmp_path / "plot.png")])
    error = capsys.readouterr().err
    assert code == 2 and f"{key}: " in error and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]


def test_unreadable_files_are_case_errors(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    np.save(tmp_path / "bare.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", **dict(make_case(), omega=np.array([None] * 8)))
    for name in ("text.npz", "bare.npy", "objects.npz", "absent.npz"):
        with pytest.raises(CaseError, match=name):
            load_case(tmp_path / name)


def test_capacity(tmp_path, capsys, monkeypatch):
    path = tmp_path / "case.npz"
    save_case(path, **make_case(n=8))
    assert load_case(path, capacity=8).n == 8
    with pytest.raises(CaseError, match="theta0: N = 8 oscillators is above the capacity 4"):
        load_case(path, capacity=4)
    # An engine's format check runs before any work: no file is written.
    monkeypatch.setitem(flows.ARRAY_CASE_CHECKS, "golden-float",
                        lambda case, **options: check_capacity(case.n, 4))
    out = tmp_path / "result.npz"
    assert main(["array", "--in", str(path), "--engine", "golden-float", "--out",
                 str(out)]) == 2
    assert "capacity 4" in capsys.readouterr().err and not out.exists()


def test_save_case_refuses_invalid_arrays(tmp_path):
    with pytest.raises(CaseError, match="^steps: "):
        save_case(tmp_path / "case.npz", **make_case(steps=-3))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# The command line

def test_cli_array_writes_result_trace_and_plot(tmp_path, capsys):
    path = tmp_path / "case.npz"
    save_case(path, **make_case(n=8, steps=50, tol=1e-9))
    out, plot = tmp_path / "result.npz", tmp_path / "phases.png"
    code = main(["array", "--in", str(path), "--engine", "golden-float", "--out", str(out),
                 "--trace", "--plot", str(plot), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["steps_taken"] == 50 and report["out"] == str(out)
    with np.load(out) as result:
        assert set(result.files) == {"theta", "r", "steps_taken", "trajectory"}
        assert result["theta"].shape == (8,) and result["r"].shape == (51,)
        assert result["trajectory"].shape == (51, 8) and int(result["steps_taken"]) == 50
        expected = simulate_float(load_case(path))
        assert np.array_equal(result["theta"], expected.theta)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No trace: no trajectory in the file (the plot alone does not put it there).
    assert main(["array", "--in", str(path), "--engine", "golden-float", "--out", str(out)]) == 0
    with np.load(out) as result:
        assert "trajectory" not in result.files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz", "phases.png",
                                                          "result.npz"]


def test_cli_sim_array_writes_plots(tmp_path, capsys):
    path = tmp_path / "case.npz"
    save_case(path, **make_case(n=8, steps=20))
    assert main(["sim", "array", "--in", str(path), "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "case_golden-float.png").stat().st_size > 1000
    assert "r = " in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["rtl"])
def test_cli_engines_not_yet_available(tmp_path, capsys, monkeypatch, engine):
    # Every engine exists now; the placeholder for future ones must still fail cleanly.
    monkeypatch.setitem(flows.ARRAY_ENGINES, engine, flows._array_engine_missing(engine))
    monkeypatch.delitem(flows.ARRAY_CASE_CHECKS, engine, raising=False)
    path = tmp_path / "case.npz"
    save_case(path, **make_case())
    out = tmp_path / "result.npz"
    assert main(["array", "--in", str(path), "--engine", engine, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert engine in error and "not available" in error and not out.exists()


def test_cli_refuses_missing_output_folder(tmp_path, capsys):
    path = tmp_path / "case.npz"
    save_case(path, **make_case())
    out = tmp_path / "absent" / "result.npz"
    assert main(["array", "--in", str(path), "--engine", "golden-float", "--out",
                 str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
