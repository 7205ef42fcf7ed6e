"""The built-in demo (`oscarray demo`): paper A's attention head on an example case through
every engine, compared, plotted, and the iCEBreaker bitstream built.

Stages (progress on stderr as "[k/n] ..."):

1. the example case (golden/attention.py SHAPES, "sva" by default: 1 head, T 9, d_h 32) in
   each mode asked for (analytic and ode-drive by default), written as case npz files;
2. golden-float and 3. golden-fixed (flows.attention_run);
4. the RTL through the host driver in simulation (run_flow.run_case with sim: the board
   top in cocotb, the driver's bytes crossing its UART pins; one simulated top with the
   modes of every case);
5. the comparison table (printed, table.txt, summary.json) and the plots: for each case the
   RTL's attention beside golden-float's and their difference, and in the ODE modes the
   settling curves (flows.attention_plots);
6. the iCEBreaker bitstream (run_flow.build_board): its attention top (a softmax head: no
   oscillator head fits the UP5K, boards/top.py), or should the device not hold it
   (DesignDoesNotFit) the link top with its loopback engine, said so plainly.

Every engine is compared with golden-float in the analytic mode (x* = h / |h|, the reference
of the fixed-point error budget for every mode): max |attn - float| and max |out - float| /
max |v|, beside the case's derived bound (golden/attention_fixed.py error_budget) and the
issue's targets (ATTN_TARGET, OUT_TARGET). The demo passes when the RTL is bit-exact with
golden-fixed, its cycle counts equal the model's, every oscillator converged, and the
fixed-point errors are within the derived bound.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

__all__ = ["DEMO_MODES", "DEMO_ENGINES", "check_demo", "build_icebreaker", "run_demo",
           "print_demo"]

DEMO_MODES = ("analytic", "ode-drive")
DEMO_ENGINES = ("golden-float", "golden-fixed", "rtl")
BOARD = "icebreaker"
COMPILED_S = 30         # a simulated top's build time above which it was compiled, not reused
ENGINE_NOTES = {"golden-float": "the float model, NumPy",
                "golden-fixed": "the bit-exact fixed-point specification, NumPy"}


def _case_name(example: str, mode: str) -> str:
    return f"{example}_{mode}"


def check_demo(example: str = "sva", seed: int = 0, modes=DEMO_MODES, out_dir="out/demo"):
    """Every refusal before any work: the example and seed, the modes, the output folder,
    each case against golden-fixed and the simulated head. Returns (out folder, {mode: case
    arrays}, the simulated top's modes)."""
    from .flows import _check_plots_dir, attention_example_arrays
    from .golden.attention import validate_case
    from .hdl.attention import OSCILLATOR_MODES, check_case
    from .run_flow import sim_top_options

    modes = tuple(modes)
    if not modes:
        raise ValueError("--mode: give at least one mode")
    unknown = [mode for mode in modes if mode not in OSCILLATOR_MODES]
    if unknown:
        raise ValueError(f"--mode {unknown[0]!r}: choose from {', '.join(OSCILLATOR_MODES)}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"--mode: a mode given twice ({' '.join(modes)})")
    out = _check_plots_dir(out_dir, "--out-dir")
    top_modes = (("analytic",) if modes == ("analytic",) else tuple(OSCILLATOR_MODES))
    cases = {}
    for mode in modes:
        arrays = attention_example_arrays(example, seed)
        arrays["mode"] = mode
        case = validate_case(arrays)
        check_case(case, **sim_top_options(case, modes=top_modes))
        cases[mode] = arrays
    return out, cases, top_modes


def build_icebreaker(build_root, progress=None) -> dict:
    """The iCEBreaker bitstream: the attention top (run_flow.build_board), or, when the
    UP5K cannot hold it (DesignDoesNotFit, before or after the tools), the link top with
    its loopback engine. Returns the build's figures with `requested` ("attention"),
    `design` (what was built) and `refusal` (why the attention top was not, or None)."""
    from .boards.build import DesignDoesNotFit
    from .run_flow import build_board

    say = progress or (lambda message: None)
    try:
        built = build_board(BOARD, "attention", progress, build_root=build_root)
        refusal = None
    except DesignDoesNotFit as error:
        refusal = str(error)
        say(f"the attention head does not fit the iCEBreaker: {refusal}")
        say("building the link top (host link, loopback engine) for the iCEBreaker instead")
        built = build_board(BOARD, "link", progress, build_root=build_root)
    return {**built, "requested": "attention", "refusal": refusal}


def _row(name, mode, engine, errors, budget, *, mismatches=None, cycles=None,
         cycles_expected=None, steps=None, wall_s=None, out=None):
    fixed = engine != "golden-float"
    row = {"case": name, "mode": mode, "engine": engine, **errors,
           "attn_budget": budget["attn"] if fixed else None,
           "out_budget_rel": budget["out_rel"] if fixed else None,
           "mismatches": mismatches, "cycles": cycles, "cycles_expected": cycles_expected,
           "steps_max": steps, "wall_s": round(wall_s, 3), "out": out}
    row["within_budget"] = (None if not fixed else
                            row["max_attn_err"] <= row["attn_budget"]
                            and row["max_out_err_rel"] <= row["out_budget_rel"])
    row["meets_targets"] = (row["max_attn_err"] <= budget["attn_target"]
                            and row["max_out_err_rel"] <= budget["out_target_rel"])
    return row


def run_demo(*, example: str = "sva", seed: int = 0, modes=DEMO_MODES, out_dir="out/demo",
             build: bool = True, simulator: str | None = None, sim_build_root=None,
             progress=None) -> dict:
    """Run the demo (module docstring) into `out_dir`; returns the summary written to
    summary.json (rows: the table; build: the iCEBreaker's figures or None; passed)."""
    from . import flows
    from .golden.attention import attention_float, load_case
    from .golden.attention_fixed import ATTN_TARGET, OUT_TARGET, error_budget
    from .golden.npz import write_npz
    from .run_flow import run_case

    say = progress or (lambda message: None)
    out, arrays, top_modes = check_demo(example, seed, modes, out_dir)
    if build:
        from .boards.top import top_spec
        top_spec(BOARD)
    start = time.perf_counter()
    stages = 5 + bool(build)
    stage = iter(range(1, stages + 1))

    def step(message):
        say(f"[{next(stage)}/{stages}] {message}")

    out.mkdir(parents=True, exist_ok=True)
    step(f"example case {example!r} (seed {seed}): {', '.join(arrays)}")
    cases, paths = {}, {}
    for mode, case_arrays in arrays.items():
        paths[mode] = out / f"{_case_name(example, mode)}.npz"
        write_npz(paths[mode], {key: np.asarray(value) for key, value in case_arrays.items()})
        cases[mode] = load_case(paths[mode])
        case = cases[mode]
        say(f"  {paths[mode]}: {case.heads} head(s), T = {case.tokens}, d_h = {case.d_h}, "
            f"d_osc = {case.d_osc}, {mode}")

    runs = {}
    for engine in ("golden-float", "golden-fixed"):
        step(f"{engine} ({ENGINE_NOTES[engine]})")
        for mode, path in paths.items():
            result_path = out / f"{_case_name(example, mode)}_{engine}.npz"
            runs[mode, engine] = flows.attention_run(path, engine, result_path)
            r = runs[mode, engine]
            say(f"  {mode}: max |attn - float| {r['max_attn_err']:.3g}, "
                f"{r['elapsed_s']:.2f} s")

    step(f"rtl through the host driver: the board top in cocotb "
         f"({simulator or 'verilator'}), the driver on its simulated UART; one top with "
         f"the {', '.join(top_modes)} mode(s), compiled on its first run (minutes), then "
         f"cached")
    for mode, path in paths.items():
        say(f"  {mode}:")
        result_path = out / f"{_case_name(example, mode)}_rtl.npz"
        runs[mode, "rtl"] = run_case(path, result_path, sim=True, simulator=simulator,
                                     build_root=sim_build_root, modes=top_modes,
                                     progress=lambda message: say(f"    {message}"))

    step("comparison table and plots")
    plots = out / "plots"
    rows, plot_files = [], []
    for mode, path in paths.items():
        case, name = cases[mode], _case_name(example, mode)
        reference = attention_float(dataclasses.replace(case, mode="analytic"))
        fixed = np.load(out / f"{name}_golden-fixed.npz")
        bound = error_budget(case, result={"converged": fixed["converged"]})
        v_max = float(np.abs(case.v).max())
        budget = {"attn": bound["attn"], "out_rel": bound["out"] / v_max if v_max else
                  bound["out"], "attn_target": ATTN_TARGET, "out_target_rel": OUT_TARGET}
        for engine in ("golden-float", "golden-fixed"):
            r = runs[mode, engine]
            errors = {key: r[key] for key in ("max_attn_err", "max_out_err_rel")}
            rows.append(_row(name, mode, engine, errors, budget,
                             mismatches=0 if engine == "golden-fixed" else None,
                             steps=r["steps_max"], wall_s=r["elapsed_s"], out=r["out"]))
        s = runs[mode, "rtl"]
        rtl = dict(np.load(s["out"]))
        rows.append(_row(name, mode, "rtl", flows.attention_errors(case, rtl, reference),
                         budget, mismatches=s["mismatches"], cycles=s["cycles"],
                         cycles_expected=s["cycles_expected"],
                         steps=int(np.asarray(rtl["steps"]).max()), wall_s=s["elapsed_s"],
                         out=s["out"]))
        rows[-1].update(not_converged=s["not_converged"], sim_s=round(s["sim_s"], 2),
                        sim_build_s=round(s["sim_build_s"], 2), transport=s["transport"],
                        bytes_sent=s["bytes_sent"], bytes_received=s["bytes_received"],
                        retries=s["retries"], framing_errors=s["framing_errors"])
        plot_files += [str(p) for p in flows.attention_plots(case, path, rtl, reference,
                                                             "rtl", plots) if p is not None]
    table = format_table(rows)
    (out / "table.txt").write_text(table + "\n")

    built = None
    if build:
        step("iCEBreaker bitstream (Yosys, nextpnr-ice40, icepack from YoWASP)")
        built = build_icebreaker(out / "build", progress)
        built.pop("netlist", None)

    rtl_rows = [row for row in rows if row["engine"] == "rtl"]
    failures = []
    for row in rtl_rows:
        if row["mismatches"]:
            failures.append(f"{row['case']}: the RTL differs from golden-fixed in "
                            f"{row['mismatches']} integers")
        if row["cycles"] != row["cycles_expected"]:
            failures.append(f"{row['case']}: RTL cycles {row['cycles']}, the model "
                            f"{row['cycles_expected']}")
        if row["not_converged"]:
            failures.append(f"{row['case']}: {row['not_converged']} oscillators did not "
                            f"converge")
    failures += [f"{row['case']} {row['engine']}: beyond the derived error bound"
                 for row in rows if row["within_budget"] is False]
    summary = {"example": example, "seed": seed, "modes": list(paths),
               "cases": {mode: str(path) for mode, path in paths.items()},
               "attn_target": ATTN_TARGET, "out_target_rel": OUT_TARGET,
               "rows": rows, "table": table, "plots": plot_files, "build": built,
               "machine": flows.machine_description(),
               "wall_s": round(time.perf_counter() - start, 1),
               "failures": failures, "passed": not failures,
               "summary": str(out / "summary.json")}
    flows.write_json(summary, out / "summary.json")
    return summary


TABLE_COLUMNS = (("case", "case", "{}"), ("engine", "engine", "{}"),
                 ("max_attn_err", "|attn-float|", "{:.2e}"),
                 ("attn_budget", "attn bound", "{:.2e}"),
                 ("max_out_err_rel", "|out-float|/|v|", "{:.2e}"),
                 ("out_budget_rel", "out bound", "{:.2e}"),
                 ("mismatches", "vs fixed", "{}"), ("steps_max", "steps", "{}"),
                 ("cycles", "cycles", "{}"), ("wall_s", "wall s", "{:.2f}"))


def format_table(rows) -> str:
    """The comparison table as text: one row per case and engine."""
    def cell(row, key, fmt):
        value = row.get(key)
        if key == "mismatches" and row["engine"] != "golden-float":
            return ("reference" if row["engine"] == "golden-fixed" else
                    "bit-exact" if value == 0 else f"{value} differ")
        if value is None:
            return "-"
        if key == "cycles":
            return "/".join(str(c) for c in value)
        return fmt.format(value)
    cells = [[title for _, title, _ in TABLE_COLUMNS]]
    cells += [[cell(row, key, fmt) for key, _, fmt in TABLE_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_demo(summary: dict) -> None:
    """The demo's text report: the table, the targets, the plots, the build, the verdict."""
    print(f"\nPaper A's attention head on the {summary['example']!r} example (seed "
          f"{summary['seed']}); errors against golden-float in the analytic mode; bound: the "
          f"case's derived fixed-point error bound; vs fixed: the RTL's integers against "
          f"golden-fixed's; rtl: through the host driver on the board top's simulated UART\n")
    print(summary["table"])
    print(f"\nthe issue's targets: |attn - float| <= 2^-11 = {summary['attn_target']:.2e}, "
          f"|out - float| / max|v| <= 2^-8 = {summary['out_target_rel']:.2e}: "
          + ("met by every engine" if all(r["meets_targets"] for r in summary["rows"])
             else "not met by " + ", ".join(f"{r['case']} {r['engine']}"
                                            for r in summary["rows"] if not r["meets_targets"])))
    for row in summary["rows"]:
        if row["engine"] == "rtl" and row.get("sim_build_s", 0) > COMPILED_S:
            print(f"{row['case']} rtl: wall time includes compiling the simulated top "
                  f"({row['sim_build_s']:.0f} s, cached for the next run)")
    built = summary["build"]
    if built:
        if built["refusal"]:
            print(f"\niCEBreaker: no attention top, it does not fit: {built['refusal']}\n"
                  f"built the {built['design']} top (host link, loopback engine) instead")
        head = (f" (head T <= {built['max_tokens']}, d_h <= {built['max_d_h']}, "
                f"{', '.join(built['modes'])})" if built["design"] == "attention" else "")
        print(f"\niCEBreaker ({built['device']}), {built['design']} top{head}: {built['lut']} LC, "
              f"{built['ff']} FF, {built['dsp']} DSP, {built['bram']} BRAM; Fmax "
              f"{built['fmax_mhz']:.1f} MHz at a {built['target_mhz']:.1f} MHz clock, timing "
              f"{'met' if built['timing_met'] else 'NOT met'}\nbitstream: {built['bitstream']}")
    else:
        print("\niCEBreaker bitstream: skipped (--skip-build)")
    out = Path(summary["summary"]).parent
    print(f"\nplots: {', '.join(summary['plots'])}")
    print(f"results: {out}/ (summary.json, table.txt, the cases and each engine's result as "
          f"npz, plots/); {summary['wall_s']:.0f} s")
    print("PASS" if summary["passed"] else "FAIL: " + "; ".join(summary["failures"]))
