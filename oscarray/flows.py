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


def read_json_file(path, what: str) -> dict:
    """The JSON object in `path` (an earlier result); a missing, unreadable or non-object
    file is a ValueError naming `what` and the path."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"{what}: cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{what}: {path} is not JSON ({error.msg}, line {error.lineno})"
                         ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{what}: {path} holds a JSON {type(value).__name__}, not an object")
    return value


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


def check_engine(what: str, engines: dict, engine: str):
    """ValueError unless `engine` names one of `engines` (a flow's engine table)."""
    if engine not in engines:
        raise ValueError(f"unknown {what} engine {engine!r}; choose one of "
                         f"{', '.join(engines)}")


def run_engine(engines: dict, engine: str, case, options: dict, *, sim=None,
               build_root=None, progress=None) -> tuple[dict, float]:
    """(engines[engine](case, **options), seconds): the rtl engine also gets the simulator,
    its build folder and the progress callback."""
    if engine == "rtl":
        options = dict(options, sim=sim, build_root=build_root, progress=progress)
    start = time.perf_counter()
    result = engines[engine](case, **options)
    return result, time.perf_counter() - start


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

    check_engine("array", ARRAY_ENGINES, engine)
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
    return _save_figure(plt, figure, path, title)


def _save_figure(plt, figure, path, title=None) -> Path:
    """Write `figure` as a PNG at `path` (with `title` above it) and close it."""
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


# ---------------------------------------------------------------------------------------------
# Paper A's attention head: case.npz -> engine -> result.npz (+ heatmaps)

# The rtl engine's smallest build: cases up to the subject-verb shape (T = 9, d_h = 32) share
# one simulator build, keyword spotting (T = 49, d_h = 16) a second (64 x 32).
ATTENTION_RTL_MIN_TOKENS = 16
ATTENTION_RTL_MIN_D_H = 32


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def attention_rtl_capacity(tokens: int, d_h: int, max_tokens=None, max_d_h=None
                           ) -> tuple[int, int]:
    """(max_tokens, max_d_h) of the head the rtl engine builds for a case of (T, d_h): the
    given values, else T and d_h rounded up to powers of two, at least 16 and 32 (each
    distinct capacity is one simulator build, cached), at most the head's limits."""
    from .golden.attention_fixed import MAX_TOKENS
    from .hdl.attention import MAX_D_H
    return (rtl_capacity(tokens, max_tokens, ATTENTION_RTL_MIN_TOKENS, MAX_TOKENS),
            rtl_capacity(d_h, max_d_h, ATTENTION_RTL_MIN_D_H, MAX_D_H))


def rtl_capacity(size: int, given, minimum: int, limit: int) -> int:
    """A simulator build's capacity for `size`: `given` if set, else size rounded up to a
    power of two, at least `minimum` (fewer distinct builds to cache), at most `limit`."""
    if given is not None:
        return given
    return min(limit, max(minimum, _next_power_of_two(size)))


def _attention_golden_float(case, **options) -> dict:
    from .golden.attention import attention_float
    return attention_float(case)


def _attention_check_fixed(case, **options):
    """Every refusal of the fixed-point head (validate_fixed, front_end, the array engine's
    loader for the ODE modes), before any work."""
    from .golden.attention_fixed import engine_cases, front_end, validate_fixed
    case = validate_fixed(case)
    fe = front_end(case)
    if case.mode != "analytic":
        engine_cases(case, fe)


def _attention_golden_fixed(case, **options) -> dict:
    from .golden.attention_fixed import attention_fixed
    result = attention_fixed(case)
    result["e_w"] = np.array(result["scales"]["w"], dtype=np.int64).reshape(case.heads,
                                                                             case.tokens)
    return result


def _attention_check_rtl(case, max_tokens=None, max_d_h=None, mac_lanes=1, compact=False,
                         cordic_arch="pipelined", **options):
    """hdl.attention.check_case for a head built with every mode of the case's d_osc: the
    fixed-point refusals, the build's capacity, the score shift register; its MAC lanes
    (`check_mac_lanes`) and whether it can be compact (`check_compact`)."""
    from .hdl.attention import (MODES, AttentionHeadError, check_case, check_compact,
                                check_mac_lanes, head_d_osc)
    max_tokens, max_d_h = attention_rtl_capacity(case.tokens, case.d_h, max_tokens, max_d_h)
    check_mac_lanes(mac_lanes, max_d_h)
    d_osc = head_d_osc(case)
    if isinstance(compact, (bool, np.bool_)) and compact and case.mode != "analytic":
        raise AttentionHeadError(f"the case's mode is {case.mode!r}: a compact head runs the "
                                 f"analytic mode only")
    check_compact(compact, cordic_arch=cordic_arch, modes=(case.mode,), d_osc=d_osc,
                  mac_lanes=mac_lanes)
    check_case(case, max_tokens=max_tokens, max_d_h=max_d_h, modes=MODES,
               d_osc=d_osc)


# The integers the RTL gives (golden attention_fixed's names); compared with golden-fixed.
ATTENTION_RTL_INTEGERS = ("attn_int", "out_int", "x_int", "theta_int", "h_int", "e_w",
                          "steps", "converged")


def attention_rtl_integers(case) -> tuple:
    """`ATTENTION_RTL_INTEGERS` of a case: at d_osc > 2 without theta_int (no phase on the
    sphere: golden has none, the RTL's header gives 0)."""
    return tuple(key for key in ATTENTION_RTL_INTEGERS if case.d_osc == 2 or key != "theta_int")


def attention_rtl_mismatches(case, rtl: dict) -> int:
    """How many of the RTL's integers (`attention_rtl_integers` of an rtl engine result)
    differ from golden-fixed's on `case`: 0 when the RTL is bit-exact."""
    golden = _attention_golden_fixed(case)
    return int(sum(np.count_nonzero(rtl[key] != golden[key])
                   for key in attention_rtl_integers(case)))


def _attention_rtl(case, max_tokens=None, max_d_h=None, sim=None, build_root=None,
                   progress=None, cordic_arch="pipelined", mac_lanes=1, compact=False) -> dict:
    """The attention head RTL in cocotb (analytic or ode-drive), decoded like golden-fixed's
    result:
    the RTL's integers, the float keys from them, the host's scales, cycles per head.
    `cordic_arch`: the head's three CORDICs ("pipelined" or "iterative"); `mac_lanes`: its
    products per clock in SCORES and OUT; `compact`: its compact build (`AttentionHead`)."""
    from .golden.attention_fixed import DEFAULT_CONFIG
    from .sim.attention import run_attention_rtl
    from .sim.runner import SimulationFailed

    config = DEFAULT_CONFIG
    max_tokens, max_d_h = attention_rtl_capacity(case.tokens, case.d_h, max_tokens, max_d_h)
    _say(progress, f"rtl: simulating a head of capacity T <= {max_tokens}, d_h <= {max_d_h} "
                   f"(the first run of a capacity builds it, about a minute; then cached)")
    rtl = run_attention_rtl(case, config, max_tokens=max_tokens, max_d_h=max_d_h, sim=sim,
                            build_root=build_root, cordic_arch=cordic_arch,
                            mac_lanes=mac_lanes, compact=compact)
    if rtl["error"].any():
        raise SimulationFailed(
            f"the attention head raised its error flag on head(s) "
            f"{np.flatnonzero(rtl['error']).tolist()} (a row with no W exponent in [9, 26], "
            f"which check_case should have refused)", failed=[], log_path=None, result=None)
    return attention_rtl_result(case, rtl)


def attention_rtl_result(case, rtl: dict) -> dict:
    """`oscarray attention --engine rtl`'s result from the RTL's integers (`rtl`: as
    sim/attention.py `run_attention_rtl` or the board driver gives them): the float keys,
    the integers, the host's scales (golden-fixed's keys: at d_osc > 2 no phase formats,
    and the sphere normalizer's guard bits), cycles per head."""
    from .golden.attention_fixed import DEFAULT_CONFIG, FRAC, quantize_tensor, score_constant
    from .golden.attention_sphere import NORM_GUARD
    from .hdl.attention import relu_eps_int

    config = DEFAULT_CONFIG
    _, e_q = quantize_tensor(case.q, config.qk_bits)
    _, e_k = quantize_tensor(case.k, config.qk_bits)
    _, e_v = quantize_tensor(case.v)
    c, c_bits = score_constant(case.d_h)
    e_w = rtl["e_w"].astype(np.int64)
    phase = case.d_osc == 2         # golden-fixed's keys, in its order
    scales = {"q": e_q, "k": e_k, "v": e_v, "qk_bits": config.qk_bits, "anchors": FRAC,
              **({"anchor_phase_acc_bits": config.acc_bits} if phase else {}),
              "score_constant": c, "score_constant_bits": c_bits, "w": e_w.tolist(),
              "relu_eps_int": [[relu_eps_int(int(e)) for e in row] for row in e_w],
              "h": (e_w + FRAC).tolist(), "x": FRAC, "attn": FRAC, "out": e_v,
              **({"phase_bits": config.phase_bits, "acc_bits": config.acc_bits} if phase
                 else {"norm_guard_bits": NORM_GUARD}),
              "engine": []}
    return {"attn": rtl["attn_int"] * 2.0 ** -FRAC, "out": rtl["out_int"] * 2.0 ** -e_v,
            "x_star": rtl["x_int"] * 2.0 ** -FRAC,
            **{key: rtl[key].astype(np.int64) for key in attention_rtl_integers(case)},
            "converged": rtl["converged"].astype(bool),
            "cycles": rtl["cycles"].astype(np.int64), "scales": scales, "sim": rtl.get("sim")}


# An engine is a function (AttentionCase, **options) -> dict of the result's arrays (and
# "scales", a dict); only the rtl engine takes options (max_tokens, max_d_h, sim, build_root).
ATTENTION_ENGINES = {
    "golden-float": _attention_golden_float,
    "golden-fixed": _attention_golden_fixed,
    "rtl": _attention_rtl,
}

# What an engine adds to the float model's validation, run before any work (raises a
# ValueError naming the problem); engines without an entry accept every valid case.
ATTENTION_CASE_CHECKS: dict = {"golden-fixed": _attention_check_fixed,
                               "rtl": _attention_check_rtl}

# The arrays of result.npz (besides "scales", "engine" and "cycles"), in order.
ATTENTION_RESULT_KEYS = ("attn", "out", "x_star", "steps", "attn_int", "out_int", "x_int",
                         "theta_int", "phi_int", "anchor_int", "w_int", "h_int", "g_int",
                         "e_w", "converged")


def _check_plots_dir(plots, option: str = "--plots") -> Path | None:
    """A folder that is, or can be created as, a folder (created only after the work);
    `option` names it in the error."""
    if plots is None:
        return None
    plots = Path(plots)
    for folder in (plots, *plots.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"{option} {plots}: {folder} is a file, not a folder")
            break
    return plots


def attention_example_arrays(name: str, seed: int = 0) -> dict:
    """The example case `name` (a key of golden/attention.SHAPES) as the arrays of its npz:
    golden/attention.random_case(name, seed) with every optional entry at its default
    written out (causal, analytic, ...), and `seed` as the case's seed."""
    from .golden.attention import DEFAULTS, SHAPES, random_case

    if name not in SHAPES:
        raise ValueError(f"unknown example {name!r}; choose one of {', '.join(SHAPES)}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, not {seed}")
    arrays = random_case(name, seed, **{k: v for k, v in DEFAULTS.items() if k != "seed"})
    arrays["seed"] = seed              # the ODE modes' random start: the same seed
    return arrays


def attention_example(name: str, out, seed: int = 0, progress=None) -> dict:
    """Write `attention_example_arrays(name, seed)` to `out` as a case npz (every optional
    entry written out, so the file shows what it can hold)."""
    from .golden.attention import validate_case
    from .golden.npz import write_npz

    arrays = attention_example_arrays(name, seed)   # its refusals come before the path's
    out = _check_output_path("--out", out)
    case = validate_case(arrays)
    write_npz(out, {key: np.asarray(value) for key, value in arrays.items()})
    _say(progress, f"example {name}: written {out}")
    return {"example": name, "seed": seed, "out": str(out),
            "shape": [case.heads, case.tokens, case.d_h, case.d_osc], "mode": case.mode}


def attention_run(case_path, engine: str, out=None, progress=None, *, plots=None,
                  max_tokens=None, max_d_h=None, sim=None, build_root=None,
                  mac_lanes=None, compact=None) -> dict:
    """Run an attention case on one engine; write result.npz to `out` and the heatmaps
    (engine versus golden-float analytic, per head) into the folder `plots` if given.
    `mac_lanes` (rtl only; default 1): the head's products per clock in its score and value
    passes; `compact` (rtl only): the compact head of the iCE40UP5K, iterative CORDICs
    (`AttentionHead`).

    Everything is checked (engine, output paths, the whole case, the engine's refusals)
    before any work, and files are written whole or not at all. The summary compares the
    result with the float model in the analytic mode (x* = h / |h|, the reference of the
    fixed-point error budget for every mode); the rtl engine's integers are also compared
    with golden-fixed's (`mismatches`, 0 when bit-exact).
    """
    from .golden.attention import attention_float, load_case
    from .golden.attention_fixed import ATTN_TARGET, OUT_TARGET
    from .golden.npz import write_npz

    check_engine("attention", ATTENTION_ENGINES, engine)
    out = _check_output_path("--out", out)
    plots = _check_plots_dir(plots)
    case = load_case(case_path)
    for flag, value in (("--mac-lanes", mac_lanes), ("--compact", compact)):
        if value is not None and engine != "rtl":
            raise ValueError(f"{flag} is the rtl engine's, not {engine}'s")
    options = ({"max_tokens": max_tokens, "max_d_h": max_d_h,
                "mac_lanes": 1 if mac_lanes is None else mac_lanes} if engine == "rtl" else {})
    if compact is not None and engine == "rtl":     # (a bad value: check_compact's error)
        on = isinstance(compact, (bool, np.bool_)) and bool(compact)
        options.update(compact=compact, cordic_arch="iterative" if on else "pipelined")
    if engine in ATTENTION_CASE_CHECKS:
        ATTENTION_CASE_CHECKS[engine](case, **options)

    _say(progress, f"{engine}: {case.heads} head(s), T = {case.tokens}, d_h = {case.d_h}, "
                   f"d_osc = {case.d_osc}, {case.mode}")
    result, elapsed = run_engine(ATTENTION_ENGINES, engine, case, options, sim=sim,
                                 build_root=build_root, progress=progress)
    reference = (result if engine == "golden-float" and case.mode == "analytic"
                 else attention_float(dataclasses.replace(case, mode="analytic")))
    mismatches = attention_rtl_mismatches(case, result) if engine == "rtl" else None

    arrays = {key: np.asarray(result[key]) for key in ATTENTION_RESULT_KEYS if key in result}
    if "scales" in result:
        arrays["scales"] = np.asarray(json.dumps(result["scales"], default=_json_default))
    if "cycles" in result:
        arrays["cycles"] = np.asarray(result["cycles"], np.int64)
    arrays["engine"] = np.asarray(engine)
    if out is not None:
        write_npz(out, arrays)
    plot = settling_plot = None
    if plots is not None:
        plot, settling_plot = attention_plots(case, case_path, result, reference, engine,
                                              plots)

    steps = np.asarray(result["steps"])
    return {"engine": engine, "case": str(case_path),
            "shape": [case.heads, case.tokens, case.d_h, case.d_osc],
            "mode": case.mode, "sigma": case.sigma, "p": case.p, "causal": case.causal,
            **attention_errors(case, result, reference),
            "attn_target": ATTN_TARGET, "out_target_rel": OUT_TARGET,
            "steps_max": int(steps.max()), "not_converged": int(np.count_nonzero(steps < 0)),
            "cycles": None if "cycles" not in result else [int(c) for c in result["cycles"]],
            "mismatches": mismatches, "sim": result.get("sim"), "elapsed_s": elapsed,
            "out": None if out is None else str(out), "plot": None if plot is None else str(plot),
            "settling_plot": None if settling_plot is None else str(settling_plot)}


def attention_errors(case, result, reference) -> dict:
    """An attention result against the reference (golden-float's analytic result):
    max_attn_err = max |attn - attn_ref|, max_out_err_rel = max |out - out_ref| / max |v|
    (the terms of ATTN_TARGET and OUT_TARGET)."""
    v_max = float(np.abs(case.v).max())
    out_err = float(np.abs(np.asarray(result["out"]) - reference["out"]).max())
    return {"max_attn_err": float(np.abs(np.asarray(result["attn"]) - reference["attn"]).max()),
            "max_out_err_rel": out_err / v_max if v_max > 0 else out_err}


def attention_plots(case, case_path, result, reference, engine: str, plots) -> tuple:
    """Into the folder `plots` (created): `<case>_<engine>.png`, the engine's attention
    beside the reference's (plot_attention), and for the ODE modes
    `<case>_<engine>_settling.png` (plot_settling). Returns the two paths (None for the
    second in the analytic mode)."""
    from .golden.attention import attention_float

    plots = Path(plots)
    plots.mkdir(parents=True, exist_ok=True)
    stem, name = Path(case_path).stem, Path(case_path).name
    plot = plot_attention(result["attn"], reference["attn"], plots / f"{stem}_{engine}.png",
                          engine=engine, title=f"{name}: {engine}, {case.mode}")
    settling_plot = None
    if case.mode != "analytic":
        settling = attention_float(case, settling=True)["settling"]
        settling_plot = plot_settling(settling, case.tol, np.asarray(result["steps"]),
                                      plots / f"{stem}_{engine}_settling.png", engine=engine,
                                      title=f"{name}: {case.mode}, dt = {case.dt:g}, "
                                            f"{case.init} start")
    return plot, settling_plot


def plot_settling(settling, tol: float, engine_steps, path, engine: str = "engine",
                  title=None) -> Path:
    """One PNG, one panel per head: golden-float's settling curves (each oscillator's angle
    to its fixed point x* against the Euler step, log scale) with tol, and a dot where
    `engine` reported the oscillator converged (its steps; none where it did not)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settling = np.asarray(settling, float)
    heads = settling.shape[1]
    figure, axes = plt.subplots(1, heads, figsize=(6.5 * heads, 4.2), squeeze=False)
    steps = np.arange(settling.shape[0])
    floor = tol / 10
    for head, ax in enumerate(axes[0]):
        curves = np.maximum(settling[:, head], floor)      # log scale: exact 0 at the floor
        ax.semilogy(steps, curves, linewidth=0.8, alpha=0.7)
        ax.axhline(tol, color="black", linestyle="--", linewidth=1, label=f"tol = {tol:g}")
        reported = np.asarray(engine_steps)[head]
        done = reported >= 0
        at = np.minimum(reported[done], settling.shape[0] - 1)
        ax.plot(reported[done], curves[at, np.flatnonzero(done)], "k.", markersize=4,
                label=f"{engine}: converged at step")
        ax.set_title(f"head {head}: angle to x* (golden-float)", fontsize=10)
        ax.set_xlabel("Euler step")
        ax.set_ylabel("angle (rad)")
        ax.legend(fontsize=8)
    return _save_figure(plt, figure, path, title)


def plot_attention(attn, reference, path, engine: str = "engine", title=None,
                   reference_name: str = "golden-float (analytic)") -> Path:
    """One PNG, one row per head: the engine's attention (query i down, key j across) beside
    the reference (golden-float's analytic one) on the same (square-root) color scale, and
    their difference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    attn, reference = np.asarray(attn, float), np.asarray(reference, float)
    heads = attn.shape[0]
    top = max(float(attn.max()), float(reference.max()), 1e-12)
    figure, axes = plt.subplots(heads, 3, figsize=(12, 3.6 * heads + 0.6), squeeze=False)
    for head in range(heads):
        diff = attn[head] - reference[head]
        spread = max(float(np.abs(diff).max()), 1e-12)
        # A square-root color scale: a causal row 0 is 1 where the rest are ~1/T.
        weights = PowerNorm(0.5, vmin=0.0, vmax=top)
        panels = ((attn[head], engine, "viridis", weights),
                  (reference[head], reference_name, "viridis", weights),
                  (diff, f"{engine} - golden-float", "RdBu_r",
                   matplotlib.colors.Normalize(-spread, spread)))
        for ax, (image, name, cmap, norm) in zip(axes[head], panels):
            shown = ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest")
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(f"head {head}: {name}", fontsize=10)
            ax.set_xlabel("key j")
            ax.set_ylabel("query i")
    return _save_figure(plt, figure, path, title)


__all__ += ["ATTENTION_ENGINES", "ATTENTION_CASE_CHECKS", "attention_run", "attention_example",
            "attention_rtl_result", "attention_errors", "attention_plots",
            "attention_example_arrays", "attention_rtl_capacity", "attention_rtl_mismatches",
            "plot_attention", "plot_settling"]
