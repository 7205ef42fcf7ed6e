"""Paper B's Kuramoto attention on the torus: case.npz -> engine -> result.npz (`oscarray
torus`'s plumbing: `torus_run` and `torus_example`). Nothing here computes: golden/torus.py (float), golden/torus_fixed.py
(the bit-exact fixed point and its error budget), hdl/torus.py + sim/torus.py (the RTL in
cocotb).

    torus_run(case_path, engine, out, progress=None, sim=None, build_root=None, *,
              max_tokens=None, max_d=None) -> dict
    torus_example(out, tokens=16, d=8, seed=0, progress=None) -> dict

Engines: golden-float | golden-fixed | rtl. Everything is checked (engine, output path, the
whole case, the engine's refusals, the rtl build's capacity) before any work, and result.npz
is written whole or not at all (golden/npz.write_npz), after the run.
"""

from __future__ import annotations

import json

import numpy as np

from .flows import _check_output_path, _json_default, _say, check_engine, rtl_capacity, run_engine

__all__ = ["TORUS_ENGINES", "TORUS_CASE_CHECKS", "TORUS_RESULT_KEYS", "TORUS_RTL_INTEGERS",
           "TORUS_RTL_MIN_TOKENS", "TORUS_RTL_MIN_D", "torus_rtl_capacity", "torus_run",
           "torus_example", "torus_rtl_mismatches"]

# The rtl engine's smallest build: cases up to T = 16, D = 16 share one simulator build.
TORUS_RTL_MIN_TOKENS = 16
TORUS_RTL_MIN_D = 16


def torus_rtl_capacity(tokens: int, d: int, max_tokens=None, max_d=None) -> tuple[int, int]:
    """(max_tokens, max_d) of the layer the rtl engine builds for a case of (T, D): the given
    values, else T and D rounded up to powers of two, at least 16 each (each distinct
    capacity is one simulator build, cached), at most the layer's limits."""
    from .golden.torus_fixed import MAX_D, MAX_TOKENS
    return (rtl_capacity(tokens, max_tokens, TORUS_RTL_MIN_TOKENS, MAX_TOKENS),
            rtl_capacity(d, max_d, TORUS_RTL_MIN_D, MAX_D))


# -- engines: (TorusCase, **options) -> dict of the result's arrays (and "scales") ------------

def _golden_float(case, **options) -> dict:
    from .golden.torus import torus_float
    return torus_float(case)


def _check_fixed(case, **options):
    from .golden.torus_fixed import validate_fixed
    validate_fixed(case)


def _golden_fixed(case, **options) -> dict:
    from .golden.torus_fixed import torus_fixed
    return torus_fixed(case)


def _check_rtl(case, max_tokens=None, max_d=None, **options):
    """hdl.torus.check_case: the fixed-point refusals and the build's capacity."""
    from .hdl.torus import check_case
    max_tokens, max_d = torus_rtl_capacity(case.tokens, case.d, max_tokens, max_d)
    check_case(case, max_tokens=max_tokens, max_d=max_d)


def _rtl(case, max_tokens=None, max_d=None, sim=None, build_root=None, progress=None) -> dict:
    """The layer RTL in cocotb, decoded like golden-fixed's result (the RTL's integers, the
    float keys from them, the host's scales, cycles)."""
    from .golden.torus_fixed import FRAC, acc_to_radians, host_constants
    from .golden.torus_fixed import DEFAULT_CONFIG as config
    from .sim.torus import run_torus_rtl

    max_tokens, max_d = torus_rtl_capacity(case.tokens, case.d, max_tokens, max_d)
    _say(progress, f"rtl: simulating a layer of capacity T <= {max_tokens}, D <= {max_d} "
                   f"(the first run of a capacity builds it, under a minute; then cached)")
    rtl = run_torus_rtl(case, config, max_tokens=max_tokens, max_d=max_d, sim=sim,
                        build_root=build_root)
    return {"theta_next": acc_to_radians(rtl["theta_next_acc"], config.acc_bits),
            "attn": rtl["attn_int"] * 2.0 ** -FRAC,
            "attn_int": rtl["attn_int"].astype(np.int64),
            "theta_next_acc": rtl["theta_next_acc"].astype(np.int64),
            "cycles": int(rtl["cycles"]), "scales": host_constants(case, config).scales(config),
            "sim": rtl["sim"]}


TORUS_ENGINES = {"golden-float": _golden_float, "golden-fixed": _golden_fixed, "rtl": _rtl}

# What an engine adds to the float model's validation, run before any work.
TORUS_CASE_CHECKS: dict = {"golden-fixed": _check_fixed, "rtl": _check_rtl}

# The arrays of result.npz (besides "scales", "engine" and "cycles"), in order.
TORUS_RESULT_KEYS = ("theta_next", "attn", "attn_int", "theta_next_acc", "score_int",
                     "e_int", "q_int")

# The integers the RTL gives (golden torus_fixed's names); compared with golden-fixed.
TORUS_RTL_INTEGERS = ("attn_int", "theta_next_acc")


def torus_rtl_mismatches(case, rtl: dict) -> int:
    """How many of the RTL's integers differ from golden-fixed's (0 when bit-exact)."""
    from .golden.torus_fixed import torus_fixed
    golden = torus_fixed(case)
    return int(sum(np.count_nonzero(np.asarray(rtl[key]) != golden[key])
                   for key in TORUS_RTL_INTEGERS))


def torus_run(case_path, engine: str, out=None, progress=None, sim=None, build_root=None, *,
              max_tokens=None, max_d=None) -> dict:
    """Run a torus case (npz: theta (T, D), g, omega, eta (D,), tau, optional causal) on one
    engine and write result.npz to `out` (if given): theta_next (T, D) radians in [-pi, pi),
    attn (T, T) (zero above the diagonal when causal), the integers (golden-fixed: attn_int,
    theta_next_acc, score_int, e_int, q_int; rtl: attn_int, theta_next_acc), scales (JSON),
    cycles (rtl), engine.

    Everything is checked before any work: the engine, the output path, the whole case
    (golden/torus.validate_case: TorusCaseError, a ValueError), the engine's refusals
    (golden-fixed and rtl: TorusFixedError; rtl: TorusLayerError for a case above the
    build's capacity). Returns a JSON-able summary: the errors against golden-float
    (max_attn_err, max_theta_err, wrapped), the attn target 2**-11, the derived budget
    (golden-fixed and rtl: budget_attn, budget_theta, within_budget), cycles and
    expected_cycles (rtl: `torus_cycles`), mismatches (rtl versus golden-fixed; the command
    should exit 1 when it is not 0), elapsed_s, out."""
    from .golden.npz import write_npz
    from .golden.torus import load_case, torus_float, wrap_phase
    from .golden.torus_fixed import ATTN_TARGET, error_budget

    check_engine("torus", TORUS_ENGINES, engine)
    out = _check_output_path("--out", out)
    case = load_case(case_path)
    options = {"max_tokens": max_tokens, "max_d": max_d} if engine == "rtl" else {}
    if engine in TORUS_CASE_CHECKS:
        TORUS_CASE_CHECKS[engine](case, **options)

    _say(progress, f"{engine}: T = {case.tokens}, D = {case.d}, "
                   f"{'causal' if case.causal else 'full'}, tau = {case.tau:g}")
    result, elapsed = run_engine(TORUS_ENGINES, engine, case, options, sim=sim,
                                 build_root=build_root, progress=progress)
    reference = result if engine == "golden-float" else torus_float(case)
    mismatches = torus_rtl_mismatches(case, result) if engine == "rtl" else None

    arrays = {key: np.asarray(result[key]) for key in TORUS_RESULT_KEYS if key in result}
    if "scales" in result:
        arrays["scales"] = np.asarray(json.dumps(result["scales"], default=_json_default))
    if "cycles" in result:
        arrays["cycles"] = np.asarray(result["cycles"], np.int64)
    arrays["engine"] = np.asarray(engine)
    if out is not None:
        write_npz(out, arrays)

    summary = {
        "engine": engine, "case": str(case_path), "shape": [case.tokens, case.d],
        "causal": case.causal, "tau": case.tau,
        "max_attn_err": float(np.abs(result["attn"] - reference["attn"]).max()),
        "max_theta_err": float(np.abs(wrap_phase(result["theta_next"]
                                                 - reference["theta_next"])).max()),
        "attn_target": ATTN_TARGET, "budget_attn": None, "budget_theta": None,
        "within_budget": None, "cycles": result.get("cycles"), "expected_cycles": None,
        "mismatches": mismatches, "sim": result.get("sim"), "elapsed_s": elapsed,
        "out": None if out is None else str(out),
    }
    if engine != "golden-float":
        budget = error_budget(case)
        summary.update(budget_attn=budget["attn"], budget_theta=budget["theta"],
                       within_budget=bool(summary["max_attn_err"] <= budget["attn"]
                                          and summary["max_theta_err"] <= budget["theta"]))
    if engine == "rtl":
        from .hdl.torus import torus_cycles
        summary["expected_cycles"] = torus_cycles(case.tokens, case.d, case.causal)
    return summary


def torus_example(out, tokens: int = 16, d: int = 8, seed: int = 0, progress=None) -> dict:
    """Write golden/torus.random_case(tokens, d, seed) to `out` as a case npz (every entry
    written out). Refusals (T, D < 1, seed < 0, a bad path) before anything is written."""
    from .golden.npz import write_npz
    from .golden.torus import case_arrays, random_case, validate_case

    if seed < 0:
        raise ValueError(f"--seed must be >= 0, not {seed}")
    case = validate_case(random_case(tokens, d, seed))
    out = _check_output_path("--out", out)
    if out is None:
        raise ValueError("--out is required")
    write_npz(out, case_arrays(case))
    _say(progress, f"example T = {tokens}, D = {d}, seed {seed}: written {out}")
    return {"example": "random", "shape": [case.tokens, case.d], "seed": seed, "out": str(out)}
