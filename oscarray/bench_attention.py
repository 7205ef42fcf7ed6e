"""`oscarray bench attention`: the attention heads on UP5K and ECP5-85F against NumPy.

Per shape (the `oscarray attention --example` cases: golden/attention.SHAPES, causal, relu_eps,
p = 1, random start; seed 0 unless told) and device, one row per mechanism (MECHANISMS, or
those asked): "oscillator-analytic" runs the example case, "oscillator-ode-drive" and
"oscillator-ode-pairwise" the same case with its mode set to ode-drive or ode-pairwise and
every other entry at golden/attention.DEFAULTS (dt 1, tol 6e-5, max_steps 4000, init
random), "softmax" the same q, k, v through softmax attention (golden/softmax.py; anchors
ignored). Each row has:

* a real build of `AttentionHead` sized for the shape (max_tokens = T, max_d_h = d_h) with the
  device's CORDIC architecture (`DEVICE_BUILDS`): lut, ff, dsp, bram, fmax_mhz. The analytic
  row's head has the analytic mode only, the softmax row's the softmax mode only
  (`HEAD_MODES`: neither carries the other's units); the two ODE rows share one build of
  the head with every oscillator mode (its array engine: 2 T oscillators); `modes_built`
  and `build` name it;
* the row's case run on a head with the same modes in a cycle-accurate simulation (cocotb,
  Verilator unless told): the clocks of each head from the head's `cycles` port
  (`cycles_measured`), which must equal the model (`cycles_model`: `cycles_per_head`, or for
  the ODE modes `ode_cycles` of the engine runs the RTL reports, `ode_engine_runs`; else
  `SimulationFailed`); `cycles` per inference is all heads one after another on one head
  engine (the `load` writes before each head are not counted: `load_words` says how many
  there are); `us` = cycles / Fmax; lut_us = lut x us and dsp_us = dsp x us (area x time);
  the ODE rows add `euler_steps` (the longest engine run's Euler steps over the heads),
  `converged` (every oscillator within tol) and `engine_runs` ((m, steps) of each run, per
  head);
* the RTL's integers against golden-fixed (`bit_exact`, `mismatches`: every
  flows.ATTENTION_RTL_INTEGERS, steps and converged included; softmax: attn_int, out_int)
  and its attention against the float reference (`max_attn_err` = max |attn - attn_float|):
  the float model's analytic attention on every oscillator row (the accuracy target's
  reference), softmax_float on the softmax row;
* `numpy_us`: that float reference (float64, every head) on the shape's case on this machine,
  the best of several calls in the same run; `ratio` = us / numpy_us (below 1: the head is
  faster).

`versus_analytic` divides each row by the oscillator-analytic row of its shape and device (us,
LUT x us, DSP x us, LUT, DSP) where both fit; softmax's beside paper A's ratio from operation
counts (PAPER_SOFTMAX_RATIO). The torus row ("torus") runs paper B's layer
(hdl/torus.py) once per head of the shape, T tokens and D = d_h angles each
(`torus_cases`), on pipelined CORDICs on every device, against golden/torus.py's float
model (max_out_err_rel: theta_next's largest error in radians over pi).

What gets no row, and why, is in the result, never a made-up figure:

* `refused`: a mechanism of a shape the head cannot run (none of the example shapes since
  2026-11-24, when ode-pairwise at d_osc > 2 came), with the golden model's or the head's
  message. If every
  asked mechanism of every shape is refused, nothing runs (ValueError).
* `not_benched`: a mechanism whose mode the RTL does not build (hdl/attention.py MODES),
  with the reason (none since 2026-11-23).
* A head too big for a device still gets its rows (simulation, accuracy and NumPy figures are
  the device's CORDIC architecture's), with `fits` False, `does_not_fit` (the build's
  message), `netlist` (Yosys's pre-placement estimate, lower bounds) and `capacity` (the
  device's), and lut, ff, dsp, bram, fmax_mhz, us, ratio, lut_us and dsp_us None.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import flows
from .bench_common import best_seconds, check_names, header

__all__ = ["DEVICE_BUILDS", "MECHANISMS", "HEAD_MODES", "NUMPY_FUNCTION",
           "merged_resumable_rows", "check_output_keeps_rows",
           "ATTENTION_BENCH_COLUMNS", "not_benched", "example_case", "mechanism_case",
           "refusal", "numpy_reference", "cycles_model", "measure_rtl", "bench_row",
           "row_key", "resumable_rows", "bench_attention"]

# The mechanisms: paper A's head (the analytic fixed point and the two ODE settlings) and the
# softmax head on the same front end and value path (golden/softmax.py).
MECHANISMS = {"oscillator-analytic": "analytic", "oscillator-ode-drive": "ode-drive",
              "oscillator-ode-pairwise": "ode-pairwise", "softmax": "softmax",
              "torus": "torus"}

# The modes of the head each mode is built and simulated in: the analytic head alone, one
# head with every oscillator mode (one array engine) for both ODE modes, the softmax head
# alone (none of the oscillator's units).
HEAD_MODES = {"analytic": ("analytic",), "ode-drive": ("analytic", "ode-drive", "ode-pairwise"),
              "ode-pairwise": ("analytic", "ode-drive", "ode-pairwise"),
              "softmax": ("softmax",)}

# Paper A's cost table (multiply-add equivalents, one exp = 10 MACs, ReLU coupling): softmax
# over the all-digital oscillator stage.
PAPER_SOFTMAX_RATIO = {"kws": 1.98, "sva": 1.88, "tinystories": 0.59}


def not_benched() -> list[dict]:
    """The mechanisms without rows (their mode is not in hdl/attention.py MODES): mechanism,
    mode, in_rtl (False) and the reason."""
    from .hdl.attention import MODES
    return [{"mechanism": mechanism, "mode": mode, "in_rtl": False,
             "reason": f"mode {mode!r} is not in RTL yet (golden-fixed specifies it: oscarray "
                       f"attention --engine golden-fixed); no row"}
            for mechanism, mode in MECHANISMS.items()
            if mode not in MODES and mechanism != "torus"]


# What each device builds: the board and the CORDIC architecture of the head's three CORDICs
# (vector, rotate, divide; each used once a row) and of its array engine. UP5K: the iterative
# CORDICs, the smaller head (the pipelined one needs about twice the device's logic cells),
# and the analytic and softmax heads compact (`AttentionHead`'s compact; `builds_compact`).
DEVICE_BUILDS = {
    "up5k": {"board": "icebreaker", "cordic_arch": "iterative", "compact": True},
    "ecp5-85f": {"board": "ulx3s-85f", "cordic_arch": "pipelined"},
}

NUMPY_FUNCTION = ("oscarray.golden.attention.attention_float (float64, analytic, every head; "
                  "the case validated once, outside the timing)")
NUMPY_SOFTMAX_FUNCTION = ("oscarray.golden.softmax.softmax_float (float64, every head; the "
                          "case validated once, outside the timing)")


def head_modes_of(case) -> tuple:
    """The modes of the head a case is built and simulated in (HEAD_MODES)."""
    return HEAD_MODES[case.mode]


def builds_compact(device: str, case, mac_lanes: int = 1) -> bool:
    """Whether `device` builds and simulates the case's head compact: a device that asks for
    it (DEVICE_BUILDS), and a head a compact build can be (the analytic mode alone at
    d_osc 2 or the softmax mode alone, one MAC lane: `AttentionHead`)."""
    from .hdl.attention import head_d_osc
    return not isinstance(case, list) and row_builds_compact(
        {"device": device, "mechanism": mechanism_name(case), "d_osc": head_d_osc(case)},
        mac_lanes)


def is_softmax(case) -> bool:
    from .golden.softmax import MECHANISM
    return case.mode == MECHANISM


def mechanism_name(case) -> str:
    return "softmax" if is_softmax(case) else f"oscillator-{case.mode}"


def example_case(shape: str, seed: int = 0):
    """The validated AttentionCase of `oscarray attention --example shape --seed seed`."""
    from .golden.attention import validate_case
    return validate_case(flows.attention_example_arrays(shape, seed))


def mechanism_case(case, mechanism: str):
    """The example case with the mechanism's mode (the other entries as they are: the golden
    DEFAULTS in an example case); softmax's is golden `softmax_case` of it."""
    from .golden.softmax import softmax_case
    if mechanism == "softmax":
        return softmax_case(case)
    return dataclasses.replace(case, mode=MECHANISMS[mechanism])


def refusal(case) -> str | None:
    """Why a head sized for the case (max_tokens = T, max_d_h = d_h; the case's HEAD_MODES)
    cannot run it (the golden fixed-point model's or the head's message), or None."""
    from .hdl.attention import check_case, head_d_osc
    try:
        check_case(case, max_tokens=case.tokens, max_d_h=case.d_h, modes=head_modes_of(case),
                   d_osc=head_d_osc(case))
    except ValueError as error:
        return str(error)
    return None


def float_reference(case) -> dict:
    """The float result a row's accuracy is measured against: the oscillator's analytic
    attention (every oscillator mode), or softmax's."""
    from .golden.attention import attention_float
    from .golden.softmax import softmax_float
    if is_softmax(case):
        return softmax_float(case)
    return attention_float(dataclasses.replace(case, mode="analytic"))


def numpy_reference(case, progress=None, *, repeats: int = 7, min_seconds: float = 0.2
                    ) -> dict:
    """The float model on the case, timed: numpy_us (best call), numpy_calls, numpy_fn.
    Oscillator rows: the analytic attention; softmax rows: softmax."""
    what = "softmax" if is_softmax(case) else "analytic"
    flows._say(progress, f"NumPy float64 {what} attention, H = {case.heads}, "
                         f"T = {case.tokens}, d_h = {case.d_h}")
    seconds, calls = best_seconds(lambda: float_reference(case), repeats=repeats,
                                  min_seconds=min_seconds)
    return {"numpy_us": seconds * 1e6, "numpy_calls": calls,
            "numpy_fn": NUMPY_SOFTMAX_FUNCTION if is_softmax(case) else NUMPY_FUNCTION}


def cycles_model(case, cordic_arch: str, result, mac_lanes: int = 1
                 ) -> tuple[list[int], list | None]:
    """(the clock model of each head, the engine runs of each head or None): analytic
    `cycles_per_head`; the ODE modes `ode_cycles` of `ode_engine_runs(case, result, head)`
    (`result`: steps and h_int, the RTL's or golden-fixed's); the ODE modes at d_osc > 2
    `flow_cycles` of each row's steps (its runs: (1, steps) per row)."""
    from .hdl.attention import (cycles_per_head, flow_cycles, head_d_osc, ode_cycles,
                                ode_engine_runs)
    if case.mode in ("analytic", "softmax"):
        return [cycles_per_head(case.tokens, case.d_h, case.causal, cordic_arch=cordic_arch,
                                mode=case.mode, d_osc=head_d_osc(case),
                                mac_lanes=mac_lanes)] * case.heads, None
    if case.d_osc > 2:
        from .golden.attention import NOT_CONVERGED
        steps = np.where(np.asarray(result["steps"]) == NOT_CONVERGED, case.max_steps,
                         np.asarray(result["steps"]))
        return ([flow_cycles(case.tokens, case.d_h, case.causal, row_steps, case.d_osc,
                             cordic_arch=cordic_arch, mode=case.mode, mac_lanes=mac_lanes)
                 for row_steps in steps],
                [[(1, int(n)) for n in row_steps] for row_steps in steps])
    runs = [ode_engine_runs(case, result, head) for head in range(case.heads)]
    return [ode_cycles(case.tokens, case.d_h, case.causal, case.mode, head_runs,
                       case.init == "warm", cordic_arch=cordic_arch, mac_lanes=mac_lanes)
            for head_runs in runs], runs


def measure_rtl(case, cordic_arch: str, *, sim=None, build_root=None, progress=None,
                reference=None, mac_lanes: int = 1, compact: bool = False) -> dict:
    """The case on the head RTL (capacity T, d_h; `cordic_arch` CORDICs; HEAD_MODES of the
    case's mode; `mac_lanes` MAC lanes; `compact`: the compact head) in a cycle-accurate
    simulation: cycles_measured
    (per head, the `cycles` port), cycles (their sum), cycles_model (per head, which each
    head must match: else SimulationFailed) and cycles_per_head (the model's one figure when every head takes the
    same, else the list), bit_exact and mismatches (versus golden-fixed), max_attn_err and
    max_out_err_rel (versus `reference`, the float model's analytic result, computed if not
    given), load_words, sim; the ODE modes' euler_steps, converged and engine_runs (else
    None)."""
    from .hdl.attention import head_d_osc, head_writes
    from .sim.runner import SimulationFailed

    tokens, d_h, modes = case.tokens, case.d_h, head_modes_of(case)
    if is_softmax(case):
        from .softmax_flow import SOFTMAX_ENGINES
        rtl = SOFTMAX_ENGINES["rtl"](case, max_tokens=tokens, max_d_h=d_h, sim=sim,
                                     build_root=build_root, progress=progress,
                                     cordic_arch=cordic_arch, mac_lanes=mac_lanes,
                                     compact=compact)
    else:
        rtl = flows.ATTENTION_ENGINES["rtl"](case, max_tokens=tokens, max_d_h=d_h, sim=sim,
                                             build_root=build_root, progress=progress,
                                             cordic_arch=cordic_arch, mac_lanes=mac_lanes,
                                             compact=compact)
    measured = [int(c) for c in rtl["cycles"]]
    model, runs = cycles_model(case, cordic_arch, rtl, mac_lanes)
    if measured != model:
        raise SimulationFailed(
            f"the head's cycles port gave {measured} clocks per head, the model (T = {tokens}, "
            f"d_h = {d_h}, causal = {case.causal}, {case.mode}, {cordic_arch}, "
            f"{mac_lanes} MAC lanes"
            + (f", engine runs {runs}" if runs else "") + f") says {model}",
            failed=[], log_path=None, result=None)
    if is_softmax(case):
        from .softmax_flow import softmax_rtl_mismatches
        mismatches = softmax_rtl_mismatches(case, rtl)
    else:
        mismatches = flows.attention_rtl_mismatches(case, rtl)
    if reference is None:
        reference = float_reference(case)
    v_max = float(np.abs(case.v).max())
    out_err = float(np.abs(rtl["out"] - reference["out"]).max())
    load_words = sum(len(w) for w in head_writes(case, max_tokens=tokens, max_d_h=d_h,
                                                  modes=modes, d_osc=head_d_osc(case)))
    ode = runs is not None
    return {"cycles_measured": measured, "cycles": sum(measured), "cycles_model": model,
            "cycles_per_head": model[0] if len(set(model)) == 1 else model,
            "bit_exact": mismatches == 0, "mismatches": mismatches,
            "max_attn_err": float(np.abs(rtl["attn"] - reference["attn"]).max()),
            "max_out_err_rel": out_err / v_max if v_max > 0 else out_err,
            "load_words": load_words, "sim": rtl.get("sim"),
            "euler_steps": max(n for r in runs for _, n in r) if ode else None,
            "converged": bool(np.all(rtl["converged"])) if ode else None,
            "engine_runs": runs}


# Paper B's layer on every device with pipelined CORDICs (torus_cycles models those).
TORUS_CORDIC = "pipelined"
NUMPY_TORUS_FUNCTION = ("oscarray.golden.torus.torus_float_fast (float64, the rotary identity "
                        "by matrix products; one layer per head of the shape; the cases "
                        "validated once, outside the timing)")


def torus_cases(shape: str, seed: int = 0) -> list:
    """The torus row's inference: one layer of paper B per head of the shape, T tokens and
    D = d_h angle coordinates each (golden/torus.random_case(T, d_h, seed + head): RoPE
    frequencies, causal), run one after another like the heads."""
    from .golden.attention import SHAPES
    from .golden.torus import random_case, validate_case
    heads, tokens, d_h, _ = SHAPES[shape]
    return [validate_case(random_case(tokens, d_h, seed + head)) for head in range(heads)]


def torus_refusal(cases) -> str | None:
    """Why a layer sized for the cases cannot run them, or None."""
    from .hdl.torus import check_case
    try:
        for case in cases:
            check_case(case, max_tokens=case.tokens, max_d=case.d)
    except ValueError as error:
        return str(error)
    return None


def numpy_torus(cases, progress=None, *, repeats: int = 7, min_seconds: float = 0.2) -> dict:
    """torus_float_fast (NumPy's fastest form) on every layer of the row, timed like
    `numpy_reference`."""
    from .golden.torus import torus_float_fast
    flows._say(progress, f"NumPy float64 torus layers, {len(cases)} x (T = {cases[0].tokens}, "
                         f"D = {cases[0].d})")
    seconds, calls = best_seconds(lambda: [torus_float_fast(case) for case in cases],
                                  repeats=repeats, min_seconds=min_seconds)
    return {"numpy_us": seconds * 1e6, "numpy_calls": calls, "numpy_fn": NUMPY_TORUS_FUNCTION}


def measure_torus(cases, *, sim=None, build_root=None, progress=None) -> dict:
    """The layers on the TorusLayer RTL (capacity T, D) in one cocotb simulation: the same
    figures as `measure_rtl` (clocks against `torus_cycles`, else SimulationFailed; bit_exact
    against golden-fixed's attn_int and theta_next_acc; max_attn_err against torus_float;
    max_out_err_rel: theta_next's largest error in radians over pi)."""
    from .golden.torus import torus_float
    from .hdl.torus import torus_cycles, torus_writes
    from .sim.runner import SimulationFailed
    from .sim.torus import run_torus_rtl_batch
    from .torus_flow import torus_rtl_mismatches

    tokens, d = cases[0].tokens, cases[0].d
    flows._say(progress, f"torus: simulating the layer, {len(cases)} x (T = {tokens}, D = {d})")
    rtl = run_torus_rtl_batch(cases, max_tokens=tokens, max_d=d, sim=sim,
                              build_root=build_root)
    measured = [int(r["cycles"]) for r in rtl]
    model = [torus_cycles(c.tokens, c.d, c.causal) for c in cases]
    if measured != model:
        raise SimulationFailed(f"the torus layer's cycles port gave {measured}, torus_cycles "
                               f"says {model}", failed=[], log_path=None, result=None)
    from .golden.attention_fixed import FRAC
    from .golden.torus_fixed import acc_to_radians
    attn_err = theta_err = 0.0
    for case, r in zip(cases, rtl):
        exact = torus_float(case)
        attn_err = max(attn_err, float(np.abs(r["attn_int"] * 2.0 ** -FRAC
                                              - exact["attn"]).max()))
        diff = acc_to_radians(r["theta_next_acc"], 32) - exact["theta_next"]
        theta_err = max(theta_err, float(np.abs(np.angle(np.exp(1j * diff))).max()))
    mismatches = sum(torus_rtl_mismatches(case, r) for case, r in zip(cases, rtl))
    return {"cycles_measured": measured, "cycles": sum(measured), "cycles_model": model,
            "cycles_per_head": model[0] if len(set(model)) == 1 else model,
            "bit_exact": mismatches == 0, "mismatches": mismatches, "max_attn_err": attn_err,
            "max_out_err_rel": theta_err / np.pi,
            "load_words": sum(len(torus_writes(c, max_tokens=tokens, max_d=d)) for c in cases),
            "sim": rtl[0]["sim"], "euler_steps": None, "converged": None,
            "engine_runs": None}


def torus_row(shape: str, device: str, cases, rtl: dict, numpy: dict,
              built: dict | None = None, does_not_fit: dict | None = None) -> dict:
    """The torus row (`bench_row`'s fields; heads = layers, d_h = D, d_osc None)."""
    row = {"mechanism": "torus", "heads": len(cases), "tokens": cases[0].tokens,
           "d_h": cases[0].d, "d_osc": None, "causal": cases[0].causal,
           "max_tokens": cases[0].tokens, "max_d_h": cases[0].d, "modes_built": ["torus"]}
    return _complete_row(row, shape, device, TORUS_CORDIC, rtl, numpy, built, does_not_fit)


def bench_row(shape: str, device: str, case, cordic_arch: str, rtl: dict, numpy: dict,
              built: dict | None = None, does_not_fit: dict | None = None,
              mac_lanes: int = 1, compact: bool = False) -> dict:
    """One table row of the case's mechanism from a build (`built`, build()'s dict) or the
    reason it did not fit (`does_not_fit`: message, netlist, capacity, target_mhz, name),
    the RTL's measurement (`measure_rtl`) and the NumPy figures (`numpy_reference`)."""
    row = {"mechanism": mechanism_name(case), "heads": case.heads, "tokens": case.tokens,
           "d_h": case.d_h, "d_osc": case.d_osc, "causal": case.causal,
           "max_tokens": case.tokens, "max_d_h": case.d_h,
           "modes_built": list(head_modes_of(case)), "mac_lanes": mac_lanes,
           "compact": compact}
    return _complete_row(row, shape, device, cordic_arch, rtl, numpy, built, does_not_fit)


def _complete_row(row: dict, shape: str, device: str, cordic_arch: str, rtl: dict,
                  numpy: dict, built: dict | None, does_not_fit: dict | None) -> dict:
    """`row` (the mechanism's own fields) with the device's, the build's or why it did not
    fit, the measurement's and NumPy's."""
    from .boards.build import get_board
    from .golden.attention_fixed import ATTN_TARGET
    if (built is None) == (does_not_fit is None):
        raise ValueError("a row needs a build or the reason it did not fit, not both")
    board = DEVICE_BUILDS[device]["board"]
    row = {"shape": shape, "device": device, "board": board, "part": get_board(board).device,
           **row, "cordic_arch": cordic_arch, "build": (built or does_not_fit).get("name")}
    if built is not None:
        us = rtl["cycles"] / built["fmax_mhz"]
        row.update(fits=True, does_not_fit=None, lut=built["lut"],
                   ff=built["ff"], dsp=built["dsp"], bram=built["bram"],
                   fmax_mhz=built["fmax_mhz"], target_mhz=built["target_mhz"],
                   timing_met=built["timing_met"], build_s=built.get("seconds"), us=us,
                   ratio=us / numpy["numpy_us"], lut_us=built["lut"] * us,
                   dsp_us=built["dsp"] * us)
    else:
        row.update(fits=False, does_not_fit=does_not_fit["message"],
                   netlist=does_not_fit.get("netlist"), capacity=does_not_fit.get("capacity"),
                   target_mhz=does_not_fit.get("target_mhz"), lut=None, ff=None, dsp=None,
                   bram=None, fmax_mhz=None, timing_met=None, us=None, ratio=None,
                   lut_us=None, dsp_us=None)
    row.update({key: rtl[key] for key in (
        "cycles", "cycles_per_head", "cycles_model", "cycles_measured", "load_words",
        "max_attn_err", "max_out_err_rel", "bit_exact", "mismatches", "sim", "euler_steps",
        "converged", "engine_runs")}, attn_target=ATTN_TARGET, **numpy)
    return row


def _build(device: str, case, build_root, progress, mac_lanes: int = 1,
           compact: bool = False) -> tuple[dict | None, dict | None]:
    """(build()'s dict, None), or (None, why it does not fit), for the head of the case's
    HEAD_MODES with `mac_lanes` MAC lanes, compact or not (`builds_compact`, which the
    caller has decided; a list of torus cases: their layer, `TORUS_CORDIC`)."""
    from .boards.attention_build import (
        build_attention_head,
        build_torus_layer,
        head_build_name,
        torus_build_name,
    )

    spec = DEVICE_BUILDS[device]
    if isinstance(case, list):
        tokens, d = case[0].tokens, case[0].d
        return _fitted(device, build_root, progress, torus_build_name(tokens, d, TORUS_CORDIC),
                       lambda: build_torus_layer(spec["board"], tokens, d, TORUS_CORDIC,
                                                 build_root, progress))
    from .hdl.attention import head_d_osc
    arch, modes, d_osc = spec["cordic_arch"], head_modes_of(case), head_d_osc(case)
    return _fitted(device, build_root, progress,
                   head_build_name(case.tokens, case.d_h, arch, modes, d_osc, mac_lanes,
                                   compact),
                   lambda: build_attention_head(spec["board"], case.tokens, case.d_h, arch,
                                                build_root, progress, modes=modes,
                                                d_osc=d_osc, mac_lanes=mac_lanes,
                                                compact=compact))


def _fitted(device, build_root, progress, name, make) -> tuple[dict | None, dict | None]:
    """(make()'s build, None), or (None, why the design `name` does not fit the device)."""
    from .boards.attention_build import TARGET_MHZ, netlist_usage
    from .boards.build import DesignDoesNotFit, get_board
    spec = DEVICE_BUILDS[device]
    try:
        return make(), None
    except DesignDoesNotFit as error:
        board = get_board(spec["board"])
        flows._say(progress, f"{device}: {error}")
        return None, {"message": str(error), "name": name,
                      "netlist": netlist_usage(spec["board"], build_root, name),
                      "capacity": dataclasses.asdict(board.capacity),
                      "target_mhz": TARGET_MHZ[board.family]}


def row_key(row: dict) -> tuple:
    """What a row measures: (shape, device, mechanism)."""
    return row["shape"], row["device"], row["mechanism"]


def resumable_rows(previous: dict, seed: int, mac_lanes: int = 1) -> dict:
    """The rows of an earlier result (`bench_attention`'s, finished or written part way by
    `on_row`) that a run with `seed` may take over instead of measuring them again, by
    `row_key`; each keeps the date it was measured (`measured`, else the result's date)
    and its commit (`commit`, else the result's). A result of another seed is a ValueError: its
    cases are other draws; so is one of other MAC lanes (`mac_lanes`: the result's, 1 before
    there were lanes): other heads. A row whose head was built otherwise than this run
    builds it (`compact`: the UP5K's analytic rows before the compact head, 2026-11-25) is
    left out, to be measured again."""
    if previous.get("seed") != seed:
        raise ValueError(f"cannot resume from a result of seed {previous.get('seed')!r}: "
                         f"this run's seed is {seed}")
    if previous.get("mac_lanes", 1) != mac_lanes:
        raise ValueError(f"cannot resume from a result of {previous.get('mac_lanes', 1)} MAC "
                         f"lanes: this run's heads have {mac_lanes}")
    return {row_key(row): {**row, "measured": row.get("measured", previous.get("date")),
                           "commit": row.get("commit", previous.get("commit"))}
            for row in previous.get("rows", [])
            if row.get("compact", False) == row_builds_compact(row, mac_lanes)}


def row_builds_compact(row: dict, mac_lanes: int = 1) -> bool:
    """`builds_compact` of a row's device and head (its mechanism and d_osc; a softmax head
    has no oscillator, whatever the case's anchors)."""
    head = (row.get("mechanism") == "softmax"
            or (row.get("mechanism") == "oscillator-analytic" and row.get("d_osc", 2) == 2))
    return (bool(DEVICE_BUILDS.get(row.get("device"), {}).get("compact", False)) and head
            and mac_lanes == 1)


def merged_resumable_rows(results, seed: int, mac_lanes: int = 1) -> dict:
    """`resumable_rows` of several earlier results ((name, result) pairs, e.g. a full run
    and a later run of the rows it could not measure then); a row in two of them, measured
    differently, is a ValueError naming both (which one is meant is not for the bench to
    guess); the same row taken over into both is one row."""
    rows, source = {}, {}
    for name, result in results:
        for key, row in resumable_rows(result, seed, mac_lanes).items():
            if key in rows and rows[key] != row:
                raise ValueError(f"--resume: the row {' '.join(key)} is in both {source[key]} "
                                 f"and {name}")
            rows[key], source[key] = row, name
    return rows


def check_output_keeps_rows(output, results, shapes, devices, mechanisms) -> None:
    """ValueError when `output` is one of the --resume files ((path, result) pairs) and
    this run does not ask for every row it holds: writing it would drop those rows."""
    target = Path(output).resolve()
    for path, result in results:
        if Path(path).resolve() != target:
            continue
        dropped = [" ".join(row_key(row)) for row in result.get("rows", [])
                   if row["shape"] not in shapes or row["device"] not in devices
                   or row["mechanism"] not in mechanisms]
        if dropped:
            raise ValueError(f"--output {output} is a --resume file whose rows this run does "
                             f"not ask for ({', '.join(dropped[:3])}"
                             f"{', ...' if len(dropped) > 3 else ''}): writing it would "
                             f"drop them; ask for them too, or write elsewhere")


def bench_attention(shapes=("kws", "sva"), devices=("up5k", "ecp5-85f"), *, seed: int = 0,
                    build_root="build/bench_attention", sim=None, progress=None,
                    mechanisms=None, resume=None, on_row=None, mac_lanes: int = 1) -> dict:
    """Build, simulate and time the head per shape, device and mechanism (module docstring).
    Unknown shapes or devices, a negative seed, and every asked shape refused are ValueErrors
    before any work.

    `resume` (`resumable_rows` of an earlier result): rows taken over as they are, not
    measured again (their `measured` date says when they were). `on_row(partial)` is called
    after every row with the result so far (`complete` False), so a long run can be written
    out as it goes and resumed. `mac_lanes`: every head's MAC lanes (`AttentionHead`; a
    power of two up to each shape's d_h rounded up, else ValueError before any work); the
    torus layer has none."""
    from pathlib import Path

    from .golden.attention import SHAPES
    from .hdl.attention import MODES

    shapes = list(check_names("shapes", shapes, SHAPES, "('kws', 'sva')"))
    devices = list(check_names("devices", devices, DEVICE_BUILDS, "('up5k', 'ecp5-85f')"))
    mechanisms = tuple(MECHANISMS) if mechanisms is None else mechanisms
    asked = list(check_names("mechanisms", mechanisms, MECHANISMS, "('softmax',)"))
    check_bench_lanes(shapes, mac_lanes)
    cases = {shape: example_case(shape, seed) for shape in shapes}     # refuses seed < 0
    refused, benched = [], {}           # per shape: the cases of its mechanisms that run
    for shape in shapes:
        benched[shape] = []
        for mechanism, mode in MECHANISMS.items():
            if mechanism not in asked or (mode not in MODES and mechanism != "torus"):
                continue
            if mechanism == "torus":                    # a list: one layer per head
                case = torus_cases(shape, seed)
                reason = torus_refusal(case)
            else:
                case = mechanism_case(cases[shape], mechanism)
                reason = refusal(case)
            if reason is not None:
                refused.append({"shape": shape, "mechanism": mechanism, "reason": reason})
            else:
                benched[shape].append(case)
    runnable = [shape for shape in shapes if benched[shape]]
    if not runnable:
        raise ValueError("no shape to bench: " + "; ".join(
            f"{r['shape']} {r['mechanism']}: {r['reason']}" for r in refused))
    for r in refused:
        flows._say(progress, f"{r['shape']} {r['mechanism']}: refused, no row: {r['reason']}")
    skipped = not_benched()
    for entry in skipped:
        flows._say(progress, f"{entry['mechanism']}: {entry['reason']}")

    root = Path(build_root)
    resume = resume or {}
    rows = []
    started = header()                  # one date and commit for the whole run
    today, commit = started["date"], started["commit"]

    def result(complete: bool) -> dict:
        return {**started, "seed": seed, "mac_lanes": mac_lanes, "shapes": shapes,
                "devices": devices,
                "mechanisms": asked, "complete": complete, "rows": rows,
                "versus_analytic": versus_analytic(rows), "refused": refused,
                "not_benched": skipped}

    def add(row: dict):
        rows.append({**row, "measured": today, "commit": commit})
        if on_row is not None:
            on_row(result(False))

    def resumed(key: tuple) -> bool:
        """Take over the row `key` (shape, device, mechanism) if `resume` has it."""
        if key not in resume:
            return False
        flows._say(progress, f"{' '.join(key)}: row taken over from the run of "
                             f"{resume[key]['measured']} (commit {resume[key]['commit']})")
        rows.append(resume[key])
        if on_row is not None:
            on_row(result(False))
        return True

    for shape in runnable:
        references, numpys = {}, {}     # per family (oscillator or softmax): one each
        measured = {}                   # per (mode, CORDIC architecture): one simulation each
        for device in devices:
            arch = DEVICE_BUILDS[device]["cordic_arch"]
            builds = {}                 # per head modes: one build each
            for case in benched[shape]:
                if resumed((shape, device, "torus" if isinstance(case, list)
                            else mechanism_name(case))):
                    continue
                if isinstance(case, list):              # paper B's torus layers
                    if "torus" not in references:
                        references["torus"] = True
                        numpys["torus"] = numpy_torus(case, progress)
                        measured["torus"] = measure_torus(case, sim=sim,
                                                          build_root=root / "sim",
                                                          progress=progress)
                    flows._say(progress, f"{shape} on {device}: building the torus layer, "
                                         f"T = {case[0].tokens}, D = {case[0].d}")
                    add(torus_row(shape, device, case, measured["torus"], numpys["torus"],
                                  *_build(device, case, root / "boards", progress)))
                    continue
                family = is_softmax(case)
                if family not in references:
                    references[family] = float_reference(case)
                    numpys[family] = numpy_reference(case, progress)
                modes = head_modes_of(case)
                compact = builds_compact(device, case, mac_lanes)
                if (case.mode, arch, compact) not in measured:
                    flows._say(progress, f"{shape} {case.mode}: simulating the head ({arch} "
                                         f"CORDICs, modes {', '.join(modes)}"
                                         + (", compact)" if compact else ")"))
                    measured[case.mode, arch, compact] = measure_rtl(
                        case, arch, sim=sim, build_root=root / "sim", progress=progress,
                        reference=references[family], mac_lanes=mac_lanes, compact=compact)
                if modes not in builds:
                    flows._say(progress, f"{shape} on {device}: building the head, T = "
                                         f"{case.tokens}, d_h = {case.d_h}, {arch} CORDICs, "
                                         f"modes {', '.join(modes)}, {mac_lanes} MAC lanes"
                                         + (", compact" if compact else ""))
                    builds[modes] = _build(device, case, root / "boards", progress,
                                           mac_lanes, compact)
                add(bench_row(shape, device, case, arch, measured[case.mode, arch, compact],
                              numpys[family], *builds[modes], mac_lanes=mac_lanes,
                              compact=compact))
    return result(True)


def check_bench_lanes(shapes, mac_lanes) -> None:
    """AttentionHeadError (a ValueError) unless `mac_lanes` is one every asked shape's head
    can have (`check_mac_lanes` against its d_h; unknown shapes are left to the bench)."""
    from .golden.attention import SHAPES
    from .hdl.attention import check_mac_lanes
    for shape in shapes:
        if shape in SHAPES:
            check_mac_lanes(mac_lanes, SHAPES[shape][2])


def versus_analytic(rows) -> list[dict]:
    """Per shape, device and mechanism, with both rows fitted: the mechanism over
    oscillator-analytic (the paper's all-digital stage) in us, LUT x us, DSP x us, LUT and
    DSP; for softmax beside paper A's ratio from operation counts (PAPER_SOFTMAX_RATIO).
    Above 1: the mechanism costs more than the oscillator."""
    base = {(r["shape"], r["device"]): r for r in rows
            if r["fits"] and r["mechanism"] == "oscillator-analytic"}

    def ratio(a, b):
        return a / b if b else None
    out = []
    for row in rows:
        osc = base.get((row["shape"], row["device"]))
        if osc is None or not row["fits"] or row is osc:
            continue
        out.append({"shape": row["shape"], "device": row["device"],
                    "mechanism": row["mechanism"],
                    **{key: ratio(row[key], osc[key])
                       for key in ("us", "lut_us", "dsp_us", "lut", "dsp")},
                    "paper": PAPER_SOFTMAX_RATIO.get(row["shape"])
                    if row["mechanism"] == "softmax" else None})
    return out


ATTENTION_BENCH_COLUMNS = [
    ("shape", "shape"), ("device", "device"), ("mechanism", "mechanism"),
    ("cordic_arch", "CORDIC"), ("lut", "LC/LUT4"),
    ("ff", "FF"), ("dsp", "DSP"), ("bram", "BRAM"), ("fmax_mhz", "Fmax MHz"),
    ("cycles_per_head", "clocks/head"), ("cycles", "clocks"), ("us", "us"),
    ("numpy_us", "NumPy us"), ("ratio", "us/NumPy"), ("lut_us", "LUT*us"),
    ("dsp_us", "DSP*us"), ("max_attn_err", "max attn err"),
    ("euler_steps", "Euler steps"), ("converged", "converged"), ("bit_exact", "bit-exact"),
]
