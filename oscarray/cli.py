"""The `oscarray` command: argument parsing and printing only; the jobs are in `flows`."""

from __future__ import annotations

import argparse
import json
import sys

from .golden.cordic import MODES, CordicConfigError
from .hdl.cordic import ARCHITECTURES

BOARD_NAMES = ("icebreaker", "ulx3s-85f", "orangecrab-25f")


def _add_cordic_format(p: argparse.ArgumentParser):
    p.add_argument("--mode", choices=list(MODES), default="rotate")
    p.add_argument("--width", type=int, default=18, help="data width in bits (default 18)")
    p.add_argument("--phase-bits", type=int, default=16, help="binary angle bits (default 16)")
    p.add_argument("--iterations", type=int, default=None,
                   help="micro-rotations (default: the fewest that meet the 2 LSB budget)")
    p.add_argument("--guard-bits", type=int, default=None,
                   help="extra fraction bits inside (default: the fewest that meet the budget)")


def _add_array_case(p: argparse.ArgumentParser, engine_required: bool):
    from .flows import ARRAY_CAPACITY, ARRAY_ENGINES, ARRAY_FORMS
    p.add_argument("--in", dest="case", required=True, metavar="CASE.npz",
                   help="theta0, omega, K, pinned, dt, steps; optional tol, drive")
    p.add_argument("--engine", choices=list(ARRAY_ENGINES), required=engine_required,
                   default=None if engine_required else "golden-float")
    p.add_argument("--form", choices=list(ARRAY_FORMS), default="matvec",
                   help="coupling evaluation (default matvec; a case with a drive uses it)")
    p.add_argument("--capacity", type=int, default=ARRAY_CAPACITY,
                   help=f"oscillators the fixed-point engine holds (default {ARRAY_CAPACITY})")
    p.add_argument("--lanes", type=int, default=1,
                   help="rtl engine: coupling lanes, 1..64 (pairwise CORDICs, matvec MAC "
                        "pairs; default 1); the golden engines ignore it")
    p.add_argument("--json", action="store_true", help="print one JSON object")


ATTENTION_DESCRIPTION = """\
Run paper A's fixed-query oscillator attention (arXiv:2606.12059) on a case, or write an
example case to start from:

  oscarray attention --example kws|sva|tinystories [--seed S] --out case.npz
  oscarray attention --in case.npz --engine golden-float|golden-fixed|rtl --out result.npz
                     [--plots DIR] [--json]
"""

ATTENTION_EPILOG = """\
case.npz (np.savez; scalars as 0-d arrays): q, k, v (H, T, d_h), anchors (H, T, d_osc);
  optional sigma (relu_eps | softplus | elu1), p (1 | 2 | 4), causal, mode (analytic |
  ode-drive | ode-pairwise), dt, max_steps, tol, init (random | zero | warm), seed; defaults
  and meaning in golden/attention.py.
--example NAME writes golden/attention.random_case(NAME, seed) to --out and stops: q, k, v
  standard normal, random unit anchors, the paper's shapes (kws: H 2, T 49, d_h 16;
  sva: 1, 9, 32; tinystories: 4, 128, 32 with d_osc 8), every optional
  entry written out at its default. Edit it (e.g. np.savez with your own q, k, v) and run it.
engines:
  golden-float  the float model: every mode, sigma and d_osc
  golden-fixed  the bit-exact fixed-point specification (golden/attention_fixed.py):
                sigma relu_eps; d_osc = 2 every mode, d_osc 3..16 analytic and ode-drive
                (the unit vector on the sphere and the Lohe flow, golden/attention_sphere.py)
  rtl           the attention head RTL in cocotb (Verilator unless --sim or $SIM), bit for bit
                golden-fixed, every mode it has (a head is built for the case's d_osc).
                One simulator build per capacity
                (--max-tokens, --max-d-h; default T and d_h rounded up to powers of two, at
                least 16 and 32), cached under --build-dir.
result.npz: attn (H, T, T), out (H, T, d_h), x_star (H, T, d_osc), steps (H, T), engine;
  golden-fixed and rtl add their integers (attn_int, out_int, x_int, theta_int, h_int, e_w;
  golden-fixed also w_int, g_int, phi_int, anchor_int, converged) and scales, a JSON string
  (value = integer * 2**-exponent); rtl adds cycles (H,), clocks per head.
--json prints one object: engine, shape [H, T, d_h, d_osc], mode, max_attn_err =
  max|attn - attn_float| and max_out_err_rel = max|out - out_float| / max|v| against the
  float model's analytic mode, the targets, steps, cycles and mismatches (rtl versus
  golden-fixed), out and plot.
Exit codes: 0 done; 1 the RTL differs from golden-fixed, or the simulation failed; 2 a bad
  case or argument (one-line error, no output file).
"""


SOFTMAX_EPILOG = """\
case.npz: oscarray attention's (q, k, v (H, T, d_h); optional causal); anchors, sigma, p,
  mode and the ODE entries may be present and are ignored. Start from
  oscarray attention --example kws|sva|tinystories --out case.npz.
engines: golden-float (golden/softmax.py, float64), golden-fixed (its bit-exact fixed point:
  log2(e) folded into the score constant, 2**-y by two tables and a multiply, one reciprocal
  per row), rtl (the attention head built with the softmax mode only, in cocotb, bit for bit
  golden-fixed; capacity as for oscarray attention).
result.npz: attn (H, T, T), out (H, T, d_h), engine, mechanism; golden-fixed and rtl add
  attn_int, out_int and scales (golden-fixed also g_int, y_int); rtl adds cycles (H,).
--json prints one object: max_attn_err and max_out_err_rel against golden-float, cycles,
  mismatches (rtl versus golden-fixed).
Exit codes: 0 done; 1 the RTL differs from golden-fixed, or the simulation failed; 2 a bad
  case or argument (one-line error, no output file).
"""


def _add_softmax(commands):
    from .softmax_flow import SOFTMAX_ENGINES
    softmax = commands.add_parser(
        "softmax", help="run softmax attention (the oscillator head's reference) on a case",
        description="Softmax attention on the oscillator head's Q/K front end and value "
                    "path:\n  oscarray softmax --in case.npz --engine golden-float|"
                    "golden-fixed|rtl --out result.npz [--plots DIR] [--json]",
        epilog=SOFTMAX_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    softmax.add_argument("--in", dest="case", required=True, metavar="CASE.npz")
    softmax.add_argument("--engine", choices=list(SOFTMAX_ENGINES), required=True)
    softmax.add_argument("--out", required=True, metavar="PATH", help="result.npz to write")
    softmax.add_argument("--plots", metavar="DIR",
                         help="also write the heatmaps (engine, golden-float, difference)")
    softmax.add_argument("--max-tokens", type=int, default=None, metavar="T",
                         help="rtl: the build's T capacity")
    softmax.add_argument("--max-d-h", type=int, default=None, metavar="D",
                         help="rtl: the build's d_h capacity")
    softmax.add_argument("--sim", choices=("verilator", "icarus"), default=None,
                         help="rtl: simulator (default: $SIM, else verilator)")
    softmax.add_argument("--build-dir", default=None, metavar="DIR",
                         help="rtl: where simulator builds are cached (default build/sim)")
    softmax.add_argument("--json", action="store_true", help="print one JSON object")


def _print_eval_sva(r: dict):
    print(f"sva, {r['model']} attention on {r['engine']}: {r['sentences']} {r['split']} "
          f"sentences ({r['hard_sentences']} hard): accuracy {100 * r['accuracy']:.2f} %, "
          f"hard {100 * r['accuracy_hard']:.2f} %; golden-float {100 * r['float_accuracy']:.2f} "
          f"%, hard {100 * r['float_accuracy_hard']:.2f} % ({r['delta_pp']:+.2f} pp); "
          f"agreement with golden-float {100 * r['agreement_with_float']:.2f} %")
    if "bit_exact" in r:
        print(f"rtl: attention equal to golden-fixed on "
              f"{r['sentences'] - r['mismatched_sentences']} of {r['sentences']} sentences "
              f"({'bit-exact' if r['bit_exact'] else 'NOT bit-exact'}); {r['cycles']} clocks")


def _print_softmax(result: dict):
    print(f"{result['engine']}: softmax, shape {result['shape']}, causal {result['causal']}; "
          f"max |attn - float| = {result['max_attn_err']:.3g} (target "
          f"{result['attn_target']:.3g}), max |out - float| / max|v| = "
          f"{result['max_out_err_rel']:.3g}"
          + ("" if result["cycles"] is None else f"; cycles per head {result['cycles']}")
          + ("" if result["mismatches"] is None
             else f"; {result['mismatches']} integers differ from golden-fixed"))
    for key in ("out", "plot"):
        if result.get(key):
            print(f"{key}: {result[key]}")


TORUS_EPILOG = """\
Paper B (arXiv:2606.11585), reconstructed where only the abstract is public (golden/torus.py
says which pieces and how to change them):
  s_tu = sum_k g_k cos(theta_tk - theta_uk - omega_k (t - u)), u <= t (causal)
  A_tu = softmax_u(s_tu / tau),  theta_tk += eta_k sum_u A_tu sin(theta_uk - theta_tk)
case.npz: theta (T, D) radians, g (D,) >= 0, omega (D,), tau (0-d, > 0), eta (D,);
  optional causal (default true). --example writes a random one (--tokens, --d, --seed).
engines: golden-float (float64), golden-fixed (the bit-exact fixed point, golden/torus_fixed.py,
  with its derived error budget), rtl (hdl/torus.py TorusLayer in cocotb, bit for bit
  golden-fixed; one simulator build per capacity, --max-tokens, --max-d).
result.npz: theta_next (T, D) radians in [-pi, pi), attn (T, T) (0 above the diagonal when
  causal), engine; golden-fixed and rtl add their integers and scales; rtl adds cycles.
Exit codes: 0 done; 1 the RTL differs from golden-fixed, or the simulation failed; 2 a bad
  case or argument (one-line error, no output file).
"""


def _add_torus(commands):
    from .torus_flow import TORUS_ENGINES
    torus = commands.add_parser(
        "torus", help="run Kuramoto attention on the torus (paper B) on a case",
        description="Kuramoto attention on the torus, one layer:\n  oscarray torus --in "
                    "case.npz --engine golden-float|golden-fixed|rtl --out result.npz [--json]"
                    "\n  oscarray torus --example --out case.npz [--tokens T] [--d D] "
                    "[--seed S]",
        epilog=TORUS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = torus.add_mutually_exclusive_group(required=True)
    source.add_argument("--in", dest="case", metavar="CASE.npz", help="the case to run")
    source.add_argument("--example", action="store_true",
                        help="write a random case to --out and stop")
    torus.add_argument("--engine", choices=list(TORUS_ENGINES), help="required with --in")
    torus.add_argument("--out", required=True, metavar="PATH",
                       help="result.npz to write (with --example: the case.npz)")
    torus.add_argument("--tokens", type=int, default=16, metavar="T",
                       help="--example: tokens (default 16)")
    torus.add_argument("--d", type=int, default=8, metavar="D",
                       help="--example: angle coordinates (default 8)")
    torus.add_argument("--seed", type=int, default=0, metavar="S", help="--example: the draw")
    torus.add_argument("--max-tokens", type=int, default=None, metavar="T",
                       help="rtl: the build's T capacity")
    torus.add_argument("--max-d", type=int, default=None, metavar="D",
                       help="rtl: the build's D capacity")
    torus.add_argument("--sim", choices=("verilator", "icarus"), default=None,
                       help="rtl: simulator (default: $SIM, else verilator)")
    torus.add_argument("--build-dir", default=None, metavar="DIR",
                       help="rtl: where simulator builds are cached (default build/sim)")
    torus.add_argument("--json", action="store_true", help="print one JSON object")


def _run_torus(args, progress) -> int:
    from .torus_flow import torus_example, torus_run
    if args.example:
        if args.engine is not None:
            raise ValueError("--example writes a case to --out and stops; --engine belongs "
                             "to a run: oscarray torus --in CASE.npz --engine ...")
        result = torus_example(args.out, args.tokens, args.d, args.seed, progress)
        _report(result, args.json, lambda r: print(f"example {r['shape']} (seed {r['seed']}): "
                                                   f"written {r['out']}"))
        return 0
    if args.engine is None:
        raise ValueError("--in needs --engine (golden-float, golden-fixed or rtl)")
    result = torus_run(args.case, args.engine, args.out, progress, sim=args.sim,
                       build_root=args.build_dir, max_tokens=args.max_tokens,
                       max_d=args.max_d)

    def show(r):
        print(f"{r['engine']}: torus, shape {r['shape']}, causal {r['causal']}, tau "
              f"{r['tau']:g}; max |attn - float| = {r['max_attn_err']:.3g} (target "
              f"{r['attn_target']:.3g}), max |theta_next - float| = {r['max_theta_err']:.3g} rad"
              + ("" if r.get("cycles") is None else f"; {r['cycles']} cycles")
              + ("" if r.get("mismatches") is None
                 else f"; {r['mismatches']} integers differ from golden-fixed"))
        if r.get("out"):
            print(f"out: {r['out']}")
    _report(result, args.json, show)
    return 1 if result.get("mismatches") else 0


def _add_attention(commands):
    from .flows import ATTENTION_ENGINES
    from .golden.attention import SHAPES
    attention = commands.add_parser(
        "attention", help="run paper A's attention head on a case (or write an example case)",
        description=ATTENTION_DESCRIPTION, epilog=ATTENTION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = attention.add_mutually_exclusive_group(required=True)
    source.add_argument("--in", dest="case", metavar="CASE.npz", help="the case to run")
    source.add_argument("--example", choices=list(SHAPES), metavar="NAME",
                        help=f"write a built-in random case ({', '.join(SHAPES)}) to --out "
                             f"and stop")
    attention.add_argument("--engine", choices=list(ATTENTION_ENGINES),
                           help="required with --in")
    attention.add_argument("--out", required=True, metavar="PATH",
                           help="result.npz to write (with --example: the case.npz)")
    attention.add_argument("--plots", metavar="DIR",
                           help="also write the attention heatmaps (engine, golden-float "
                                "analytic, difference; per head) as DIR/<case>_<engine>.png")
    attention.add_argument("--seed", type=int, default=0, metavar="S",
                           help="--example: the random draw, also the case's seed (default 0)")
    attention.add_argument("--max-tokens", type=int, default=None, metavar="T",
                           help="rtl: the build's T capacity (default: see below)")
    attention.add_argument("--max-d-h", type=int, default=None, metavar="D",
                           help="rtl: the build's d_h capacity (default: see below)")
    attention.add_argument("--mac-lanes", type=int, default=None, metavar="L",
                           help="rtl: the head's multiply-accumulate lanes in its score and "
                                "value passes (a power of two up to the d_h capacity rounded "
                                "up to one; default 1): ceil(d_h / L) clocks a token instead "
                                "of d_h")
    attention.add_argument("--compact", action="store_const", const=True, default=None,
                           help="rtl: the compact head the iCE40UP5K holds (the analytic "
                                "mode, one MAC lane, iterative CORDICs): the same results "
                                "in the same clocks as the iterative head")
    attention.add_argument("--sim", choices=("verilator", "icarus"), default=None,
                           help="rtl: simulator (default: $SIM, else verilator)")
    attention.add_argument("--build-dir", default=None, metavar="DIR",
                           help="rtl: where simulator builds are cached (default build/sim)")
    attention.add_argument("--json", action="store_true", help="print one JSON object")


BENCH_ATTENTION_EPILOG = """\
One row per shape, device and mechanism (oscillator-analytic, oscillator-ode-drive,
oscillator-ode-pairwise, softmax, torus): a build of the head sized for the shape (T, d_h; UP5K
with iterative CORDICs, ECP5-85F pipelined; the analytic head, one head with every
oscillator mode for both ODE rows, the softmax head alone), the shape's example case
(oscarray attention --example SHAPE --seed S; the ODE rows with its mode set, the rest at
the golden defaults) on a head with the same modes in a cycle-accurate simulation (clocks
per head from its cycles port, checked against cycles_per_head or ode_cycles of the Euler
steps; bit-exact against golden-fixed; max |attn - golden-float|, the analytic attention for
the oscillator rows, softmax for softmax; the ODE rows' Euler steps and convergence), us per
inference (all heads on one head engine) at Fmax, LUT x us and DSP x us, and NumPy float64
(the same float reference) on this machine. Then each mechanism over oscillator-analytic in us,
LUT x us and DSP x us, softmax beside paper A's ratio from operation counts. The torus row is paper
B's layer (oscarray torus) once per head, T tokens and D = d_h angles, pipelined CORDICs.
A mechanism the head cannot run on a shape (the ODE modes at tinystories' d_osc 8) is
refused with its reason and gets no row; a head too big for a device gets its rows with
fits false, the reason and Yosys's estimate, and no area, Fmax or us.
Exit codes: 0 done; 1 the RTL differs from golden-fixed, a simulation or a build failed;
  2 a bad argument, or every asked shape refused.
"""


def _add_bench_attention(bench_designs):
    from .bench_attention import DEVICE_BUILDS, MECHANISMS
    from .golden.attention import SHAPES
    bench = bench_designs.add_parser(
        "attention", help="the attention heads (oscillator modes, softmax) versus NumPy",
        epilog=BENCH_ATTENTION_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--shape", nargs="+", choices=list(SHAPES), default=list(SHAPES),
                       help="the example cases to run (default: all; tinystories: softmax "
                            "only)")
    bench.add_argument("--device", nargs="+", choices=list(DEVICE_BUILDS),
                       default=list(DEVICE_BUILDS))
    bench.add_argument("--seed", type=int, default=0, metavar="S",
                       help="the example cases' random draw (default 0)")
    bench.add_argument("--mechanism", nargs="+", choices=list(MECHANISMS),
                       default=list(MECHANISMS), help="the rows to make (default: all)")
    bench.add_argument("--sim", choices=("verilator", "icarus"), default=None,
                       help="simulator (default: $SIM, else verilator)")
    bench.add_argument("--build-dir", default="build/bench_attention", metavar="DIR",
                       help="builds and simulator builds (default build/bench_attention)")
    bench.add_argument("--output", default="out/bench_attention.json",
                       help="the JSON, written after every row (complete: false until the "
                            "run ends; default out/bench_attention.json)")
    bench.add_argument("--resume", default=None, nargs="+", metavar="JSON",
                       help="take over the rows of earlier results of the same seed "
                            "(finished or not) instead of measuring them again; a row in "
                            "two of them is an error")
    bench.add_argument("--mac-lanes", type=int, default=1, metavar="L",
                       help="every head's multiply-accumulate lanes in its score and value "
                            "passes (a power of two up to d_h rounded up; default 1): "
                            "ceil(d_h / L) clocks a token instead of d_h")
    bench.add_argument("--json", action="store_true", help="print one JSON object")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oscarray", description="Bit-exact emulator of oscillator attention hardware.")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("sim", help="run RTL in cocotb against the golden model")
    sim_designs = sim.add_subparsers(dest="design", required=True)
    cordic = sim_designs.add_parser("cordic", help="the CORDIC unit")
    _add_cordic_format(cordic)
    cordic.add_argument("--arch", choices=ARCHITECTURES, default="pipelined")
    cordic.add_argument("--vectors", type=int, default=10000, help="random vectors (+ edges)")
    cordic.add_argument("--seed", type=int, default=1)
    cordic.add_argument("--sim", choices=("verilator", "icarus"), default=None,
                        help="simulator (default: $SIM, else verilator)")
    cordic.add_argument("--waves", action="store_true", help="write an FST/VCD wave file")
    cordic.add_argument("--valid-prob", type=float, default=0.8,
                        help="probability an input is offered each clock (random gaps)")
    cordic.add_argument("--ready-prob", type=float, default=0.8,
                        help="probability the output is accepted each clock (backpressure)")
    cordic.add_argument("--out", help="save the vectors and RTL outputs as npz")
    cordic.add_argument("--build-dir", default=None, metavar="DIR",
                        help="where simulator builds are cached (default build/sim)")
    cordic.add_argument("--json", action="store_true", help="print one JSON object")
    sim_array = sim_designs.add_parser("array", help="the oscillator array: a case, plotted")
    _add_array_case(sim_array, engine_required=False)
    sim_array.add_argument("--plots", required=True, help="folder for the PNGs (created)")
    sim_array.add_argument("--out", help="also write result.npz here")

    array = commands.add_parser("array", help="run a coupled-oscillator array case")
    _add_array_case(array, engine_required=True)
    array.add_argument("--out", required=True, help="result.npz to write")
    array.add_argument("--trace", action="store_true", help="save the phase trajectory")
    array.add_argument("--plot", help="also write phase and r(t) plots to this PNG")

    _add_attention(commands)
    _add_softmax(commands)
    _add_torus(commands)

    build = commands.add_parser("build", help="build a bitstream with Yosys/nextpnr")
    build.add_argument("--design", choices=("cordic", "attention", "link"), default="cordic",
                       help="cordic (the CORDIC in its measurement harness), attention (the "
                            "board's top: UART, host link, the attention head sized for the "
                            "board; refused on the iCEBreaker: no head fits the UP5K), link "
                            "(the top with a loopback engine)")
    build.add_argument("--board", choices=BOARD_NAMES, required=True)
    build.add_argument("--arch", choices=ARCHITECTURES, default="pipelined")
    build.add_argument("--mode", choices=list(MODES), default="rotate")
    build.add_argument("--split-stages", action="store_true",
                       help="pipelined: two register stages per micro-rotation (prepare, "
                            "add) for clock speed; more latency and flip-flops")
    build.add_argument("--target-mhz", type=float, default=None,
                       help="clock constraint (default 75 MHz on iCE40, 250 MHz on ECP5)")
    build.add_argument("--build-dir", default="build/boards")
    build.add_argument("--json", action="store_true", help="print one JSON object")

    bench = commands.add_parser("bench", help="measure area, speed and accuracy")
    bench_designs = bench.add_subparsers(dest="design", required=True)
    bench_cordic = bench_designs.add_parser("cordic", help="the CORDIC, both architectures")
    bench_cordic.add_argument("--mode", choices=list(MODES), default="rotate")
    bench_cordic.add_argument("--vectors", type=int, default=2000)
    bench_cordic.add_argument("--boards", nargs="+", choices=BOARD_NAMES,
                              default=["icebreaker", "ulx3s-85f"])
    bench_cordic.add_argument("--output", default="out/bench_cordic.json",
                              help="where the JSON goes (default out/bench_cordic.json)")
    bench_cordic.add_argument("--build-dir", default="build/bench", metavar="DIR",
                              help="builds and simulator builds (default build/bench)")
    bench_cordic.add_argument("--json", action="store_true", help="print one JSON object")

    bench_array = bench_designs.add_parser("array", help="the array engine versus NumPy")
    bench_array.add_argument("--device", nargs="+", choices=["up5k", "ecp5-85f"],
                             default=["up5k", "ecp5-85f"])
    bench_array.add_argument("--n", type=int, default=None,
                             help="oscillators (default: the largest dense N the memory holds)")
    bench_array.add_argument("--lanes", type=int, default=None,
                             help="MAC lanes (default 2 on UP5K, 64 on ECP5-85F)")
    bench_array.add_argument("--output", default="out/bench_array.json")
    bench_array.add_argument("--json", action="store_true", help="print one JSON object")
    _add_bench_attention(bench_designs)

    evaluate = commands.add_parser("eval", help="a trained model with its attention on an "
                                                "engine")
    tasks = evaluate.add_subparsers(dest="task", required=True)
    sva = tasks.add_parser(
        "sva", help="subject-verb agreement (paper A's task), the shipped trained weights",
        description="The subject-verb agreement classifier (oscarray/sva_model.py; trained by "
                    "train/train_sva.py) on the test split, its attention on the engine "
                    "(the rest in NumPy float): accuracy overall and on hard sentences, "
                    "agreement with golden-float, and for rtl every attention output "
                    "against golden-fixed, bit for bit.")
    sva.add_argument("--model", choices=("oscillator", "softmax"), required=True)
    sva.add_argument("--engine", choices=("golden-float", "golden-fixed", "rtl"),
                     required=True)
    sva.add_argument("--limit", type=int, default=None, metavar="N",
                     help="the first N test sentences (the RTL is slow; default all 1000)")
    sva.add_argument("--split", choices=("test", "validation", "train"), default="test")
    sva.add_argument("--sim", choices=("verilator", "icarus"), default=None,
                     help="rtl: simulator (default: $SIM, else verilator)")
    sva.add_argument("--build-dir", default=None, metavar="DIR",
                     help="rtl: where simulator builds are cached (default build/sim)")
    sva.add_argument("--json", action="store_true", help="print one JSON object")

    run = commands.add_parser(
        "run", help="an attention case on a board over its UART, or on the board's RTL",
        description="Send a case to a board (--port) or to the board top's RTL through a "
                    "simulated UART (--sim; the same driver code), get result.npz back:\n"
                    "  oscarray run --port /dev/ttyUSB0 --in case.npz --out result.npz\n"
                    "  oscarray run --sim --in case.npz --out result.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEV", help="the board's serial device")
    where.add_argument("--sim", action="store_true", help="the board top's RTL in cocotb")
    run.add_argument("--in", dest="case", required=True, metavar="CASE.npz")
    run.add_argument("--out", required=True, metavar="PATH", help="result.npz to write")
    run.add_argument("--baud", type=int, default=115_200)
    run.add_argument("--board", choices=BOARD_NAMES, default=None,
                     help="--sim: whose top (default: the smallest that holds the case)")
    run.add_argument("--simulator", choices=("verilator", "icarus"), default=None)
    run.add_argument("--build-dir", default=None, metavar="DIR")
    run.add_argument("--json", action="store_true", help="print one JSON object")

    formal = commands.add_parser(
        "formal", help="the SymbiYosys proofs (CORDIC streams, array controller, host link)",
        description="Run the formal proofs (sim/formal_props.py, yowasp-sby with boolector), "
                    "each with its deliberately broken variants (which must fail; among "
                    "them the defects the proofs found, brought back).")
    formal.add_argument("--proof", nargs="+", default=None, metavar="NAME",
                        help="only these proofs (default: all)")
    formal.add_argument("--json", action="store_true", help="print one JSON object")

    from .demo import DEMO_MODES
    from .golden.attention import SHAPES
    demo = commands.add_parser(
        "demo", help="the built-in example, end to end",
        description="Paper A's attention head on an example case through golden-float, "
                    "golden-fixed and the RTL (the board top in cocotb, through the host "
                    "driver on its simulated UART), a comparison table, heatmaps and "
                    "settling plots, and the iCEBreaker bitstream with its utilization and "
                    "Fmax (its attention top holds a softmax head: no oscillator head fits "
                    "the UP5K).")
    demo.add_argument("--example", choices=list(SHAPES), default="sva",
                      help="the example case (default sva: 1 head, T 9, d_h 32)")
    demo.add_argument("--seed", type=int, default=0, metavar="S")
    demo.add_argument("--mode", nargs="+", default=list(DEMO_MODES), metavar="MODE",
                      help="analytic, ode-drive, ode-pairwise (default: analytic ode-drive)")
    demo.add_argument("--out-dir", default="out/demo", metavar="DIR")
    demo.add_argument("--skip-build", action="store_true", help="no bitstream")
    demo.add_argument("--simulator", choices=("verilator", "icarus"), default=None)
    demo.add_argument("--build-dir", default=None, metavar="DIR",
                      help="where simulator builds are cached (default build/sim)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _print_table(rows: list[dict], columns: list[tuple[str, str]]):
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
        return "-" if value is None else str(value)
    cells = [[title for _, title in columns]] + [[fmt(r.get(k)) for k, _ in columns]
                                                  for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


CORDIC_BENCH_COLUMNS = [
    ("arch", "arch"), ("device", "device"), ("lut", "LC/LUT4"), ("core_lut", "core LUT"),
    ("ff", "FF"), ("dsp", "DSP"), ("bram", "BRAM"), ("fmax_mhz", "Fmax MHz"),
    ("latency_cycles", "latency"), ("results_per_s", "results/s"),
    ("max_err_lsb", "max err LSB"), ("rms_err_lsb", "RMS err LSB"),
]


def _report(result: dict, as_json: bool, print_text):
    """One JSON object on stdout, or the command's text summary."""
    if as_json:
        from .flows import _json_default
        print(json.dumps(result, default=_json_default))
    else:
        print_text(result)


def _print_sim_cordic(result: dict):
    print(f"{result['mode']} CORDIC, {result['arch']}, {result['sim']}: "
          f"{result['vectors']} vectors, {result['mismatches']} mismatches versus "
          f"golden fixed; versus the ideal max {result['max_err_lsb']:.3f} LSB, "
          f"RMS {result['rms_err_lsb']:.3f} LSB (budget {result['budget_lsb']:.3f})")
    if result.get("waves"):
        print(f"waves: {result['waves']}")
    if result.get("out"):
        print(f"vectors: {result['out']}")


def _print_build(result: dict):
    arch = result["arch"] + (", split stages" if result.get("split_stages") else "")
    print(f"{result['design']} ({arch}) on {result['board']} "
          f"({result['device']}): {result['lut']} LUT, {result['ff']} FF, "
          f"{result['dsp']} DSP, {result['bram']} BRAM; Fmax {result['fmax_mhz']:.1f} "
          f"MHz (target {result['target_mhz']:.0f}, "
          f"{'met' if result['timing_met'] else 'NOT met'}); {result['bitstream']}")


def _print_board_build(result: dict):
    print(f"{result['design']} top on {result['board']} ({result['device']}): "
          f"{result['lut']} LUT, {result['ff']} FF, {result['dsp']} DSP, {result['bram']} "
          f"BRAM; Fmax {result['fmax_mhz']:.1f} MHz (clock {result['target_mhz']:.1f}, "
          f"{'met' if result['timing_met'] else 'NOT met'}); {result['bitstream']}")


def _print_formal(result: dict):
    for proof in result["proofs"]:
        broken = proof.get("broken") or []
        caught = sum(1 for b in broken if b.get("fails"))
        print(f"{proof['name']}: {'PASSED' if proof['passed'] else 'FAILED'} "
              f"({proof['mode']} {proof['depth']}, {proof['seconds']:.0f} s); broken variants "
              f"failing: {caught} of {len(broken)}")
    for finding in result.get("findings", []):
        print(f"finding {finding['name']}: {'reproduced' if finding['reproduced'] else 'gone'}"
              f" ({finding['note']})")
    print(f"all passed: {result['passed']}")


def _print_run(r: dict):
    print(f"{r['engine']} ({r['transport']}): case {r['case']}, shape {r['shape']}, "
          f"{r['mode']}; cycles per head {r['cycles']} (model {r['cycles_expected']}); "
          f"{r['mismatches']} integers differ from golden-fixed"
          + (f"; written {r['out']}" if r.get("out") else ""))


def _print_bench_cordic(result: dict):
    print(f"CORDIC {result['mode']}, {result['config']['data_width']}-bit data, "
          f"{result['config']['phase_bits']}-bit phase, "
          f"{result['config']['iterations']} iterations; {result['date']}, "
          f"{result['machine']}")
    _print_table(result["rows"], CORDIC_BENCH_COLUMNS)
    print(f"written: {result['written']}")


def _print_array(result: dict):
    stop = (f"converged (tol {result['tol']:g})" if result["converged"]
            else "no tol" if result["tol"] is None else f"not converged (tol {result['tol']:g})")
    print(f"{result['engine']}: {result['n']} oscillators ({result['free']} free), "
          f"{result['steps_taken']} of {result['steps']} steps, {stop}; "
          f"r = {result['r_final']:.4f}, psi = {result['psi_final']:.4f} rad"
          + ("" if result["cycles"] is None else f"; {result['cycles']} cycles"))
    for key in ("out", "plot"):
        if result.get(key):
            print(f"{key}: {result[key]}")


def _run(args) -> int:
    from . import flows

    progress = flows.stderr_progress
    if args.command == "array" or (args.command == "sim" and args.design == "array"):
        return _run_array(args, progress)
    if args.command == "attention":
        return _run_attention(args, progress)
    if args.command == "formal":
        from .formal_flow import formal_run
        result = formal_run(args.proof, progress)
        _report(result, args.json, _print_formal)
        return 0 if result["passed"] else 1
    if args.command == "run":
        from .run_flow import run_case
        result = run_case(args.case, args.out, port=args.port, sim=args.sim, baud=args.baud,
                          progress=progress, board=args.board, simulator=args.simulator,
                          build_root=args.build_dir)
        _report(result, args.json, _print_run)
        return 1 if result["mismatches"] else 0
    if args.command == "eval":
        from .sva_eval import eval_sva
        result = eval_sva(args.model, args.engine, args.limit, progress, split=args.split,
                          sim=args.sim, build_root=args.build_dir)
        _report(result, args.json, _print_eval_sva)
        return 1 if result.get("bit_exact") is False else 0
    if args.command == "torus":
        return _run_torus(args, progress)
    if args.command == "softmax":
        from .softmax_flow import softmax_run
        result = softmax_run(args.case, args.engine, args.out, progress, plots=args.plots,
                             max_tokens=args.max_tokens, max_d_h=args.max_d_h, sim=args.sim,
                             build_root=args.build_dir)
        _report(result, args.json, _print_softmax)
        return 1 if result["mismatches"] else 0
    if args.command == "sim":
        config = flows.cordic_config(args.mode, args.width, args.phase_bits, args.iterations,
                                     args.guard_bits)
        result = flows.sim_cordic(config, args.arch, args.vectors, args.seed, sim=args.sim,
                                  waves=args.waves, out=args.out, valid_prob=args.valid_prob,
                                  ready_prob=args.ready_prob, build_root=args.build_dir,
                                  progress=progress)
        _report(result, args.json, _print_sim_cordic)
        return 1 if result["mismatches"] else 0

    if args.command == "build" and args.design in ("attention", "link"):
        from .run_flow import build_board
        result = build_board(args.board, args.design, progress, build_root=args.build_dir)
        _report(result, args.json, _print_board_build)
        return 0

    if args.command == "build":
        result = flows.build_design(args.design, args.board, arch=args.arch, mode=args.mode,
                                    split_stages=args.split_stages,
                                    target_mhz=args.target_mhz, build_root=args.build_dir,
                                    progress=progress)
        _report(result, args.json, _print_build)
        return 0

    if args.command == "bench" and args.design == "array":
        from .bench_array import ARRAY_BENCH_COLUMNS, bench_array
        result = bench_array(args.device, n=args.n, lanes=args.lanes, progress=progress)
        _bench_report(result, args, "array engine versus NumPy float64", ARRAY_BENCH_COLUMNS)
        return 0

    if args.command == "bench" and args.design == "attention":
        from .bench_attention import (ATTENTION_BENCH_COLUMNS, bench_attention,
                                      check_bench_lanes, check_output_keeps_rows,
                                      merged_resumable_rows)
        check_bench_lanes(args.shape, args.mac_lanes)     # before --resume's checks
        resume = None
        if args.resume is not None:
            earlier = [(path, flows.read_json_file(path, "--resume")) for path in args.resume]
            resume = merged_resumable_rows(earlier, args.seed, args.mac_lanes)
            check_output_keeps_rows(args.output, earlier, args.shape, args.device,
                                    args.mechanism)
        result = bench_attention(args.shape, args.device, seed=args.seed,
                                 build_root=args.build_dir, sim=args.sim, progress=progress,
                                 mechanisms=args.mechanism, resume=resume,
                                 on_row=lambda partial: flows.write_json(partial, args.output),
                                 mac_lanes=args.mac_lanes)
        _bench_report(result, args, "attention heads (paper A's oscillator, softmax) versus "
                                    "NumPy float64",
                      ATTENTION_BENCH_COLUMNS, _attention_bench_notes(result))
        return 0 if all(row["bit_exact"] for row in result["rows"]) else 1

    if args.command == "bench":
        result = flows.bench_cordic(vectors=args.vectors, mode=args.mode, boards=args.boards,
                                    build_root=args.build_dir, progress=progress)
        result["written"] = str(flows.write_json(result, args.output))
        _report(result, args.json, _print_bench_cordic)
        return 0

    if args.command == "demo":
        from .demo import print_demo, run_demo
        result = run_demo(example=args.example, seed=args.seed, modes=args.mode,
                          out_dir=args.out_dir, build=not args.skip_build,
                          simulator=args.simulator, sim_build_root=args.build_dir,
                          progress=progress)
        _report(result, args.json, print_demo)
        return 0 if result["passed"] else 1
    raise AssertionError(args.command)


def _bench_report(result: dict, args, title: str, columns, notes=()):
    """A bench's result: written to --output (result["written"]), then printed as one JSON
    object or as the title line, the table, the notes and where it was written."""
    from . import flows
    result["written"] = str(flows.write_json(result, args.output))

    def print_text(r):
        print(f"{title}; {r['date']}, {r['machine']}")
        _print_table(r["rows"], columns)
        for note in notes:
            print(note)
        print(f"written: {r['written']}")
    _report(result, args.json, print_text)


def _attention_bench_notes(result: dict) -> list[str]:
    """What `bench attention` could not put in its table: heads too big for a device (once
    per build), RTL not bit-exact, oscillators that did not converge, refused shapes,
    mechanisms without rows; what the NumPy column is."""
    notes, said = [], set()
    lanes = result.get("mac_lanes", 1)
    if lanes > 1:
        notes.append(f"every head has {lanes} MAC lanes: its score and value passes take "
                     f"ceil(d_h / {lanes}) clocks a token (1 lane: d_h); the torus layer has "
                     f"none")
    compact = [f"{row['shape']} {row['mechanism']} on {row['device']}"
               for row in result["rows"] if row.get("compact")]
    if compact:
        notes.append(f"compact head (AttentionHead's compact: shared multipliers, one CORDIC "
                     f"datapath, lean shifters, q and k in SPRAM): {', '.join(compact)}")
    for row in result["rows"]:
        where = f"{row['shape']} on {row['device']}"
        built = row.get("modes_built") or ["analytic"]
        if not row["fits"] and (row["shape"], row["device"], tuple(built)) not in said:
            said.add((row["shape"], row["device"], tuple(built)))
            usage = row.get("netlist") or {}
            capacity = row.get("capacity") or {}
            needs = ", ".join(f"{key} {usage[key]}/{capacity.get(key, '?')}"
                              for key in ("lut", "ff", "dsp", "bram") if key in usage)
            notes.append(f"{where}, head with {'+'.join(built)} ({row['cordic_arch']} "
                         f"CORDICs): does not fit, no area, Fmax or us"
                         + (f"; Yosys's netlist (lower bounds) / the device: {needs}"
                            if needs else "") + f" ({row['does_not_fit']})")
        if not row["bit_exact"]:
            notes.append(f"{where} {row['mechanism']}: the RTL differs from golden-fixed in "
                         f"{row['mismatches']} integer(s)")
        if row.get("converged") is False:
            notes.append(f"{where} {row['mechanism']}: some oscillators did not converge "
                         f"within max_steps")
    if any(row.get("euler_steps") is not None for row in result["rows"]):
        notes.append("NumPy us: the float model's analytic attention on every oscillator "
                     "row, the ODE rows too (the reference; max attn err is against it as "
                     "well); softmax rows: NumPy's softmax")
    for c in result.get("versus_analytic", []):
        dsp = "n/a" if c["dsp_us"] is None else f"{c['dsp_us']:.2f}"
        paper = "" if c["paper"] is None else f" (paper A's operation count: {c['paper']})"
        notes.append(f"{c['shape']} on {c['device']}: {c['mechanism']} / oscillator-analytic "
                     f"= {c['us']:.2f} in us, {c['lut_us']:.2f} in LUT*us, {dsp} in DSP*us"
                     + paper)
    for refused in result["refused"]:
        what = refused["shape"] + (f" {refused['mechanism']}" if "mechanism" in refused
                                   else "")
        notes.append(f"{what}: refused, no row: {refused['reason']}")
    for missing in result["not_benched"]:
        notes.append(f"{missing['mechanism']}: {missing['reason']}")
    return notes


def _run_array(args, progress) -> int:
    from . import flows

    try:
        if args.command == "sim":
            result = flows.sim_array(args.case, args.engine, args.plots, out=args.out,
                                     progress=progress, form=args.form,
                                     capacity=args.capacity, lanes=args.lanes)
        else:
            result = flows.array_run(args.case, args.engine, args.out, args.trace, progress,
                                     plot=args.plot, form=args.form, capacity=args.capacity,
                                     lanes=args.lanes)
    except NotImplementedError as error:
        print(f"oscarray: error: {error}", file=sys.stderr)
        return 2
    _report(result, args.json, _print_array)
    return 0


def _print_attention(result: dict):
    if "example" in result:
        H, T, d_h, d_osc = result["shape"]
        print(f"example {result['example']} (seed {result['seed']}): H = {H}, T = {T}, "
              f"d_h = {d_h}, d_osc = {d_osc}, mode {result['mode']}; written {result['out']}")
        return
    H, T, d_h, d_osc = result["shape"]
    print(f"{result['engine']}: {H} head(s), T = {T}, d_h = {d_h}, d_osc = {d_osc}, "
          f"{result['mode']}; versus golden-float analytic: max |attn err| "
          f"{result['max_attn_err']:.3g} (target {result['attn_target']:.3g}), max |out err| "
          f"/ max|v| {result['max_out_err_rel']:.3g} (target {result['out_target_rel']:.3g})")
    if result["mode"] != "analytic":
        print(f"Euler steps: up to {result['steps_max']}, {result['not_converged']} "
              f"oscillator(s) not converged")
    if result["cycles"] is not None:
        print(f"cycles per head: {', '.join(map(str, result['cycles']))}; "
              f"{result['mismatches']} integer(s) differ from golden-fixed")
    for key in ("out", "plot"):
        if result.get(key):
            print(f"{key}: {result[key]}")


def _run_attention(args, progress) -> int:
    from . import flows

    if args.example is not None:
        used = [flag for flag, value in (("--engine", args.engine), ("--plots", args.plots),
                                         ("--max-tokens", args.max_tokens),
                                         ("--max-d-h", args.max_d_h), ("--sim", args.sim),
                                         ("--mac-lanes", args.mac_lanes),
                                         ("--compact", args.compact),
                                         ("--build-dir", args.build_dir)) if value is not None]
        if used:
            raise ValueError(f"--example writes a case to --out and stops; {used[0]} belongs "
                             f"to a run: oscarray attention --in CASE.npz --engine ...")
        result = flows.attention_example(args.example, args.out, args.seed, progress)
    else:
        if args.engine is None:
            raise ValueError("--in needs --engine (golden-float, golden-fixed or rtl)")
        result = flows.attention_run(args.case, args.engine, args.out, progress,
                                     plots=args.plots, max_tokens=args.max_tokens,
                                     max_d_h=args.max_d_h, sim=args.sim,
                                     build_root=args.build_dir, mac_lanes=args.mac_lanes,
                                     compact=args.compact)
    _report(result, args.json, _print_attention)
    return 1 if result.get("mismatches") else 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .boards.build import BoardError
    from .golden.link import LinkError
    from .sim.runner import SimulatorNotFound, SimulationFailed
    try:
        return _run(args)
    except LinkError as error:          # the board or its link answered wrong: a failure
        print(f"oscarray: error: {error}", file=sys.stderr)
        return 1
    except (CordicConfigError, ValueError, FileNotFoundError, SimulatorNotFound) as error:
        print(f"oscarray: error: {error}", file=sys.stderr)
        return 2
    except (BoardError, SimulationFailed) as error:
        print(f"oscarray: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
