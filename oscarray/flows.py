"""The jobs behind the command line: each takes plain arguments and returns a JSON-able dict.

Nothing here computes: the arithmetic is in golden/, the hardware in hdl/, simulation in sim/,
builds in boards/. These functions put them together, report progress and write files.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform as host_platform
import sys
import time
from pathlib import Path

import numpy as np

from .golden.cordic import CordicConfig, error_budget
from .hdl.cordic import ARCHITECTURES, Cordic, check_options

__all__ = ["cordic_config", "sim_cordic", "build_design", "bench_cordic", "DESIGNS",
           "TARGET_MHZ", "machine_description"]

DESIGNS = ("cordic",)

# Clock targets the designs are built for: the speed goals.
TARGET_MHZ = {"ice40": 75.0, "ecp5": 250.0}

BENCH_BOARDS = ("icebreaker", "ulx3s-85f")


def _say(progress, message: str):
    if progress:
        progress(message)


def cordic_config(mode="rotate", width=18, phase_bits=16, iterations=None,
                  guard_bits=None) -> CordicConfig:
    return CordicConfig(mode=mode, data_width=width, phase_bits=phase_bits,
                        iterations=iterations, guard_bits=guard_bits)


def sim_cordic(config: CordicConfig, arch: str, vectors: int, seed: int, *, sim=None,
               waves=False, out=None, build_root=None, valid_prob=0.8, ready_prob=0.8,
               progress=None) -> dict:
    """RTL in cocotb against the golden model on `vectors` random vectors plus edge cases."""
    from .sim.cordic import run_cordic_rtl, save_vectors
    from .sim.cordic_vectors import cordic_vectors

    if vectors < 0:
        raise ValueError(f"--vectors must be >= 0, not {vectors}")
    for name, value in (("valid-prob", valid_prob), ("ready-prob", ready_prob)):
        if not 0 < value <= 1:
            raise ValueError(f"--{name} must be in (0, 1], not {value}")
    if out is not None and not Path(out).parent.exists():
        raise FileNotFoundError(f"the folder of --out {out} does not exist")
    inputs = cordic_vectors(config, vectors, seed)
    _say(progress, f"simulating the {arch} {config.mode} CORDIC on {inputs[0].size} vectors "
                   f"({vectors} random + {inputs[0].size - vectors} edge cases)")
    run = run_cordic_rtl(config, arch, *inputs, sim=sim, waves=waves, build_root=build_root,
                         valid_prob=valid_prob, ready_prob=ready_prob, seed=seed)
    summary = run.summary()
    if out is not None:
        save_vectors(run, Path(out))
        summary["out"] = str(out)
    return summary


def _design_factory(design: str, *, arch="pipelined", mode="rotate", split_stages=False):
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}")
    check_options(arch, split_stages=split_stages)
    config = cordic_config(mode)
    return lambda: Cordic.create(config, arch, split_stages=split_stages)


def build_design(design: str, board: str, *, arch="pipelined", mode="rotate",
                 split_stages=False, target_mhz=None, build_root="build/boards",
                 progress=None) -> dict:
    """Build a bitstream for `board` and report nextpnr's utilization and Fmax.

    split_stages: the pipelined CORDIC with two register stages per micro-rotation (see
    `CordicPipelined`); its own build folder (`..._split`).
    """
    from .boards.build import build, get_board

    spec = get_board(board)           # unknown boards fail here, before any work
    factory = _design_factory(design, arch=arch, mode=mode, split_stages=split_stages)
    target = float(target_mhz) if target_mhz else TARGET_MHZ[spec.family]
    variant = f"{arch}_split" if split_stages else arch
    result = build(factory, board, build_dir=Path(build_root) / f"{design}_{mode}_{variant}",
                   target_mhz=target, name=f"{design}_{variant}", progress=progress)
    result.update(design=design, arch=arch, mode=mode, split_stages=split_stages)
    return result


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {host_platform.python_version()}"


# The benchmarked variants: (architecture, split_stages).
CORDIC_VARIANTS = (("pipelined", False), ("pipelined", True), ("iterative", False))


def bench_cordic(*, vectors=2000, seed=1, mode="rotate", boards=BENCH_BOARDS,
                 variants=CORDIC_VARIANTS, build_root="build/bench", progress=None) -> dict:
    """Every variant on each board: area, Fmax, latency, throughput and accuracy.

    Area and Fmax come from real builds; latency and results per clock from a cycle-accurate
    RTL run (cocotb, no gaps, no backpressure); errors from the same run versus the ideal.
    """
    config = cordic_config(mode)
    rows = []
    for arch, split in variants:
        name = f"{arch}{' (split)' if split else ''}"
        _say(progress, f"{name}: RTL simulation")
        timing = _measure_cycles(config, arch, vectors, seed, build_root, split)
        for board in boards:
            _say(progress, f"{name} on {board}: building")
            built = build_design("cordic", board, arch=arch, mode=mode, split_stages=split,
                                 build_root=Path(build_root) / "boards", progress=progress)
            rows.append({
                "arch": name, "split_stages": split, "board": board, "device": built["device"],
                "lut": built["lut"], "core_lut": built.get("core_lut"), "ff": built["ff"],
                "core_ff": built.get("core_ff"), "dsp": built["dsp"], "bram": built["bram"],
                "fmax_mhz": built["fmax_mhz"], "target_mhz": built["target_mhz"],
                "timing_met": built["timing_met"], "latency_cycles": timing["latency_cycles"],
                "results_per_clock": timing["results_per_clock"],
                "results_per_s": built["fmax_mhz"] * 1e6 * timing["results_per_clock"],
                "max_err_lsb": timing["max_err_lsb"], "rms_err_lsb": timing["rms_err_lsb"],
                "mismatches": timing["mismatches"],
            })
    return {"design": "cordic", "mode": mode, "config": _config_dict(config),
            "budget_lsb": error_budget(config)["total_lsb"], "vectors": vectors,
            "date": datetime.date.today().isoformat(), "machine": machine_description(),
            "rows": rows}


def _config_dict(config: CordicConfig) -> dict:
    return {"data_width": config.data_width, "data_frac_bits": config.data_frac_bits,
            "phase_bits": config.phase_bits, "iterations": config.iterations,
            "guard_bits": config.guard_bits, "angle_guard_bits": config.angle_guard_bits,
            "schedule_steps": len(config.schedule)}


def _measure_cycles(config, arch, vectors, seed, build_root, split_stages=False) -> dict:
    """Latency of one vector and steady-state results per clock, from RTL simulation."""
    from .sim.cordic import run_cordic_rtl
    from .sim.cordic_vectors import cordic_vectors

    root = Path(build_root) / "sim"
    one = run_cordic_rtl(config, arch, *(v[:1] for v in cordic_vectors(config, 1, seed)),
                         build_root=root, split_stages=split_stages)
    many = run_cordic_rtl(config, arch, *cordic_vectors(config, vectors, seed), build_root=root,
                          split_stages=split_stages)
    # cycles counts from the first input accepted to the last output received.
    return {"latency_cycles": one.cycles, "results_per_clock": many.x_in.size / many.cycles,
            "max_err_lsb": many.stats["max_err_lsb"], "rms_err_lsb": many.stats["rms_err_lsb"],
            "mismatches": one.mismatches + many.mismatches}


def write_json(result: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def stderr_progress(message: str):
    print(f"[oscarray] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The coupled-oscillator array: case.npz -> engine -> result.npz (+ plots)

# Coupling forms: the RTL's `pairwise` (every term evaluated) and `matvec` (two mat-vec
# products and one rotation per oscillator); a case with a drive always uses the drive form.
ARRAY_FORMS = ("pairwise", "matvec")
ARRAY_CAPACITY = 64


def _array_golden_float(case, trace: bool, form="matvec", capacity=None):
    from .golden.array import simulate_float
    return simulate_float(case, "euler", trace, form="naive" if form == "pairwise" else "matvec")


def _quantized(case, form="matvec", capacity=ARRAY_CAPACITY):
    """The case in the engine's integers; raises ArrayFormatError for what it cannot hold."""
    from .golden.array_fixed import ArrayFixedConfig, quantize_case
    return quantize_case(ArrayFixedConfig(capacity=capacity), case.theta0, case.omega, case.K,
                         case.pinned, case.dt, case.steps, tol=case.tol, drive=case.drive,
                         form="drive" if case.drive is not None else form)


def _fixed_result(q, run, cycles=None):
    """An ArrayResult from a FixedRun (the golden model's, or the RTL's in the same integers)."""
    from .golden.array import ArrayResult
    turn = 2.0 ** q.config.acc_bits
    trajectory = None if run.trajectory is None else run.trajectory / turn * 2 * np.pi
    return ArrayResult(theta=run.theta(q), r=run.r(q),
                       psi=np.arctan2(run.order_sums[:, 1], run.order_sums[:, 0]),
                       steps_taken=run.steps_taken, trajectory=trajectory,
                       converged=run.converged, cycles=cycles)


def _array_golden_fixed(case, trace: bool, form="matvec", capacity=ARRAY_CAPACITY):
    from .golden.array_fixed import run_fixed
    q = _quantized(case, form, capacity)
    return _fixed_result(q, run_fixed(q, trace))


def _array_engine_missing(name: str):
    def engine(case, trace: bool, **options):
        raise NotImplementedError(f"the {name} array engine is not available yet; "
                                  f"use --engine golden-float or golden-fixed")
    return engine


def _array_rtl_quantized(case, form="matvec", capacity=ARRAY_CAPACITY, lanes=1):
    """The case for the engine RTL: what `_quantized` checks, plus what the RTL builds
    (capacity up to hdl.array.MAX_CAPACITY, 1..hdl.array.MAX_LANES lanes)."""
    from .hdl.array import check_case, check_lanes
    check_lanes(lanes)
    q = _quantized(case, form, capacity)
    check_case(q)
    return q


def _array_rtl(case, trace: bool, form="matvec", capacity=ARRAY_CAPACITY, build_root=None,
               sim=None, lanes=1):
    """The array engine RTL on a simulator (cocotb; Verilator unless SIM says otherwise),
    built with `lanes` coupling lanes (pairwise CORDICs, matvec MAC pairs)."""
    from .golden.array_fixed import FixedRun
    from .sim.array import run_array_rtl
    q = _array_rtl_quantized(case, form, capacity, lanes)
    out = run_array_rtl(q, trace, sim=sim, build_root=build_root, lanes=lanes)
    run = FixedRun(out["acc"], out["steps_taken"], out["order_sums"], out["trajectory"],
                   out["converged"])
    return _fixed_result(q, run, cycles=out["cycles"])


# An engine is a function (ArrayCase, trace, form=..., capacity=...) -> ArrayResult.
ARRAY_ENGINES = {
    "golden-float": _array_golden_float,
    "golden-fixed": _array_golden_fixed,
    "rtl": _array_rtl,
}

# What an engine's number format adds to the generic validation (capacity, a representable
# dt): engine name -> function(ArrayCase, form=..., capacity=...) raising a ValueError. Run
# before any work; engines without an entry accept every valid case.
ARRAY_CASE_CHECKS: dict = {"golden-fixed": _quantized, "rtl": _array_rtl_quantized}

# Oscillators drawn in the phase panel of a plot (evenly spaced when there are more).
PLOT_MAX_OSCILLATORS = 64


def _check_output_path(flag: str, path) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, not a file")
    if not path.parent.exists():
        raise FileNotFoundError(f"the folder of {flag} {path} does not exist")
    return path


def array_run(case_path, engine: str, out=None, trace=False, progress=None, *,
              plot=None, form="matvec", capacity=ARRAY_CAPACITY, lanes=1) -> dict:
    """Run a case on one engine; write result.npz to `out` and a PNG to `plot` if given.
    `lanes` goes to the rtl engine (coupling lanes); the golden engines ignore it.

    Everything is checked (engine, output folders, the whole case, the engine's format)
    before any work, and files are written whole or not at all.
    """
    from .golden.array import load_case, save_result

    if engine not in ARRAY_ENGINES:
        raise ValueError(f"unknown array engine {engine!r}; choose one of "
                         f"{', '.join(ARRAY_ENGINES)}")
    out = _check_output_path("--out", out)
    plot = _check_output_path("--plot", plot)
    case = load_case(case_path)
    if form not in ARRAY_FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {', '.join(ARRAY_FORMS)}")
    options = {"lanes": lanes} if engine == "rtl" else {}
    if engine in ARRAY_CASE_CHECKS:
        ARRAY_CASE_CHECKS[engine](case, form=form, capacity=capacity, **options)

    _say(progress, f"{engine}: {case.n} oscillators ({int(case.free.sum())} free), "
                   f"up to {case.steps} steps of dt = {case.dt:g}")
    start = time.perf_counter()
    result = ARRAY_ENGINES[engine](case, trace or plot is not None, form=form,
                                   capacity=capacity, **options)
    elapsed = time.perf_counter() - start
    if out is not None:
        save_result(result if trace else dataclasses.replace(result, trajectory=None), out)
    if plot is not None:
        plot_array(result, plot, dt=case.dt, title=f"{Path(case_path).name}, {engine}")
    return {"engine": engine, "case": str(case_path), "n": case.n,
            "free": int(case.free.sum()), "dt": case.dt, "steps": case.steps, "tol": case.tol,
            "steps_taken": result.steps_taken, "converged": result.converged,
            "r_final": float(result.r[-1]), "psi_final": float(result.psi[-1]),
            "cycles": result.cycles, "elapsed_s": elapsed, "form": form,
            "out": None if out is None else str(out),
            "plot": None if plot is None else str(plot)}


def _wrapped_lines(phases: np.ndarray) -> np.ndarray:
    """Phases wrapped to (-pi, pi], NaN where a line would jump across the wrap."""
    from .golden.array import wrap_phase
    wrapped = wrap_phase(phases)
    jumps = np.abs(np.diff(wrapped, axis=0)) > np.pi
    wrapped[1:][jumps] = np.nan
    return wrapped


def plot_array(result, path, dt=None, title=None) -> Path:
    """One PNG: wrapped phase trajectories (if traced; still ones dashed grey) above r(t)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(result.r.size)
    t, t_label = (steps * dt, "time") if dt else (steps, "step")
    panels = 2 if result.trajectory is not None else 1
    figure, axes = plt.subplots(panels, 1, sharex=True, figsize=(8, 3 + 2.5 * panels),
                                squeeze=False)
    axes = axes[:, 0]
    if result.trajectory is not None:
        n = result.trajectory.shape[1]
        shown = np.unique(np.linspace(0, n - 1, min(n, PLOT_MAX_OSCILLATORS)).astype(int))
        moved = np.any(result.trajectory[:, shown] != result.trajectory[0, shown], axis=0)
        lines = _wrapped_lines(result.trajectory[:, shown])
        for column, is_moving in enumerate(moved):
            axes[0].plot(t, lines[:, column], lw=0.8,
                         **({} if is_moving else {"ls": "--", "color": "0.5"}))
        axes[0].set_ylim(-np.pi, np.pi)
        axes[0].set_ylabel("phase (rad)")
        axes[0].set_title(f"{len(shown)} of {n} oscillators" if len(shown) < n
                          else f"{n} oscillators")
    axes[-1].plot(t, result.r, color="k")
    axes[-1].set_ylim(0, 1.02)
    axes[-1].set_ylabel("order parameter r")
    axes[-1].set_xlabel(t_label)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
    return path


def sim_array(case_path, engine="golden-float", plots_dir="out/array", *, out=None,
              progress=None, form="matvec", capacity=ARRAY_CAPACITY, lanes=1) -> dict:
    """Run a case and plot it into `plots_dir` (created) as <case>_<engine>.png."""
    plots_dir = Path(plots_dir)
    if plots_dir.exists() and not plots_dir.is_dir():
        raise ValueError(f"--plots {plots_dir} is a file, not a folder")
    plots_dir.mkdir(parents=True, exist_ok=True)
    return array_run(case_path, engine, out, False, progress, form=form, capacity=capacity,
                     lanes=lanes, plot=plots_dir / f"{Path(case_path).stem}_{engine}.png")


__all__ += ["ARRAY_ENGINES", "ARRAY_CASE_CHECKS", "ARRAY_FORMS", "array_run", "sim_array",
            "plot_array"]


def numpy_euler_rate(n: int, form: str, *, min_seconds: float = 0.5, seed: int = 0) -> dict:
    """Float64 Euler steps of an N-oscillator dense array on this machine: the software
    reference of `bench array`. form "naive" evaluates every sin(theta_j - theta_i); "matvec"
    is NumPy's fastest form (two mat-vec products per step). Measured, not estimated: steps
    are repeated until `min_seconds` have passed."""
    from .golden.array import coupling

    rng = np.random.default_rng(seed)
    theta, omega = rng.uniform(0, 2 * np.pi, n), rng.normal(0, 1, n)
    K, dt = rng.normal(0, 1 / n, (n, n)), 0.01
    steps, start = 0, time.perf_counter()
    while True:
        theta = theta + dt * (omega + coupling(K, theta, form))
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    step_s = elapsed / steps
    return {"form": form, "n": n, "steps": steps, "step_us": step_s * 1e6,
            "terms_per_s": n * n / step_s}
