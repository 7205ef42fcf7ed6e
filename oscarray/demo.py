"""The built-in demo: the CORDIC verified in RTL against the golden model, and its iCEBreaker
bitstream built, with a short summary (printed, and written as JSON beside the vectors)."""

from __future__ import annotations

from pathlib import Path

from . import flows

DEMO_RUNS = (("rotate", "pipelined"), ("vector", "pipelined"), ("rotate", "iterative"),
             ("hyperbolic", "pipelined"), ("divide", "pipelined"))


def run_demo(*, vectors: int, out_dir, build: bool = True, progress=None) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], 0
    for step, (mode, arch) in enumerate(DEMO_RUNS, 1):
        progress(f"[{step}/{len(DEMO_RUNS) + build}] {mode} CORDIC, {arch}: RTL (Verilator) "
                 f"versus golden model")
        config = flows.cordic_config(mode)
        result = flows.sim_cordic(config, arch, vectors, seed=step, out=out / f"{mode}_{arch}.npz")
        failures += result["mismatches"] > 0 or not result["within_budget"]
        rows.append(result)
    built = None
    if build:
        progress(f"[{len(DEMO_RUNS) + 1}/{len(DEMO_RUNS) + 1}] iCEBreaker bitstream "
                 f"(pipelined rotate CORDIC)")
        built = flows.build_design("cordic", "icebreaker", build_root=out / "build",
                                   progress=progress)
    summary = {"cordic": rows, "build": built}
    flows.write_json(summary, out / "summary.json")

    print("\nCORDIC RTL (cocotb on Verilator, random input gaps and output backpressure) "
          "versus the bit-exact golden model and the float ideal:")
    print(f"{'mode':>10} {'arch':>9} {'vectors':>8} {'mismatches':>10} {'max err':>8} "
          f"{'RMS err':>8} {'budget':>7}  (output LSBs)")
    for r in rows:
        print(f"{r['mode']:>10} {r['arch']:>9} {r['vectors']:>8} {r['mismatches']:>10} "
              f"{r['max_err_lsb']:>8.3f} {r['rms_err_lsb']:>8.3f} {r['budget_lsb']:>7.3f}")
    if built:
        print(f"\niCEBreaker ({built['device']}): {built['lut']} LC ({built.get('core_lut')} in "
              f"the CORDIC), {built['ff']} FF, {built['dsp']} DSP, {built['bram']} BRAM, "
              f"Fmax {built['fmax_mhz']:.1f} MHz (target {built['target_mhz']:.0f} MHz, "
              f"{'met' if built['timing_met'] else 'not met'})\nbitstream: {built['bitstream']}")
    print(f"\nresults: {out}/ (summary.json, vectors as npz)")
    print("PASS" if not failures else f"FAIL: {failures} run(s) mismatched or exceeded budget")
    return 1 if failures else 0
