"""How the ODE modes settle at the defaults: the converged fraction and the step distribution.

    python -m oscarray.convergence [--shape kws|sva|tinystories] [--cases N]
        [--engine golden-float|golden-fixed] [--mode ode-drive|ode-pairwise]
        [--dt DT] [--max-steps M] [--tol TOL] [--init random|zero|warm] [--seed S]
        [--json] [--output out/convergence.json]

The cases are those of `oscarray attention --example SHAPE --seed s` (golden/attention's
random_case with every entry at DEFAULTS), s = seed .. seed + N - 1, in each ODE mode; --dt,
--max-steps, --tol and --init replace the defaults (to compare candidates). Per shape and mode:

    converged   oscillators (head, token) within tol when they stopped, of all of them
    steps       min / p50 / p90 / p99 / p99.9 / max over the converged oscillators: the
                float model's first step within tol (an angle to x*), or the fixed engine's
                run length at d_osc = 2 (it runs a head until every oscillator has been
                within the angle tol, rounded to 2**-a, of its coupling's direction for 4
                steps, so every token of a head reports the head's count); at d_osc > 2
                (tinystories) each fixed-point oscillator's own
                first calm step (golden/attention_sphere.py's Lohe flow)
    run_steps   the same over heads: the step count of the head's slowest oscillator, what
                an engine that settles a head at once spends (not-converged heads excluded)
    attn_err, out_err   the largest |attn - attn_analytic| / 2**-11 and
                |out - out_analytic| / (2**-8 max|v|) over the cases (the fixed-point targets,
                golden/attention_fixed.py; 1 is the target, reported for the float model too)

golden-fixed runs both ODE modes at every shape (ode-pairwise at d_osc > 2 too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .golden.attention import DEFAULTS, SHAPES, attention_float, random_case
from .golden.attention_fixed import ATTN_TARGET, OUT_TARGET

ENGINES = ("golden-float", "golden-fixed")
ODE_MODES = ("ode-drive", "ode-pairwise")
PERCENTILES = {"min": 0, "p50": 50, "p90": 90, "p99": 99, "p99.9": 99.9, "max": 100}


def example_case(shape: str, seed: int, **overrides) -> dict:
    """`oscarray attention --example shape --seed seed`'s case, with entries replaced."""
    case = random_case(shape, seed, **{k: v for k, v in DEFAULTS.items() if k != "seed"})
    case["seed"] = seed
    case.update({k: v for k, v in overrides.items() if v is not None})
    return case


def distribution(steps) -> dict:
    """Nearest-rank percentiles (PERCENTILES) of a step count array; None when empty."""
    steps = np.asarray(steps).ravel()
    if steps.size == 0:
        return {name: None for name in PERCENTILES}
    return {name: int(np.percentile(steps, q, method="inverted_cdf")) if q else int(steps.min())
            for name, q in PERCENTILES.items()}


def measure(shape: str, mode: str, cases: int, engine: str = "golden-float", seed: int = 0,
            **overrides) -> dict:
    """Run `cases` example cases of `shape` in `mode` on `engine`; the summary of the module
    docstring. overrides: dt, max_steps, tol, init (None keeps the default)."""
    if engine == "golden-fixed":
        from .golden.attention_fixed import attention_fixed as run
    elif engine == "golden-float":
        run = attention_float
    else:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    start = time.perf_counter()
    steps, runs, attn_err, out_err = [], [], 0.0, 0.0
    for index in range(cases):
        case = example_case(shape, seed + index, mode=mode, **overrides)
        result = run(case)
        reference = attention_float(dict(case, mode="analytic"))
        steps.append(result["steps"].ravel())
        head = result["steps"].max(axis=1)
        runs.append(np.where((result["steps"] < 0).any(axis=1), -1, head))
        attn_err = max(attn_err, float(np.abs(result["attn"] - reference["attn"]).max()))
        out_err = max(out_err, float(np.abs(result["out"] - reference["out"]).max()
                                     / np.abs(case["v"]).max()))
    steps, runs = np.concatenate(steps), np.concatenate(runs)
    done = steps >= 0
    settings = {key: (DEFAULTS[key] if overrides.get(key) is None else overrides[key])
                for key in ("dt", "max_steps", "tol", "init")}
    return {"shape": shape, "mode": mode, "engine": engine, **settings, "cases": cases,
            "seeds": [seed, seed + cases - 1], "oscillators": int(steps.size),
            "converged": int(done.sum()), "fraction": float(done.mean()),
            "steps": distribution(steps[done]), "heads": int(runs.size),
            "heads_converged": int((runs >= 0).sum()), "run_steps": distribution(runs[runs >= 0]),
            "attn_err": attn_err / ATTN_TARGET, "out_err": out_err / OUT_TARGET,
            "seconds": round(time.perf_counter() - start, 2)}


def convergence(shapes=tuple(SHAPES), cases: int = 20, engine: str = "golden-float",
                modes=ODE_MODES, seed: int = 0, progress=None, **overrides) -> dict:
    """measure() for every shape and mode (`skipped`: none now, kept for the report's
    format)."""
    results, skipped = [], []
    for shape in shapes:
        for mode in modes:
            row = measure(shape, mode, cases, engine, seed, **overrides)
            if progress:
                progress(format_row(row))
            results.append(row)
    return {"engine": engine, "defaults": {k: DEFAULTS[k] for k in ("dt", "max_steps", "tol",
                                                                     "init")},
            "skipped": skipped, "results": results}


def format_row(row: dict) -> str:
    s, r = row["steps"], row["run_steps"]
    return (f"{row['shape']:<11} {row['mode']:<12} {row['engine']:<12} dt {row['dt']:<5g} "
            f"tol {row['tol']:<7g} max {row['max_steps']:<5} {row['init']:<6} "
            f"converged {row['converged']}/{row['oscillators']} ({100 * row['fraction']:.2f} %)"
            f"  steps min/p50/p90/p99/p99.9/max {'/'.join(str(v) for v in s.values())}"
            f"  per head p50/p99/max {r['p50']}/{r['p99']}/{r['max']}"
            f"  attn {row['attn_err']:.3g} out {row['out_err']:.3g} x target")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oscarray.convergence",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=tuple(SHAPES), action="append",
                        help="a model shape (repeatable; default: all)")
    parser.add_argument("--cases", type=int, default=20, help="random cases per shape (20)")
    parser.add_argument("--engine", choices=ENGINES, default="golden-float")
    parser.add_argument("--mode", choices=ODE_MODES, action="append",
                        help="an ODE mode (repeatable; default: both)")
    parser.add_argument("--seed", type=int, default=0, help="the first case's seed (0)")
    parser.add_argument("--dt", type=float, help=f"default {DEFAULTS['dt']}")
    parser.add_argument("--max-steps", type=int, help=f"default {DEFAULTS['max_steps']}")
    parser.add_argument("--tol", type=float, help=f"default {DEFAULTS['tol']}")
    parser.add_argument("--init", choices=("random", "zero", "warm"),
                        help=f"default {DEFAULTS['init']}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--output", default="out/convergence.json")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.seed < 0:
        parser.error("--cases must be >= 1 and --seed >= 0")

    def progress(line):
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
    report = convergence(args.shape or tuple(SHAPES), args.cases, args.engine,
                         args.mode or ODE_MODES, args.seed, progress, dt=args.dt,
                         max_steps=args.max_steps, tol=args.tol, init=args.init)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        print(f"written {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
