"""The array engine RTL in cocotb on Verilator against the fixed-point specification.

Bit-exact means: the final accumulators, every order sum, steps_taken, converged and (traced)
every accumulator of every step equal `run_fixed`'s. One Verilator build per lane count
(capacity 64, 1 and 4 lanes, cases written through the `load` port) runs every random and edge
case in one simulation; small builds (capacity 8) check contents given at elaboration (Memory
init, 1 and 3 lanes). Builds take ~15-40 s each.
"""

import dataclasses
import shutil

import numpy as np
import pytest

from oscarray import flows
from oscarray.cli import main
from oscarray.golden.array import save_case, validate_case
from oscarray.golden.array_fixed import (MAX_ROW_SHIFT, ArrayFixedConfig, quantize_case,
                                         run_fixed)
from oscarray.hdl.array import (ENGINE_FORMS, MAX_CAPACITY, MAX_LANES, ArrayEngine,
                                ArrayEngineError,
                                check_case, check_lanes, cycles_per_run, cycles_per_step,
                                issue_clocks, k_bank_bits, k_bank_word, load_writes,
                                row_groups)
from oscarray.sim.array import run_array_rtl, run_array_rtl_batch

CONFIG = ArrayFixedConfig(capacity=64)
TURN = 2 ** CONFIG.acc_bits


def random_case(seed, n, form, steps, pinned=1, dt=0.1, omega_spread=0.05, config=CONFIG,
                signed_coupling=False):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    omega = rng.normal(0, omega_spread, n)
    low = -1.0 if signed_coupling else 0.2
    K = rng.uniform(low, 1.5, (n, n)) * 3 / n
    fixed = np.zeros(n, bool)
    fixed[rng.choice(n, pinned, replace=False)] = True
    drive = rng.normal(0, 1, (n, 2))
    return quantize_case(config, theta, omega, K, fixed, dt, steps, drive=drive, form=form)


def with_mid_run_tol(q):
    """q with a tol (accumulator units) that the run meets about half way, so the detector,
    not max_steps, ends it: the largest free |inc| of the four steps after the middle, + 1."""
    trajectory = run_fixed(q, trace=True).trajectory.astype(np.int64)
    inc = (np.diff(trajectory, axis=0) + TURN // 2) % TURN - TURN // 2
    largest = np.abs(inc[:, ~q.pinned]).max(axis=1, initial=0)
    middle = q.steps // 2
    return dataclasses.replace(q, tol=int(largest[middle:middle + 4].max()) + 1)


def two_antipodal(form, steps=40):
    """Exact antipodes: the final rotation lands on the negative x axis (the nudge); in
    pairwise form sin_ij of the pair lands there (the pair sign)."""
    if form in ("matvec", "pairwise"):
        return quantize_case(CONFIG, np.array([0.0, np.pi]), np.zeros(2),
                             np.array([[0, 1.0], [1.0, 0]]), np.zeros(2, bool), 0.05, steps,
                             form=form)
    # Oscillator 0 sits opposite its drive; oscillator 1 has a zero drive (runs at omega).
    return quantize_case(CONFIG, np.array([np.pi, 0.3]), np.array([0.0, 0.7]), np.zeros((2, 2)),
                         np.zeros(2, bool), 0.05, steps, drive=np.array([[1.0, 0], [0, 0]]),
                         form="drive")


def build_cases():
    cases = {}
    for n, steps in ((2, 60), (5, 60), (16, 40), (33, 16)):
        for form in ("matvec", "drive"):
            seed = 100 * n + len(form)
            q = random_case(seed, n, form, steps, pinned=1 if n == 2 else 3,
                            signed_coupling=n == 16)
            cases[f"n{n}-{form}"] = q
            cases[f"n{n}-{form}-tol"] = with_mid_run_tol(
                random_case(seed + 1, n, form, steps, pinned=1 if n == 2 else 2))
    for n, steps in ((5, 40), (16, 20)):
        seed = 100 * n + 8
        cases[f"n{n}-pairwise"] = random_case(seed, n, "pairwise", steps, pinned=2,
                                              signed_coupling=n == 16)
        cases[f"n{n}-pairwise-tol"] = with_mid_run_tol(random_case(seed + 1, n, "pairwise",
                                                                   steps, pinned=1))
    cases["antipode-matvec"] = two_antipodal("matvec")
    cases["antipode-pairwise"] = two_antipodal("pairwise")
    cases["antipode-and-zero-drive"] = two_antipodal("drive")
    cases["never-calm"] = dataclasses.replace(random_case(7, 5, "matvec", 30), tol=0)
    cases["all-pinned"] = dataclasses.replace(random_case(8, 5, "drive", 30, pinned=5), tol=1)
    cases["zero-steps"] = random_case(9, 5, "matvec", 0)
    cases["fast-omega"] = random_case(10, 5, "drive", 30, omega_spread=8.0, dt=0.1)
    # The angle calm test (omega = 0): it ends the run once every free oscillator is within
    # atan(2**-6) of its coupling's direction.
    for form, n in (("drive", 7), ("pairwise", 6), ("matvec", 5)):
        q = random_case(20 + n, n, form, 80, pinned=2, dt=0.3, omega_spread=0.0)
        cases[f"n{n}-{form}-angle-tol"] = dataclasses.replace(q, tol=0, angle_shift=6)
    # A free oscillator with a zero drive ((x, y) = (0, 0)) counts as calm: it never moves.
    q = cases["n7-drive-angle-tol"]
    drive = q.drive.copy()
    drive[np.flatnonzero(~q.pinned)[0]] = 0
    cases["n7-drive-zero-angle-tol"] = dataclasses.replace(q, drive=drive)
    return cases


CASES = build_cases()


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sim")


@pytest.fixture(scope="module")
def batch(build_root):
    """Every case in one simulation, traced, with random backpressure on `order`."""
    names = list(CASES)
    results = run_array_rtl_batch([CASES[k] for k in names], trace=True, build_root=build_root,
                                  order_ready_prob=0.6, seed=3)
    return {name: (CASES[name], result, run_fixed(CASES[name], trace=True))
            for name, result in zip(names, results)}


def assert_bit_exact(rtl, golden):
    assert rtl["steps_taken"] == golden.steps_taken
    assert rtl["converged"] == golden.converged
    np.testing.assert_array_equal(rtl["order_sums"], golden.order_sums)
    np.testing.assert_array_equal(rtl["acc"], golden.acc)
    if rtl["trajectory"] is not None:
        np.testing.assert_array_equal(rtl["trajectory"], golden.trajectory)


@pytest.mark.parametrize("name", list(CASES))
def test_rtl_bit_exact_on_verilator(batch, name):
    _, rtl, golden = batch[name]
    assert_bit_exact(rtl, golden)


def test_cases_reach_what_they_are_for(batch):
    # The tol cases end by the detector, before max_steps; the others run to the end (with
    # tol 0, the angle cases could only end early by the angle test).
    for name, (q, _, golden) in batch.items():
        stopped_early = name.endswith("-tol") or name == "all-pinned"
        assert golden.converged == stopped_early, name
        assert (golden.steps_taken < q.steps) == stopped_early, name
    q = CASES["all-pinned"]
    np.testing.assert_array_equal(batch["all-pinned"][2].acc, q.acc0)
    q = CASES["antipode-and-zero-drive"]
    free_run = (int(q.acc0[1]) + q.steps * int(q.w[1])) % TURN
    assert batch["antipode-and-zero-drive"][2].acc[1] == free_run
    assert batch["zero-steps"][2].order_sums.shape == (1, 2)


def test_cycles_under_backpressure_at_least_the_exact_count(batch):
    for name, (q, rtl, _) in batch.items():
        exact = cycles_per_run(CONFIG, q.n, q.form, rtl["steps_taken"])
        assert exact <= rtl["cycles"] <= exact + 40 * (rtl["steps_taken"] + 1), name


def test_cycles_exact(build_root):
    """Clocks per step are the ideal n + L + (n**2 or n) + L plus a fixed overhead."""
    cases = [random_case(30 + n, n, form, steps) for n in (3, 64) for form in ("matvec", "drive")
             for steps in (0, 2)]
    for q, rtl in zip(cases, run_array_rtl_batch(cases, build_root=build_root)):
        assert rtl["cycles"] == cycles_per_run(CONFIG, q.n, q.form, q.steps)
        assert_bit_exact(rtl, run_fixed(q))
    # One lane, N = 64: G n = n**2, r = 1; over the ideal (n**2 + 2L): 2r + 18.
    assert cycles_per_step(CONFIG, 64, "matvec") - cycles_per_step(CONFIG, 64, "matvec",
                                                                 ideal=True) == 2 + 18


# ---------------------------------------------------------------------------------------------
# Coupling lanes: pairwise and matvec on 1 and 4 lanes (one build each, capacity 64)

LANES = (1, 4)
LATENCY = CONFIG.cordic.latency_pipelined


def antipode_inside(steps=12):
    """Oscillators 1 and 4 of 6 start exactly antipodal (theta differs by 2**15 phase LSB):
    pairwise sin_41 = sin_14 lands on the negative x axis; the pair sign separates them."""
    theta = np.array([1.0, 0.3, 2.0, 4.0, 0.3 + np.pi, 5.5])
    K = np.full((6, 6), 0.4)
    return quantize_case(CONFIG, theta, np.zeros(6), K, np.arange(6) == 5, 0.05, steps,
                         form="pairwise")


def rows_apart(seed, n, form, steps, config=CONFIG):
    """Rows of couplings 2**-u_i apart (u_i in 0..9), one row 2**-20 below the rest (its row
    shift saturates at MAX_ROW_SHIFT) and one without couplings: each row has its own
    exponent, so every row hands over with its own sum shift t + r_i."""
    rng = np.random.default_rng(seed)
    scale = 2.0 ** -rng.integers(0, 10, n)
    scale[1], scale[2] = 2.0 ** -20, 0.0
    K = rng.uniform(-1.0, 1.5, (n, n)) * 3 / n * scale[:, None]
    return quantize_case(config, rng.uniform(0, 2 * np.pi, n), rng.normal(0, 0.05, n), K,
                         np.arange(n) == n - 1, 0.1, steps, form=form)


def build_lane_cases():
    cases = {}
    for n, steps in ((2, 12), (3, 12), (5, 12), (16, 8), (33, 5), (64, 3)):
        for form in ("pairwise", "matvec"):
            seed = 1000 + 10 * n + len(form)
            cases[f"n{n}-{form}"] = random_case(seed, n, form, steps, pinned=1 if n < 5 else 3,
                                                signed_coupling=n in (5, 33))
    for n, steps in ((6, 30), (33, 16)):
        for form in ("pairwise", "matvec"):
            cases[f"n{n}-{form}-tol"] = with_mid_run_tol(
                random_case(2000 + n + len(form), n, form, steps, pinned=2))
    cases["antipode-pair"] = two_antipodal("pairwise", steps=20)
    cases["antipode-inside"] = antipode_inside()
    cases["zero-steps-pairwise"] = random_case(11, 7, "pairwise", 0)
    for form in ("pairwise", "matvec"):
        cases[f"n9-{form}-rows-apart"] = rows_apart(40 + len(form), 9, form, 12)
    return cases


LANE_CASES = build_lane_cases()


@pytest.fixture(scope="module", params=LANES, ids=lambda lanes: f"lanes{lanes}")
def lane_batch(request, build_root):
    """Every lane case on one engine of `lanes` lanes, traced, the order stream always ready
    (so the cycle counts are exact)."""
    lanes = request.param
    names = list(LANE_CASES)
    results = run_array_rtl_batch([LANE_CASES[k] for k in names], trace=True,
                                  build_root=build_root, lanes=lanes)
    return lanes, {name: (LANE_CASES[name], result, run_fixed(LANE_CASES[name], trace=True))
                   for name, result in zip(names, results)}


@pytest.mark.parametrize("name", list(LANE_CASES))
def test_lanes_bit_exact_on_verilator(lane_batch, name):
    _, batch = lane_batch
    _, rtl, golden = batch[name]
    assert_bit_exact(rtl, golden)


def test_lane_cases_reach_what_they_are_for(lane_batch):
    _, batch = lane_batch
    for name, (q, _, golden) in batch.items():
        stopped_early = name.endswith("-tol")
        assert golden.converged == stopped_early, name
        assert (golden.steps_taken < q.steps) == stopped_early, name
    # The antipode cases start on it: the pair's sin_ij is exactly 0 with cos_ij < 0.
    for name, (i, j) in (("antipode-pair", (0, 1)), ("antipode-inside", (1, 4))):
        q = batch[name][0]
        theta = (q.acc0.astype(np.int64) + (1 << 15)) >> 16
        assert (theta[j] - theta[i]) % 2 ** CONFIG.phase_bits == 2 ** (CONFIG.phase_bits - 1)
    # The rows-apart cases shift rows by 0, several amounts and the saturated MAX_ROW_SHIFT.
    for form in ("pairwise", "matvec"):
        rows = set(batch[f"n9-{form}-rows-apart"][0].rows.tolist())
        assert {0, MAX_ROW_SHIFT} <= rows and len(rows) >= 5, rows
    # ... and the nudge separates the pair: it moves apart.
    trajectory = batch["antipode-pair"][2].trajectory.astype(np.int64)
    gap = (trajectory[:, 1] - trajectory[:, 0]) % TURN
    assert gap[0] == TURN // 2 and gap[-1] != TURN // 2


#: (case, the write sent in the clock of the start: target, register or None for the case's
#: last nonzero write to that target). The k write is the highest bank's last word, whose k reaches
#: its lane through the whole systolic chain.
START_CLOCK_WRITES = (("n9-matvec-rows-apart", "k", None), ("n33-matvec-tol", "k", None),
                      ("n9-pairwise-rows-apart", "row_shift", None),
                      ("antipode-pair", "reg", "t"), ("n16-matvec", "reg", "max_steps"),
                      ("n5-pairwise", "acc", None), ("n6-matvec-tol", "w", None),
                      ("n33-pairwise-tol", "reg", "t"))


def _last_write(target, register):
    from oscarray.hdl.array import REGISTERS, TARGETS

    def choose(writes):
        rows = np.flatnonzero((writes[:, 0] == TARGETS[target]) & (writes[:, 2] != 0) & (
            True if register is None else writes[:, 1] == REGISTERS[register]))
        return int(rows[-1])
    return choose


@pytest.mark.parametrize("lanes", LANES)
def test_a_write_in_the_start_clock_counts(build_root, lanes):
    """A load in the clock of the start counts for that run (the `load` port's contract):
    k (the last bank), a row shift, t, max_steps, acc and w, each sent with the start, give
    the golden result. Each moved write changes the location's content (else the test could
    not fail)."""
    cases = [LANE_CASES[name] for name, _, _ in START_CLOCK_WRITES]
    choosers = [_last_write(target, register) for _, target, register in START_CLOCK_WRITES]
    held = {}
    for q, choose in zip(cases, choosers):
        writes = load_writes(q, CONFIG, lanes)
        target, addr, data = writes[choose(writes)].tolist()
        assert held.get((target, addr), 0) != data, (target, addr)
        held.update({(t, a): d for t, a, d in writes.tolist()})
    results = run_array_rtl_batch(cases, trace=True, build_root=build_root, lanes=lanes,
                                  start_writes=choosers)
    for q, rtl in zip(cases, results):
        assert_bit_exact(rtl, run_fixed(q, trace=True))


def test_lane_cycles_exact(lane_batch):
    """Clocks per step, measured for every case: matvec G n + 2r + 2L + 18 (G = ceil(n / P)
    groups of n columns, r = rows of the last group, which reach the chain's head every other
    clock; the first group walks behind the phase pass; groups end at least 2P - 1 clocks
    apart), pairwise n + G n + r + 2L + 17 (the phase pass first)."""
    lanes, batch = lane_batch
    for name, (q, rtl, _) in batch.items():
        assert rtl["cycles"] == cycles_per_run(CONFIG, q.n, q.form, rtl["steps_taken"],
                                               lanes=lanes), name
        groups = -(-q.n // lanes)
        last = q.n - (groups - 1) * lanes
        per_step = cycles_per_step(CONFIG, q.n, q.form, lanes=lanes)
        if q.form == "pairwise":
            assert per_step == q.n + 2 * LATENCY + groups * q.n + last + 17, name
        else:
            spacing = (groups - 1) * max(0, 2 * lanes - 1 - q.n)
            assert per_step == 2 * LATENCY + groups * q.n + 2 * last + 18 + spacing, name
    # The issue goal: the coupling pass within 5 % of n**2 / P when P divides n
    # (N = 16, 64 on 1 and 4 lanes; N = 33 on 1 lane).
    for n in (16, 64) + ((33,) if lanes == 1 else ()):
        assert issue_clocks(n, lanes) <= 1.05 * n * n / lanes


def test_issue_clocks():
    for lanes in range(1, MAX_LANES + 1):
        for n in range(1, 70):
            clocks = issue_clocks(n, lanes)
            assert clocks == row_groups(n, lanes) * n >= n * n / lanes
            assert clocks < n * n / lanes + n       # at most one group of spare lanes
            if n % lanes == 0:
                assert clocks == n * n // lanes


def test_k_banks_in_load_writes():
    """Row i of k lives in bank i mod P as row i div P of the bank (stride n): the P lanes
    of a group read one word address, and every coupling has its own word."""
    n = 5
    q = random_case(3, n, "pairwise", 2)
    for lanes in (1, 3, 4, 7):
        writes = load_writes(q, lanes=lanes)
        k = writes[writes[:, 0] == 2]
        word_bits = k_bank_bits(CONFIG, lanes)
        assert word_bits == max(1, (-(-CONFIG.capacity // lanes) * CONFIG.capacity
                                    - 1).bit_length())
        bank, word = k[:, 1] >> word_bits, k[:, 1] & ((1 << word_bits) - 1)
        row = (word // n) * lanes + bank
        flat = row * n + word % n
        np.testing.assert_array_equal(np.sort(flat), np.arange(n * n))
        values = (k[:, 2] + 2 ** 15) % 2 ** 16 - 2 ** 15
        np.testing.assert_array_equal(values[np.argsort(flat)], q.k.reshape(-1))
        assert all(k_bank_word(term, n, lanes) == (b, w)
                   for term, b, w in zip(flat, bank, word))


def test_memory_init_contents(build_root):
    # The contents given at elaboration, no load: a small engine, a drive case.
    config = ArrayFixedConfig(capacity=8)
    q = with_mid_run_tol(random_case(21, 5, "drive", 40, pinned=2, config=config))
    rtl = run_array_rtl(q, build_root=build_root, load="init")
    assert_bit_exact(rtl, run_fixed(q))
    assert rtl["trajectory"] is None and rtl["cycles"] > 0


def test_memory_init_contents_three_lanes(build_root):
    # k banks given at elaboration, a lane count that is not a power of two, N > P.
    config = ArrayFixedConfig(capacity=8)
    q = with_mid_run_tol(random_case(22, 7, "pairwise", 40, pinned=2, config=config))
    rtl = run_array_rtl(q, build_root=build_root, load="init", lanes=3)
    assert_bit_exact(rtl, run_fixed(q))
    assert rtl["converged"] and rtl["cycles"] == cycles_per_run(config, 7, "pairwise",
                                                                rtl["steps_taken"], lanes=3)


@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="Icarus Verilog is not installed (apt-get install iverilog)")
def test_rtl_bit_exact_on_icarus(build_root):
    config = ArrayFixedConfig(capacity=8)
    cases = [random_case(40, 5, "matvec", 6, config=config),
             with_mid_run_tol(random_case(41, 6, "drive", 20, pinned=2, config=config))]
    for q, rtl in zip(cases, run_array_rtl_batch(cases, trace=True, sim="icarus",
                                                 build_root=build_root)):
        assert rtl["sim"] == "icarus"
        assert_bit_exact(rtl, run_fixed(q, trace=True))


def test_refusals():
    check_case(random_case(1, 4, "pairwise", 3))
    for lanes in (0, MAX_LANES + 1):
        with pytest.raises(ArrayEngineError, match=f"lanes must be 1..{MAX_LANES}"):
            ArrayEngine(CONFIG, lanes=lanes)
    with pytest.raises(TypeError, match="lanes"):
        check_lanes(2.0)
    with pytest.raises(ArrayEngineError, match=f"capacity {MAX_CAPACITY + 1} exceeds "
                                               f"{MAX_CAPACITY}"):
        ArrayEngine(ArrayFixedConfig(capacity=MAX_CAPACITY + 1))
    with pytest.raises(TypeError, match="ArrayFixedConfig"):
        ArrayEngine(64)
    small = random_case(2, 4, "matvec", 3, config=ArrayFixedConfig(capacity=4))
    with pytest.raises(ArrayEngineError, match="A = 24"):
        check_case(small, ArrayFixedConfig(capacity=4, acc_bits=24))
    with pytest.raises(ArrayEngineError, match="steps"):
        check_case(dataclasses.replace(small, steps=2 ** 32))


def float_case(n=6, steps=25, drive=False, tol=None):
    rng = np.random.default_rng(4)
    arrays = dict(theta0=rng.uniform(-np.pi, np.pi, n), omega=rng.normal(0, 0.3, n),
                  K=rng.uniform(0, 1, (n, n)) / n, pinned=np.arange(n) < 1, dt=0.05,
                  steps=steps, tol=tol, drive=rng.normal(0, 1, (n, 2)) if drive else None)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize("drive, form, lanes", [(False, "matvec", 1), (True, "matvec", 1),
                                               (False, "pairwise", 4)])
def test_flows_rtl_engine_equals_golden_fixed(build_root, drive, form, lanes):
    case = validate_case(float_case(drive=drive))
    rtl = flows.ARRAY_ENGINES["rtl"](case, True, form=form, build_root=build_root, lanes=lanes)
    golden = flows.ARRAY_ENGINES["golden-fixed"](case, True, form=form)
    for field in ("theta", "r", "psi", "trajectory"):
        np.testing.assert_array_equal(getattr(rtl, field), getattr(golden, field))
    assert rtl.steps_taken == golden.steps_taken == 25
    assert rtl.cycles == cycles_per_run(CONFIG, 6, "drive" if drive else form, 25, lanes=lanes)


def test_cli_rtl_lanes(tmp_path, capsys, monkeypatch):
    """--lanes reaches the rtl engine (pairwise accepted); out of range, it is refused before
    any work; the golden engines ignore it."""
    import oscarray.sim.array as sim_array

    path = tmp_path / "case.npz"
    save_case(path, **float_case())
    out = tmp_path / "result.npz"
    assert main(["array", "--in", str(path), "--engine", "rtl", "--form", "pairwise",
                 "--lanes", str(MAX_LANES + 1), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"lanes must be 1..{MAX_LANES}" in error and "Traceback" not in error and not out.exists()

    seen = {}

    def fake_rtl(q, trace=False, sim=None, build_root=None, **options):
        seen.update(options, form=q.form)
        run = run_fixed(q, trace)
        return {"acc": run.acc, "order_sums": run.order_sums, "steps_taken": run.steps_taken,
                "converged": run.converged, "trajectory": run.trajectory, "cycles": 1}

    monkeypatch.setattr(sim_array, "run_array_rtl", fake_rtl)
    assert main(["array", "--in", str(path), "--engine", "rtl", "--form", "pairwise",
                 "--lanes", "4", "--out", str(out)]) == 0
    assert seen == {"lanes": 4, "form": "pairwise"} and out.exists()
    assert main(["array", "--in", str(path), "--engine", "golden-fixed", "--lanes", "4",
                 "--out", str(out)]) == 0


# ---------------------------------------------------------------------------------------------
# Build options: the iterative CORDIC (all forms, one build) and a matvec-only build

SMALL = ArrayFixedConfig(capacity=8)


def small_cases(forms):
    cases = {}
    for form in forms:
        for n, steps in ((1 + len(form) % 3, 6), (7, 5)):
            seed = 500 + 10 * n + len(form)
            cases[f"n{n}-{form}"] = random_case(seed, n, form, steps, pinned=1,
                                                signed_coupling=n == 7, config=SMALL)
        cases[f"{form}-tol"] = with_mid_run_tol(random_case(600 + len(form), 6, form, 16,
                                                            pinned=2, config=SMALL))
        if form != "drive":
            cases[f"{form}-rows-apart"] = rows_apart(700 + len(form), 7, form, 6, SMALL)
    return cases


@pytest.mark.parametrize("lanes", [1, 3])
def test_iterative_cycles_model(lanes):
    # The rotations set the pace of the matvec pass: n of them, C + 1 apart, after the first
    # group's walk (n clocks), its hand-over (5 + 2) and before the update (C + 8).
    c = 63
    for n in (2, 7, 40):
        matvec = cycles_per_step(SMALL, n, "matvec", lanes=lanes, cordic_arch="iterative")
        drive = cycles_per_step(SMALL, n, "drive", lanes=lanes, cordic_arch="iterative")
        assert drive == 2 * n * (c + 1) + 13
        assert matvec == n * (c + 1) + 4 + n + 6 + (n - 1) * (c + 1) + c + 9


def test_iterative_cordic_engine_bit_exact(build_root, lanes=3):
    """cordic_arch="iterative": one result per 63 clocks; the sequencer follows i.ready.
    Every form (pairwise too: one lane batch at a time), exact clocks per run."""
    cases = small_cases(ENGINE_FORMS)
    names = list(cases)
    results = run_array_rtl_batch([cases[k] for k in names], trace=True, build_root=build_root,
                                  lanes=lanes, cordic_arch="iterative")
    for name, rtl in zip(names, results):
        q = cases[name]
        assert_bit_exact(rtl, run_fixed(q, trace=True))
        assert rtl["cycles"] == cycles_per_run(SMALL, q.n, q.form, rtl["steps_taken"],
                                               lanes=lanes, cordic_arch="iterative"), name
    assert any(name.endswith("-tol") and rtl["converged"] for name, rtl in zip(names, results))


def test_matvec_only_engine_bit_exact(build_root):
    """forms=("matvec", "drive"): no lane CORDICs; same results and clocks as the full build,
    and a pairwise case is refused before any build."""
    cases = small_cases(("matvec", "drive"))
    names = list(cases)
    forms = ("matvec", "drive")
    results = run_array_rtl_batch([cases[k] for k in names], trace=True, build_root=build_root,
                                  lanes=3, forms=forms, order_ready_prob=0.7, seed=5)
    for name, rtl in zip(names, results):
        q = cases[name]
        assert_bit_exact(rtl, run_fixed(q, trace=True))
        assert rtl["cycles"] >= cycles_per_run(SMALL, q.n, q.form, rtl["steps_taken"],
                                               lanes=3), name
    pairwise = random_case(1, 5, "pairwise", 3, config=SMALL)
    with pytest.raises(ArrayEngineError, match="built without it"):
        run_array_rtl_batch([pairwise], build_root=build_root, lanes=3, forms=forms)


def test_build_option_refusals():
    q = random_case(1, 4, "pairwise", 3)
    for call in (lambda: check_case(q, forms=("matvec", "drive")),
                 lambda: load_writes(q, forms=("matvec",)),
                 lambda: ArrayEngine(CONFIG, q, forms=("matvec", "drive"))):
        with pytest.raises(ArrayEngineError, match="pairwise form but this engine is built "
                                                   "without it"):
            call()
    check_case(q, forms=("pairwise",))
    with pytest.raises(ArrayEngineError, match="unknown form"):
        ArrayEngine(CONFIG, forms=("matvec", "rk4"))
    with pytest.raises(ArrayEngineError, match="at most once and at least one"):
        ArrayEngine(CONFIG, forms=())
    with pytest.raises(ArrayEngineError, match="at most once"):
        ArrayEngine(CONFIG, forms=("drive", "drive"))
    with pytest.raises(TypeError, match="tuple of form names"):
        ArrayEngine(CONFIG, forms="matvec")
    with pytest.raises(ArrayEngineError, match="unknown cordic_arch 'fast'"):
        ArrayEngine(CONFIG, cordic_arch="fast")
    engine = ArrayEngine(CONFIG, forms=["drive", "matvec"], cordic_arch="iterative")
    assert engine.forms == ("matvec", "drive") and engine.cordic_arch == "iterative"


def test_no_init_marker_matches_the_build_flow():
    from oscarray.boards.build import NO_INIT_SUFFIX as flow_suffix
    from oscarray.hdl.array import NO_INIT_SUFFIX
    assert NO_INIT_SUFFIX == flow_suffix


@pytest.mark.parametrize("widths", [(16, 18), (18, 18), (18, 16), (16, 16)])
def test_mul_dsp16_bit_exact(widths):
    """The iCE40 product (one 16 x 16 DSP + small adders) equals a * b, edges included."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.sim import Simulator

    from oscarray.hdl.array import mul_dsp16

    wa, wb = widths
    a, b = Signal(signed(wa)), Signal(signed(wb))
    out = Signal(signed(wa + wb))
    m = Module()
    m.d.comb += out.eq(mul_dsp16(a, b))
    rng = np.random.default_rng(wa * 100 + wb)
    edges_a = [-2 ** (wa - 1), -1, 0, 1, 2 ** (wa - 1) - 1, 2 ** 15, -2 ** 15, 2 ** 15 - 1]
    edges_b = [-2 ** (wb - 1), -1, 0, 1, 2 ** (wb - 1) - 1, 2 ** 15, -2 ** 15 - 1, 65536]
    pairs = [(x, y) for x in edges_a for y in edges_b if -2 ** (wa - 1) <= x < 2 ** (wa - 1)
             and -2 ** (wb - 1) <= y < 2 ** (wb - 1)]
    pairs += list(zip(rng.integers(-2 ** (wa - 1), 2 ** (wa - 1), 2000).tolist(),
                      rng.integers(-2 ** (wb - 1), 2 ** (wb - 1), 2000).tolist()))

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            assert ctx.get(out) == x * y, (x, y)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


async def _send_loads(ctx, engine, rows):
    """Write (target, addr, data) rows through the engine's `load` port, one a clock (it is
    idle, so each is taken at once); Amaranth simulator testbench."""
    for target, addr, data in rows:
        ctx.set(engine.load.valid, 1)
        ctx.set(engine.load.payload.target, target)
        ctx.set(engine.load.payload.addr, addr)
        ctx.set(engine.load.payload.data, data)
        await ctx.tick()
    ctx.set(engine.load.valid, 0)


async def _pulse_start(ctx, engine):
    ctx.set(engine.start, 1)
    await ctx.tick()
    ctx.set(engine.start, 0)


async def _take_phases(ctx, engine, clocks: int) -> list:
    """The `phases` items offered in `clocks` clocks, ready held high."""
    ctx.set(engine.phases.ready, 1)
    taken = []
    for _ in range(clocks):
        if ctx.get(engine.phases.valid):
            taken.append(ctx.get(engine.phases.payload))
        await ctx.tick()
    return taken


def test_phases_are_the_runs_n_after_a_load_of_n():
    """The phases stream gives the run's n accumulators once, in order, also when n is loaded
    again before they are read (the readout counts its items from the run's n)."""
    from amaranth.sim import Simulator

    from oscarray.hdl.array import REGISTERS, TARGETS

    engine = ArrayEngine(ArrayFixedConfig(capacity=4), forms=("matvec",))
    acc = [0x1234567, 0x89ABCDE, 0x0F0F0F0]
    taken = []

    def register(name, value):
        return TARGETS["reg"], REGISTERS[name], value

    async def bench(ctx):
        await _send_loads(ctx, engine, [(TARGETS["acc"], index, value)
                                        for index, value in enumerate(acc)]
                          + [register("n", len(acc)), register("max_steps", 0)])
        ctx.set(engine.order.ready, 1)
        await _pulse_start(ctx, engine)
        for _ in range(200):
            if ctx.get(engine.done):
                break
            await ctx.tick()
        assert ctx.get(engine.done)
        await _send_loads(ctx, engine, [register("n", 4)])
        taken.extend(await _take_phases(ctx, engine, 12))

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert taken == acc


@pytest.mark.parametrize("reset_after", [40, 150])
def test_a_reset_mid_run_leaves_the_next_run_exact(reset_after):
    """A synchronous reset in the middle of a run (the board's ABORT), with the lanes busy
    (the lanes' data registers are not reset: only their valid bits and flags), then a new
    case loaded and run: bit-exact with golden-fixed (Amaranth's simulator, 2 lanes)."""
    from amaranth.hdl import ClockDomain, Module
    from amaranth.sim import Simulator

    config, lanes, forms = ArrayFixedConfig(capacity=8), 2, ("matvec",)
    first = random_case(61, 7, "matvec", 8, pinned=2, config=config, signed_coupling=True)
    second = random_case(62, 6, "matvec", 5, pinned=1, config=config)
    golden = run_fixed(second)
    engine = ArrayEngine(config, lanes=lanes, forms=forms)
    m = Module()
    m.domains.sync = domain = ClockDomain("sync")
    m.submodules.engine = engine
    orders, phases = [], []

    async def bench(ctx):
        async def load(q):
            await _send_loads(ctx, engine, load_writes(q, config, lanes, forms).tolist())

        ctx.set(engine.order.ready, 1)
        await load(first)
        await _pulse_start(ctx, engine)
        await ctx.tick().repeat(reset_after)
        assert ctx.get(engine.busy)
        ctx.set(domain.rst, 1)
        await ctx.tick()
        ctx.set(domain.rst, 0)
        await load(second)
        await _pulse_start(ctx, engine)
        for _ in range(5000):
            if ctx.get(engine.order.valid):
                orders.append((ctx.get(engine.order.payload.cos),
                               ctx.get(engine.order.payload.sin)))
            if ctx.get(engine.done):
                break
            await ctx.tick()
        assert ctx.get(engine.done) and ctx.get(engine.steps_taken) == golden.steps_taken
        phases.extend(await _take_phases(ctx, engine, second.n + 4))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(np.array(orders, np.int64), golden.order_sums)
    np.testing.assert_array_equal(np.array(phases, np.uint64), golden.acc)
