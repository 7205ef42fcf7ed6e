"""`oscarray bench attention`: paper A's attention head on UP5K and ECP5-85F against NumPy.

Per shape (the `oscarray attention --example` cases: golden/attention.SHAPES, causal, relu_eps,
p = 1, analytic; seed 0 unless told) and device, one row of mechanism "oscillator-analytic":

* a real build of `AttentionHead` sized for the shape (max_tokens = T, max_d_h = d_h) with the
  device's CORDIC architecture (`DEVICE_BUILDS`): lut, ff, dsp, bram, fmax_mhz;
* the example case run on the same head in a cycle-accurate simulation (cocotb, Verilator
  unless told): the clocks of each head from the head's `cycles` port, which must equal
  `cycles_per_head` (else `SimulationFailed`); `cycles` per inference is all heads one after
  another on one head engine (the `load` writes before each head are not counted:
  `load_words` says how many there are); `us` = cycles / Fmax;
* the RTL's integers against golden-fixed (`bit_exact`, `mismatches`) and its attention
  against the float model (`max_attn_err` = max |attn - attn_float|);
* `numpy_us`: golden/attention.py `attention_float` (float64, analytic, every head) on the
  same case on this machine, the best of several calls in the same run; `ratio` = us / numpy_us
  (below 1: the head is faster).

What gets no row, and why, is in the result, never a made-up figure:

* `refused`: a shape the head cannot run (tinystories: d_osc = 8 is not in fixed point), with
  the golden model's or the head's message. If every asked shape is refused, nothing runs
  (ValueError).
* `not_benched`: the ODE mechanisms ("oscillator-ode-drive", "oscillator-ode-pairwise"), each
  with whether the RTL builds it (hdl/attention.py MODES; golden-fixed specifies both) and why
  it has no row: not in RTL, or in RTL (both since 2026-11-23) but not in this bench yet (the
  head with the array engine is a different build, and its clocks depend on the Euler
  steps).
* A head too big for a device still gets its row (simulation, accuracy and NumPy figures are
  the device's CORDIC architecture's), with `fits` False, `does_not_fit` (the build's
  message), `netlist` (Yosys's pre-placement estimate, lower bounds) and `capacity` (the
  device's), and lut, ff, dsp, bram, fmax_mhz, us and ratio None.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import flows
from .bench_common import best_seconds, check_names, header

__all__ = ["DEVICE_BUILDS", "MECHANISMS", "NUMPY_FUNCTION", "ATTENTION_BENCH_COLUMNS",
           "not_benched", "example_case", "refusal", "numpy_reference", "measure_rtl",
           "bench_row", "bench_attention"]

# The mechanisms of paper A's head: the analytic fixed point (in RTL) and the two ODE settlings.
MECHANISMS = {"oscillator-analytic": "analytic", "oscillator-ode-drive": "ode-drive",
              "oscillator-ode-pairwise": "ode-pairwise"}
BENCHED = ("oscillator-analytic",)


def not_benched() -> list[dict]:
    """The mechanisms without rows: mechanism, mode, in_rtl (the head builds the mode:
    hdl/attention.py MODES) and the reason, worded from in_rtl."""
    from .hdl.attention import MODES
    rows = []
    for mechanism, mode in MECHANISMS.items():
        if mechanism in BENCHED:
            continue
        in_rtl = mode in MODES
        reason = (f"mode {mode!r} is in RTL but not in this bench yet (a head built with "
                  f"the array engine, and clocks that depend on the Euler steps); no row"
                  if in_rtl else
                  f"mode {mode!r} is not in RTL yet (golden-fixed specifies it: oscarray "
                  f"attention --engine golden-fixed); no row")
        rows.append({"mechanism": mechanism, "mode": mode, "in_rtl": in_rtl, "reason": reason})
    return rows


# What each device builds: the board and the CORDIC architecture of the head's three CORDICs
# (vector, rotate, divide; each used once a row). UP5K: the iterative CORDICs, the smaller
# head (the pipelined one needs about twice the device's logic cells).
DEVICE_BUILDS = {
    "up5k": {"board": "icebreaker", "cordic_arch": "iterative"},
    "ecp5-85f": {"board": "ulx3s-85f", "cordic_arch": "pipelined"},
}

NUMPY_FUNCTION = ("oscarray.golden.attention.attention_float (float64, analytic, every head; "
                  "the case validated once, outside the timing)")


def example_case(shape: str, seed: int = 0):
    """The validated AttentionCase of `oscarray attention --example shape --seed seed`."""
    from .golden.attention import validate_case
    return validate_case(flows.attention_example_arrays(shape, seed))


def refusal(case) -> str | None:
    """Why a head sized for the case (max_tokens = T, max_d_h = d_h) cannot run it (the golden
    fixed-point model's or the head's message), or None."""
    from .hdl.attention import check_case
    try:
        check_case(case, max_tokens=case.tokens, max_d_h=case.d_h)
    except ValueError as error:
        return str(error)
    return None


def numpy_reference(case, progress=None, *, repeats: int = 7, min_seconds: float = 0.2
                    ) -> dict:
    """The float model on the case, timed: numpy_us (best call), numpy_calls, numpy_fn."""
    from .golden.attention import attention_float
    flows._say(progress, f"NumPy float64 analytic attention, H = {case.heads}, "
                         f"T = {case.tokens}, d_h = {case.d_h}")
    seconds, calls = best_seconds(lambda: attention_float(case), repeats=repeats,
                                  min_seconds=min_seconds)
    return {"numpy_us": seconds * 1e6, "numpy_calls": calls, "numpy_fn": NUMPY_FUNCTION}


def measure_rtl(case, cordic_arch: str, *, sim=None, build_root=None, progress=None,
                reference=None) -> dict:
    """The case on the head RTL (capacity T, d_h; `cordic_arch` CORDICs) in a cycle-accurate
    simulation: cycles_measured (per head, the `cycles` port), cycles (their sum),
    cycles_per_head (the model, which each head must match: else SimulationFailed),
    bit_exact and mismatches (versus golden-fixed), max_attn_err and max_out_err_rel (versus
    `reference`, the float model's analytic result, computed if not given), load_words, sim."""
    from .golden.attention import attention_float
    from .hdl.attention import cycles_per_head, head_writes
    from .sim.runner import SimulationFailed

    if case.mode != "analytic":
        raise ValueError(f"mode {case.mode!r}: the head RTL runs the analytic mode only")
    tokens, d_h = case.tokens, case.d_h
    rtl = flows.ATTENTION_ENGINES["rtl"](case, max_tokens=tokens, max_d_h=d_h, sim=sim,
                                         build_root=build_root, progress=progress,
                                         cordic_arch=cordic_arch)
    measured = [int(c) for c in rtl["cycles"]]
    model = cycles_per_head(tokens, d_h, case.causal, cordic_arch=cordic_arch)
    if any(c != model for c in measured):
        raise SimulationFailed(
            f"the head's cycles port gave {measured} clocks per head, cycles_per_head("
            f"T = {tokens}, d_h = {d_h}, causal = {case.causal}, {cordic_arch}) says {model}",
            failed=[], log_path=None, result=None)
    mismatches = flows.attention_rtl_mismatches(case, rtl)
    if reference is None:
        reference = attention_float(case)
    v_max = float(np.abs(case.v).max())
    out_err = float(np.abs(rtl["out"] - reference["out"]).max())
    load_words = sum(len(w) for w in head_writes(case, max_tokens=tokens, max_d_h=d_h,
                                                  modes=("analytic",)))
    return {"cycles_measured": measured, "cycles": sum(measured), "cycles_per_head": model,
            "bit_exact": mismatches == 0, "mismatches": mismatches,
            "max_attn_err": float(np.abs(rtl["attn"] - reference["attn"]).max()),
            "max_out_err_rel": out_err / v_max if v_max > 0 else out_err,
            "load_words": load_words, "sim": rtl.get("sim")}


def bench_row(shape: str, device: str, case, cordic_arch: str, rtl: dict, numpy: dict,
              built: dict | None = None, does_not_fit: dict | None = None) -> dict:
    """One table row from a build (`built`, build()'s dict) or the reason it did not fit
    (`does_not_fit`: message, netlist, capacity, target_mhz), the RTL's measurement
    (`measure_rtl`) and the NumPy figures (`numpy_reference`)."""
    from .golden.attention_fixed import ATTN_TARGET
    if (built is None) == (does_not_fit is None):
        raise ValueError("a row needs a build or the reason it did not fit, not both")
    from .boards.build import get_board
    board = DEVICE_BUILDS[device]["board"]
    row = {"shape": shape, "device": device, "board": board, "part": get_board(board).device,
           "mechanism": "oscillator-analytic",
           "heads": case.heads, "tokens": case.tokens, "d_h": case.d_h, "d_osc": case.d_osc,
           "causal": case.causal, "cordic_arch": cordic_arch, "max_tokens": case.tokens,
           "max_d_h": case.d_h}
    if built is not None:
        us = rtl["cycles"] / built["fmax_mhz"]
        row.update(fits=True, does_not_fit=None, lut=built["lut"],
                   ff=built["ff"], dsp=built["dsp"], bram=built["bram"],
                   fmax_mhz=built["fmax_mhz"], target_mhz=built["target_mhz"],
                   timing_met=built["timing_met"], build_s=built.get("seconds"), us=us,
                   ratio=us / numpy["numpy_us"])
    else:
        row.update(fits=False, does_not_fit=does_not_fit["message"],
                   netlist=does_not_fit.get("netlist"), capacity=does_not_fit.get("capacity"),
                   target_mhz=does_not_fit.get("target_mhz"), lut=None, ff=None, dsp=None,
                   bram=None, fmax_mhz=None, timing_met=None, us=None, ratio=None)
    row.update(cycles=rtl["cycles"], cycles_per_head=rtl["cycles_per_head"],
               cycles_measured=rtl["cycles_measured"], load_words=rtl["load_words"],
               max_attn_err=rtl["max_attn_err"], attn_target=ATTN_TARGET,
               max_out_err_rel=rtl["max_out_err_rel"], bit_exact=rtl["bit_exact"],
               mismatches=rtl["mismatches"], sim=rtl["sim"], **numpy)
    return row


def _build(device: str, case, build_root, progress) -> tuple[dict | None, dict | None]:
    """(build()'s dict, None), or (None, why it does not fit)."""
    from .boards.attention_build import (
        TARGET_MHZ,
        build_attention_head,
        head_build_name,
        netlist_usage,
    )
    from .boards.build import DesignDoesNotFit, get_board

    spec = DEVICE_BUILDS[device]
    arch = spec["cordic_arch"]
    try:
        return build_attention_head(spec["board"], case.tokens, case.d_h, arch, build_root,
                                    progress), None
    except DesignDoesNotFit as error:
        board = get_board(spec["board"])
        flows._say(progress, f"{device}: {error}")
        return None, {"message": str(error),
                      "netlist": netlist_usage(spec["board"], build_root,
                                               head_build_name(case.tokens, case.d_h, arch)),
                      "capacity": dataclasses.asdict(board.capacity),
                      "target_mhz": TARGET_MHZ[board.family]}


def bench_attention(shapes=("kws", "sva"), devices=("up5k", "ecp5-85f"), *, seed: int = 0,
                    build_root="build/bench_attention", sim=None, progress=None) -> dict:
    """Build, simulate and time the analytic head per shape and device (module docstring).
    Unknown shapes or devices, a negative seed, and every asked shape refused are ValueErrors
    before any work."""
    from pathlib import Path

    from .golden.attention import SHAPES, attention_float

    shapes = list(check_names("shapes", shapes, SHAPES, "('kws', 'sva')"))
    devices = list(check_names("devices", devices, DEVICE_BUILDS, "('up5k', 'ecp5-85f')"))
    cases = {shape: example_case(shape, seed) for shape in shapes}     # refuses seed < 0
    refused = [{"shape": shape, "reason": reason} for shape in shapes
               if (reason := refusal(cases[shape])) is not None]
    runnable = [shape for shape in shapes if shape not in {r["shape"] for r in refused}]
    if not runnable:
        raise ValueError("no shape to bench: " + "; ".join(f"{r['shape']}: {r['reason']}"
                                                           for r in refused))
    for r in refused:
        flows._say(progress, f"{r['shape']}: refused, no row: {r['reason']}")
    skipped = not_benched()
    for entry in skipped:
        flows._say(progress, f"{entry['mechanism']}: {entry['reason']}")

    root = Path(build_root)
    rows = []
    for shape in runnable:
        case = cases[shape]
        reference = attention_float(case)
        numpy = numpy_reference(case, progress)
        measured = {}                   # per CORDIC architecture: one simulation each
        for device in devices:
            arch = DEVICE_BUILDS[device]["cordic_arch"]
            if arch not in measured:
                flows._say(progress, f"{shape}: simulating the head ({arch} CORDICs)")
                measured[arch] = measure_rtl(case, arch, sim=sim, build_root=root / "sim",
                                             progress=progress, reference=reference)
            flows._say(progress, f"{shape} on {device}: building the head, T = {case.tokens}, "
                                 f"d_h = {case.d_h}, {arch} CORDICs")
            built, no_fit = _build(device, case, root / "boards", progress)
            rows.append(bench_row(shape, device, case, arch, measured[arch], numpy, built,
                                  no_fit))
    return {**header(), "seed": seed, "shapes": shapes, "devices": devices,
            "mechanisms": list(MECHANISMS), "rows": rows, "refused": refused,
            "not_benched": skipped}


ATTENTION_BENCH_COLUMNS = [
    ("shape", "shape"), ("device", "device"), ("mechanism", "mechanism"),
    ("cordic_arch", "CORDIC"), ("lut", "LC/LUT4"),
    ("ff", "FF"), ("dsp", "DSP"), ("bram", "BRAM"), ("fmax_mhz", "Fmax MHz"),
    ("cycles_per_head", "clocks/head"), ("cycles", "clocks"), ("us", "us"),
    ("numpy_us", "NumPy us"), ("ratio", "us/NumPy"), ("max_attn_err", "max attn err"),
    ("bit_exact", "bit-exact"),
]
